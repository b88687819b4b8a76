import inspect
import zlib
import math

import keras
import numpy as np
import pytest
import tensorflow as tf
from csl_reference import csl_reference
from csl_reference import random_partial_batch

import keras_csl
from keras_csl.losses import selection

LN2, LN3 = math.log(2.0), math.log(3.0)
LN43 = math.log(4.0 / 3.0)

# sigmoid(ln 3) = 3/4, sigmoid(0) = 1/2, sigmoid(-ln 3) = 1/4.
LOGITS = np.array(
    [[0.0, LN3, -LN3, 0.0], [LN3, 0.0, 0.0, -LN3]], dtype="float32"
)
TARGETS = np.array([[1, 0, -1, -1], [-1, 1, 0, -1]], dtype="float32")

# Hand-checked per-sample values with the default gammas (0, 1, 2), alpha 1:
#   row 0: pos p=1/2 -> ln2; neg p=3/4 -> (3/4) * ln4;
#          unann p=1/4 -> (1/4)^2 * ln(4/3); unann p=1/2 -> (1/2)^2 * ln2
#   row 1: unann p=3/4 -> (3/4)^2 * ln4; pos p=1/2 -> ln2;
#          neg p=1/2 -> (1/2) * ln2; unann p=1/4 -> (1/4)^2 * ln(4/3)
NEGATIVE = [2.75 * LN2 + LN43 / 16, 2.625 * LN2 + LN43 / 16]
IGNORE = [2.5 * LN2, 1.5 * LN2]
# Top-1 per sample in the batch (K = 2): entries (1,0) p=3/4 and (0,3) p=1/2.
SELECTIVE_TOP1 = [2.5 * LN2 + LN43 / 16, 1.5 * LN2 + LN43 / 16]
# Prior 0.9 > 0.5 on class 0 removes (1,0) only.
SELECTIVE_PRIOR = [2.75 * LN2 + LN43 / 16, 1.5 * LN2 + LN43 / 16]


def loss_values(loss, y_true=TARGETS, y_pred=LOGITS, **kwargs):
    return keras.ops.convert_to_numpy(loss(y_true, y_pred, **kwargs))


