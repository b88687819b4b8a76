"""Training: the distributed loop, schedule, optimizer, EMA (TensorFlow only)."""

from keras_csl.training import distribute
from keras_csl.training import inputs
from keras_csl.training.config import TrainConfig
from keras_csl.training.config import apply_overrides
from keras_csl.training.distribute import make_strategy
from keras_csl.training.ema import ModelEMA
from keras_csl.training.loop import TrainResult
from keras_csl.training.loop import train
from keras_csl.training.optimizers import make_optimizer
from keras_csl.training.schedules import OneCycleSchedule
