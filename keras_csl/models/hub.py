"""keras-hub backbones for `build_model("hub:<preset>")` (optional extra).

A keras-hub preset is either a name keras-hub downloads (e.g.
`"hub:resnet_50_imagenet"`, where the network allows) or a local preset
folder (`"hub:/models/resnet_50_imagenet"`, e.g. one saved with
`backbone.save_to_preset(folder)` or copied from a machine with internet).

What `build_model` takes from the preset:

- the backbone (`keras_hub.models.Backbone.from_preset`); image feature maps
  `[batch, h, w, channels]` are averaged over space, token sequences
  `[batch, tokens, channels]` over tokens;
- the pixel scaling of the preset's image converter (`scale`, `offset`),
  applied to our `[0, 255]` input; its resizing is not used, because
  `keras_csl.data` has already resized the images to `image_size`. A preset
  without an image converter (a bare backbone) gets `x / 255`, with a
  warning.

Install with `pip install "keras-csl[hub]"`.
"""

import logging
import os
import zipfile

import keras

PREFIX = "hub:"


def is_hub_backbone(backbone):
    return isinstance(backbone, str) and backbone.startswith(PREFIX)


def import_keras_hub():
    """Imports keras-hub, or says how to install it."""
    try:
        import keras_hub
    except ImportError as error:
        raise ImportError(
            "keras-hub backbones (`backbone='hub:<preset>'`) need the "
            "keras-hub package: pip install 'keras-csl[hub]'"
        ) from error
    return keras_hub


def build_hub_backbone(backbone, image_size, weights):
    """Returns `(preprocessing layers, pooled backbone)` for a hub preset.

    `weights`: `None` builds the preset's architecture with random weights;
    `"imagenet"` (or `"preset"`) loads the preset's own pretrained weights;
    a path loads that `.weights.h5` file of the backbone alone.
    """
    preset = backbone[len(PREFIX):]
    if not preset:
        raise ValueError(
            "Invalid value for argument `backbone`. Expected 'hub:<preset>' "
            "with a keras-hub preset name or a local preset folder. "
            f"Received: backbone={backbone!r}"
        )
    keras_hub = import_keras_hub()
    network = keras_hub.models.Backbone.from_preset(
        preset, load_weights=weights in ("imagenet", "preset")
    )
    if weights not in (None, "imagenet", "preset"):
        network.load_weights(weights)

    inputs = keras.Input((image_size, image_size, 3))
    features = network(inputs)
    if isinstance(features, dict) or len(features.shape) not in (3, 4):
        raise ValueError(
            f"Invalid value for argument `backbone`. The keras-hub preset "
            f"{preset!r} ({type(network).__name__}) does not output one image "
            "feature map [batch, h, w, c] or token sequence [batch, t, c]. "
            f"Received: output {_describe(features)}"
        )
    if len(features.shape) == 4:
        pooled = keras.layers.GlobalAveragePooling2D(name="pool")(features)
    else:
        pooled = keras.layers.GlobalAveragePooling1D(name="pool")(features)
    pooled_network = keras.Model(inputs, pooled, name=_model_name(preset))
    return [_rescaling(keras_hub, preset)], pooled_network


def _rescaling(keras_hub, preset):
    try:
        converter = keras_hub.layers.ImageConverter.from_preset(preset)
    except (FileNotFoundError, ValueError) as error:
        logging.warning(
            "The keras-hub preset %r has no image converter (%s); scaling the "
            "images with x / 255.", preset, error,
        )
        return keras.layers.Rescaling(1.0 / 255.0, name="hub_rescaling")
    scale = 1.0 if converter.scale is None else converter.scale
    offset = 0.0 if converter.offset is None else converter.offset
    return keras.layers.Rescaling(_plain(scale), _plain(offset), name="hub_rescaling")


def _plain(value):
    """A float or a list of floats (what `Rescaling` serialises)."""
    if isinstance(value, (list, tuple)):
        return [float(item) for item in value]
    return float(value)


def _model_name(preset):
    base = os.path.basename(os.path.normpath(preset)) or "preset"
    safe = "".join(c if c.isalnum() or c == "_" else "_" for c in base)
    return f"hub_{safe}"


def _describe(features):
    if isinstance(features, dict):
        return "a dict of " + ", ".join(sorted(features))
    return f"of shape {tuple(features.shape)}"


def load_model(path, compile=False):
    """`keras.saving.load_model`, importing keras-hub first if the file needs it.

    keras-hub registers its layers when imported; a `.keras` file of a
    `hub:` model names them, so keras-hub must be imported before loading.
    """
    if str(path).endswith(".keras") and _mentions_keras_hub(path):
        import_keras_hub()
    return keras.saving.load_model(path, compile=compile)


def _mentions_keras_hub(path):
    try:
        with zipfile.ZipFile(path) as archive:
            config = archive.read("config.json").decode("utf-8")
    except (OSError, KeyError, zipfile.BadZipFile):
        return False  # keras.saving.load_model reports what is wrong.
    return '"keras_hub' in config or "keras_hub>" in config