class TestHandChecked:
    def test_negative_mode(self):
        loss = keras_csl.ClassAwareSelectiveLoss(mode="negative", reduction=None)
        np.testing.assert_allclose(loss_values(loss), NEGATIVE, rtol=1e-6)

    def test_ignore_mode(self):
        loss = keras_csl.ClassAwareSelectiveLoss(mode="ignore", reduction=None)
        np.testing.assert_allclose(loss_values(loss), IGNORE, rtol=1e-6)

    def test_selective_without_prior_or_topk_is_negative(self):
        loss = keras_csl.ClassAwareSelectiveLoss(likelihood_topk=0, reduction=None)
        np.testing.assert_allclose(loss_values(loss), NEGATIVE, rtol=1e-6)

    def test_selective_likelihood_topk(self):
        loss = keras_csl.ClassAwareSelectiveLoss(likelihood_topk=1, reduction=None)
        np.testing.assert_allclose(loss_values(loss), SELECTIVE_TOP1, rtol=1e-6)

    def test_selective_prior(self):
        loss = keras_csl.ClassAwareSelectiveLoss(
            likelihood_topk=0,
            prior=[0.9, 0.0, 0.0, 0.0],
            prior_threshold=0.5,
            reduction=None,
        )
        np.testing.assert_allclose(loss_values(loss), SELECTIVE_PRIOR, rtol=1e-6)

    def test_batch_and_sample_scope_differ(self):
        # Make (1,3) likely too: p = 2/3. Batch top-2 takes (1,0) and (1,3);
        # per-sample top-1 takes (0,3) and (1,0).
        logits = LOGITS.copy()
        logits[1, 3] = LN2
        batch = keras_csl.ClassAwareSelectiveLoss(likelihood_topk=1, reduction=None)
        sample = keras_csl.ClassAwareSelectiveLoss(
            likelihood_topk=1, likelihood_scope="sample", reduction=None
        )
        expected_batch = [NEGATIVE[0], 1.5 * LN2]
        # (1,3): p=2/3, p_neg=1/3, weight (2/3)^2, -log(1/3) = ln3.
        expected_sample = [SELECTIVE_TOP1[0], 1.5 * LN2 + 4 / 9 * LN3]
        np.testing.assert_allclose(loss_values(batch, y_pred=logits), expected_batch, rtol=1e-6)
        np.testing.assert_allclose(loss_values(sample, y_pred=logits), expected_sample, rtol=1e-6)

    def test_clip_shifts_negative_probability(self):
        loss = keras_csl.ClassAwareSelectiveLoss(
            mode="negative", clip=0.05, reduction=None
        )
        # Row 0 with p_neg = min(1 - p + 0.05, 1): 0.3, 0.8, 0.55.
        row0 = LN2 - 0.7 * math.log(0.3) - 0.2**2 * math.log(0.8) - 0.45**2 * math.log(0.55)
        np.testing.assert_allclose(loss_values(loss)[0], row0, rtol=1e-6)

    def test_alphas_and_gammas(self):
        loss = keras_csl.ClassAwareSelectiveLoss(
            mode="negative",
            gamma_pos=1.0,
            gamma_neg=0.0,
            gamma_unannotated=0.0,
            alpha_pos=2.0,
            alpha_neg=3.0,
            alpha_unannotated=0.5,
            reduction=None,
        )
        # Row 0: 2 * (1/2) ln2 + 3 ln4 + 0.5 ln(4/3) + 0.5 ln2.
        row0 = LN2 + 6 * LN2 + 0.5 * LN43 + 0.5 * LN2
        np.testing.assert_allclose(loss_values(loss)[0], row0, rtol=1e-6)

    def test_probabilities_input(self):
        loss = keras_csl.ClassAwareSelectiveLoss(
            mode="negative", from_logits=False, reduction=None
        )
        probabilities = 1.0 / (1.0 + np.exp(-LOGITS))
        np.testing.assert_allclose(
            loss_values(loss, y_pred=probabilities), NEGATIVE, rtol=1e-5
        )

    def test_asymmetric_loss(self):
        loss = keras_csl.AsymmetricLoss(reduction=None)
        # Defaults gamma_pos 1, gamma_neg 4, clip 0.05; ASL takes 1 and 0.
        # Row 0 [1, 0, 0, 0]: pos p=1/2 -> (1/2) ln2; neg p=3/4 ->
        # 0.7^4 * -ln 0.3; p=1/4 -> 0.2^4 * -ln 0.8; p=1/2 -> 0.45^4 * -ln 0.55.
        row0 = (
            0.5 * LN2
            - 0.7**4 * math.log(0.3)
            - 0.2**4 * math.log(0.8)
            - 0.45**4 * math.log(0.55)
        )
        full_labels = np.where(TARGETS == -1, 0.0, TARGETS)
        np.testing.assert_allclose(
            loss_values(loss, y_true=full_labels)[0], row0, rtol=1e-6
        )


