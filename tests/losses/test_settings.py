"""Each loss argument is defined once: the config contract other code uses.

`ClassAwareSelectiveLoss(**config)` must accept exactly what `get_config()`
returns, and `ClassAwareSelectiveLoss().get_config()` must give the
defaults, which are the authors' `train.py` argparse defaults.
"""

import inspect
import json

import numpy as np
import pytest

import keras_csl
from keras_csl.losses import AsymmetricLossSettings
from keras_csl.losses import SelectiveLossSettings

# From `parser.add_argument(...)` in train.py of
# Alibaba-MIIL/PartialLabelingCSL (their names: gamma_unann, alpha_unann),
# written out here so that a changed default in the package fails a test.
AUTHORS_TRAIN_DEFAULTS = dict(
    clip=0.0, gamma_pos=0.0, gamma_neg=1.0, gamma_unannotated=2.0,
    alpha_pos=1.0, alpha_neg=1.0, alpha_unannotated=1.0, likelihood_topk=5,
    prior_threshold=0.05,
)
KERAS_KEYS = {"name", "reduction", "dtype"}


def test_default_config_is_the_authors_defaults():
    config = keras_csl.ClassAwareSelectiveLoss().get_config()
    assert set(config) == set(SelectiveLossSettings.names()) | KERAS_KEYS | {
        "num_classes", "prior",
    }
    for key, value in AUTHORS_TRAIN_DEFAULTS.items():
        assert config[key] == value, key
        assert type(config[key]) is type(value), key
    assert config["mode"] == "selective"
    assert config["likelihood_scope"] == "batch"
    assert config["from_logits"] is True
    assert (config["num_classes"], config["prior"]) == (None, None)
    assert config["name"] == "class_aware_selective_loss"
    assert config["reduction"] == "sum_over_batch_size"
    json.dumps(config)  # Plain values only.


def test_constructor_takes_exactly_its_config():
    loss = keras_csl.ClassAwareSelectiveLoss(
        mode="ignore", gamma_pos=0.5, gamma_neg=2, gamma_unannotated=3.0,
        alpha_pos=1.5, alpha_neg=0.5, alpha_unannotated=0.25, clip=0.1,
        likelihood_topk=np.int64(3), likelihood_scope="sample",
        prior_threshold=0.4, from_logits=False, num_classes=4,
        prior=[0.1, 0.2, 0.3, 0.6], reduction="sum", name="my_csl",
        dtype="float32",
    )
    config = loss.get_config()
    clone = keras_csl.ClassAwareSelectiveLoss(**config)
    assert clone.get_config() == config
    # Values are stored as plain Python types.
    assert config["gamma_neg"] == 2.0 and type(config["likelihood_topk"]) is int
    np.testing.assert_allclose(clone.prior, [0.1, 0.2, 0.3, 0.6], rtol=1e-6)
    # The signature lists exactly the config's keys.
    parameters = inspect.signature(keras_csl.ClassAwareSelectiveLoss).parameters
    assert set(parameters) == set(config)
    for name, parameter in parameters.items():
        assert parameter.kind is inspect.Parameter.KEYWORD_ONLY, name


def test_settings_are_readable_not_assignable():
    loss = keras_csl.ClassAwareSelectiveLoss(gamma_neg=3)
    assert loss.gamma_neg == 3.0 and loss.settings.gamma_neg == 3.0
    with pytest.raises(AttributeError):
        loss.gamma_neg = 4.0


def test_unknown_argument_names_the_accepted_ones():
    with pytest.raises(TypeError, match=r"\['gamma_unann'\].*gamma_unannotated"):
        keras_csl.ClassAwareSelectiveLoss(gamma_unann=4.0)
    with pytest.raises(TypeError, match=r"\['prior'\]"):
        keras_csl.AsymmetricLoss(prior=[0.1])


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(mode="partial"), r"mode='partial'"),
        (dict(likelihood_scope="image"), "likelihood_scope='image'"),
        (dict(gamma_neg=-1.0), "gamma_neg=-1.0"),
        (dict(gamma_pos=True), "gamma_pos=True"),
        (dict(alpha_unannotated=float("nan")), "alpha_unannotated=nan"),
        (dict(clip=1.0), r"\[0, 1\).*clip=1.0"),
        (dict(likelihood_topk=1.5), "likelihood_topk=1.5"),
        (dict(likelihood_topk=-1), "likelihood_topk=-1"),
        (dict(prior_threshold=2.0), "prior_threshold=2.0"),
        (dict(from_logits="yes"), "from_logits='yes'"),
        (dict(num_classes=0), "num_classes=0"),
    ],
)
def test_invalid_settings(kwargs, message):
    with pytest.raises(ValueError, match=f"Invalid value for argument .*{message}"):
        keras_csl.ClassAwareSelectiveLoss(**kwargs)


def test_function_takes_the_same_settings():
    y_true = [[1.0, 0.0, -1.0]]
    y_pred = [[0.0, 0.0, 0.0]]
    # Ignore mode: ln 2 for the positive, (1/2) ln 2 for the negative.
    value = keras_csl.losses.class_aware_selective_loss(y_true, y_pred, mode="ignore")
    np.testing.assert_allclose(np.asarray(value), [1.5 * np.log(2.0)], rtol=1e-6)
    with pytest.raises(TypeError, match="unexpected keyword"):
        keras_csl.losses.class_aware_selective_loss(y_true, y_pred, topk=2)
    parameters = inspect.signature(keras_csl.losses.class_aware_selective_loss).parameters
    assert set(SelectiveLossSettings.names()) <= set(parameters)


def test_asymmetric_loss_settings():
    config = keras_csl.AsymmetricLoss().get_config()
    # ASL's own defaults (Ridnik et al.; the authors' losses.py).
    assert {k: config[k] for k in AsymmetricLossSettings.names()} == dict(
        gamma_pos=1.0, gamma_neg=4.0, clip=0.05, from_logits=True
    )
    loss = keras_csl.AsymmetricLoss(gamma_neg=2, clip=0.0, name="a", reduction="sum")
    config = loss.get_config()
    assert keras_csl.AsymmetricLoss(**config).get_config() == config
    assert set(inspect.signature(keras_csl.AsymmetricLoss).parameters) == set(config)
    with pytest.raises(ValueError, match="clip=-0.1"):
        keras_csl.AsymmetricLoss(clip=-0.1)
