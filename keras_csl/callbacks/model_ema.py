"""Exponential moving average of all the weights of a model."""

import contextlib
import logging

import keras
import numpy as np
from keras import ops

from keras_csl.callbacks import _backend

logger = logging.getLogger(__name__)


class ModelEMA(keras.callbacks.Callback):
    """Averaged weights of a model (Polyak averaging), as the authors' ModelEma.

    After every optimizer step, `shadow = decay * shadow + (1 - decay) *
    weight` for every float weight of the model: trainable weights and the
    normalisation layers' moving statistics alike, as the authors'
    `ModelEma` does over the whole `state_dict` (decay 0.9997, starting
    from the weights the model has when the average is created). Integer
    state, such as a dropout layer's seed, is left alone.

    Why not Keras's own (`use_ema=True` on the optimizer with
    `keras.callbacks.SwapEMAWeights`): that average covers trainable weights
    only (not the batch-norm statistics), starts from the first step's
    weights, overwrites the model with the average at the end of `fit`, and
    evaluates the average *instead of* the raw weights; the authors'
    recipe validates both and keeps the better one
    (`PartialMAPValidation`, `BestModelCheckpoint` take this callback).

    Two ways to update, one trajectory:

    - in `model.fit` (`update_on_batch_end=True`): after each batch, in
      `on_train_batch_end` (one compiled function on TensorFlow). With
      `steps_per_execution=k > 1` Keras calls back once per `k` steps; the
      average then moves by `decay**k` towards the current weights (exact
      per-step averaging needs `steps_per_execution=1`);
    - in a custom train step (`update_on_batch_end=False`): the step calls
      `update()` itself after applying the gradients, as
      `keras_csl.training.train` does inside `strategy.run` (each replica
      averages its own copies, which are identical, so no value crosses
      devices).

    The shadows are created on first use (`build`, or the first
    `on_train_begin`) in the model's distribution scope, and are kept across
    `fit` calls like the optimizer's slots; `on_train_begin` resets only the
    callback's step counting. `get_state`/`set_state` let
    `TrainingCheckpoint` save and restore them.

    Example:

    ```python
    model = keras.Sequential([keras.Input((1,)), keras.layers.Dense(
        1, use_bias=False, kernel_initializer="zeros")])
    ema = keras_csl.callbacks.ModelEMA(decay=0.75)
    ema.build(model)                   # the average starts at the weight, 0
    model.weights[0].assign([[1.0]])   # a training step moves the weight to 1
    ema.update()                       # 0.75 * 0 + 0.25 * 1
    float(ema.shadows[0][0, 0])        # 0.25
    with ema.averaged_weights():       # the model holds the average
        float(model.weights[0][0, 0])  # 0.25
    # In fit, after every batch: model.fit(..., callbacks=[ema])
    ```

    Args:
        decay: weight of the old average, in [0, 1). Defaults to 0.9997.
        update_on_batch_end: update after every batch of `fit` (default);
            `False` when a custom train step calls `update()`.

    Attributes:
        shadows: the averaged values, one `keras.Variable` per averaged
            weight (empty before `build`).
        source_variables: the model weights they average, in that order.
    """

    def __init__(self, decay=0.9997, update_on_batch_end=True):
        super().__init__()
        if isinstance(decay, bool) or not isinstance(decay, (int, float)) or not (
            0.0 <= decay < 1.0
        ):
            raise ValueError(
                "Invalid value for argument `decay`. Expected a number in "
                f"[0, 1). Received: decay={decay!r}"
            )
        self.decay = float(decay)
        self.update_on_batch_end = bool(update_on_batch_end)
        self.shadows = []
        self.source_variables = []
        self._built_for = None
        self._compiled = {}
        self._last_batch = -1

    # ---------------------------------------------------------------- state

    def build(self, model=None):
        """Creates the shadows from the model's current weights (once).

        Called by `on_train_begin`; call it yourself to start the average
        before training starts elsewhere (a custom loop, a restore).
        """
        if model is not None:
            self.set_model(model)
        model = self.model
        if self._built_for is model:
            return
        if self._built_for is not None:
            raise ValueError(
                "This ModelEMA already averages the weights of model "
                f"{self._built_for.name!r}; create a new one for {model.name!r}."
            )
        sources = [
            v for v in model.weights
            if keras.backend.is_float_dtype(keras.backend.standardize_dtype(v.dtype))
        ]
        with _backend.scope(model):
            self.shadows = [
                keras.Variable(
                    ops.convert_to_numpy(v),
                    dtype=v.dtype,
                    trainable=False,
                    name="ema_" + v.path.replace("/", "_"),
                )
                for v in sources
            ]
        self.source_variables = sources
        self._built_for = model

    def update(self, decay=None):
        """Moves every shadow towards its weight by `1 - decay`.

        `keras.ops` only: call it inside a compiled (or distributed) train
        step, after the optimizer has applied the gradients.
        """
        decay = self.decay if decay is None else decay
        self._update_with(float(decay), 1.0 - float(decay))

    def _update_with(self, decay, one_minus_decay):
        for shadow, source in zip(self.shadows, self.source_variables):
            value = ops.cast(source, shadow.dtype)
            shadow.assign(
                ops.add(
                    ops.multiply(decay, shadow),
                    ops.multiply(one_minus_decay, value),
                )
            )

    def swap(self):
        """Exchanges the model's weights and the shadows, in place."""
        self._sync_model()
        self._function("swap", self._swap)()

    def _swap(self):
        for shadow, source in zip(self.shadows, self.source_variables):
            model_value = ops.copy(ops.convert_to_tensor(source))
            source.assign(ops.cast(shadow, source.dtype))
            shadow.assign(ops.cast(model_value, shadow.dtype))

    @contextlib.contextmanager
    def averaged_weights(self):
        """Context in which the model holds the averaged weights."""
        self._require_built()
        self.swap()
        try:
            yield self.model
        finally:
            self.swap()

    def averaged_values(self):
        """The averaged weights as NumPy arrays, in `model.weights` order.

        Weights that are not averaged (integer state) keep the model's
        current value, so `model.set_weights(ema.averaged_values())` works.
        """
        self._require_built()
        shadows = {id(s): w for s, w in zip(self.source_variables, self.shadows)}
        return [
            ops.convert_to_numpy(shadows.get(id(weight), weight))
            for weight in self.model.weights
        ]

    def get_state(self):
        """`{"shadow_0000": array, ...}`, for `TrainingCheckpoint`."""
        self._require_built()
        return {
            f"shadow_{i:04d}": ops.convert_to_numpy(shadow)
            for i, shadow in enumerate(self.shadows)
        }

    def set_state(self, state):
        """Restores `get_state()`; builds the shadows first if needed.

        Raises:
            ValueError: if the state holds another number of weights or
                other shapes than this model's.
        """
        self.build()
        values = [state[key] for key in sorted(state) if key.startswith("shadow_")]
        if len(values) != len(self.shadows):
            raise ValueError(
                f"Cannot restore the EMA: the saved state holds {len(values)} "
                f"averaged weights, the model has {len(self.shadows)}."
            )
        for shadow, value in zip(self.shadows, values):
            if tuple(shadow.shape) != tuple(np.shape(value)):
                raise ValueError(
                    f"Cannot restore the EMA weight {shadow.path}: saved shape "
                    f"{np.shape(value)}, model shape {tuple(shadow.shape)}."
                )
            shadow.assign(value)

    # ------------------------------------------------------------ callbacks

    def on_train_begin(self, logs=None):
        self.build()
        self._last_batch = -1
        self._warned = False

    def on_epoch_begin(self, epoch, logs=None):
        self._last_batch = -1

    def on_train_batch_end(self, batch, logs=None):
        if not self.update_on_batch_end:
            return
        self._sync_model()
        steps = batch - self._last_batch if batch > self._last_batch else 1
        self._last_batch = batch
        if steps > 1 and not self._warned:
            self._warned = True
            logger.warning(
                "ModelEMA: %d steps per callback (steps_per_execution); the "
                "average moves by decay**%d towards the current weights "
                "instead of following every step.", steps, steps,
            )
        decay = self.decay**steps
        self._function("update", self._update_with)(
            ops.convert_to_tensor(decay, "float32"),
            ops.convert_to_tensor(1.0 - decay, "float32"),
        )

    # -------------------------------------------------------------- helpers

    def _function(self, name, fn):
        if name not in self._compiled:
            self._compiled[name] = _backend.compiled(fn)
        return self._compiled[name]

    def _sync_model(self):
        # On JAX, `fit` keeps the weights outside the variables during an
        # epoch; reading `self.model` writes them back (Keras's callbacks
        # rely on the same).
        return self.model

    def _require_built(self):
        if self._built_for is None:
            raise ValueError(
                "ModelEMA has no averaged weights yet: call `build(model)` or "
                "train with it first."
            )