class TestKerasGrid:
    """The grid every Keras loss gets, on the 2 x 4 hand-checked case."""

    def test_config_round_trip_has_every_init_argument(self):
        loss = keras_csl.ClassAwareSelectiveLoss(
            mode="ignore",
            gamma_pos=0.5,
            gamma_neg=2.0,
            gamma_unannotated=3.0,
            alpha_pos=1.5,
            alpha_neg=0.5,
            alpha_unannotated=0.25,
            clip=0.1,
            likelihood_topk=3,
            likelihood_scope="sample",
            prior_threshold=0.4,
            prior=[0.1, 0.2, 0.3, 0.6],
            from_logits=False,
            reduction="sum",
            name="my_csl",
            dtype="float32",
        )
        config = loss.get_config()
        parameters = inspect.signature(keras_csl.ClassAwareSelectiveLoss).parameters
        assert set(parameters) <= set(config)
        clone = keras_csl.ClassAwareSelectiveLoss.from_config(config)
        assert clone.get_config() == config
        np.testing.assert_allclose(clone.prior, [0.1, 0.2, 0.3, 0.6], rtol=1e-6)
        serialized = keras.losses.serialize(loss)
        revived = keras.losses.deserialize(serialized)
        assert isinstance(revived, keras_csl.ClassAwareSelectiveLoss)
        assert revived.get_config() == config

    def test_asymmetric_config_round_trip(self):
        loss = keras_csl.AsymmetricLoss(gamma_pos=0.0, gamma_neg=2.0, clip=0.0, name="a")
        config = loss.get_config()
        assert set(inspect.signature(keras_csl.AsymmetricLoss).parameters) <= set(config)
        assert keras_csl.AsymmetricLoss.from_config(config).get_config() == config

    def test_unweighted(self):
        loss = keras_csl.ClassAwareSelectiveLoss(mode="negative")
        np.testing.assert_allclose(loss_values(loss), np.mean(NEGATIVE), rtol=1e-6)

    def test_sample_weighted(self):
        loss = keras_csl.ClassAwareSelectiveLoss(mode="negative")
        value = loss_values(loss, sample_weight=np.array([2.0, 0.5]))
        np.testing.assert_allclose(
            value, (2.0 * NEGATIVE[0] + 0.5 * NEGATIVE[1]) / 2, rtol=1e-6
        )

    def test_zero_weighted(self):
        loss = keras_csl.ClassAwareSelectiveLoss(mode="negative")
        assert loss_values(loss, sample_weight=np.zeros(2)) == 0.0

    def test_no_reduction(self):
        loss = keras_csl.ClassAwareSelectiveLoss(mode="negative", reduction=None)
        assert loss_values(loss).shape == (2,)

    def test_sum_reduction(self):
        loss = keras_csl.ClassAwareSelectiveLoss(mode="negative", reduction="sum")
        np.testing.assert_allclose(loss_values(loss), sum(NEGATIVE), rtol=1e-6)

    @pytest.mark.parametrize("dtype", ["float16", "bfloat16", "float64"])
    def test_dtype(self, dtype):
        loss = keras_csl.ClassAwareSelectiveLoss(mode="negative", dtype=dtype, reduction="sum")
        value = loss(TARGETS, LOGITS)
        assert keras.backend.standardize_dtype(value.dtype) == dtype
        rtol = {"float16": 2e-3, "bfloat16": 1e-2, "float64": 1e-6}[dtype]
        np.testing.assert_allclose(
            float(keras.ops.convert_to_numpy(keras.ops.cast(value, "float32"))),
            sum(NEGATIVE),
            rtol=rtol,
        )


SETTINGS = [
    dict(mode="negative"),
    dict(mode="ignore"),
    dict(mode="selective", likelihood_topk=0),
    dict(mode="selective", likelihood_topk=5),
    dict(mode="selective", likelihood_topk=2, likelihood_scope="sample"),
    dict(mode="selective", likelihood_topk=5, prior=True, prior_threshold=0.3),
    # The authors' `if args.prior_threshold:`: 0 turns the prior rule off.
    dict(mode="selective", likelihood_topk=2, prior=True, prior_threshold=0.0),
    dict(mode="selective", likelihood_topk=3, likelihood_scope="sample", prior=True, clip=0.05),
    dict(mode="negative", clip=0.05, gamma_pos=1.0, gamma_neg=4.0, gamma_unannotated=4.0),
    dict(
        mode="selective", gamma_pos=0.0, gamma_neg=3.0, gamma_unannotated=4.0,
        alpha_pos=1.2, alpha_neg=0.7, alpha_unannotated=0.3, prior=True,
        prior_threshold=0.5,
    ),
]


