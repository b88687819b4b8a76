"""The optimizer of the authors' recipe: Adam with decoupled weight decay."""

import keras


def no_decay_variables(model):
    """Trainable variables left out of weight decay: all 1-D ones.

    The authors' `add_weight_decay` skips every parameter of one dimension
    (biases, normalisation scales and offsets, layer scales) and every
    `.bias`; in Keras every bias is 1-D, so the rule is the shape alone.
    """
    return [v for v in model.trainable_variables if len(v.shape) <= 1]


def make_optimizer(
    model,
    learning_rate,
    weight_decay=1e-4,
    precision="float32",
    epsilon=1e-8,
):
    """`keras.optimizers.AdamW` with the authors' decay exclusions.

    Keras applies the decoupled decay as `var -= lr * weight_decay * var`
    before the Adam step, with the scheduled `lr` of that step: the update
    of `torch.optim.AdamW`. Biases and normalisation parameters
    (`no_decay_variables`) are not decayed. `epsilon` is PyTorch's default
    (Keras's is 1e-7); Keras adds it to `sqrt(v)` before the bias
    correction, PyTorch after, a difference that fades after the first
    thousand steps.

    Create it inside the `strategy.scope()` of the model: Keras's
    TensorFlow optimizer all-reduces (sums) the gradients across replicas
    in `apply()` when called inside `strategy.run`.

    Args:
        model: the model to train (its trainable variables must exist).
        learning_rate: a float or a `LearningRateSchedule`.
        weight_decay: the decoupled decay factor.
        precision: with `"mixed_float16"` the optimizer is wrapped in a
            `keras.optimizers.LossScaleOptimizer` (dynamic loss scaling).
        epsilon: Adam's epsilon.

    Returns:
        A Keras optimizer, not yet built.
    """
    optimizer = keras.optimizers.AdamW(
        learning_rate=learning_rate, weight_decay=weight_decay, epsilon=epsilon
    )
    optimizer.exclude_from_weight_decay(var_list=no_decay_variables(model))
    if precision == "mixed_float16":
        optimizer = keras.optimizers.LossScaleOptimizer(optimizer)
    return optimizer
