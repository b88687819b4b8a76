"""One training loop for every strategy: one device, several GPUs, several hosts.

`train(config, train_data, val_data, steps_per_epoch=...)` builds the model,
optimizer, loss, EMA and checkpoint inside `strategy.scope()` and runs a
custom `tf.function` train step through `strategy.run`, with public
`tf.distribute` APIs only (Keras 3's own `fit` fails under
`MultiWorkerMirroredStrategy`, keras-team/keras#20585). Each step:

1. forward and backward pass on the replica's batch; the per-sample CSL
   losses are summed and divided by the GLOBAL batch size
   (`tf.nn.compute_average_loss`), so that the gradients Keras's optimizer
   sums across replicas in `apply()` are those of the mean over the global
   batch;
2. `optimizer.apply` (AdamW, one-cycle schedule; loss scaling for
   float16);
3. with several replicas, the normalisation layers' moving statistics are
   averaged across replicas (Keras 3 keeps one copy per replica and would
   otherwise let them drift apart);
4. the weight EMA and the `MeanPrediction` tracker of the class prior are
   updated.

Keras callbacks run as in `fit` (`keras.callbacks.CallbackList`): the
progress bar, `History`, `keras_csl.callbacks.ClassPriorUpdater`, and any
passed in. After each epoch the validation set is predicted with the raw
and with the EMA weights, the partial mAP of both is computed in NumPy
(`keras_csl.metrics.partial_mean_average_precision`), and the better
weights are saved as the best model when they beat the best so far. Then a
checkpoint (model, optimizer, EMA, prior, epoch, best mAP) is written; a
restarted run restores the latest one and goes on with the next epoch.

Files in `run_dir` (written by the chief only): `checkpoints/`,
`best.weights.h5` + `best.keras` + `best.json`, `final.weights.h5`,
`config.json`, `metrics.jsonl` (one line per epoch), `prior.csv` (online
prior), `logs/` (TensorBoard).
"""

import contextlib
import dataclasses
import json
import logging
import os
import tempfile
import time

import keras
import numpy as np
import tensorflow as tf

from keras_csl import priors
from keras_csl.callbacks import ClassPriorUpdater
from keras_csl.losses import ClassAwareSelectiveLoss
from keras_csl.metrics import MeanPrediction
from keras_csl.metrics import partial_mean_average_precision
from keras_csl.models import build_model
from keras_csl.training import distribute
from keras_csl.training import inputs
from keras_csl.training.ema import ModelEMA
from keras_csl.training.optimizers import make_optimizer
from keras_csl.training.schedules import OneCycleSchedule

logger = logging.getLogger(__name__)

# Config fields that must not change when a run is resumed: they fix the
# number of steps, the schedule and the shapes of the checkpoint.
_RESUME_FIELDS = (
    "epochs", "per_replica_batch_size", "learning_rate", "pct_start",
    "backbone", "num_classes", "image_size", "ema_decay", "seed",
)


@dataclasses.dataclass
class TrainResult:
    """What `train` returns.

    Attributes:
        model: the trained model, with its last (raw) weights.
        ema: the `ModelEMA` (averaged weights), or `None`.
        loss: the `ClassAwareSelectiveLoss` (with its last prior).
        history: one dict of logs per epoch run by this call.
        best_map: best validation partial mAP (percent) of the whole run,
            resumed epochs included; NaN without validation.
        best_epoch: its epoch (1-based); 0 if none.
        best_source: `"raw"` or `"ema"`: which weights gave it.
        iterations: optimizer steps taken over the whole run.
        global_batch_size: rows per step over all replicas.
        run_dir: the run folder, or `None`.
    """

    model: keras.Model
    ema: object
    loss: ClassAwareSelectiveLoss
    history: list
    best_map: float
    best_epoch: int
    best_source: str
    iterations: int
    global_batch_size: int
    run_dir: object


