"""The two TResNet operations Keras has no layer for: space-to-depth, blur.

Both have no weights and use `keras.ops` only, so they run on every Keras
backend and under mixed precision (they compute in the layer's compute
dtype). Everything else in TResNet is a standard Keras layer
(`keras_csl.models.tresnet`).
"""

import keras
from keras import ops


@keras.saving.register_keras_serializable(package="keras_csl")
class SpaceToDepth(keras.layers.Layer):
    """Moves `block_size x block_size` pixel blocks into the channels.

    TResNet's stem: `[N, H, W, C]` becomes `[N, H/b, W/b, b*b*C]`, the
    channels ordered (row in the block, column in the block, input channel),
    the channel order of timm's and the authors' PyTorch `SpaceToDepth`
    (so a converted stem convolution sees the same inputs), and of
    `tf.nn.space_to_depth`.

    Example:

    >>> x = keras.ops.reshape(keras.ops.arange(16.0), (1, 4, 4, 1))
    >>> y = SpaceToDepth(block_size=2)(x)
    >>> tuple(y.shape), [int(v) for v in y[0, 0, 0]]
    ((1, 2, 2, 4), [0, 1, 4, 5])

    Args:
        block_size: side of the blocks; the input height and width must be
            multiples of it.
    """

    def __init__(self, block_size=4, **kwargs):
        super().__init__(**kwargs)
        if not isinstance(block_size, int) or isinstance(block_size, bool) or (
            block_size < 1
        ):
            raise ValueError(
                "Invalid value for argument `block_size`. Expected an "
                f"integer >= 1. Received: block_size={block_size!r}"
            )
        self.block_size = block_size

    def call(self, inputs):
        b = self.block_size
        _, height, width, channels = inputs.shape
        if height is None or width is None or height % b or width % b:
            raise ValueError(
                f"SpaceToDepth needs static height and width divisible by "
                f"block_size={b}. Received: input shape {inputs.shape}"
            )
        x = ops.reshape(inputs, (-1, height // b, b, width // b, b, channels))
        x = ops.transpose(x, (0, 1, 3, 2, 4, 5))
        return ops.reshape(x, (-1, height // b, width // b, b * b * channels))

    def compute_output_shape(self, input_shape):
        batch, height, width, channels = input_shape
        b = self.block_size
        return (
            batch,
            None if height is None else height // b,
            None if width is None else width // b,
            None if channels is None else channels * b * b,
        )

    def get_config(self):
        config = super().get_config()
        config["block_size"] = self.block_size
        return config


@keras.saving.register_keras_serializable(package="keras_csl")
class BlurPool2D(keras.layers.Layer):
    """Anti-aliased downsampling by 2: a [1, 2, 1] x [1, 2, 1] / 16 blur.

    TResNet's stride-2 step (Zhang, "Making Convolutional Networks
    Shift-Invariant Again", 2019): reflect-pad by one pixel, blur every
    channel with the fixed binomial filter `[1, 2, 1]^T [1, 2, 1] / 16`,
    keep every second pixel. An `n`-pixel side becomes `ceil(n / 2)`.

    The 3-tap binomial is the convolution of two 2-tap means, so the blur
    is computed as a 2x2 mean with stride 1 followed by a 2x2 mean with
    stride 2 (average pooling, no padding), which needs no filter tensor
    and is exactly the same sum.

    Example:

    >>> x = keras.ops.reshape(keras.ops.arange(16.0), (1, 4, 4, 1))
    >>> y = BlurPool2D()(x)
    >>> tuple(y.shape), float(y[0, 0, 0, 0])  # (5+8+5 + 2*(1+0+1) + 5+8+5) / 16
    ((1, 2, 2, 1), 2.5)
    """

    def call(self, inputs):
        x = ops.pad(inputs, ((0, 0), (1, 1), (1, 1), (0, 0)), mode="reflect")
        x = ops.average_pool(x, pool_size=2, strides=1, padding="valid")
        return ops.average_pool(x, pool_size=2, strides=2, padding="valid")

    def compute_output_shape(self, input_shape):
        batch, height, width, channels = input_shape
        half = lambda n: None if n is None else (n + 1) // 2  # noqa: E731
        return (batch, half(height), half(width), channels)
