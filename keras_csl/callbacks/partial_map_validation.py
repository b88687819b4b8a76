"""Validation with the streaming partial mAP, for raw and averaged weights."""

import logging
import math

import keras
import numpy as np

from keras_csl.callbacks import _backend
from keras_csl.metrics.average_precision import PartialMeanAveragePrecision

logger = logging.getLogger(__name__)

# num_thresholds="auto": the exact metric when its buffers take at most this
# many bytes per replica, else the bounded metric with this many bins.
EXACT_BUDGET_BYTES = 256 * 2**20
BOUNDED_BINS = 1000


class PartialMAPValidation(keras.callbacks.Callback):
    """Partial mAP of a validation set after each epoch, raw and EMA weights.

    After each epoch the validation set is predicted batch by batch and
    scored with `keras_csl.metrics.PartialMeanAveragePrecision` (per class,
    over the annotated entries only), once with the model's weights
    (`logs["val_map"]`) and, given a `ModelEMA`, once with the averaged
    weights (`logs["val_map_ema"]`), in percent. Later callbacks
    (`BestModelCheckpoint`, `MetricsLogger`, the progress bar) see both.

    On TensorFlow each replica of the model's `tf.distribute` strategy
    predicts its own batches and updates its own part of the metric inside
    `strategy.run`: no prediction is gathered on the host. Memory per
    replica is the metric's. The exact metric keeps every score: buffers of
    `8 * replicas * max_samples * num_classes` bytes per replica
    (`max_samples`: the rows one replica may receive). The bounded metric
    with `B` bins keeps `8 * num_classes * B` bytes whatever the size of the
    validation set (77 MB for OpenImages' 9,605 classes at `B = 1000`),
    within about 0.03 mAP points of the exact value on large validation
    sets (docs/METRICS.md; on a few dozen images with clustered scores it
    can be off by tenths of a point). `num_thresholds="auto"` (the default)
    takes the exact metric when the number of validation images is known
    and its buffers fit in 256 MiB per replica, else 1000 bins.

    Why not `fit(validation_data=...)` with the metric compiled: fit
    validates the raw weights only (`keras.callbacks.SwapEMAWeights` would
    replace them, not add the EMA's score), `fit` does not run under
    `MultiWorkerMirroredStrategy` (keras-team/keras#20585), and calling
    `model.evaluate` from a callback resets the model's compiled metrics,
    among them the training `MeanPrediction` that `ClassPriorUpdater` reads.

    Example (a model that outputs its input, so the scores are known):

    ```python
    scores = np.array([[0.9, 0.5], [0.8, 0.5], [0.3, 0.1], [0.95, 0.2]])
    targets = np.array([[1, 0], [0, 1], [1, -1], [-1, 0]])
    model = keras.Sequential([keras.Input((2,)), keras.layers.Identity()])
    validation = keras_csl.callbacks.PartialMAPValidation(
        (scores, targets), from_logits=False)
    validation.set_model(model)
    validation.evaluate()  # {"val_map": 66.67}: (AP 5/6 + AP 1/2) / 2
    # In fit, after every epoch, with the EMA's score too:
    # model.fit(..., callbacks=[ema, PartialMAPValidation(val_ds, ema=ema)])
    ```

    Args:
        validation_data: a `tf.data.Dataset` (or iterable) of
            `(images, targets)` batches with targets in {1, 0, -1}, a tuple
            of arrays `(images, targets)`, or `fn(input_context) ->
            tf.data.Dataset` giving each input pipeline its share in
            per-replica batches (`keras_csl.training.inputs`).
        ema: optional `ModelEMA`; its averaged weights are scored too.
        num_thresholds: `"auto"` (default, see above), `None` for the exact
            metric, or the number of bins (>= 2) of the bounded metric.
        max_samples: exact metric: rows kept per replica (must cover every
            row a replica receives; too few is a clear error). Default:
            computed from `num_examples`.
        num_examples: number of validation images; default `len` of the
            arrays, or the `num_examples` attribute of a dataset function
            (`keras_csl.training.inputs` sets it), else unknown.
        from_logits: whether the model outputs logits. Defaults to True.
        batch_size: rows per replica when a dataset or arrays are cut into
            per-replica batches (several replicas). Defaults to 32.
        name: log key of the mAP; the EMA's is `name + "_ema"`.

    Attributes:
        metric: the `PartialMeanAveragePrecision` (holding the last pass).
    """

    def __init__(
        self,
        validation_data,
        ema=None,
        num_thresholds="auto",
        max_samples=None,
        num_examples=None,
        from_logits=True,
        batch_size=None,
        name="val_map",
    ):
        super().__init__()
        if not (num_thresholds in ("auto", None) or (
            isinstance(num_thresholds, int) and not isinstance(num_thresholds, bool)
            and num_thresholds >= 2
        )):
            raise ValueError(
                "Invalid value for argument `num_thresholds`. Expected 'auto', "
                "None (exact) or an integer >= 2. Received: "
                f"num_thresholds={num_thresholds!r}"
            )
        if ema is not None and not hasattr(ema, "averaged_weights"):
            raise ValueError(
                "Invalid value for argument `ema`. Expected a "
                f"keras_csl.callbacks.ModelEMA. Received: ema={ema!r}"
            )
        self.validation_data = validation_data
        self.ema = ema
        self.num_thresholds = num_thresholds
        self.max_samples = max_samples
        self.num_examples = num_examples
        self.from_logits = from_logits
        self.batch_size = batch_size or 32
        self.name = name
        self.metric = None
        self._pass = None

    def on_train_begin(self, logs=None):
        if self.metric is not None:
            return
        num_classes = int(self.model.outputs[0].shape[-1])
        num_thresholds, max_samples = self._metric_size(num_classes)
        with _backend.scope(self.model):
            self.metric = PartialMeanAveragePrecision(
                num_classes,
                from_logits=self.from_logits,
                num_thresholds=num_thresholds,
                max_samples=max_samples,
                name=self.name,
            )
            if _backend.strategy_of(self.model) is not None:
                from keras_csl.callbacks import _tf_evaluation

                self._pass = _tf_evaluation.DistributedPass(
                    self.model, self.metric,
                    _tf_evaluation.as_dataset_fn(self.validation_data,
                                                 self.batch_size),
                ).run
            else:
                self._pass = self._eager_pass

    def _metric_size(self, num_classes):
        """`(num_thresholds, max_samples)` of the metric to create."""
        if self.num_thresholds not in ("auto", None):
            return self.num_thresholds, 1
        strategy = _backend.strategy_of(self.model)
        replicas = 1 if strategy is None else strategy.num_replicas_in_sync
        rows = self.max_samples or self._rows_per_replica(strategy, replicas)
        if self.num_thresholds is None:
            if rows is None:
                raise ValueError(
                    "Invalid value for argument `max_samples`. The exact metric "
                    "(num_thresholds=None) needs the rows one replica may "
                    "receive, or `num_examples`. Received: max_samples=None"
                )
            return None, rows
        if rows is not None and 8 * replicas * rows * num_classes <= EXACT_BUDGET_BYTES:
            return None, rows
        return BOUNDED_BINS, 1

    def _rows_per_replica(self, strategy, replicas):
        """An upper bound of the rows one replica receives, or `None`."""
        count = self.num_examples
        data = self.validation_data
        if count is None and isinstance(data, (tuple, list)):
            count = len(data[0])
        if count is None:
            count = getattr(data, "num_examples", None)
        if count is None or replicas == 1 or _backend.is_multi_worker(strategy):
            return count  # Workers' shares of the files may be uneven.
        # One pipeline: per-replica batches go to the replicas in turn.
        batch = self.batch_size
        return math.ceil(math.ceil(count / batch) / replicas) * batch

    def on_epoch_end(self, epoch, logs=None):
        values = self.evaluate()
        if logs is not None:
            logs.update(values)

    def evaluate(self):
        """Scores the validation set now; returns `{name: mAP[, name_ema]}`."""
        if self._pass is None:
            self.on_train_begin()
        values = {self.name: self._score()}
        if self.ema is not None:
            with self.ema.averaged_weights():
                values[self.name + "_ema"] = self._score()
        return values

    def _score(self):
        self._pass()
        value = float(keras.ops.convert_to_numpy(self.metric.result()))
        if not math.isfinite(value):
            logger.warning(
                "%s is NaN: no class has both an annotated positive and an "
                "annotated negative in the validation set.", self.name,
            )
        return value

    def _eager_pass(self):
        """Other backends: batch by batch on the host's default device."""
        self.metric.reset_state()
        data = self.validation_data
        if isinstance(data, (tuple, list)):
            size = self.batch_size
            data = [
                (data[0][i:i + size], data[1][i:i + size])
                for i in range(0, len(data[0]), size)
            ]
        for batch in data:
            images, targets = batch[0], batch[1]
            logits = np.asarray(self.model.predict_on_batch(images), "float32")
            self.metric.update_state(np.asarray(targets, "float32"), logits)