def train(
    config,
    train_data,
    val_data=None,
    *,
    steps_per_epoch,
    run_dir=None,
    strategy=None,
    callbacks=(),
    verbose="auto",
    model_fn=None,
):
    """Trains a multi-label classifier with CSL; resumes from `run_dir`.

    Example (CPU, a few seconds):

    ```python
    config = TrainConfig(backbone="tiny", weights=None, num_classes=5,
                         image_size=32, epochs=2, per_replica_batch_size=8,
                         precision="float32")
    result = train(
        config,
        inputs.in_memory_train_data(x, y, global_batch_size=8),
        inputs.in_memory_val_data(x_val, y_val, global_batch_size=8),
        steps_per_epoch=len(x) // 8,
        run_dir="runs/example")
    result.best_map
    ```

    Args:
        config: a `TrainConfig`.
        train_data: `fn(input_context, epoch) -> tf.data.Dataset`
            (`keras_csl.training.inputs`).
        val_data: `fn(input_context) -> tf.data.Dataset`, or `None`.
        steps_per_epoch: optimizer steps per epoch.
        run_dir: folder for checkpoints, logs and the best model; `None`
            writes nothing and never resumes.
        strategy: a `tf.distribute.Strategy`; default
            `distribute.make_strategy(config.strategy)`.
        callbacks: extra `keras.callbacks.Callback`s.
        verbose: 0, 1 (progress bar) or `"auto"` (1 on the chief).
        model_fn: optional `fn() -> keras.Model` replacing
            `build_model(config...)`; called inside `strategy.scope()`.

    Returns:
        A `TrainResult`.

    Raises:
        ValueError: for an invalid config, or a `run_dir` whose checkpoint
            was written with a different number of steps or schedule.
    """
    config.validate()
    if not isinstance(steps_per_epoch, int) or steps_per_epoch < 1:
        raise ValueError(
            "Invalid value for argument `steps_per_epoch`. Expected an integer "
            f">= 1. Received: steps_per_epoch={steps_per_epoch!r}"
        )
    if strategy is None:
        strategy = distribute.make_strategy(config.strategy)
    previous_policy = keras.mixed_precision.global_policy()
    keras.mixed_precision.set_global_policy(config.precision)
    try:
        trainer = _Trainer(
            config, train_data, val_data, steps_per_epoch, run_dir, strategy,
            list(callbacks), verbose, model_fn,
        )
        return trainer.run()
    finally:
        keras.mixed_precision.set_global_policy(previous_policy)


