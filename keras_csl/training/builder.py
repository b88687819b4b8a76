"""A training run's parts, built from a `TrainConfig`, for the loop and for `fit`.

`build_run` makes, inside the strategy's scope: the model
(`keras_csl.models.build_model`, or a `model_fn`) with its model card (the
dataset's classes and the training preprocessing), the optimizer with the
one-cycle schedule, the loss from `config.loss`, the `MeanPrediction`
tracker of the class prior, the initial prior, and the callbacks that do
a run's duties, in this order:

    ModelEMA, PartialMAPValidation, BestModelCheckpoint, ClassPriorUpdater,
    TrainingCheckpoint, MetricsLogger, TensorBoard, then yours

`keras_csl.training.train` runs them with its own loop (any strategy,
several hosts included); with one device or `MirroredStrategy`,
`model.fit` runs the same callbacks:

```python
run = build_run(config, steps_per_epoch=100, val_data=val_fn, run_dir="runs/a")
run.model.fit(train_ds, epochs=config.epochs, steps_per_epoch=100,
              callbacks=run.callbacks)
```

The run folder: `config.json` (the config, steps per epoch and global
batch), `checkpoints/`, `best.keras` + `best.weights.h5` + `best.json`,
`metrics.jsonl`, `prior.csv` (online prior), `logs/` (TensorBoard), and
`final.keras` + `final.weights.h5` written by `train` at the end.
"""

import dataclasses
import json
import logging
import os

import keras

from keras_csl import callbacks as csl_callbacks
from keras_csl.callbacks import _backend
from keras_csl.losses import ClassAwareSelectiveLoss
from keras_csl.metrics import MeanPrediction
from keras_csl.models import ModelCard
from keras_csl.models import build_model
from keras_csl.models import set_model_card
from keras_csl.training import class_prior
from keras_csl.training import distribute
from keras_csl.training import inputs
from keras_csl.training.config import check_not_legacy
from keras_csl.training.optimizers import make_optimizer
from keras_csl.training.schedules import OneCycleSchedule

logger = logging.getLogger(__name__)

# Config fields that must not change when a run is resumed: they fix the
# number of steps, the schedule and the shapes of the checkpoint.
RESUME_FIELDS = (
    "epochs", "per_replica_batch_size", "learning_rate", "pct_start",
    "backbone", "num_classes", "image_size", "ema_decay", "seed",
    "steps_per_epoch", "global_batch_size",
)


@dataclasses.dataclass
class Run:
    """What `build_run` returns: the parts of one training run.

    Attributes:
        config: the `TrainConfig`.
        strategy: the `tf.distribute.Strategy` everything was built in.
        model: the compiled model, holding its `ModelCard`.
        loss: the `ClassAwareSelectiveLoss` (with the prior variable).
        optimizer: the optimizer (built).
        schedule: the `OneCycleSchedule`.
        tracker: the `MeanPrediction` of the training predictions.
        ema: the `ModelEMA` callback, or `None` (`ema_decay=0`).
        validation: the `PartialMAPValidation`, or `None` (no val data).
        best: the `BestModelCheckpoint` (tracks the best score even
            without a run folder).
        metrics: the `MetricsLogger` (its `records` are the history).
        callbacks: all callbacks, in calling order.
        card: the `ModelCard` the model holds.
        steps_per_epoch: optimizer steps per epoch.
        global_batch_size: rows per step over all replicas.
        run_dir: the run folder, or `None`.
        chief: whether this worker writes the run folder.
    """

    config: object
    strategy: object
    model: keras.Model
    loss: ClassAwareSelectiveLoss
    optimizer: object
    schedule: OneCycleSchedule
    tracker: MeanPrediction
    ema: object
    validation: object
    best: object
    metrics: object
    callbacks: list
    card: ModelCard
    steps_per_epoch: int
    global_batch_size: int
    run_dir: object
    chief: bool


