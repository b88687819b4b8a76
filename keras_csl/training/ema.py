"""Exponential moving average of all the weights of a model (TensorFlow)."""

import contextlib

import tensorflow as tf


class ModelEMA(tf.Module):
    """Shadow copies of a model's weights, averaged after every step.

    `shadow = decay * shadow + (1 - decay) * weight` for every float
    variable of the model: trainable weights and the normalisation layers'
    moving statistics alike, as the authors' `ModelEma` does over the whole
    `state_dict` (decay 0.9997, starting from the initial weights).
    Integer state, such as a dropout layer's seed, is left alone.

    Create it inside the `strategy.scope()` that holds the model. `update()`
    is meant for the replica function of `strategy.run` (or for a plain
    call without a strategy): each replica averages its own local copies,
    which are identical since the model's copies are, so no value crosses
    devices. Being a `tf.Module`, it goes into a `tf.train.Checkpoint` as
    is.

    Example:

    ```python
    with strategy.scope():
        model = keras_csl.models.build_model("tiny", 5, 32)
        ema = ModelEMA(model, decay=0.9997)
    ...  # in the train step, after optimizer.apply(...): ema.update()
    with ema.averaged_weights():
        predictions = model.predict(images)  # with the averaged weights
    ```

    Args:
        model: the `keras.Model` whose weights are averaged.
        decay: weight of the old average, in [0, 1).
        name: name of the module (and prefix of its variables).
    """

    def __init__(self, model, decay=0.9997, name="ema"):
        super().__init__(name=name)
        if not 0.0 <= decay < 1.0:
            raise ValueError(
                "Invalid value for argument `decay`. Expected a number in "
                f"[0, 1). Received: decay={decay!r}"
            )
        self.decay = float(decay)
        # A plain holder: tf.Module would track the model as a dependency
        # of the EMA and save its weights twice in a checkpoint.
        self._refs = _References(
            model, [v for v in model.weights if tf.as_dtype(v.dtype).is_floating]
        )
        with tf.name_scope(name):
            self.shadows = [
                tf.Variable(
                    _tf_variable(v).read_value(),
                    trainable=False,
                    name=v.path.replace("/", "_"),
                )
                for v in self._refs.sources
            ]

    @property
    def source_variables(self):
        """The model variables that are averaged, in `shadows` order."""
        return list(self._refs.sources)

    def update(self):
        """Moves every shadow towards its model weight by `1 - decay`."""
        for shadow, source in zip(self.shadows, self._refs.sources):
            value = tf.cast(_tf_variable(source), shadow.dtype)
            shadow.assign(self.decay * shadow + (1.0 - self.decay) * value)

    def reset(self):
        """Copies the model's current weights into the shadows."""
        for shadow, source in zip(self.shadows, self._refs.sources):
            shadow.assign(tf.cast(_tf_variable(source), shadow.dtype))

    def swap(self):
        """Exchanges the model's weights and the shadows, in place."""
        for shadow, source in zip(self.shadows, self._refs.sources):
            variable = _tf_variable(source)
            model_value = tf.identity(variable)
            variable.assign(tf.cast(shadow, variable.dtype))
            shadow.assign(tf.cast(model_value, shadow.dtype))

    @contextlib.contextmanager
    def averaged_weights(self, strategy=None):
        """Context in which the model holds the averaged weights.

        Args:
            strategy: the `tf.distribute` strategy that holds the model; the
                swap then runs on every replica (`strategy.run`).
        """
        key = id(strategy)
        if key not in self._refs.swaps:
            self._refs.swaps[key] = (
                tf.function(self.swap) if strategy is None
                else _replicated(strategy, self.swap)
            )
        swap = self._refs.swaps[key]
        swap()
        try:
            yield self._refs.model
        finally:
            swap()

    def averaged_values(self):
        """The averaged weights as NumPy arrays, in `model.weights` order.

        Weights that are not averaged (integer state) keep the model's
        current value, so `model.set_weights(ema.averaged_values())` works.
        """
        averaged = {
            id(source): shadow
            for source, shadow in zip(self._refs.sources, self.shadows)
        }
        values = []
        for weight in self._refs.model.weights:
            source = averaged.get(id(weight))
            values.append(
                (source if source is not None else _tf_variable(weight)).numpy()
            )
        return values


def _replicated(strategy, fn):
    @tf.function
    def run():
        strategy.run(fn)

    return run


class _References:
    def __init__(self, model, sources):
        self.model = model
        self.sources = sources
        self.swaps = {}  # Traced swap functions, by strategy.


def _tf_variable(variable):
    """The `tf.Variable` behind a Keras variable (or the variable itself)."""
    return variable if isinstance(variable, tf.Variable) else variable.value
