"""Layers the model factory puts inside the model."""

import keras
from keras import ops

# ImageNet channel means of the Caffe-converted ResNet weights, in BGR order
# (`keras.applications.imagenet_utils.preprocess_input(mode="caffe")`).
CAFFE_BGR_MEAN = (103.939, 116.779, 123.68)


@keras.saving.register_keras_serializable(package="keras_csl")
class CaffePreprocessing(keras.layers.Layer):
    """RGB [0, 255] to the BGR, mean-subtracted input of Keras's ResNets.

    The same as `keras.applications.resnet.preprocess_input` (Caffe mode),
    as a layer, so the saved model takes raw pixels: a training batch and a
    serving request both feed float RGB in [0, 255].

    Example:

    >>> layer = CaffePreprocessing()
    >>> x = keras.ops.convert_to_tensor([[[[255.0, 0.0, 0.0]]]])  # red
    >>> [round(float(v), 3) for v in layer(x)[0, 0, 0]]
    [-103.939, -116.779, 131.32]
    """

    def call(self, inputs):
        inputs = ops.cast(inputs, self.compute_dtype)
        bgr = ops.flip(inputs, axis=-1)
        mean = ops.convert_to_tensor(CAFFE_BGR_MEAN, dtype=self.compute_dtype)
        return bgr - mean

    def compute_output_shape(self, input_shape):
        return input_shape
