"""Losses for multi-label classification with partial annotations."""

from keras_csl.losses.asymmetric import AsymmetricLoss
from keras_csl.losses.selective import ClassAwareSelectiveLoss
from keras_csl.losses.selective import class_aware_selective_loss
from keras_csl.losses.selective import selection_weight
