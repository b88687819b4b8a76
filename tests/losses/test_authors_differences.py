"""Where the loss follows the authors' code, and the differences that remain.

Each claim of the README section "What the loss computes" and of the
`ClassAwareSelectiveLoss` docstring about the authors' code is checked
here: `prior_threshold=0` turns the class-aware rule off, the likelihood
top-k is per replica under `tf.distribute`, the ranking key with
`clip > 0`, and the vanishing gradient of confidently wrong negatives with
`clip > 0`. The reference (tests/csl_reference.py) follows their code.
"""

import math

import keras
import numpy as np
import pytest
import tensorflow as tf
from csl_reference import csl_reference
from csl_reference import random_partial_batch

import keras_csl

LN2 = math.log(2.0)


def per_sample(loss, y_true, y_pred):
    return keras.ops.convert_to_numpy(loss(y_true, y_pred))


def gradient(loss, y_true, logits):
    x = tf.Variable(np.asarray(logits, "float32"))
    with tf.GradientTape() as tape:
        value = loss(y_true, x)
    return tape.gradient(value, x).numpy()


class TestPriorThresholdZero:
    """The authors: `if args.prior_threshold:` -- 0 turns the rule off."""

    def test_threshold_zero_excludes_no_class(self):
        # One un-annotated entry per class, all logits 0 (p = 1/2): as a
        # negative each costs (1/2)^2 ln 2 with gamma_unannotated 2.
        y_true = np.array([[-1.0, -1.0, -1.0, 1.0]], "float32")
        y_pred = np.zeros((1, 4), "float32")
        prior = [0.9, 0.3, 0.01, 0.0]
        off = keras_csl.ClassAwareSelectiveLoss(
            prior=prior, prior_threshold=0.0, likelihood_topk=0, reduction=None
        )
        on = keras_csl.ClassAwareSelectiveLoss(
            prior=prior, prior_threshold=0.2, likelihood_topk=0, reduction=None
        )
        # Off: every un-annotated entry counts; the positive costs ln 2.
        np.testing.assert_allclose(per_sample(off, y_true, y_pred), [1.75 * LN2], rtol=1e-6)
        # 0.2: classes 0 and 1 are left out.
        np.testing.assert_allclose(per_sample(on, y_true, y_pred), [1.25 * LN2], rtol=1e-6)
        np.testing.assert_array_equal(off.excluded_classes(), [False] * 4)
        np.testing.assert_array_equal(on.excluded_classes(), [True, True, False, False])

    def test_reference_reads_it_the_same_way(self):
        rng = np.random.default_rng(11)
        targets, logits = random_partial_batch(rng, 6, 50)
        prior = rng.random(50).astype("float32")
        with_prior = csl_reference(targets, logits, prior=prior, prior_threshold=0.0)
        without = csl_reference(targets, logits, prior=None)
        np.testing.assert_array_equal(with_prior, without)
        loss = keras_csl.ClassAwareSelectiveLoss(
            prior=prior, prior_threshold=0.0, reduction=None
        )
        np.testing.assert_allclose(per_sample(loss, targets, logits), with_prior, rtol=2e-5)

    def test_excluded_classes_outside_selective_mode(self):
        loss = keras_csl.ClassAwareSelectiveLoss(mode="ignore", prior_threshold=0.5)
        np.testing.assert_array_equal(loss.excluded_classes([0.9, 0.1]), [False, False])
        assert keras_csl.ClassAwareSelectiveLoss().excluded_classes().shape == (0,)


def test_likelihood_topk_is_per_replica(two_cpu_strategy):
    """With R replicas each ranks its own B / R rows: k per row is kept."""
    rng = np.random.default_rng(5)
    targets, logits = random_partial_batch(rng, 8, 60, p_unannotated=0.9)
    logits[:4] += 3.0  # The first replica's rows hold the likeliest entries.
    with two_cpu_strategy.scope():
        loss = keras_csl.ClassAwareSelectiveLoss(likelihood_topk=2, reduction=None)
    dataset = tf.data.Dataset.from_tensor_slices((targets, logits)).batch(8)
    batch = next(iter(two_cpu_strategy.experimental_distribute_dataset(dataset)))

    @tf.function
    def step(y_true, y_pred):
        return loss(y_true, y_pred)

    results = two_cpu_strategy.run(step, args=batch)
    values = np.concatenate(
        [t.numpy() for t in two_cpu_strategy.experimental_local_results(results)]
    )
    per_replica = np.concatenate([
        csl_reference(targets[:4], logits[:4], likelihood_topk=2),
        csl_reference(targets[4:], logits[4:], likelihood_topk=2),
    ])
    whole_batch = csl_reference(targets, logits, likelihood_topk=2)
    np.testing.assert_allclose(values, per_replica, rtol=2e-5)
    # The same count (2 x 8 = 16 entries) chosen in each half, not overall:
    # the batch-wide ranking would drop nearly all from the first half.
    assert np.abs(whole_batch - per_replica).max() > 1.0