def build_run(config, steps_per_epoch, *, val_data=None, run_dir=None,
              strategy=None, callbacks=(), model_fn=None,
              update_ema_in_step=False):
    """Builds a run's model, loss, optimizer and callbacks from `config`.

    Args:
        config: a `TrainConfig`.
        steps_per_epoch: optimizer steps per epoch.
        val_data: validation data for `PartialMAPValidation`: `fn(
            input_context) -> tf.data.Dataset` (`keras_csl.training.inputs`;
            its `num_examples` attribute lets "auto" pick the exact metric)
            or a `tf.data.Dataset`; `None`: no validation.
        run_dir: the run folder (written by the chief), or `None`.
        strategy: a `tf.distribute.Strategy`; default
            `distribute.make_strategy(config.strategy)`.
        callbacks: your callbacks, called after the run's own.
        model_fn: optional `fn() -> keras.Model` replacing `build_model`,
            called inside the strategy scope; a model without a card layer
            is wrapped by `set_model_card` before the optimizer is built.
        update_ema_in_step: the train step calls `run.ema.update()` (the
            loop); `False` for `fit` (the callback updates after each batch).

    Returns:
        A `Run`.

    Raises:
        ValueError: for an invalid config or `steps_per_epoch`, or a
            `run_dir` that cannot be resumed with this config (other steps
            or schedule, or written by an older keras-csl).
    """
    config.validate()
    if not isinstance(steps_per_epoch, int) or isinstance(steps_per_epoch, bool) or (
        steps_per_epoch < 1
    ):
        raise ValueError(
            "Invalid value for argument `steps_per_epoch`. Expected an integer "
            f">= 1. Received: steps_per_epoch={steps_per_epoch!r}"
        )
    strategy = strategy or distribute.make_strategy(config.strategy)
    chief = distribute.is_chief(strategy)
    global_batch = config.per_replica_batch_size * strategy.num_replicas_in_sync
    run_dir = None if run_dir is None else os.fspath(run_dir)
    if run_dir is not None:
        _prepare_run_dir(config, run_dir, steps_per_epoch, global_batch, chief)

    previous = keras.mixed_precision.global_policy()
    keras.mixed_precision.set_global_policy(config.precision)
    try:
        keras.utils.set_random_seed(config.seed)  # Same weights on every worker.
        with strategy.scope():
            parts = _build_in_scope(config, steps_per_epoch, run_dir, model_fn)
    finally:
        # The layers keep the policy they were built with.
        keras.mixed_precision.set_global_policy(previous)
    model, loss, tracker, card = (parts[k] for k in ("model", "loss", "tracker", "card"))

    ema = None
    if config.ema_decay > 0:
        ema = csl_callbacks.ModelEMA(config.ema_decay,
                                     update_on_batch_end=not update_ema_in_step)
        ema.build(model)  # From the initial weights, as the authors' ModelEma.
    validation = None
    if val_data is not None:
        validation = csl_callbacks.PartialMAPValidation(
            val_data, ema=ema, num_thresholds=config.val_num_thresholds,
            batch_size=config.per_replica_batch_size,
        )
    best = csl_callbacks.BestModelCheckpoint(
        _path(run_dir, "best.keras"), ema=ema, verbose=1 if chief else 0
    )
    updater = class_prior.prior_updater(
        config, loss, tracker, run_dir, list(card.class_ids),
        list(card.display_names), write=chief,
    )
    checkpoint = None
    if run_dir is not None:
        checkpoint = csl_callbacks.TrainingCheckpoint(
            os.path.join(run_dir, "checkpoints"), loss=loss,
            track=[item for item in (ema, best) if item is not None],
            keep=config.keep_checkpoints,
        )
    metrics = csl_callbacks.MetricsLogger(_path(run_dir, "metrics.jsonl"),
                                          global_batch_size=global_batch)
    boards = []
    if run_dir is not None and chief:
        # Epoch scalars from Keras's callback. Its integer update_freq would
        # also drop the epoch scalars of epochs whose step count is not a
        # multiple of it (Keras 3.15), so batch scalars are written apart.
        boards = [
            keras.callbacks.TensorBoard(os.path.join(run_dir, "logs"),
                                        update_freq="epoch", write_graph=False),
            _StepScalars(os.path.join(run_dir, "logs", "steps"),
                         config.log_every_steps),
        ]
    run_callbacks = [c for c in (ema, validation, best, updater, checkpoint,
                                 metrics) if c is not None] + boards
    return Run(
        config=config, strategy=strategy, model=model, loss=loss,
        optimizer=parts["optimizer"], schedule=parts["schedule"],
        tracker=tracker, ema=ema, validation=validation, best=best,
        metrics=metrics, callbacks=run_callbacks + list(callbacks), card=card,
        steps_per_epoch=steps_per_epoch, global_batch_size=global_batch,
        run_dir=run_dir, chief=chief,
    )


def _build_in_scope(config, steps_per_epoch, run_dir, model_fn):
    if model_fn is not None:
        model = model_fn()
    else:
        model = build_model(
            config.backbone, num_classes=config.num_classes,
            image_size=config.image_size, weights=config.weights,
            dropout=config.dropout, sync_batchnorm=config.sync_batchnorm,
            name=config.name,
        )
    card = _model_card(config, model, run_dir, model_fn is not None)
    model = set_model_card(model, card)  # Wraps a model without a card layer.
    num_classes = card.num_classes
    schedule = OneCycleSchedule(config.learning_rate,
                                config.epochs * steps_per_epoch,
                                pct_start=config.pct_start)
    optimizer = make_optimizer(model, schedule, config.weight_decay,
                               config.precision)
    loss = ClassAwareSelectiveLoss(**dict(config.loss, num_classes=num_classes))
    tracker = MeanPrediction(num_classes, from_logits=loss.from_logits,
                             name="mean_prediction")
    model.compile(optimizer=optimizer, loss=loss, metrics=[tracker],
                  jit_compile=config.jit_compile,
                  steps_per_execution=config.steps_per_execution)
    optimizer.build(model.trainable_variables)
    values = class_prior.initial_prior(config, num_classes)
    if values is not None:
        loss.set_prior(values)
        # The loss decides (none in "ignore"/"negative" mode, or at 0).
        logger.info("Class prior read from %s: %d of %d classes left out by "
                    "the class-aware rule (threshold %.3g).", config.prior,
                    int(loss.excluded_classes().sum()), num_classes,
                    config.loss["prior_threshold"])
    return dict(model=model, card=card, schedule=schedule, optimizer=optimizer,
                loss=loss, tracker=tracker)


