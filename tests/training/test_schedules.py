"""OneCycleSchedule against PyTorch's OneCycleLR formula, computed by hand."""

import math

import keras
import numpy as np
import pytest

from keras_csl.training import OneCycleSchedule


def torch_one_cycle(step, max_lr, total_steps, pct_start=0.3, div_factor=25.0,
                    final_div_factor=1e4):
    """torch.optim.lr_scheduler.OneCycleLR.get_lr (cos, two phases), in NumPy.

    Phase ends: `pct_start * total_steps - 1` and `total_steps - 1`; within
    a phase, `end + (start - end) / 2 * (cos(pi * pct) + 1)`.
    """
    initial = max_lr / div_factor
    final = initial / final_div_factor
    phases = [
        (float(pct_start * total_steps) - 1, initial, max_lr),
        (total_steps - 1, max_lr, final),
    ]
    start_step = 0.0
    for index, (end_step, start_lr, end_lr) in enumerate(phases):
        if step <= end_step or index == len(phases) - 1:
            pct = (step - start_step) / (end_step - start_step)
            return end_lr + (start_lr - end_lr) / 2.0 * (math.cos(math.pi * pct) + 1)
        start_step = end_step


def test_hand_checked_values():
    schedule = OneCycleSchedule(2e-4, total_steps=100, pct_start=0.2)
    # Step 0: max_lr / div_factor; step 19 = 0.2 * 100 - 1: the peak.
    np.testing.assert_allclose(float(schedule(0)), 8e-6, rtol=1e-6)
    np.testing.assert_allclose(float(schedule(19)), 2e-4, rtol=1e-6)
    # Step 59 is half-way through the decay (40 of 80 steps): the mean of
    # the peak and the final rate 8e-6 / 1e4.
    np.testing.assert_allclose(float(schedule(59)), (2e-4 + 8e-10) / 2, rtol=1e-6)
    np.testing.assert_allclose(float(schedule(99)), 8e-10, rtol=1e-5)
    # Past the end the last value stays (PyTorch raises).
    np.testing.assert_allclose(float(schedule(250)), 8e-10, rtol=1e-5)


@pytest.mark.parametrize(
    "total_steps, pct_start", [(100, 0.2), (37, 0.2), (54_000, 0.2), (10, 0.3)]
)
def test_matches_torch_formula(total_steps, pct_start):
    schedule = OneCycleSchedule(3e-4, total_steps, pct_start=pct_start)
    steps = np.unique(np.linspace(0, total_steps - 1, 200).astype(int))
    ours = np.array([float(schedule(s)) for s in steps])
    expected = np.array([torch_one_cycle(s, 3e-4, total_steps, pct_start) for s in steps])
    np.testing.assert_allclose(ours, expected, rtol=1e-6)


def test_too_short_to_warm_up_decays_at_once_as_torch():
    # 0.2 * 4 - 1 < 0: PyTorch goes straight to the decay phase.
    schedule = OneCycleSchedule(1e-3, total_steps=4, pct_start=0.2)
    for step in range(4):
        np.testing.assert_allclose(float(schedule(step)),
                                   torch_one_cycle(step, 1e-3, 4, 0.2), rtol=1e-6)


def test_drives_a_keras_optimizer_per_step():
    schedule = OneCycleSchedule(1e-2, total_steps=10, pct_start=0.3)
    optimizer = keras.optimizers.SGD(schedule)
    variable = keras.Variable(0.0)
    for step in range(4):
        np.testing.assert_allclose(float(optimizer.learning_rate),
                                   torch_one_cycle(step, 1e-2, 10, 0.3), rtol=1e-6)
        optimizer.apply([1.0], [variable])


def test_serialization_round_trip():
    schedule = OneCycleSchedule(1e-3, 500, pct_start=0.25, div_factor=10.0,
                                final_div_factor=100.0)
    restored = keras.optimizers.schedules.deserialize(
        keras.optimizers.schedules.serialize(schedule)
    )
    assert isinstance(restored, OneCycleSchedule)
    assert restored.get_config() == schedule.get_config()
    assert float(restored(123)) == float(schedule(123))


@pytest.mark.parametrize(
    "kwargs, argument",
    [
        (dict(max_learning_rate=0.0), "max_learning_rate"),
        (dict(total_steps=0), "total_steps"),
        (dict(pct_start=0.0), "pct_start"),
        (dict(pct_start=1.0), "pct_start"),
        (dict(div_factor=0.0), "div_factor"),
    ],
)
def test_invalid_arguments(kwargs, argument):
    arguments = dict(max_learning_rate=1e-3, total_steps=100)
    arguments.update(kwargs)
    with pytest.raises(ValueError, match=argument):
        OneCycleSchedule(**arguments)
