"""AdamW: torch AdamW's decoupled decay, with the authors' no decay on 1-D."""

import keras
import numpy as np

from keras_csl.models import build_model
from keras_csl.training import make_optimizer
from keras_csl.training.optimizers import no_decay_variables


def torch_adamw(weights, grads, lr, weight_decay, beta1=0.9, beta2=0.999, eps=1e-8):
    """torch.optim.AdamW (amsgrad off) in NumPy."""
    w = weights.astype("float64")
    m = np.zeros_like(w)
    v = np.zeros_like(w)
    for t, g in enumerate(grads, 1):
        w = w * (1 - lr * weight_decay)
        m = beta1 * m + (1 - beta1) * g
        v = beta2 * v + (1 - beta2) * g * g
        m_hat = m / (1 - beta1**t)
        v_hat = v / (1 - beta2**t)
        w = w - lr * m_hat / (np.sqrt(v_hat) + eps)
    return w


def test_decay_is_decoupled_and_skips_one_dimensional_variables():
    inputs = keras.Input((3,))
    model = keras.Model(inputs, keras.layers.Dense(2, bias_initializer="ones")(inputs))
    optimizer = make_optimizer(model, learning_rate=0.1, weight_decay=0.5)
    kernel, bias = model.trainable_variables
    before = kernel.numpy()
    # A zero gradient leaves Adam's step at 0: only the decay acts.
    optimizer.apply([np.zeros((3, 2)), np.zeros(2)], model.trainable_variables)
    np.testing.assert_allclose(kernel.numpy(), before * (1 - 0.1 * 0.5), rtol=1e-6)
    np.testing.assert_array_equal(bias.numpy(), np.ones(2))


def test_matches_torch_adamw_over_steps():
    rng = np.random.default_rng(0)
    inputs = keras.Input((4,))
    model = keras.Model(inputs, keras.layers.Dense(3, use_bias=False)(inputs))
    (kernel,) = model.trainable_variables
    start = kernel.numpy()
    grads = rng.normal(size=(30, 4, 3))
    optimizer = make_optimizer(model, learning_rate=1e-2, weight_decay=0.3)
    for g in grads:
        optimizer.apply([g.astype("float32")], [kernel])
    expected = torch_adamw(start, grads, 1e-2, 0.3)
    # Keras adds epsilon before the bias correction: a ~1e-7 difference here.
    np.testing.assert_allclose(kernel.numpy(), expected, atol=2e-6)


def test_batchnorm_and_biases_are_excluded_in_a_real_backbone():
    model = build_model("tiny", num_classes=3, image_size=32)
    excluded = {v.path for v in no_decay_variables(model)}
    assert "logits/bias" in excluded
    assert any("bn0/gamma" in p for p in excluded) and any("bn0/beta" in p for p in excluded)
    assert not any("kernel" in p for p in excluded)


def test_float16_wraps_in_loss_scale_optimizer():
    inputs = keras.Input((2,))
    model = keras.Model(inputs, keras.layers.Dense(1)(inputs))
    optimizer = make_optimizer(model, 1e-3, precision="mixed_float16")
    assert isinstance(optimizer, keras.optimizers.LossScaleOptimizer)
