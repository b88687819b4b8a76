"""Training: config, run builder, the distributed loop, schedule, optimizer.

TensorFlow only. `build_run` turns a `TrainConfig` into a model (with its
model card), loss, optimizer and the callbacks of `keras_csl.callbacks`;
`train` runs them with a custom distributed step (any strategy, several
hosts included); `model.fit` runs the same callbacks on one device or
under `MirroredStrategy`.
"""

from keras_csl.training import class_prior
from keras_csl.training import distribute
from keras_csl.training import inputs
from keras_csl.training.builder import Run
from keras_csl.training.builder import build_run
from keras_csl.training.config import TrainConfig
from keras_csl.training.config import apply_overrides
from keras_csl.training.distribute import make_strategy
from keras_csl.training.loop import TrainResult
from keras_csl.training.loop import train
from keras_csl.training.optimizers import make_optimizer
from keras_csl.training.schedules import OneCycleSchedule
