"""Choosing a `tf.distribute` strategy and the role of this worker.

`make_strategy("auto")` picks, in this order:

1. `MultiWorkerMirroredStrategy` when the `TF_CONFIG` environment variable
   describes a cluster of several workers (one process per host, each with
   all its GPUs), e.g. on host 0 of two:

   ```
   TF_CONFIG='{"cluster": {"worker": ["host0:12345", "host1:12345"]},
               "task": {"type": "worker", "index": 0}}'
   ```
2. `MirroredStrategy` over all visible GPUs when there are several.
3. The default strategy otherwise (one GPU, or the CPU).

`MultiWorkerMirroredStrategy` must be created before TensorFlow runs any
op (create the strategy first thing in `main`).

Strategies are created once per process and kind (and devices), then
reused: two `MirroredStrategy` objects over the same devices in one process
number their collective all-reduces from the same keys, and TensorFlow then
mixes up the collectives of the second with those of the first ("Shape
mismatch in the collective instance"). Reusing one strategy for several
models is supported.
"""

import json
import logging
import os

import tensorflow as tf

from keras_csl.callbacks import _backend

logger = logging.getLogger(__name__)

KINDS = ("auto", "default", "mirrored", "multi_worker")

_STRATEGIES = {}


def cluster_size(tf_config=None):
    """Number of worker tasks (`chief` + `worker`) in `TF_CONFIG`; 0 if none."""
    if tf_config is None:
        tf_config = os.environ.get("TF_CONFIG", "")
    if not tf_config:
        return 0
    try:
        cluster = json.loads(tf_config).get("cluster", {})
    except json.JSONDecodeError as error:
        raise ValueError(
            f"Invalid TF_CONFIG: expected JSON. Received: {tf_config!r} ({error})"
        ) from None
    return len(cluster.get("chief", [])) + len(cluster.get("worker", []))


def make_strategy(kind="auto", devices=None):
    """Creates the `tf.distribute` strategy to train with.

    Example:

    >>> make_strategy("mirrored", devices=["/cpu:0"]).num_replicas_in_sync
    1

    Args:
        kind: `"auto"` (see the module docstring), `"default"` (no
            distribution), `"mirrored"` (`MirroredStrategy` over `devices`,
            or all GPUs) or `"multi_worker"` (`MultiWorkerMirroredStrategy`
            from `TF_CONFIG`).
        devices: device names for `"mirrored"` (e.g. `["/cpu:0", "/cpu:1"]`
            in tests with logical CPUs); with `"auto"` they select
            `MirroredStrategy` over them.

    Returns:
        A `tf.distribute.Strategy`.

    Raises:
        ValueError: for an unknown kind.
    """
    if kind not in KINDS:
        raise ValueError(
            f"Invalid value for argument `kind`. Expected one of {KINDS}. "
            f"Received: kind={kind!r}"
        )
    if kind == "auto":
        if cluster_size() > 1:
            kind = "multi_worker"
        elif devices or len(tf.config.list_logical_devices("GPU")) > 1:
            kind = "mirrored"
        else:
            kind = "default"
    if kind == "default":
        return tf.distribute.get_strategy()
    key = (kind, tuple(devices) if devices else None)
    if key in _STRATEGIES:
        return _STRATEGIES[key]
    if kind == "multi_worker":
        strategy = tf.distribute.MultiWorkerMirroredStrategy()
    else:
        strategy = tf.distribute.MirroredStrategy(devices)
    _STRATEGIES[key] = strategy
    logger.info(
        "Strategy %s: %d replica(s) in sync, %d worker(s).",
        type(strategy).__name__,
        strategy.num_replicas_in_sync,
        num_workers(strategy),
    )
    return strategy


def is_multi_worker(strategy):
    """Whether `strategy` is a `MultiWorkerMirroredStrategy`."""
    return _backend.is_multi_worker(strategy)


def num_workers(strategy):
    """Number of worker processes taking part in `strategy`."""
    if not is_multi_worker(strategy):
        return 1
    spec = strategy.cluster_resolver.cluster_spec().as_dict()
    return len(spec.get("chief", [])) + len(spec.get("worker", []))


def task(strategy):
    """`(task_type, task_id)` of this worker; `(None, 0)` for one process."""
    return _backend.task(strategy)


def is_chief(strategy):
    """Whether this worker writes checkpoints, logs and the best model.

    The `chief` task if the cluster has one, else worker 0 (the TF docs'
    convention); always true for a single process. (The callbacks ask the
    same question of their model's strategy.)
    """
    return _backend.is_chief(strategy)
