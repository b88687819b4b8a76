"""TrainConfig, the nested loss config, overrides and the recipe configs."""

import dataclasses
import inspect
import json
import pathlib

import pytest

from keras_csl.losses import ClassAwareSelectiveLoss
from keras_csl.training import TrainConfig
from keras_csl.training import apply_overrides
from keras_csl.training.recipe import load_config

CONFIGS = pathlib.Path(__file__).resolve().parents[2] / "recipes" / "configs"


def test_overrides_parse_literals_and_strings():
    config = apply_overrides(
        TrainConfig(),
        ["epochs=3", "weights=None", "backbone=resnet101", "learning_rate=1",
         "dataset_options={'shuffle_buffer': 64}", "jit_compile=False",
         "resize_mode=pad", "jpeg_downscale=False", "resize_method=pillow_bicubic"],
    )
    assert config.epochs == 3 and config.weights is None
    assert config.backbone == "resnet101"
    assert config.learning_rate == 1.0 and isinstance(config.learning_rate, float)
    assert config.dataset_options == {"shuffle_buffer": 64}
    assert config.jit_compile is False
    assert (config.resize_mode, config.jpeg_downscale) == ("pad", False)
    assert config.resize_method == "pillow_bicubic"


def test_the_loss_config_is_the_losses_get_config():
    config = TrainConfig()
    assert config.loss == ClassAwareSelectiveLoss().get_config()
    # Every loss argument is settable, and the loss takes the dict back.
    assert set(inspect.signature(ClassAwareSelectiveLoss).parameters) == set(config.loss)
    loss = ClassAwareSelectiveLoss(**config.loss)
    assert loss.get_config() == config.loss


def test_a_partial_loss_config_is_completed_from_the_defaults():
    config = TrainConfig(loss={"alpha_neg": 2, "likelihood_scope": "sample"})
    defaults = ClassAwareSelectiveLoss().get_config()
    assert config.loss == dict(defaults, alpha_neg=2.0, likelihood_scope="sample")
    assert isinstance(config.loss["alpha_neg"], float)
    # with_loss changes some settings and keeps the others.
    changed = config.with_loss(gamma_neg=3.0)
    assert changed.loss == dict(config.loss, gamma_neg=3.0)
    # replace(loss=...) starts from the defaults again (documented).
    assert dataclasses.replace(config, loss={"clip": 0.05}).loss["alpha_neg"] == 1.0


def test_loss_overrides_on_the_command_line():
    config = apply_overrides(TrainConfig(), [
        "loss.gamma_neg=2", "loss.mode=ignore", "loss.likelihood_scope=sample",
        "loss.alpha_unannotated=0.5",
    ])
    assert config.loss["gamma_neg"] == 2.0 and isinstance(config.loss["gamma_neg"], float)
    assert config.loss["mode"] == "ignore"
    assert config.loss["likelihood_scope"] == "sample"
    assert config.loss["alpha_unannotated"] == 0.5
    config.validate()


def test_unknown_and_old_names_are_clear_errors():
    with pytest.raises(ValueError, match="Unknown keys 'gamma_negative'"):
        TrainConfig(loss={"gamma_negative": 1.0})
    with pytest.raises(ValueError, match="did you mean 'mode'"):
        apply_overrides(TrainConfig(), ["loss.loss_mode=ignore"])
    with pytest.raises(ValueError, match="`gamma_neg` is now `loss.gamma_neg`"):
        apply_overrides(TrainConfig(), ["gamma_neg=2"])
    with pytest.raises(ValueError, match="epochz=3"):
        apply_overrides(TrainConfig(), ["epochz=3"])
    with pytest.raises(TypeError, match="gamma_neg"):
        TrainConfig(gamma_neg=2.0)  # pylint: disable=unexpected-keyword-arg


@pytest.mark.parametrize(
    "field, value",
    [("precision", "float16"), ("epochs", 0), ("ema_decay", 1.0),
     ("jit_compile", "yes"), ("prior", ""), ("prior_momentum", 1.0),
     ("pct_start", 0.0), ("prior_warmup_epochs", 1.5), ("dropout", 1.0),
     ("weight_decay", float("nan")), ("resize_mode", "stretch"),
     ("jpeg_downscale", "yes"), ("resize_method", "bicubic"),
     ("val_num_thresholds", 1)],
)
def test_validate_rejects(field, value):
    with pytest.raises(ValueError, match=f"config field `{field}`"):
        dataclasses.replace(TrainConfig(), **{field: value}).validate()


@pytest.mark.parametrize(
    "loss, message",
    [({"mode": "selectiv"}, "argument `mode`"),
     ({"gamma_neg": -1.0}, "argument `gamma_neg`"),
     ({"clip": 1.0}, "argument `clip`"),
     ({"prior_threshold": 1.5}, "argument `prior_threshold`"),
     ({"likelihood_topk": -1}, "argument `likelihood_topk`"),
     ({"likelihood_scope": "image"}, "argument `likelihood_scope`"),
     ({"prior": [0.5] * 80}, "config field `loss.prior`"),
     ({"num_classes": 3}, "config field `loss.num_classes`"),
     ({"from_logits": False}, "config field `loss.from_logits`"),
     ({"reduction": None}, "config field `loss.reduction`")],
)
def test_validate_checks_the_loss_with_the_losses_own_rules(loss, message):
    with pytest.raises(ValueError, match=message) as error:
        TrainConfig(loss=loss).validate()
    assert "config field `loss" in str(error.value)


