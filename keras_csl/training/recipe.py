"""What `recipes/train.py` does, as importable functions.

A recipe config is a Python file with a `get_config(variant)` function
returning a `TrainConfig`; it is named on the command line as
`path/to/config.py` (variant `"full"`) or `path/to/config.py:variant`.
"""

import dataclasses
import importlib.util
import logging
import os

from keras_csl.training import distribute
from keras_csl.training import inputs
from keras_csl.training.config import TrainConfig
from keras_csl.training.config import apply_overrides
from keras_csl.training.loop import train

logger = logging.getLogger(__name__)


def load_config(spec, overrides=()):
    """Loads `path.py[:variant]` and applies `"field=value"` overrides.

    Example:

    >>> load_config("recipes/configs/coco_rps.py:smoke").backbone
    'tiny'

    Raises:
        ValueError: if the file is missing, has no `get_config`, or the
            function does not return a `TrainConfig`.
    """
    path, _, variant = spec.partition(":")
    variant = variant or "full"
    if not os.path.isfile(path):
        raise ValueError(
            f"Invalid config {spec!r}: expected `path/to/config.py[:variant]`; "
            f"{path} does not exist."
        )
    module_spec = importlib.util.spec_from_file_location(
        "_csl_config_" + os.path.splitext(os.path.basename(path))[0], path
    )
    module = importlib.util.module_from_spec(module_spec)
    module_spec.loader.exec_module(module)
    if not hasattr(module, "get_config"):
        raise ValueError(f"Invalid config {path}: it has no get_config(variant).")
    config = module.get_config(variant)
    if not isinstance(config, TrainConfig):
        raise ValueError(
            f"Invalid config {spec}: get_config({variant!r}) returned "
            f"{type(config).__name__}, expected a TrainConfig."
        )
    return apply_overrides(config, overrides).validate()


def run(config, run_dir, strategy=None, callbacks=(), verbose="auto"):
    """Trains `config` on its TFRecords (or synthetic data) into `run_dir`.

    Creates the strategy first (`MultiWorkerMirroredStrategy` must exist
    before TensorFlow runs any op), writes the synthetic dataset when
    `config.synthetic_examples > 0`, then calls `train`. Running it again
    with the same `run_dir` resumes.

    Returns:
        The `TrainResult`.
    """
    if strategy is None:
        strategy = distribute.make_strategy(config.strategy)
    if config.synthetic_examples > 0:
        config = _with_synthetic_data(config, run_dir, strategy)
    global_batch = config.per_replica_batch_size * strategy.num_replicas_in_sync
    train_data, val_data, steps = inputs.tfrecord_data(config, global_batch)
    return train(
        config,
        train_data,
        val_data,
        steps_per_epoch=steps,
        run_dir=run_dir,
        strategy=strategy,
        callbacks=callbacks,
        verbose=verbose,
    )


def synthetic_dataset_args(config):
    """Sizes and seed of the synthetic data of a config (smoke runs).

    A validation set of a quarter of the training images, at least a batch.
    """
    return dict(
        num_train=config.synthetic_examples,
        num_val=max(config.synthetic_examples // 4, config.per_replica_batch_size),
        num_classes=config.num_classes,
        image_size=config.image_size,
        seed=config.seed,
    )


def _with_synthetic_data(config, run_dir, strategy):
    from keras_csl.training.synthetic import write_synthetic_dataset

    task_type, task_id = distribute.task(strategy)
    # Each worker writes its own copy (same bytes): no race on shared disks.
    folder = "synthetic-data" if task_type is None else (
        f"synthetic-data-{task_type}-{task_id}"
    )
    train_files, val_files = write_synthetic_dataset(
        os.path.join(run_dir, folder), **synthetic_dataset_args(config)
    )
    return dataclasses.replace(
        config,
        train_files=train_files,
        val_files=val_files,
        train_examples=config.synthetic_examples,
    )
