"""Test set-up: TensorFlow backend, quiet logs, two logical CPUs.

Splitting the CPU into two logical devices must happen before TensorFlow
initialises, so it is done here, once; tests then run MirroredStrategy on
"/cpu:0" and "/cpu:1" without GPUs (ops default to "/cpu:0").
"""

import os
import pathlib

os.environ.setdefault("KERAS_BACKEND", "tensorflow")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import pytest  # noqa: E402
import tensorflow as tf  # noqa: E402

_cpus = tf.config.list_physical_devices("CPU")
if not tf.config.get_logical_device_configuration(_cpus[0]):
    tf.config.set_logical_device_configuration(
        _cpus[0],
        [tf.config.LogicalDeviceConfiguration()] * 2,
    )

SHARED_DATA = pathlib.Path(__file__).resolve().parents[1].parent / "shared" / "data"


@pytest.fixture
def shared_data():
    """The read-only real data of ../shared/data; skips when absent."""
    if not SHARED_DATA.is_dir():
        pytest.skip(f"shared data not found at {SHARED_DATA}")
    return SHARED_DATA


@pytest.fixture(scope="session")
def two_cpu_strategy():
    """One `MirroredStrategy` over the two logical CPUs, shared by all tests.

    Two instances in one process number their collectives alike and can
    collide ("Shape mismatch in the collective instance"); `make_strategy`
    hands out one instance per device list.
    """
    from keras_csl.training import make_strategy

    return make_strategy("mirrored", devices=["/cpu:0", "/cpu:1"])
