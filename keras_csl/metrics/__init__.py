"""Metrics for partially annotated multi-label classification."""

from keras_csl.metrics.average_precision import PartialMeanAveragePrecision
from keras_csl.metrics.partial_map import partial_mean_average_precision
from keras_csl.metrics.curves import precision_recall_curve
from keras_csl.metrics.curves import precision_recall_from_histograms
from keras_csl.metrics.mean_prediction import MeanPrediction