def test_preprocessing_is_typed_not_in_dataset_options():
    with pytest.raises(ValueError, match="set `resize_mode=...`"):
        TrainConfig(dataset_options={"resize_mode": "pad"}).validate()
    with pytest.raises(ValueError, match="`jpeg_downscale=...`"):
        TrainConfig(dataset_options={"jpeg_downscale": False}).validate()
    with pytest.raises(ValueError, match="set `resize_method=...`"):
        TrainConfig(dataset_options={"resize_method": "pillow_bicubic"}).validate()


def test_training_writes_the_resize_method_into_the_card():
    from keras_csl.models import build_model
    from keras_csl.training import builder

    config = TrainConfig(num_classes=3, image_size=32, backbone="tiny",
                         resize_method="pillow_bicubic", jpeg_downscale=False)
    card = builder._model_card(config, build_model("tiny", 3, 32), None, False)
    assert (card.resize_method, card.jpeg_downscale) == ("pillow_bicubic", False)
    # A run's config.json written before the field existed: the old default.
    values = TrainConfig().to_dict()
    del values["resize_method"]
    assert TrainConfig.from_dict(values).resize_method == "bilinear"


def test_the_tfrecord_inputs_read_with_the_configs_preprocessing(monkeypatch):
    import keras_csl.data
    from keras_csl.training import inputs

    calls = []
    monkeypatch.setattr(keras_csl.data, "make_dataset",
                        lambda *args, **kwargs: calls.append(kwargs))
    config = TrainConfig(train_files="d/train-*.tfrecord", val_files="d/val-*.tfrecord",
                         train_examples=8, resize_mode="pad",
                         resize_method="pillow_bicubic", jpeg_downscale=False)
    train_data, val_data, _ = inputs.tfrecord_data(config, 4)
    train_data(None, 0)
    val_data(None)
    assert len(calls) == 2
    for kwargs in calls:
        assert (kwargs["resize_mode"], kwargs["resize_method"],
                kwargs["jpeg_downscale"]) == ("pad", "pillow_bicubic", False)


def test_defaults():
    config = TrainConfig()
    assert (config.learning_rate, config.weight_decay, config.pct_start) == (2e-4, 1e-4, 0.2)
    assert (config.ema_decay, config.per_replica_batch_size, config.image_size) == (0.9997, 64, 448)
    # The loss's defaults: the authors' train.py argparse values.
    loss = config.loss
    assert (loss["gamma_pos"], loss["gamma_neg"], loss["gamma_unannotated"]) == (0, 1, 2)
    assert (loss["prior_threshold"], loss["likelihood_topk"]) == (0.05, 5)
    assert (config.resize_mode, config.jpeg_downscale) == ("squash", True)
    assert config.resize_method == "bilinear"


@pytest.mark.parametrize("name", ["coco_rps", "coco_fpc", "openimages"])
@pytest.mark.parametrize("variant", ["", ":full", ":prior", ":smoke"])
def test_recipe_configs_load(name, variant):
    config = load_config(f"{CONFIGS / name}.py{variant}")
    assert isinstance(config, TrainConfig)
    # The README recipes: top-k 5 and threshold 0.5 in every variant.
    assert (config.loss["likelihood_topk"], config.loss["prior_threshold"]) == (5, 0.5)
    if variant == ":smoke":
        assert config.backbone == "tiny" and config.synthetic_examples > 0
        assert config.weights is None and config.precision == "float32"
    if variant == ":prior":
        assert config.loss["mode"] == "ignore" and config.prior == "none"


def test_fpc_and_rps_use_the_readme_gammas():
    rps = load_config(f"{CONFIGS / 'coco_rps'}.py")
    fpc = load_config(f"{CONFIGS / 'coco_fpc'}.py")
    gammas = ("gamma_pos", "gamma_neg", "gamma_unannotated")
    assert tuple(rps.loss[g] for g in gammas) == (0, 1, 4)
    assert tuple(fpc.loss[g] for g in gammas) == (0, 3, 4)
    assert fpc.loss["mode"] == rps.loss["mode"] == "selective"


@pytest.mark.parametrize("name", ["coco_rps", "coco_fpc", "openimages"])
def test_config_docstrings_give_command_time_and_paper_map(name):
    path = CONFIGS / f"{name}.py"
    text = path.read_text()
    doc = text.split('"""')[1]
    assert "python recipes/train.py --config=recipes/configs/" in doc
    assert ":smoke" in doc and "paper" in doc and "mAP" in doc
    assert "Hardware and time" in doc


def test_load_config_errors(tmp_path):
    with pytest.raises(ValueError, match="does not exist"):
        load_config(str(tmp_path / "missing.py"))
    bad = tmp_path / "bad.py"
    bad.write_text("def get_config(variant):\n    return {}\n")
    with pytest.raises(ValueError, match="TrainConfig"):
        load_config(str(bad))
    with pytest.raises(ValueError, match="variant"):
        load_config(f"{CONFIGS / 'coco_rps'}.py:huge")


def test_json_round_trip_and_old_dicts():
    config = TrainConfig(loss={"gamma_neg": 3.0}, resize_mode="crop")
    again = TrainConfig.from_dict(json.loads(config.to_json()))
    assert again == config
    old = dict(config.to_dict(), loss_mode="selective", gamma_neg=1.0)
    del old["loss"]
    with pytest.raises(ValueError, match="older keras-csl.*gamma_neg -> loss.gamma_neg"):
        TrainConfig.from_dict(old)
    old_options = dict(config.to_dict(), dataset_options={"resize_mode": "pad"})
    with pytest.raises(ValueError, match=r"dataset_options\['resize_mode'\] -> resize_mode"):
        TrainConfig.from_dict(old_options)


def test_config_fields_are_plain_values():
    # Configs are plain data: JSON-serialisable, no callables.
    for field in dataclasses.fields(TrainConfig):
        assert not inspect.isfunction(field.default)
    assert TrainConfig().to_json()