@pytest.mark.parametrize("settings", SETTINGS)
@pytest.mark.parametrize("shape", [(16, 80), (8, 1500), (3, 7)])
def test_matches_numpy_reference(settings, shape):
    rng = np.random.default_rng(zlib.crc32(repr((settings, shape)).encode()))
    targets, logits = random_partial_batch(rng, *shape)
    settings = dict(settings)
    if settings.get("prior"):
        settings["prior"] = rng.random(shape[1]).astype("float32")
    else:
        settings.pop("prior", None)
    expected = csl_reference(targets, logits, **settings)
    loss = keras_csl.ClassAwareSelectiveLoss(reduction=None, **settings)
    np.testing.assert_allclose(loss_values(loss, targets, logits), expected, rtol=2e-5, atol=1e-5)


@pytest.mark.parametrize("settings", SETTINGS)
def test_gradient_matches_numpy_reference(settings):
    rng = np.random.default_rng(len(str(settings)))
    targets, logits = random_partial_batch(rng, 8, 120)
    settings = dict(settings)
    if settings.get("prior"):
        settings["prior"] = rng.random(120).astype("float32")
    else:
        settings.pop("prior", None)
    expected = csl_reference(targets, logits, return_gradient=True, **settings)
    loss = keras_csl.ClassAwareSelectiveLoss(reduction="sum", **settings)
    x = tf.Variable(logits)
    with tf.GradientTape() as tape:
        value = loss(targets, x)
    np.testing.assert_allclose(tape.gradient(value, x).numpy(), expected, rtol=1e-5, atol=1e-7)


def test_matches_reference_at_openimages_width():
    # 9,605 classes use the blocked top-k path.
    rng = np.random.default_rng(7)
    targets, logits = random_partial_batch(rng, 12, 9605, p_unannotated=0.97)
    expected = csl_reference(targets, logits, likelihood_topk=5)
    loss = keras_csl.ClassAwareSelectiveLoss(reduction=None)
    np.testing.assert_allclose(loss_values(loss, targets, logits), expected, rtol=2e-5)


@pytest.mark.parametrize("shape", [(2, 3), (64, 80), (16, 9605), (5, 20000)])
@pytest.mark.parametrize("scope", ["batch", "sample"])
def test_selection_methods_agree(shape, scope):
    rng = np.random.default_rng(shape[1])
    scores = rng.normal(size=shape).astype("float32")
    candidates = rng.random(shape) < 0.8
    by_sort = selection.top_entries_mask(scores, candidates, 5, scope, method="top_k")
    by_bits = selection.top_entries_mask(scores, candidates, 5, scope, method="bits")
    masked = np.where(candidates, scores, -np.inf)
    if scope == "batch":
        k = min(5 * shape[0], masked.size)
        threshold = np.sort(masked.ravel())[::-1][k - 1]
    else:
        k = min(5, shape[1])
        threshold = np.sort(masked, axis=1)[:, ::-1][:, k - 1 : k]
    expected = candidates & (masked >= threshold)
    np.testing.assert_array_equal(keras.ops.convert_to_numpy(by_sort), expected)
    np.testing.assert_array_equal(keras.ops.convert_to_numpy(by_bits), expected)


def test_selection_handles_negative_zero_and_infinities():
    scores = np.array([[-0.0, 0.0, -np.inf, np.inf, -1e-30, 1e-30]], "float32")
    candidates = np.ones_like(scores, dtype=bool)
    for method in ("top_k", "bits"):
        mask = keras.ops.convert_to_numpy(
            selection.top_entries_mask(scores, candidates, 2, "sample", method=method)
        )
        np.testing.assert_array_equal(mask, [[False, False, False, True, False, True]])


def test_topk_clamped_when_few_unannotated():
    targets = np.array([[1, -1, 0], [0, 0, 1]], "float32")
    logits = np.zeros((2, 3), "float32")
    loss = keras_csl.ClassAwareSelectiveLoss(likelihood_topk=5, reduction=None)
    # The single un-annotated entry is dropped; the rest is the annotated loss.
    expected = csl_reference(targets, logits, mode="ignore")
    np.testing.assert_allclose(loss_values(loss, targets, logits), expected, rtol=1e-6)


