"""Callbacks of keras-csl: a training run's duties, for `fit` and the loop.

Each is a `keras.callbacks.Callback` (`keras.ops` only) that works with
`model.fit` and with `keras_csl.training.train`'s multi-worker loop alike:

- `ClassPriorUpdater`: re-estimates the loss's class prior every N epochs.
- `ModelEMA`: the exponential moving average of all weights.
- `PartialMAPValidation`: the streaming partial mAP of a validation set,
  for raw and averaged weights, under the model's distribution strategy.
- `BestModelCheckpoint`: the best model (raw or EMA weights) with its card.
- `TrainingCheckpoint`: the whole training state each epoch; resume.
- `MetricsLogger`: one JSON line of metrics per epoch.
"""

from keras_csl.callbacks.best_model_checkpoint import BestModelCheckpoint
from keras_csl.callbacks.class_prior_updater import ClassPriorUpdater
from keras_csl.callbacks.metrics_logger import MetricsLogger
from keras_csl.callbacks.model_ema import ModelEMA
from keras_csl.callbacks.partial_map_validation import PartialMAPValidation
from keras_csl.callbacks.training_checkpoint import TrainingCheckpoint
