"""The recipes' smoke variants, end to end through the TFRecord reader."""

import json
import pathlib

import pytest

from keras_csl.callbacks import TrainingCheckpoint
from keras_csl.models import read_model_card
from keras_csl.training import recipe

CONFIGS = pathlib.Path(__file__).resolve().parents[2] / "recipes" / "configs"


def test_coco_rps_smoke_learns_and_resumes(tmp_path):
    config = recipe.load_config(f"{CONFIGS / 'coco_rps'}.py:smoke")
    result = recipe.run(config, str(tmp_path), verbose=0)
    assert result.iterations == config.epochs * 256 // config.per_replica_batch_size
    # Chance is about 35 on this synthetic set (mean class frequency).
    assert result.best_map > 50, result.history
    lines = (tmp_path / "metrics.jsonl").read_text().splitlines()
    assert [json.loads(line)["epoch"] for line in lines] == [1, 2]
    assert (tmp_path / "prior.csv").exists()
    # The models carry the dataset's classes (classes.csv beside the
    # shards) and the training preprocessing: best.keras serves alone.
    for name in ("best.keras", "final.keras"):
        card = read_model_card(tmp_path / name)
        assert card.class_ids == tuple(f"class_{c}" for c in range(6)), name
        assert card.display_names == tuple(f"Class {c}" for c in range(6))
        assert (card.image_size, card.resize_mode, card.jpeg_downscale) == (32, "squash", True)
        assert card.architecture == "tiny" and card.source == str(tmp_path)
    assert read_model_card(tmp_path / "best.keras").extra["best_epoch"] == result.best_epoch
    # Running the same command again resumes a finished run: nothing to do.
    again = recipe.run(config, str(tmp_path), verbose=0)
    assert again.history == [] and again.iterations == result.iterations


@pytest.mark.parametrize("name", ["coco_fpc", "openimages"])
def test_other_smoke_variants_run(tmp_path, name):
    config = recipe.load_config(f"{CONFIGS / name}.py:smoke", ["epochs=1"])
    result = recipe.run(config, str(tmp_path), verbose=0)
    assert result.iterations == 256 // config.per_replica_batch_size
    assert TrainingCheckpoint(tmp_path / "checkpoints").latest() is not None