def test_dynamic_batch_in_graph():
    loss = keras_csl.ClassAwareSelectiveLoss(likelihood_topk=1, reduction=None)
    spec = tf.TensorSpec([None, 4], tf.float32)
    fn = tf.function(lambda t, x: loss(t, x), input_signature=[spec, spec])
    np.testing.assert_allclose(fn(TARGETS, LOGITS).numpy(), SELECTIVE_TOP1, rtol=1e-6)
    wide = tf.function(lambda t, x: loss(t, x), input_signature=[tf.TensorSpec([None, 9605])] * 2)
    rng = np.random.default_rng(3)
    targets, logits = random_partial_batch(rng, 6, 9605, p_unannotated=0.9)
    np.testing.assert_allclose(
        wide(targets, logits).numpy(), csl_reference(targets, logits, likelihood_topk=1), rtol=2e-5
    )


class TestGradients:
    def test_gradient_exactly_zero_where_not_selected(self):
        rng = np.random.default_rng(0)
        targets, logits = random_partial_batch(rng, 8, 300)
        prior = rng.random(300).astype("float32")
        loss = keras_csl.ClassAwareSelectiveLoss(prior=prior, prior_threshold=0.5, reduction="sum")
        x = tf.Variable(logits)
        with tf.GradientTape() as tape:
            value = loss(targets, x)
        grad = tape.gradient(value, x).numpy()
        keep = keras.ops.convert_to_numpy(
            keras_csl.losses.selection_weight(
                logits, targets == -1, likelihood_topk=5, prior=prior, prior_threshold=0.5
            )
        )
        assert (~keep).sum() > 100
        assert np.all(grad[~keep] == 0.0)
        assert np.all(grad[keep] != 0.0)

    def test_focusing_weight_has_no_gradient(self):
        # With gamma_pos = 2 on one positive: d/dx [-(1-p)^2 log p] with the
        # weight held constant is -(1-p)^2 (1-p) = -(1-p)^3.
        loss = keras_csl.ClassAwareSelectiveLoss(mode="negative", gamma_pos=2.0, reduction="sum")
        x = tf.Variable([[0.0]])
        with tf.GradientTape() as tape:
            value = loss([[1.0]], x)
        np.testing.assert_allclose(tape.gradient(value, x).numpy(), [[-0.125]], rtol=1e-6)

    @pytest.mark.parametrize("dtype", ["float16", "bfloat16", "float32"])
    @pytest.mark.parametrize("clip", [0.0, 0.05])
    def test_finite_at_extreme_logits(self, dtype, clip):
        logits = tf.constant([[100.0, -100.0, 100.0, -100.0, 100.0, -100.0]], dtype)
        targets = tf.constant([[1.0, 1.0, 0.0, 0.0, -1.0, -1.0]], dtype)
        loss = keras_csl.ClassAwareSelectiveLoss(
            mode="negative", clip=clip, gamma_neg=0.0, gamma_unannotated=0.0,
            reduction="sum", dtype=dtype,
        )
        with tf.GradientTape() as tape:
            tape.watch(logits)
            value = loss(targets, logits)
        grad = tape.gradient(value, logits)
        assert np.isfinite(tf.cast(value, tf.float32).numpy())
        assert np.all(np.isfinite(tf.cast(grad, tf.float32).numpy()))
        if clip == 0:
            # Wrong-side entries cost about 100 each: positive at -100,
            # negatives at +100; the rest cost ~0.
            np.testing.assert_allclose(tf.cast(value, tf.float32).numpy(), 300.0, rtol=1e-2)

    def test_matches_clamped_formula_below_15(self):
        x = np.linspace(-15, 15, 301, dtype="float32")[None, :]
        for target in (1.0, 0.0, -1.0):
            t = np.full_like(x, target)
            loss = keras_csl.ClassAwareSelectiveLoss(mode="negative", reduction=None)
            np.testing.assert_allclose(
                loss_values(loss, t, x), csl_reference(t, x, mode="negative"), rtol=1e-6
            )