class _Trainer:
    def __init__(
        self, config, train_data, val_data, steps_per_epoch, run_dir, strategy,
        callbacks, verbose, model_fn,
    ):
        self.config = config
        self.train_data = train_data
        self.val_data = val_data
        self.steps_per_epoch = steps_per_epoch
        self.run_dir = run_dir
        self.strategy = strategy
        self.extra_callbacks = callbacks
        self.model_fn = model_fn
        self.chief = distribute.is_chief(strategy)
        self.replicas = strategy.num_replicas_in_sync
        self.global_batch = config.per_replica_batch_size * self.replicas
        self.total_steps = config.epochs * steps_per_epoch
        self.verbose = (1 if self.chief else 0) if verbose == "auto" else verbose
        self.jit_compile = self._resolve_jit(config.jit_compile)
        self.writes = self.chief and run_dir is not None

    # ----------------------------------------------------------------- setup

    def _resolve_jit(self, jit):
        on_gpu = bool(tf.config.list_logical_devices("GPU"))
        if jit == "auto":
            return self.replicas == 1 and on_gpu
        if jit and self.replicas > 1 and not on_gpu:
            raise ValueError(
                "Invalid value for config field `jit_compile`. XLA under a "
                "multi-replica strategy on CPU devices fails in TensorFlow "
                "(resources of one logical device read from another); "
                "expected False or 'auto' there. Received: jit_compile=True "
                f"with {self.replicas} replicas on CPU"
            )
        return bool(jit)

    def _build(self):
        config = self.config
        # Same initial weights in every run and on every worker.
        keras.utils.set_random_seed(config.seed)
        with self.strategy.scope():
            if self.model_fn is not None:
                model = self.model_fn()
            else:
                model = build_model(
                    config.backbone,
                    num_classes=config.num_classes,
                    image_size=config.image_size,
                    weights=config.weights,
                    dropout=config.dropout,
                    sync_batchnorm=config.sync_batchnorm,
                    name=config.name,
                )
            num_classes = model.output.shape[-1]
            self.schedule = OneCycleSchedule(
                config.learning_rate, self.total_steps, pct_start=config.pct_start
            )
            optimizer = make_optimizer(
                model, self.schedule, config.weight_decay, config.precision
            )
            self.loss = ClassAwareSelectiveLoss(
                mode=config.loss_mode,
                gamma_pos=config.gamma_pos,
                gamma_neg=config.gamma_neg,
                gamma_unannotated=config.gamma_unannotated,
                clip=config.clip,
                likelihood_topk=config.likelihood_topk,
                prior_threshold=config.prior_threshold,
                num_classes=num_classes,
                reduction=None,
            )
            self.tracker = MeanPrediction(num_classes, name="train_mean_prediction")
            # compile() gives callbacks `model.optimizer` and `model.loss`;
            # the steps are this loop's own.
            model.compile(optimizer=optimizer, loss=self.loss, jit_compile=False)
            optimizer.build(model.trainable_variables)
            self.ema = (
                ModelEMA(model, config.ema_decay) if config.ema_decay > 0 else None
            )
            self.epoch = tf.Variable(0, dtype=tf.int64, trainable=False, name="epoch")
            self.best_map = tf.Variable(
                -1.0, dtype=tf.float64, trainable=False, name="best_map"
            )
            self.best_epoch = tf.Variable(
                0, dtype=tf.int64, trainable=False, name="best_epoch"
            )
            self.best_is_ema = tf.Variable(
                False, dtype=tf.bool, trainable=False, name="best_is_ema"
            )
        self.model = model
        self.optimizer = optimizer
        self.num_classes = num_classes
        if config.prior not in ("online", "none"):
            if not tf.io.gfile.exists(config.prior):
                raise ValueError(
                    f"Invalid value for config field `prior`. Expected "
                    "'online', 'none' or an existing prior CSV (e.g. the "
                    "prior.csv of recipes/estimate_prior.py). "
                    f"Received: prior={config.prior!r} (no such file)"
                )
            self.loss.set_prior(_read_prior(config, num_classes))
        items = dict(
            model=model,
            optimizer=optimizer,
            epoch=self.epoch,
            prior=self.loss.prior_variable.value,
            best_map=self.best_map,
            best_epoch=self.best_epoch,
            best_is_ema=self.best_is_ema,
        )
        if self.ema is not None:
            items["ema"] = self.ema
        self.checkpoint = tf.train.Checkpoint(**items)

    # ------------------------------------------------------------ checkpoint

    def _checkpoint_dir(self):
        return os.path.join(self.run_dir, "checkpoints")

    def _restore(self):
        """Restores the latest checkpoint; returns the epoch to start from."""
        if self.run_dir is None:
            return 0
        self._check_resumed_config()
        latest = tf.train.latest_checkpoint(self._checkpoint_dir())
        if latest is None:
            return 0
        self.checkpoint.restore(latest).assert_existing_objects_matched()
        epoch = int(self.epoch.numpy())
        iterations = int(self.optimizer.iterations.numpy())
        expected = epoch * self.steps_per_epoch
        if iterations != expected and self.config.precision != "mixed_float16":
            raise ValueError(
                f"Checkpoint {latest} holds {iterations} optimizer steps after "
                f"{epoch} epochs; {self.steps_per_epoch} steps per epoch give "
                f"{expected}. Was the run started with another global batch "
                "or dataset size? Use a new run_dir."
            )
        logger.info(
            "Resumed from %s: epoch %d of %d, step %d.", latest, epoch,
            self.config.epochs, iterations,
        )
        return epoch

    def _check_resumed_config(self):
        path = os.path.join(self.run_dir, "config.json")
        current = dict(self.config.to_dict(), steps_per_epoch=self.steps_per_epoch,
                       global_batch_size=self.global_batch)
        if tf.io.gfile.exists(path):
            with tf.io.gfile.GFile(path) as f:
                saved = json.load(f)
            changed = {
                key: (saved.get(key), current[key])
                for key in _RESUME_FIELDS + ("steps_per_epoch", "global_batch_size")
                if saved.get(key) != current[key]
            }
            if changed and tf.train.latest_checkpoint(self._checkpoint_dir()):
                raise ValueError(
                    f"Cannot resume {self.run_dir}: these settings differ from "
                    f"the saved run (saved, now): {changed}. Use a new run_dir."
                )
        if self.writes:
            # Written whole, then renamed: other workers may be reading it.
            tf.io.gfile.makedirs(self.run_dir)
            with tf.io.gfile.GFile(path + ".tmp", "w") as f:
                f.write(json.dumps(current, indent=1, sort_keys=True) + "\n")
            tf.io.gfile.rename(path + ".tmp", path, overwrite=True)

    def _make_manager(self):
        if self.run_dir is None or not self.chief:
            return None
        return tf.train.CheckpointManager(
            self.checkpoint,
            self._checkpoint_dir(),
            max_to_keep=self.config.keep_checkpoints,
        )

    def _save_checkpoint(self, manager, epoch):
        if self.run_dir is None:
            return
        if manager is not None:
            manager.save(checkpoint_number=epoch + 1)
            return
        # Every worker saves (reading some variables runs collectives), but
        # only the chief's copy is kept: the others write to a scratch
        # folder and delete it, as the TensorFlow guide does.
        task_type, task_id = distribute.task(self.strategy)
        scratch = tempfile.mkdtemp(prefix=f"ckpt-{task_type}-{task_id}-")
        try:
            self.checkpoint.write(os.path.join(scratch, "ckpt"))
        finally:
            tf.io.gfile.rmtree(scratch)

    # ------------------------------------------------------------- functions

    def _make_functions(self):
        model, loss, optimizer = self.model, self.loss, self.optimizer
        strategy, global_batch = self.strategy, self.global_batch
        ema, tracker = self.ema, self.tracker
        float16 = self.config.precision == "mixed_float16"
        replicas = self.replicas
        stats = [
            v for v in model.non_trainable_variables
            if tf.as_dtype(v.dtype).is_floating
        ] if replicas > 1 else []

        def gradients(images, targets):
            with tf.GradientTape() as tape:
                logits = model(images, training=True)
                per_sample = loss(targets, logits)
                scaled = tf.nn.compute_average_loss(
                    per_sample, global_batch_size=global_batch
                )
                if model.losses:
                    scaled += tf.nn.scale_regularization_loss(tf.add_n(model.losses))
                scaled_for_grads = optimizer.scale_loss(scaled)
            grads = tape.gradient(scaled_for_grads, model.trainable_variables)
            return scaled, logits, grads

        jit_whole_step = self.jit_compile and replicas == 1
        if self.jit_compile and not jit_whole_step:
            # Under a multi-replica strategy only the gradient computation is
            # compiled: the optimizer's cross-replica merge calls cannot be.
            gradients = tf.function(gradients, jit_compile=True)

        def replica_step(images, targets):
            scaled, logits, grads = gradients(images, targets)
            if float16 and replicas > 1:
                grads = _agree_on_finiteness(grads)
            optimizer.apply(grads, model.trainable_variables)
            if stats:
                _average_across_replicas(stats)
            if ema is not None:
                ema.update()
            tracker.update_state(targets, logits)
            return scaled

        if jit_whole_step:
            replica_step = tf.function(replica_step, jit_compile=True)

        @tf.function
        def train_function(iterator, steps):
            total = tf.constant(0.0)
            for _ in tf.range(steps):
                images, targets = next(iterator)
                per_replica = strategy.run(replica_step, args=(images, targets))
                total += strategy.reduce("SUM", per_replica, axis=None)
            return total / tf.cast(steps, tf.float32)

        @tf.function
        def predict_function(iterator):
            images, targets, valid = next(iterator)
            logits = strategy.run(
                lambda x: tf.cast(model(x, training=False), tf.float32),
                args=(images,),
            )
            return (
                strategy.gather(logits, axis=0),
                strategy.gather(targets, axis=0),
                strategy.gather(valid, axis=0),
            )

        self.train_function = train_function
        self.predict_function = predict_function

    # ------------------------------------------------------------ validation

    def _val_dataset(self):
        per_replica = self.config.per_replica_batch_size
        val_data = self.val_data

        def dataset_fn(input_context):
            return _padded_forever(val_data(input_context), per_replica)

        return self.strategy.distribute_datasets_from_function(dataset_fn)

    def _predict(self, dataset, with_targets=True):
        """Logits (and int8 targets) of the whole validation set, on every
        worker; one float32 copy of the scores is kept, batches are freed."""
        scores, targets = [], []
        iterator = iter(dataset)
        while True:
            logits, true, valid = self.predict_function(iterator)
            valid = valid.numpy().astype(bool)
            if not valid.any():
                break
            scores.append(logits.numpy()[valid])
            if with_targets:
                targets.append(true.numpy()[valid].astype(np.int8))
        targets = np.concatenate(targets) if with_targets else None
        return targets, np.concatenate(scores)

    def _validate(self, dataset):
        targets, scores = self._predict(dataset)
        logs = {"val_map": partial_mean_average_precision(targets, scores)[0]}
        if self.ema is not None:
            del scores
            with self.ema.averaged_weights(self._swap_strategy()):
                _, ema_scores = self._predict(dataset, with_targets=False)
            logs["val_map_ema"] = partial_mean_average_precision(targets, ema_scores)[0]
        return logs

    def _swap_strategy(self):
        return None if self.replicas == 1 and not distribute.is_multi_worker(
            self.strategy
        ) else self.strategy

    # ---------------------------------------------------------------- saving

    def _save_best(self, use_ema):
        """Saves the best weights; every worker swaps, only the chief writes."""
        if self.run_dir is None:
            return
        path = os.path.join(self.run_dir, "best")
        context = (
            self.ema.averaged_weights(self._swap_strategy()) if use_ema
            else contextlib.nullcontext()
        )
        with context:
            if not self.writes:
                return
            self.model.save_weights(path + ".weights.h5")
            # An uncompiled view of the same layers: no optimizer in the file.
            keras.Model(
                self.model.input, self.model.output, name=self.model.name
            ).save(path + ".keras")
        with tf.io.gfile.GFile(path + ".json", "w") as f:
            json.dump(
                {
                    "epoch": int(self.best_epoch.numpy()),
                    "val_map": float(self.best_map.numpy()),
                    "weights": "ema" if use_ema else "raw",
                },
                f,
            )

    def _log_epoch(self, writer, epoch, logs):
        if not self.writes:
            return
        with tf.io.gfile.GFile(os.path.join(self.run_dir, "metrics.jsonl"), "a") as f:
            f.write(json.dumps(dict(epoch=epoch + 1, **_plain(logs))) + "\n")
        if writer is None:
            return
        with writer.as_default(step=epoch + 1):
            for key, value in logs.items():
                if isinstance(value, (int, float)) and np.isfinite(value):
                    tf.summary.scalar(f"epoch/{key}", value)
        writer.flush()

    # ------------------------------------------------------------------- run

    def _callbacks(self):
        callbacks = list(self.extra_callbacks)
        if self.config.prior == "online":
            csv_path = (
                os.path.join(self.run_dir, "prior.csv") if self.writes else None
            )
            # Written with the dataset's class ids, so that `prior=<this
            # file>` in another run reads it back by id.
            class_ids, names, _ = inputs.dataset_classes(self.config)
            if len(class_ids) != self.num_classes:  # A model_fn of its own.
                class_ids = names = None
            callbacks.insert(0, ClassPriorUpdater(
                self.loss,
                tracker=self.tracker,
                every_n_epochs=self.config.prior_every_n_epochs,
                warmup_epochs=self.config.prior_warmup_epochs,
                momentum=self.config.prior_momentum,
                csv_path=csv_path,
                class_ids=class_ids,
                class_names=names,
                verbose=0,
            ))
        return keras.callbacks.CallbackList(
            callbacks,
            add_history=True,
            add_progbar=self.verbose > 0,
            model=self.model,
            verbose=self.verbose,
            epochs=self.config.epochs,
            steps=self.steps_per_epoch,
        )

    def run(self):
        self._build()
        start_epoch = self._restore()
        manager = self._make_manager()
        self._make_functions()
        callback_list = self._callbacks()
        writer = (
            tf.summary.create_file_writer(os.path.join(self.run_dir, "logs"))
            if self.writes else None
        )
        val_dataset = self._val_dataset() if self.val_data is not None else None
        history = []
        execution = self.config.steps_per_execution
        self.model.stop_training = False
        callback_list.on_train_begin()
        logs = {}
        for epoch in range(start_epoch, self.config.epochs):
            self.tracker.reset_state()
            callback_list.on_epoch_begin(epoch)
            started = time.perf_counter()
            dataset = self.strategy.distribute_datasets_from_function(
                lambda context, epoch=epoch: self.train_data(context, epoch)
            )
            iterator = iter(dataset)
            step, loss_sum = 0, 0.0
            while step < self.steps_per_epoch:
                steps = min(execution, self.steps_per_epoch - step)
                callback_list.on_train_batch_begin(step)
                loss_value = float(self.train_function(iterator, tf.constant(steps)))
                step += steps
                loss_sum += loss_value * steps
                callback_list.on_train_batch_end(step - 1, {"loss": loss_sum / step})
                if writer is not None and (
                    step % self.config.log_every_steps < steps
                ):
                    iteration = int(self.optimizer.iterations.numpy())
                    with writer.as_default(step=iteration):
                        tf.summary.scalar("step/loss", loss_value)
                        tf.summary.scalar(
                            "step/learning_rate",
                            float(self.schedule(iteration - 1)),
                        )
            seconds = time.perf_counter() - started
            iterations = int(self.optimizer.iterations.numpy())
            logs = {
                "loss": loss_sum / step,
                "learning_rate": float(self.schedule(max(iterations - 1, 0))),
                "images_per_second": step * self.global_batch / seconds,
            }
            if val_dataset is not None:
                callback_list.on_test_begin()
                val_logs = self._validate(val_dataset)
                callback_list.on_test_end(val_logs)
                logs.update(val_logs)
                self._update_best(epoch, logs)
            callback_list.on_epoch_end(epoch, logs)
            self.epoch.assign(epoch + 1)
            self._save_checkpoint(manager, epoch)
            if self.config.prior == "online" and self.loss.prior is not None:
                logs["prior_above_threshold"] = int(
                    (self.loss.prior > self.config.prior_threshold).sum()
                )
            self._log_epoch(writer, epoch, logs)
            history.append(dict(logs))
            if self.model.stop_training:
                break
        callback_list.on_train_end(logs)
        if self.writes:
            self.model.save_weights(os.path.join(self.run_dir, "final.weights.h5"))
        best_map = float(self.best_map.numpy())
        return TrainResult(
            model=self.model,
            ema=self.ema,
            loss=self.loss,
            history=history,
            best_map=best_map if best_map >= 0 else float("nan"),
            best_epoch=int(self.best_epoch.numpy()),
            best_source="ema" if bool(self.best_is_ema.numpy()) else "raw",
            iterations=int(self.optimizer.iterations.numpy()),
            global_batch_size=self.global_batch,
            run_dir=self.run_dir,
        )

    def _update_best(self, epoch, logs):
        candidates = [("raw", logs["val_map"])]
        if "val_map_ema" in logs:
            candidates.append(("ema", logs["val_map_ema"]))
        candidates = [(s, m) for s, m in candidates if np.isfinite(m)]
        if candidates:
            source, value = max(candidates, key=lambda item: item[1])
            if value > float(self.best_map.numpy()):
                self.best_map.assign(value)
                self.best_epoch.assign(epoch + 1)
                self.best_is_ema.assign(source == "ema")
                self._save_best(source == "ema")
        logs["val_map_best"] = float(self.best_map.numpy())