def test_clip_ranking_ties_change_nothing():
    """The authors rank `min(1 - p + clip, 1)`; here the logit.

    Every entry with p <= clip ties at 1 in their key. k is made to reach
    into that tie, so the two pick different entries; those entries cost
    log(1) = 0 with no gradient, so loss and gradient are the same.
    """
    clip = 0.2
    # p = 0.9 (above clip), then p = 0.02, 0.05, 0.1, 0.15 (tied at 1).
    logit = lambda p: math.log(p / (1 - p))  # noqa: E731
    logits = np.array([[logit(0.9), logit(0.02), logit(0.05), logit(0.1), logit(0.15)]], "float32")
    targets = np.full((1, 5), -1.0, "float32")
    k = 3
    # Theirs (a stable argsort stands in for torch.argsort): index order
    # among the tie. Here: the highest logits.
    key = np.minimum(1.0 - 1 / (1 + np.exp(-logits.astype("float64"))) + clip, 1.0)
    theirs = set(np.argsort(key.ravel(), kind="stable")[:k])
    keep = keras.ops.convert_to_numpy(
        keras_csl.losses.selection_weight(logits, targets == -1, likelihood_topk=k)
    )
    ours = set(np.flatnonzero(~keep.ravel()))
    assert theirs == {0, 1, 2} and ours == {0, 3, 4}
    for gamma in (0.0, 2.0):
        loss = keras_csl.ClassAwareSelectiveLoss(
            clip=clip, likelihood_topk=k, gamma_unannotated=gamma, reduction="sum"
        )
        options = dict(clip=clip, likelihood_topk=k, gamma_unannotated=gamma)
        np.testing.assert_allclose(
            per_sample(loss, targets, logits), csl_reference(targets, logits, **options).sum(),
            atol=1e-7,
        )
        np.testing.assert_allclose(
            gradient(loss, targets, logits),
            csl_reference(targets, logits, return_gradient=True, **options),
            atol=1e-7,
        )
    # Every entry left in is tied at p_neg = 1 and costs nothing.
    assert per_sample(loss, targets, logits) == pytest.approx(0.0, abs=1e-7)


def test_clip_gradient_vanishes_for_confidently_wrong_negatives():
    """d/dx log(min(1 - p + m, 1)) = -p (1 - p) / (1 - p + m): -> 0 as p -> 1."""
    logits = np.array([[0.0, 2.0, 5.0, 10.0, 20.0]], "float32")
    negatives = np.zeros_like(logits)
    options = dict(mode="negative", gamma_neg=0.0, reduction="sum")
    clipped = gradient(keras_csl.ClassAwareSelectiveLoss(clip=0.05, **options), negatives, logits)
    plain = gradient(keras_csl.ClassAwareSelectiveLoss(**options), negatives, logits)
    p = 1 / (1 + np.exp(-logits.astype("float64")))
    np.testing.assert_allclose(clipped, p * (1 - p) / (1 - p + 0.05), rtol=1e-4)
    np.testing.assert_allclose(plain, p, rtol=1e-6)
    # At logit 10: 9.1e-4 with clip 0.05 against 1.0 without.
    assert clipped[0, 3] == pytest.approx(9.07e-4, rel=1e-2)
    assert plain[0, 3] == pytest.approx(1.0, abs=1e-4)
    # At logit 20 it is tiny but not 0 here (float32 sigmoid(-20) = 2e-9),
    # while in the authors' float32 arithmetic it is exactly 0 (next test).
    assert 0 < clipped[0, 4] < 1e-7


def test_clip_gradient_is_zero_in_authors_float32_arithmetic():
    torch = pytest.importorskip("torch")
    x = torch.tensor([10.0, 16.0, 17.0, 20.0], requires_grad=True)
    # Their forward for a negative: log(clamp(min(1 - sigmoid(x) + clip, 1), 1e-8)).
    xs_neg = (1.0 - torch.sigmoid(x)).add(0.05).clamp(max=1)
    torch.log(torch.clamp(xs_neg, min=1e-8)).sum().backward()
    grad = -x.grad.numpy()
    assert grad[0] == pytest.approx(9.07e-4, rel=1e-2)
    assert grad[3] == 0.0  # p rounds to 1 in float32 above logit ~16.6.
