"""The recipes' smoke variants, end to end through the TFRecord reader."""

import json
import pathlib

import pytest
import tensorflow as tf

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
    # Running the same command again resumes a finished run: nothing to do.
    again = recipe.run(config, str(tmp_path), verbose=0)
    assert again.history == [] and again.iterations == result.iterations


@pytest.mark.parametrize("name", ["coco_fpc", "openimages"])
def test_other_smoke_variants_run(tmp_path, name):
    config = recipe.load_config(f"{CONFIGS / name}.py:smoke", ["epochs=1"])
    result = recipe.run(config, str(tmp_path), verbose=0)
    assert result.iterations == 256 // config.per_replica_batch_size
    assert tf.train.latest_checkpoint(str(tmp_path / "checkpoints"))
