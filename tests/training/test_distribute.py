"""Strategy selection."""

import json

import pytest
import tensorflow as tf

from keras_csl.training import distribute


@pytest.fixture(autouse=True)
def _fresh_collective_keys():
    # Two MirroredStrategy objects in one process number their collectives
    # from the same keys and TensorFlow mixes them up ("Shape mismatch in
    # the collective instance"); TensorFlow's own tests move each new
    # strategy's keys away (`_collective_key_base`, "only set this in
    # tests"), and so do these, so that a strategy created here never
    # shares keys with one made by another test module.
    tf.distribute.MirroredStrategy._collective_key_base += 100_000


def test_cluster_size():
    assert distribute.cluster_size("") == 0
    config = {"cluster": {"chief": ["a:1"], "worker": ["b:1", "c:1"]},
              "task": {"type": "worker", "index": 0}}
    assert distribute.cluster_size(json.dumps(config)) == 3
    with pytest.raises(ValueError, match="TF_CONFIG"):
        distribute.cluster_size("{not json")


def test_auto_without_gpus_or_cluster_is_the_default_strategy(monkeypatch):
    monkeypatch.delenv("TF_CONFIG", raising=False)
    strategy = distribute.make_strategy("auto")
    assert strategy is tf.distribute.get_strategy()
    assert distribute.is_chief(strategy)
    assert distribute.task(strategy) == (None, 0)
    assert distribute.num_workers(strategy) == 1


def test_explicit_devices_give_mirrored_strategy():
    strategy = distribute.make_strategy("auto", devices=["/cpu:0", "/cpu:1"])
    assert isinstance(strategy, tf.distribute.MirroredStrategy)
    assert strategy.num_replicas_in_sync == 2
    assert distribute.is_chief(strategy)


def test_unknown_kind():
    with pytest.raises(ValueError, match="kind"):
        distribute.make_strategy("tpu")