def _model_card(config, model, run_dir, custom_model):
    """The card training writes: the dataset's classes, the preprocessing."""
    class_ids, names, _ = inputs.dataset_classes(config)
    outputs = int(model.outputs[0].shape[-1])
    if len(class_ids) != outputs:  # A model_fn with classes of its own.
        logger.warning("The model has %d outputs and the dataset %d classes: "
                       "the card names the outputs by index.", outputs,
                       len(class_ids))
        class_ids = names = [str(i) for i in range(outputs)]
    source = run_dir or ""
    if source and "://" not in source:
        source = os.path.abspath(source)
    return ModelCard(
        image_size=config.image_size, class_ids=class_ids, display_names=names,
        resize_mode=config.resize_mode, resize_method=config.resize_method,
        jpeg_downscale=config.jpeg_downscale,
        from_logits=True,
        architecture=model.name if custom_model else config.backbone,
        source=source,
    )


def _prepare_run_dir(config, run_dir, steps_per_epoch, global_batch, chief):
    """Checks a folder being resumed against the config; writes config.json."""
    path = os.path.join(run_dir, "config.json")
    current = dict(config.to_dict(), steps_per_epoch=steps_per_epoch,
                   global_batch_size=global_batch)
    if _backend.exists(path):
        with _backend.open_file(path) as f:
            saved = json.loads(f.read())
        check_not_legacy(
            saved, where=f"Cannot resume {run_dir}: its config.json",
            advice=(" Its checkpoints cannot be restored by this version: "
                    "train into a new run folder (the old best.keras still "
                    "loads)."),
        )
        changed = {key: (saved.get(key), current[key]) for key in RESUME_FIELDS
                   if saved.get(key) != current[key]}
        checkpoints = csl_callbacks.TrainingCheckpoint(
            os.path.join(run_dir, "checkpoints"))
        if changed and checkpoints.latest() is not None:
            raise ValueError(
                f"Cannot resume {run_dir}: these settings differ from the saved "
                f"run (saved, now): {changed}. Use a new run_dir."
            )
    if chief:
        # Written whole, then renamed: other workers may be reading it.
        _backend.makedirs(run_dir)
        with _backend.open_file(path + ".tmp", "w") as f:
            f.write(json.dumps(current, indent=1, sort_keys=True) + "\n")
        _backend.rename(path + ".tmp", path)


class _StepScalars(keras.callbacks.Callback):
    """TensorBoard `step/loss` and `step/learning_rate` every N steps.

    The step is counted on the host from the batch indices (`fit` and the
    loop pass the index of the last step an execution ran), so the
    optimizer's step counter and the learning rate are read from the device
    only when a log may be due: the count can only run ahead of the
    counter (a float16 step that overflowed does not advance it), and the
    counter read then decides, as it would at every batch.
    """

    def __init__(self, log_dir, every):
        super().__init__()
        self.log_dir, self.every, self.writer = log_dir, every, None

    def on_train_begin(self, logs=None):
        import tensorflow as tf

        self.writer = self.writer or tf.summary.create_file_writer(self.log_dir)
        self._last = 0
        self._step = self._iterations()  # TrainingCheckpoint restored it.

    def on_epoch_begin(self, epoch, logs=None):
        self._batch = -1

    def on_train_batch_end(self, batch, logs=None):
        import tensorflow as tf

        self._step += batch - self._batch
        self._batch = batch
        if self._step // self.every == self._last // self.every:
            self._last = self._step
            return
        step = self._step = self._iterations()
        if step // self.every == self._last // self.every or "loss" not in (logs or {}):
            self._last = step
            return
        self._last = step
        rate = float(keras.ops.convert_to_numpy(self.model.optimizer.learning_rate))
        with self.writer.as_default(step=step):
            tf.summary.scalar("step/loss", float(logs["loss"]))
            tf.summary.scalar("step/learning_rate", rate)

    def _iterations(self):
        return int(keras.ops.convert_to_numpy(self.model.optimizer.iterations))

    def on_train_end(self, logs=None):
        if self.writer is not None:
            self.writer.flush()


def _path(run_dir, name):
    return None if run_dir is None else os.path.join(run_dir, name)
