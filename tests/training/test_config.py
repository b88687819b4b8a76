"""TrainConfig, overrides and the recipe configs."""

import dataclasses
import inspect
import pathlib

import pytest

from keras_csl.training import TrainConfig
from keras_csl.training import apply_overrides
from keras_csl.training.recipe import load_config

CONFIGS = pathlib.Path(__file__).resolve().parents[2] / "recipes" / "configs"


def test_overrides_parse_literals_and_strings():
    config = apply_overrides(
        TrainConfig(),
        ["epochs=3", "weights=None", "backbone=resnet101", "learning_rate=1",
         "dataset_options={'resize_mode': 'pad'}", "jit_compile=False"],
    )
    assert config.epochs == 3 and config.weights is None
    assert config.backbone == "resnet101"
    assert config.learning_rate == 1.0 and isinstance(config.learning_rate, float)
    assert config.dataset_options == {"resize_mode": "pad"}
    assert config.jit_compile is False


def test_unknown_override_names_the_fields():
    with pytest.raises(ValueError, match="epochz=3.*|Expected `field=value`"):
        apply_overrides(TrainConfig(), ["epochz=3"])


@pytest.mark.parametrize(
    "field, value",
    [("loss_mode", "selectiv"), ("precision", "float16"), ("epochs", 0),
     ("ema_decay", 1.0), ("jit_compile", "yes"), ("prior", ""),
     ("gamma_neg", -1.0), ("clip", 1.0), ("prior_momentum", 1.0),
     ("prior_threshold", 1.5), ("pct_start", 0.0), ("likelihood_topk", -1),
     ("prior_warmup_epochs", 1.5), ("dropout", 1.0), ("weight_decay", float("nan"))],
)
def test_validate_rejects(field, value):
    with pytest.raises(ValueError, match=f"config field `{field}`"):
        dataclasses.replace(TrainConfig(), **{field: value}).validate()


def test_defaults_are_the_authors_recipe():
    config = TrainConfig()
    assert (config.learning_rate, config.weight_decay, config.pct_start) == (2e-4, 1e-4, 0.2)
    assert (config.ema_decay, config.per_replica_batch_size, config.image_size) == (0.9997, 64, 448)
    assert (config.gamma_pos, config.gamma_neg, config.gamma_unannotated) == (0, 1, 4)
    assert (config.prior_threshold, config.likelihood_topk) == (0.5, 5)


@pytest.mark.parametrize("name", ["coco_rps", "coco_fpc", "openimages"])
@pytest.mark.parametrize("variant", ["", ":full", ":prior", ":smoke"])
def test_recipe_configs_load(name, variant):
    config = load_config(f"{CONFIGS / name}.py{variant}")
    assert isinstance(config, TrainConfig)
    if variant == ":smoke":
        assert config.backbone == "tiny" and config.synthetic_examples > 0
        assert config.weights is None and config.precision == "float32"
    if variant == ":prior":
        assert config.loss_mode == "ignore" and config.prior == "none"


def test_fpc_and_rps_use_the_readme_gammas():
    rps = load_config(f"{CONFIGS / 'coco_rps'}.py")
    fpc = load_config(f"{CONFIGS / 'coco_fpc'}.py")
    assert (rps.gamma_pos, rps.gamma_neg, rps.gamma_unannotated) == (0, 1, 4)
    assert (fpc.gamma_pos, fpc.gamma_neg, fpc.gamma_unannotated) == (0, 3, 4)


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


def test_config_fields_are_plain_values():
    # Configs are plain data: JSON-serialisable, no callables.
    for field in dataclasses.fields(TrainConfig):
        assert not inspect.isfunction(field.default)
    assert TrainConfig().to_json()