def _read_prior(config, num_classes):
    """The prior CSV of `config`, keyed by class id when the dataset says.

    With a `classes.csv` next to the training files, rows are matched by
    class id, so a prior written for another class order (or a superset of
    classes) lands on the right classes or fails; otherwise by index.
    """
    class_ids, _, classes_csv = inputs.dataset_classes(config)
    if classes_csv is not None:
        return priors.read_prior_csv(config.prior, class_ids=class_ids)
    return priors.read_prior_csv(config.prior, num_classes=num_classes)


def _agree_on_finiteness(grads):
    """Makes every replica skip a float16 step if any replica overflowed.

    Keras's `LossScaleOptimizer` checks the replica's own gradients before
    they are summed; replicas that disagree would take different branches
    around the all-reduce (a hang under MultiWorkerMirroredStrategy).
    """
    context = tf.distribute.get_replica_context()
    finite = tf.reduce_all(
        [tf.reduce_all(tf.math.is_finite(g)) for g in grads if g is not None]
    )
    overflows = context.all_reduce("SUM", 1.0 - tf.cast(finite, tf.float32))
    poison = tf.where(overflows > 0, float("nan"), 1.0)
    return [None if g is None else g * tf.cast(poison, g.dtype) for g in grads]


def _average_across_replicas(variables):
    """Sets each variable, on every replica, to its mean over the replicas."""
    context = tf.distribute.get_replica_context()
    means = context.all_reduce("MEAN", [tf.identity(v.value) for v in variables])
    for variable, mean in zip(variables, means):
        variable.assign(mean)


