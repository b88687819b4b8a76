"""Periodic re-estimation of the class prior during training."""

import logging

import keras
import numpy as np

from keras_csl import priors
from keras_csl.metrics.mean_prediction import MeanPrediction

logger = logging.getLogger(__name__)


class ClassPriorUpdater(keras.callbacks.Callback):
    """Re-estimates the class prior of a `ClassAwareSelectiveLoss` in `fit`.

    Every `every_n_epochs` epochs (after `warmup_epochs`), the prior
    `P_r(c)` is estimated as the mean predicted probability of each class,
    either

    - from the training predictions of the epoch just ended, accumulated by
      a `keras_csl.metrics.MeanPrediction` metric compiled with the model
      (found in `model.metrics` when `tracker` is not given; the authors'
      `ComputePrior` averages training predictions too, but over all epochs
      and without feeding them back into the loss during training: the
      per-epoch reset and the feedback are this package's choices), or
    - from a dedicated inference pass over `dataset` (more faithful, costs a
      pass of inference),

    optionally smoothed as `momentum * old + (1 - momentum) * new`, and
    pushed into the loss with `loss.set_prior()`. Once the loss has a prior,
    each epoch's logs get `prior_above_threshold`: the number of classes
    the class-aware rule keeps out of the loss. The update takes effect in
    the already compiled train step: on TensorFlow through the prior
    variable; on JAX, where a variable owned by the loss is traced as a
    constant, the train and test functions are re-traced after each update.

    Example:

    ```python
    loss = keras_csl.ClassAwareSelectiveLoss(num_classes=80)
    tracker = keras_csl.metrics.MeanPrediction(80)
    model.compile("adam", loss=loss, metrics=[tracker])
    model.fit(train_ds, epochs=10, callbacks=[
        keras_csl.callbacks.ClassPriorUpdater(loss, warmup_epochs=1)])
    loss.prior  # the last estimate, a NumPy vector
    ```

    Args:
        loss: the `ClassAwareSelectiveLoss` to update (built with
            `num_classes`).
        dataset: optional iterable of batches for a dedicated inference pass.
        steps: batches of `dataset` per estimate (`None`: all of it).
        tracker: the `MeanPrediction` metric to read; found automatically.
        every_n_epochs: epochs between updates. Defaults to 1.
        warmup_epochs: epochs before the first update. Defaults to 0.
        momentum: weight of the previous prior (the loss's current one) in
            [0, 1). Defaults to 0.
        csv_path: if set, the prior is written there at each update;
            `{epoch}` in the path is replaced by the 1-based epoch.
        class_ids: class ids for the CSV and the log.
        class_names: display names for the CSV and the log.
        log_top_k: how many of the most frequent classes to log.
        verbose: 1 shows a progress bar for the inference pass.

    Attributes:
        history: list of `(epoch, prior)` of every update in the last `fit`.
    """

    def __init__(
        self,
        loss,
        dataset=None,
        steps=None,
        tracker=None,
        every_n_epochs=1,
        warmup_epochs=0,
        momentum=0.0,
        csv_path=None,
        class_ids=None,
        class_names=None,
        log_top_k=10,
        verbose=1,
    ):
        super().__init__()
        if getattr(loss, "prior_variable", None) is None:
            raise ValueError(
                "Invalid value for argument `loss`. Expected a "
                "ClassAwareSelectiveLoss built with `num_classes` or `prior`. "
                f"Received: loss={loss!r}"
            )
        if not isinstance(every_n_epochs, int) or every_n_epochs < 1:
            raise ValueError(
                "Invalid value for argument `every_n_epochs`. Expected an "
                f"integer >= 1. Received: every_n_epochs={every_n_epochs!r}"
            )
        if not isinstance(warmup_epochs, int) or warmup_epochs < 0:
            raise ValueError(
                "Invalid value for argument `warmup_epochs`. Expected an "
                f"integer >= 0. Received: warmup_epochs={warmup_epochs!r}"
            )
        if not 0 <= momentum < 1:
            raise ValueError(
                "Invalid value for argument `momentum`. Expected a number in "
                f"[0, 1). Received: momentum={momentum!r}"
            )
        if tracker is not None and not isinstance(tracker, MeanPrediction):
            raise ValueError(
                "Invalid value for argument `tracker`. Expected a "
                f"keras_csl.metrics.MeanPrediction. Received: tracker={tracker!r}"
            )
        self.loss = loss
        self.dataset = dataset
        self.steps = steps
        self.tracker = tracker
        self.every_n_epochs = every_n_epochs
        self.warmup_epochs = warmup_epochs
        self.momentum = float(momentum)
        self.csv_path = csv_path
        self.class_ids = class_ids
        self.class_names = class_names
        self.log_top_k = log_top_k
        self.verbose = verbose
        self.history = []

    def on_train_begin(self, logs=None):
        self.history = []
        self._snapshot = None
        self._in_epoch = False

    def on_epoch_begin(self, epoch, logs=None):
        self._in_epoch = True
        self._epoch = epoch
        self._snapshot = None

    def on_test_begin(self, logs=None):
        # Validation inside fit() resets the metrics before it runs: keep the
        # training epoch's means first.
        if self._in_epoch and self.dataset is None and self._is_due(self._epoch):
            self._snapshot = self._find_tracker().class_means()

    def on_epoch_end(self, epoch, logs=None):
        self._in_epoch = False
        if self._is_due(epoch):
            self._update(epoch)
        prior = self.loss.prior
        if prior is not None and logs is not None:
            # How many classes the class-aware rule keeps out of the loss.
            logs["prior_above_threshold"] = int(
                self.loss.excluded_classes(prior).sum()
            )

    def _update(self, epoch):
        if self.dataset is not None:
            estimate = priors.prior_from_predictions(
                self.model,
                self.dataset,
                steps=self.steps,
                from_logits=self.loss.from_logits,
                verbose=self.verbose,
            )
        elif self._snapshot is not None:
            estimate = self._snapshot
        else:
            estimate = self._find_tracker().class_means()
        # The loss holds the previous estimate (restored with a checkpoint,
        # kept across fit() calls), so the smoothing survives a restart.
        previous = self.loss.prior
        if previous is not None and self.momentum > 0:
            estimate = self.momentum * previous + (1 - self.momentum) * estimate
        estimate = np.clip(estimate, 0.0, 1.0).astype("float32")
        self.loss.set_prior(estimate)
        self._retrace_if_needed()
        self.history.append((epoch, estimate))
        self._report(epoch, estimate)

    def _is_due(self, epoch):
        done = epoch + 1 - self.warmup_epochs
        return done > 0 and done % self.every_n_epochs == 0

    def _find_tracker(self):
        tracker = self.tracker or _find_metric(self.model.metrics, MeanPrediction)
        if tracker is None:
            raise ValueError(
                "ClassPriorUpdater needs the training predictions: compile the "
                "model with keras_csl.metrics.MeanPrediction(num_classes) in "
                "`metrics`, or pass `dataset=` for an inference pass."
            )
        if tracker.from_logits != self.loss.from_logits:
            raise ValueError(
                "The MeanPrediction tracker and the loss disagree on their "
                f"inputs: tracker from_logits={tracker.from_logits}, loss "
                f"from_logits={self.loss.from_logits}. Expected the same value."
            )
        self.tracker = tracker
        return tracker

    def _retrace_if_needed(self):
        if keras.backend.backend() != "jax":
            return
        variable = self.loss.prior_variable
        if any(v is variable for v in self.model.non_trainable_variables):
            return
        # The JAX train step closed over the old prior as a constant.
        self.model.make_train_function(force=True)
        self.model.make_test_function(force=True)

    def _report(self, epoch, estimate):
        threshold = self.loss.prior_threshold
        # 0 when the class-aware rule is off (prior_threshold=0, as the
        # authors' `if args.prior_threshold:`).
        excluded = int(self.loss.excluded_classes(estimate).sum())
        top = priors.top_classes(estimate, self.log_top_k, self._names())
        logger.info(
            "Epoch %d: class prior updated; %d of %d classes left out by the "
            "class-aware rule (threshold %.3g). Most frequent: %s",
            epoch + 1,
            excluded,
            len(estimate),
            threshold,
            ", ".join(f"{name} {value:.3f}" for _, name, value in top),
        )
        if self.csv_path:
            path = self.csv_path.replace("{epoch}", str(epoch + 1))
            priors.write_prior_csv(
                path, estimate, class_ids=self.class_ids,
                display_names=self.class_names,
            )

    def _names(self):
        if self.class_names is not None:
            return list(self.class_names)
        if self.class_ids is not None:
            return list(self.class_ids)
        return None


def _find_metric(metrics, kind):
    """Depth-first search of a metric of type `kind` in nested containers."""
    for metric in metrics:
        if isinstance(metric, kind):
            return metric
        children = getattr(metric, "metrics", None)
        if isinstance(children, (list, tuple)) and children:
            found = _find_metric(children, kind)
            if found is not None:
                return found
    return None
