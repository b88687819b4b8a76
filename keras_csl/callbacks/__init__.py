"""Callbacks of keras-csl."""

from keras_csl.callbacks.class_prior_updater import ClassPriorUpdater