def _padded_forever(dataset, batch_size):
    """Batches of exactly `batch_size` rows with a validity mask, then padding.

    The real batches (each padded up to `batch_size` with un-annotated rows)
    are followed by endless all-padding batches, so every replica of every
    worker can take part in each prediction step until all are done.
    """

    def pad(images, targets):
        count = tf.shape(images)[0]
        tf.debugging.assert_less_equal(
            count, batch_size,
            message="validation batches must not exceed the per-replica batch",
        )
        extra = batch_size - count
        images = tf.pad(images, [[0, extra], [0, 0], [0, 0], [0, 0]])
        targets = tf.pad(targets, [[0, extra], [0, 0]], constant_values=-1.0)
        valid = tf.concat([tf.ones([count]), tf.zeros([extra])], axis=0)
        images.set_shape([batch_size] + images.shape[1:].as_list())
        targets.set_shape([batch_size] + targets.shape[1:].as_list())
        return tf.cast(images, tf.float32), tf.cast(targets, tf.float32), valid

    real = dataset.map(pad)
    spec = real.element_spec
    padding = tf.data.Dataset.from_tensors(
        (
            tf.zeros(spec[0].shape, tf.float32),
            -tf.ones(spec[1].shape, tf.float32),
            tf.zeros([batch_size], tf.float32),
        )
    ).repeat()
    return real.concatenate(padding)


def _plain(logs):
    return {
        key: (float(value) if isinstance(value, (float, np.floating)) else value)
        for key, value in logs.items()
    }
