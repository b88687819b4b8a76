"""The training loop: what `fit` cannot do under MultiWorkerMirroredStrategy.

Keras 3's `fit` fails under `MultiWorkerMirroredStrategy`
(keras-team/keras#20585), so `train` runs its own step, through
`strategy.run` and public `tf.distribute` APIs only. Per step, on each
replica:

1. forward and backward pass on the replica's batch; the per-sample CSL
   losses are summed and divided by the GLOBAL batch size
   (`tf.nn.compute_average_loss`; `loss["reduction"]="sum"`: not divided),
   so that the gradients Keras's optimizer sums across replicas in
   `apply()` are those of the loss over the global batch, as in `fit`;
2. `optimizer.apply` (with float16 loss scaling, all replicas skip a step
   that overflowed on any of them);
3. with several replicas, the normalisation layers' moving statistics are
   averaged across replicas (Keras 3 keeps one copy per replica and lets
   them drift apart);
4. the weight average (`ModelEMA.update()`) and the class prior's
   `MeanPrediction` tracker are updated.

Everything else a run does is a Keras callback built by
`keras_csl.training.builder.build_run` (validation with the streaming
partial mAP, best model, checkpoint and resume, class prior, metrics log,
TensorBoard), run through `keras.callbacks.CallbackList` the way `fit`
runs them; with one device or `MirroredStrategy`, `model.fit` runs the
same callbacks and reaches the same weights (tests/training/test_loop.py).
"""

import dataclasses
import math
import os

import keras
import tensorflow as tf

from keras_csl.callbacks import _saving
from keras_csl.training.builder import build_run


@dataclasses.dataclass
class TrainResult:
    """What `train` returns.

    Attributes:
        model: the trained model, with its last (raw) weights and its card.
        ema: the `keras_csl.callbacks.ModelEMA` (averaged weights), or `None`.
        loss: the `ClassAwareSelectiveLoss` (with its last prior).
        history: one dict of logs per epoch run by this call (what
            `metrics.jsonl` gets).
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
    loss: object
    history: list
    best_map: float
    best_epoch: int
    best_source: str
    iterations: int
    global_batch_size: int
    run_dir: object


def train(config, train_data, val_data=None, *, steps_per_epoch, run_dir=None,
          strategy=None, callbacks=(), verbose="auto", model_fn=None):
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
        run_dir: folder for checkpoints, logs and models; `None` writes
            nothing and never resumes.
        strategy: a `tf.distribute.Strategy`; default
            `distribute.make_strategy(config.strategy)`.
        callbacks: extra `keras.callbacks.Callback`s, called after the
            run's own.
        verbose: 0, 1 (progress bar) or `"auto"` (1 on the chief).
        model_fn: optional `fn() -> keras.Model` replacing
            `build_model(config...)`; called inside `strategy.scope()`.

    Returns:
        A `TrainResult`.

    Raises:
        ValueError: for an invalid config, or a `run_dir` whose checkpoint
            was written with a different number of steps or schedule.
    """
    run = build_run(
        config, steps_per_epoch, val_data=val_data, run_dir=run_dir,
        strategy=strategy, callbacks=callbacks, model_fn=model_fn,
        update_ema_in_step=True,
    )
    if verbose == "auto":
        verbose = 1 if run.chief else 0
    return _Loop(run, train_data, verbose).run()


class _Loop:
    def __init__(self, run, train_data, verbose):
        self.run_parts = run
        self.train_data = train_data
        self.verbose = verbose
        self.replicas = run.strategy.num_replicas_in_sync
        self.jit_compile = self._resolve_jit(run.config.jit_compile)
        self.train_function = self._make_train_function()

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

    def _make_train_function(self):
        run = self.run_parts
        model, loss, optimizer = run.model, run.loss, run.optimizer
        strategy, ema, tracker = run.strategy, run.ema, run.tracker
        global_batch, replicas = run.global_batch_size, self.replicas
        float16 = run.config.precision == "mixed_float16"
        average_over_batch = loss.reduction != "sum"
        stats = [
            v for v in model.non_trainable_variables
            if tf.as_dtype(v.dtype).is_floating
        ] if replicas > 1 else []

        def gradients(images, targets):
            with tf.GradientTape() as tape:
                logits = model(images, training=True)
                per_sample = loss.call(targets, logits)
                if average_over_batch:
                    scaled = tf.nn.compute_average_loss(
                        per_sample, global_batch_size=global_batch)
                else:
                    scaled = tf.reduce_sum(per_sample)
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

        return train_function

    def run(self):
        parts = self.run_parts
        config, model, strategy = parts.config, parts.model, parts.strategy
        steps_per_epoch = parts.steps_per_epoch
        callback_list = keras.callbacks.CallbackList(
            parts.callbacks, add_history=True, add_progbar=self.verbose > 0,
            model=model, verbose=self.verbose, epochs=config.epochs,
            steps=steps_per_epoch,
        )
        model.stop_training = False
        callback_list.on_train_begin()
        # A restored checkpoint says where to go on, as in `fit`.
        start_epoch = getattr(model, "_initial_epoch", None) or 0
        logs, epochs_done = {}, start_epoch
        for epoch in range(start_epoch, config.epochs):
            parts.tracker.reset_state()  # `fit` resets its metrics likewise.
            callback_list.on_epoch_begin(epoch)
            dataset = strategy.distribute_datasets_from_function(
                lambda context, epoch=epoch: self.train_data(context, epoch)
            )
            iterator = iter(dataset)
            step, loss_sum = 0, 0.0
            while step < steps_per_epoch and not model.stop_training:
                steps = min(config.steps_per_execution, steps_per_epoch - step)
                callback_list.on_train_batch_begin(step)
                loss_value = float(self.train_function(iterator, tf.constant(steps)))
                step += steps
                loss_sum += loss_value * steps
                callback_list.on_train_batch_end(step - 1, {"loss": loss_sum / step})
            logs = {"loss": loss_sum / max(step, 1),
                    parts.tracker.name: float(parts.tracker.result())}
            callback_list.on_epoch_end(epoch, logs)
            epochs_done = epoch + 1
            if model.stop_training:
                break
        callback_list.on_train_end(logs)
        self._save_final(epochs_done)
        return self._result()

    def _save_final(self, epochs_done):
        parts = self.run_parts
        if parts.run_dir is None or not parts.chief:
            return
        _saving.save_inference_model(
            parts.model, os.path.join(parts.run_dir, "final.keras"),
            extra={"epoch": epochs_done, "weights": "raw"},
            weights_path=os.path.join(parts.run_dir, "final.weights.h5"),
        )

    def _result(self):
        parts = self.run_parts
        best = parts.best
        return TrainResult(
            model=parts.model,
            ema=parts.ema,
            loss=parts.loss,
            history=list(parts.metrics.records),
            best_map=best.best if math.isfinite(best.best) else float("nan"),
            best_epoch=best.best_epoch,
            best_source=best.best_source,
            iterations=int(parts.optimizer.iterations.numpy()),
            global_batch_size=parts.global_batch_size,
            run_dir=parts.run_dir,
        )


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
