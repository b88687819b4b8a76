"""keras-csl: Class-aware Selective Loss for partially annotated labels.

Losses, priors, metrics and callbacks use `keras.ops` only and run on the
TensorFlow, JAX and PyTorch backends, and so do the models
(`keras_csl.models`). The TensorFlow-only parts (the TFRecord data pipeline,
export for TF Serving, inference, distributed training) are imported on
first use: `keras_csl.data`, `keras_csl.export`, `keras_csl.inference`,
`keras_csl.training`.
"""

import importlib

from keras_csl import callbacks
from keras_csl import losses
from keras_csl import metrics
from keras_csl import models
from keras_csl import priors
from keras_csl.losses import AsymmetricLoss
from keras_csl.losses import ClassAwareSelectiveLoss
from keras_csl.version import __version__

_LAZY_MODULES = ("data", "export", "inference", "training")


def __getattr__(name):
    if name in _LAZY_MODULES:
        return importlib.import_module(f"keras_csl.{name}")
    raise AttributeError(f"module 'keras_csl' has no attribute {name!r}")
