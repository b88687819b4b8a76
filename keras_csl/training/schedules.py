"""The one-cycle learning-rate schedule of the authors' recipe."""

import math

import keras
from keras import ops


@keras.saving.register_keras_serializable(package="keras_csl")
class OneCycleSchedule(keras.optimizers.schedules.LearningRateSchedule):
    """One-cycle learning rate, as `torch.optim.lr_scheduler.OneCycleLR`.

    The two-phase cycle of Smith & Topin with cosine annealing, step for
    step the values of PyTorch's `OneCycleLR(optimizer, max_lr,
    total_steps, pct_start, anneal_strategy="cos", div_factor,
    final_div_factor, three_phase=False)` after `step` calls of
    `scheduler.step()`: from `max_lr / div_factor` up to `max_lr` at step
    `pct_start * total_steps - 1`, then down to
    `max_lr / (div_factor * final_div_factor)` at step `total_steps - 1`.
    Keras evaluates it at `optimizer.iterations`, so it advances once per
    batch. Steps past the end keep the last value (PyTorch raises). In a
    run too short to warm up (`pct_start * total_steps <= 1`), the decay
    starts at once, as in PyTorch.
    PyTorch's momentum cycling (`cycle_momentum`) is not part of it.

    Example:

    >>> schedule = OneCycleSchedule(2e-4, total_steps=100, pct_start=0.2)
    >>> [float(f"{float(schedule(s)):.4g}") for s in (0, 19, 99)]
    [8e-06, 0.0002, 8e-10]

    Args:
        max_learning_rate: the peak learning rate (`max_lr`).
        total_steps: number of optimizer steps of the whole run.
        pct_start: fraction of the steps spent warming up. Defaults to 0.2
            as in the authors' recipe (PyTorch's default is 0.3).
        div_factor: the initial rate is `max_learning_rate / div_factor`.
        final_div_factor: the final rate is the initial one divided by this.
        name: name of the schedule.
    """

    def __init__(
        self,
        max_learning_rate,
        total_steps,
        pct_start=0.2,
        div_factor=25.0,
        final_div_factor=1e4,
        name="one_cycle",
    ):
        super().__init__()
        if not (isinstance(max_learning_rate, (int, float)) and max_learning_rate > 0):
            raise ValueError(
                "Invalid value for argument `max_learning_rate`. Expected a "
                f"number > 0. Received: max_learning_rate={max_learning_rate!r}"
            )
        if not isinstance(total_steps, int) or total_steps < 1:
            raise ValueError(
                "Invalid value for argument `total_steps`. Expected an integer "
                f">= 1. Received: total_steps={total_steps!r}"
            )
        if not (isinstance(pct_start, (int, float)) and 0 < pct_start < 1):
            raise ValueError(
                "Invalid value for argument `pct_start`. Expected a fraction "
                f"in (0, 1). Received: pct_start={pct_start!r}"
            )
        for argument, value in (
            ("div_factor", div_factor),
            ("final_div_factor", final_div_factor),
        ):
            if not (isinstance(value, (int, float)) and value > 0):
                raise ValueError(
                    f"Invalid value for argument `{argument}`. Expected a "
                    f"number > 0. Received: {argument}={value!r}"
                )
        self.max_learning_rate = float(max_learning_rate)
        self.total_steps = total_steps
        self.pct_start = float(pct_start)
        self.div_factor = float(div_factor)
        self.final_div_factor = float(final_div_factor)
        self.name = name

    @property
    def initial_learning_rate(self):
        return self.max_learning_rate / self.div_factor

    @property
    def final_learning_rate(self):
        return self.initial_learning_rate / self.final_div_factor

    def __call__(self, step):
        # float64: in float32 the phase fraction loses ~1e-4 (relative) of
        # the rate over a 50k-step run.
        step = ops.cast(ops.convert_to_tensor(step), "float64")
        def constant(value):
            return ops.convert_to_tensor(value, dtype="float64")

        last = constant(self.total_steps - 1)
        warmup_end = constant(float(self.pct_start * self.total_steps) - 1)
        step = ops.minimum(step, last)
        warming = step <= warmup_end
        # Both branches are computed: keep the unused one finite.
        pct = ops.where(
            warming,
            step / ops.maximum(warmup_end, constant(1e-12)),
            (step - warmup_end) / ops.maximum(last - warmup_end, constant(1e-12)),
        )
        start = ops.where(
            warming,
            constant(self.initial_learning_rate),
            constant(self.max_learning_rate),
        )
        end = ops.where(
            warming,
            constant(self.max_learning_rate),
            constant(self.final_learning_rate),
        )
        rate = end + (start - end) / 2.0 * (ops.cos(math.pi * pct) + 1.0)
        return ops.cast(rate, "float32")

    def get_config(self):
        return {
            "max_learning_rate": self.max_learning_rate,
            "total_steps": self.total_steps,
            "pct_start": self.pct_start,
            "div_factor": self.div_factor,
            "final_div_factor": self.final_div_factor,
            "name": self.name,
        }
