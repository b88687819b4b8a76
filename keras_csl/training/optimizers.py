"""The optimizer: Adam with decoupled weight decay (AdamW), no decay on 1-D.

The authors' script passes a per-group weight decay of 1e-4 to
`torch.optim.Adam`, which adds it to the gradient (a coupled L2 term),
despite its "true wd" comment; the project asked for decoupled decay, as
`torch.optim.AdamW` does, which is what this builds. The exclusions (every
1-D parameter) are the authors'.
"""

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
    """`keras.optimizers.AdamW` with the authors' decay exclusions (not their
    coupled L2: see the module docstring).

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
