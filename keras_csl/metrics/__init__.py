"""Metrics for partially annotated multi-label classification."""

from keras_csl.metrics.mean_prediction import MeanPrediction
