"""Running mean of the predicted probability of each class."""

import keras
import numpy as np
from keras import ops


@keras.saving.register_keras_serializable(package="keras_csl")
class MeanPrediction(keras.metrics.Metric):
    """Running mean of the predicted probability of each class.

    A cheap class-prior estimate: the mean sigmoid output of the model over
    the training images seen in an epoch (the authors' `ComputePrior` keeps
    the same mean over all epochs). Add it to
    `compile(metrics=[...])` and `keras_csl.callbacks.ClassPriorUpdater`
    turns it into the loss's prior. Memory is O(classes); under
    `tf.distribute` the per-replica sums are added.

    A `sample_weight` per sample weights its predictions (0 drops a padding
    row). The reported value is the mean predicted number of labels per sample
    (the sum of the class means); `class_means()` gives the vector.

    Example:

    >>> metric = keras_csl.metrics.MeanPrediction(2, from_logits=False)
    >>> metric.update_state([[1, -1], [0, 1]], [[0.25, 0.75], [0.5, 0.75]])
    >>> metric.class_means()
    array([0.375, 0.75 ], dtype=float32)
    >>> float(metric.result())  # 0.375 + 0.75
    1.125

    Args:
        num_classes: number of classes.
        from_logits: whether `y_pred` are logits (default).
        name: name of the metric.
        dtype: dtype of the result.

    Raises:
        ValueError: for a bad `num_classes`; from `update_state`, for
            predictions that are not `[batch, num_classes]`.
    """

    def __init__(
        self, num_classes, from_logits=True, name="mean_prediction", dtype=None
    ):
        super().__init__(name=name, dtype=dtype)
        if not isinstance(num_classes, (int, np.integer)) or num_classes < 1:
            raise ValueError(
                "Invalid value for argument `num_classes`. Expected a "
                f"positive integer. Received: num_classes={num_classes!r}"
            )
        self.num_classes = int(num_classes)
        self.from_logits = from_logits
        self.total = self.add_variable(
            shape=(self.num_classes,),
            initializer="zeros",
            dtype="float32",
            aggregation="sum",
            name="total",
        )
        self.count = self.add_variable(
            shape=(), initializer="zeros", dtype="float32", aggregation="sum",
            name="count",
        )

    def update_state(self, y_true, y_pred, sample_weight=None):
        y_pred = ops.cast(ops.convert_to_tensor(y_pred), "float32")
        shape = tuple(y_pred.shape)
        if len(shape) != 2 or shape[-1] not in (None, self.num_classes):
            raise ValueError(
                f"Invalid value for argument `y_pred` of MeanPrediction "
                f"'{self.name}'. Expected shape [batch, {self.num_classes}] "
                f"(num_classes). Received: y_pred.shape={shape}"
            )
        probabilities = ops.sigmoid(y_pred) if self.from_logits else y_pred
        if sample_weight is None:
            self.total.assign_add(ops.sum(probabilities, axis=0))
            self.count.assign_add(ops.cast(ops.shape(probabilities)[0], "float32"))
            return
        # A weight per sample (0 for padding rows) weights its predictions.
        weight = ops.reshape(ops.cast(sample_weight, "float32"), (-1, 1))
        self.total.assign_add(ops.sum(weight * probabilities, axis=0))
        self.count.assign_add(ops.sum(weight))

    def result(self):
        return ops.sum(self.total) / ops.maximum(self.count, 1.0)

    def class_means(self):
        """The mean predicted probability of each class, a NumPy vector."""
        total = ops.convert_to_numpy(self.total)
        count = float(ops.convert_to_numpy(self.count))
        if count == 0:
            raise ValueError(
                f"MeanPrediction '{self.name}' has seen no predictions yet."
            )
        return (np.asarray(total, dtype="float64") / count).astype("float32")

    def get_config(self):
        return {
            "num_classes": self.num_classes,
            "from_logits": self.from_logits,
            "name": self.name,
            "dtype": self.dtype,
        }