class TestPrior:
    def test_set_prior_and_errors(self):
        loss = keras_csl.ClassAwareSelectiveLoss(num_classes=4, likelihood_topk=0, prior_threshold=0.5, reduction=None)
        assert loss.prior is None
        np.testing.assert_allclose(loss_values(loss), NEGATIVE, rtol=1e-6)
        loss.set_prior([0.9, 0.0, 0.0, 0.0])
        np.testing.assert_allclose(loss_values(loss), SELECTIVE_PRIOR, rtol=1e-6)
        with pytest.raises(ValueError, match="Expected 4 values"):
            loss.set_prior([0.1, 0.2])
        with pytest.raises(ValueError, match=r"values\[1\]=1.5"):
            loss.set_prior([0.1, 1.5, 0.0, 0.0])
        with pytest.raises(ValueError, match="num_classes"):
            keras_csl.ClassAwareSelectiveLoss().set_prior([0.1])

    def test_prior_ignored_outside_selective_mode(self):
        loss = keras_csl.ClassAwareSelectiveLoss(mode="negative", prior=[0.9, 0.9, 0.9, 0.9], reduction=None)
        np.testing.assert_allclose(loss_values(loss), NEGATIVE, rtol=1e-6)

    def test_wrong_number_of_classes(self):
        loss = keras_csl.ClassAwareSelectiveLoss(num_classes=5)
        with pytest.raises(ValueError, match="num_classes=5"):
            loss(TARGETS, LOGITS)

    @pytest.mark.parametrize(
        "kwargs, match",
        [
            (dict(mode="partial"), "mode"),
            (dict(likelihood_scope="image"), "likelihood_scope"),
            (dict(gamma_neg=-1.0), "gamma_neg"),
            (dict(alpha_unannotated=float("nan")), "alpha_unannotated"),
            (dict(clip=1.0), "clip"),
            (dict(likelihood_topk=1.5), "likelihood_topk"),
            (dict(prior_threshold=2.0), "prior_threshold"),
            (dict(num_classes=0), "num_classes"),
            (dict(num_classes=3, prior=[0.1, 0.2]), "Expected 3 values"),
        ],
    )
    def test_invalid_arguments(self, kwargs, match):
        with pytest.raises(ValueError, match=match):
            keras_csl.ClassAwareSelectiveLoss(**kwargs)

    def test_bad_shapes(self):
        loss = keras_csl.ClassAwareSelectiveLoss()
        with pytest.raises(ValueError, match="y_true"):
            loss(TARGETS[:, :3], LOGITS)
        with pytest.raises(ValueError, match="2D"):
            loss(TARGETS[0], LOGITS[0])


def test_save_and_load_keeps_the_prior(tmp_path):
    inputs = keras.Input((3,), name="features")
    model = keras.Model(inputs, keras.layers.Dense(4)(inputs))
    loss = keras_csl.ClassAwareSelectiveLoss(num_classes=4, prior_threshold=0.5)
    model.compile(optimizer="sgd", loss=loss)
    loss.set_prior([0.9, 0.1, 0.6, 0.0])
    path = tmp_path / "model.keras"
    model.save(path)
    revived = keras.saving.load_model(path)
    assert isinstance(revived.loss, keras_csl.ClassAwareSelectiveLoss)
    np.testing.assert_allclose(revived.loss.prior, [0.9, 0.1, 0.6, 0.0])


