"""Losses for multi-label classification with partial annotations."""

from keras_csl.losses.asymmetric import AsymmetricLoss
from keras_csl.losses.selection import selection_weight
from keras_csl.losses.selective import ClassAwareSelectiveLoss
from keras_csl.losses.selective import class_aware_selective_loss
from keras_csl.losses.settings import AsymmetricLossSettings
from keras_csl.losses.settings import SelectiveLossSettings