JAX_SCRIPT = """
import json, sys
import numpy as np
sys.path.insert(0, sys.argv[1])
import jax, keras, keras_csl
from csl_reference import csl_reference, random_partial_batch
assert keras.backend.backend() == "jax"
errors = {}
rng = np.random.default_rng(0)
for name, shape, settings in [
    ("default", (16, 80), dict()),
    ("wide", (8, 9605), dict(likelihood_topk=5)),
    ("sample", (8, 300), dict(likelihood_topk=3, likelihood_scope="sample")),
    ("clip", (8, 300), dict(clip=0.05, mode="negative", gamma_neg=4.0)),
]:
    targets, logits = random_partial_batch(rng, *shape)
    prior = rng.random(shape[1]).astype("float32")
    loss = keras_csl.ClassAwareSelectiveLoss(prior=prior, reduction="sum", **settings)
    value, grad = jax.jit(jax.value_and_grad(lambda x: loss(targets, x)))(logits)
    ref = csl_reference(targets, logits, prior=prior, **settings).sum()
    ref_grad = csl_reference(targets, logits, prior=prior, return_gradient=True, **settings)
    errors[name] = [abs(float(value) - ref) / abs(ref), float(np.abs(np.asarray(grad) - ref_grad).max())]
print(json.dumps(errors))
"""


def test_jax_backend_matches_reference(tmp_path):
    import json
    import os
    import subprocess
    import sys

    script = tmp_path / "jax_loss.py"
    script.write_text(JAX_SCRIPT)
    tests_dir = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    env = dict(os.environ, KERAS_BACKEND="jax", JAX_PLATFORMS="cpu")
    result = subprocess.run(
        [sys.executable, str(script), tests_dir], env=env, capture_output=True, text=True, timeout=300
    )
    assert result.returncode == 0, result.stderr[-3000:]
    errors = json.loads(result.stdout.strip().splitlines()[-1])
    assert set(errors) == {"default", "wide", "sample", "clip"}
    for name, (value_error, grad_error) in errors.items():
        assert value_error < 1e-5, name
        assert grad_error < 1e-6, name


TORCH_SCRIPT = """
import json, sys
import numpy as np
sys.path.insert(0, sys.argv[1])
import torch, keras, keras_csl
from csl_reference import csl_reference, random_partial_batch
assert keras.backend.backend() == "torch"
errors = {}
rng = np.random.default_rng(1)
for name, shape, settings in [
    ("default", (16, 80), dict()),
    ("wide", (8, 9605), dict()),
    ("sample", (8, 300), dict(likelihood_topk=3, likelihood_scope="sample")),
    ("clip", (8, 300), dict(clip=0.05, mode="negative", gamma_neg=4.0)),
]:
    targets, logits = random_partial_batch(rng, *shape)
    prior = rng.random(shape[1]).astype("float32")
    loss = keras_csl.ClassAwareSelectiveLoss(prior=prior, reduction="sum", **settings)
    x = torch.tensor(logits, requires_grad=True)
    value = loss(torch.tensor(targets), x)
    value.backward()
    ref = csl_reference(targets, logits, prior=prior, **settings).sum()
    ref_grad = csl_reference(targets, logits, prior=prior, return_gradient=True, **settings)
    errors[name] = [abs(value.item() - ref) / abs(ref), float(np.abs(x.grad.numpy() - ref_grad).max())]
print(json.dumps(errors))
"""


def test_torch_backend_matches_reference(tmp_path):
    """Runs when PyTorch is installed (it is not a declared dependency)."""
    import importlib.util
    import json
    import os
    import subprocess
    import sys

    if importlib.util.find_spec("torch") is None:
        pytest.skip("PyTorch not installed: the torch-backend check did not run")
    script = tmp_path / "torch_loss.py"
    script.write_text(TORCH_SCRIPT)
    tests_dir = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    env = dict(os.environ, KERAS_BACKEND="torch")
    result = subprocess.run(
        [sys.executable, str(script), tests_dir], env=env, capture_output=True, text=True, timeout=300
    )
    assert result.returncode == 0, result.stderr[-3000:]
    errors = json.loads(result.stdout.strip().splitlines()[-1])
    for name, (value_error, grad_error) in errors.items():
        assert value_error < 1e-5, name
        assert grad_error < 1e-6, name
