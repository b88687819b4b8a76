"""The model factory: a backbone, global average pooling and a float32 head.

`build_model` returns a `keras.Model` whose input, named `"images"`, is a
batch of float RGB images in [0, 255] (what `keras_csl.data` produces and
what the serving signature feeds), and whose output, named `"logits"`, is
float32 `[batch, num_classes]` logits, whatever the mixed-precision policy.
The backbone's own preprocessing is inside the model.

Backbones (`BACKBONES`):

| name | network | preprocessing inside |
|---|---|---|
| `resnet50`, `resnet101` | `keras.applications.ResNet50/101` | `CaffePreprocessing` (BGR, mean) |
| `efficientnetv2_s`, `efficientnetv2_m` | `keras.applications.EfficientNetV2S/M` | the network's `include_preprocessing` |
| `convnext_tiny`, `convnext_small` | `keras.applications.ConvNeXtTiny/Small` | the network's `include_preprocessing` |
| `tresnet_m`, `tresnet_l`, `tresnet_xl`, `tresnet_v2_l` | TResNet (`keras_csl.models.tresnet`), the CSL paper's networks | `Rescaling(1/255)` (the authors' input) |
| `tiny` | three conv-BN-ReLU blocks (tests, CPU demo) | scale to [-1, 1] |
| `hub:<preset>` | a keras-hub backbone (optional extra, `keras_csl.models.hub`) | the preset's pixel scaling |

Weights: `None` (random), `"imagenet"` (downloaded by Keras on first use,
where the network allows; not for `tiny`), or the path of a local weights
file of the backbone alone: for the `keras.applications` networks the
"notop" `.h5` file Keras would download (copy it by hand to machines
without internet), for `tiny` a `.weights.h5` file saved from
`model.get_layer("tiny")`. For `hub:` backbones, `"imagenet"` loads the
preset's own pretrained weights, whatever data they were trained on.
TResNet weights cannot be downloaded: convert timm's or the authors'
checkpoints with `keras_csl.models.convert_checkpoint` (docs/MODELS.md)
and pass the `.keras` file (its backbone is kept, its head dropped), or a
`.weights.h5` file of the backbone alone.

The classifier on the pooled features is `Dense(num_classes)`, or with
`head_hidden=H` the authors' "bottleneck head" `Dense(H)` then
`Dense(num_classes)`, with nothing between (their OpenImages models use
`H = 512`).
"""

import os

import keras

from keras_csl.models import hub
from keras_csl.models.card import ModelCard
from keras_csl.models.card import ModelCardLayer
from keras_csl.models.layers import CaffePreprocessing
from keras_csl.models.tresnet import TRESNET_VARIANTS
from keras_csl.models.tresnet import tresnet_backbone

INPUT_NAME = "images"
OUTPUT_NAME = "logits"


def _applications(constructor, preprocessing):
    def build(image_size, weights):
        network = getattr(keras.applications, constructor)
        kwargs = dict(
            include_top=False,
            weights=weights,
            input_shape=(image_size, image_size, 3),
            pooling="avg",
        )
        if preprocessing == "builtin":
            kwargs["include_preprocessing"] = True
        layers = [CaffePreprocessing(name="caffe_preprocessing")] if (
            preprocessing == "caffe"
        ) else []
        return layers, network(**kwargs)

    return build


def _tiny(image_size, weights):
    if weights == "imagenet":
        raise ValueError(
            "Invalid value for argument `weights`. The `tiny` backbone has "
            "no pretrained weights: expected None or a local weights file. "
            "Received: weights='imagenet'"
        )
    inputs = keras.Input((image_size, image_size, 3))
    x = inputs
    for index, filters in enumerate((16, 32, 64)):
        x = keras.layers.Conv2D(
            filters, 3, strides=2, padding="same", use_bias=False,
            name=f"conv{index}",
        )(x)
        x = keras.layers.BatchNormalization(name=f"bn{index}")(x)
        x = keras.layers.ReLU(name=f"relu{index}")(x)
    x = keras.layers.GlobalAveragePooling2D(name="pool")(x)
    backbone = keras.Model(inputs, x, name="tiny")
    if weights is not None:
        backbone.load_weights(weights)
    scale = keras.layers.Rescaling(1.0 / 127.5, offset=-1.0, name="rescaling")
    return [scale], backbone


BACKBONES = {
    "resnet50": _applications("ResNet50", "caffe"),
    "resnet101": _applications("ResNet101", "caffe"),
    "efficientnetv2_s": _applications("EfficientNetV2S", "builtin"),
    "efficientnetv2_m": _applications("EfficientNetV2M", "builtin"),
    "convnext_tiny": _applications("ConvNeXtTiny", "builtin"),
    "convnext_small": _applications("ConvNeXtSmall", "builtin"),
    "tiny": _tiny,
    **{name: tresnet_backbone(name) for name in TRESNET_VARIANTS},
}


def build_model(
    backbone="resnet50",
    num_classes=80,
    image_size=224,
    weights=None,
    dropout=0.0,
    sync_batchnorm=False,
    name=None,
    head_hidden=None,
):
    """Builds a multi-label classifier: backbone, pooling, float32 logits.

    Create it inside `strategy.scope()` (and after
    `keras.mixed_precision.set_global_policy`) to train it distributed or in
    mixed precision; the head keeps `dtype="float32"` so the logits, and the
    loss computed from them, stay float32.

    Example:

    >>> model = build_model("tiny", num_classes=5, image_size=32)
    >>> model.input.name, model.output.shape, model.output.dtype
    ('images', (None, 5), 'float32')

    Args:
        backbone: one of `BACKBONES`, or `"hub:<preset>"` for a keras-hub
            preset name or local preset folder (`keras_csl.models.hub`).
        num_classes: number of output logits.
        image_size: side `S` of the square `[S, S, 3]` input.
        weights: `None`, `"imagenet"` (for `hub:` backbones also
            `"preset"`: the same) or the path of a local weights file of
            the backbone (see the module docstring).
        dropout: dropout rate before the head (0 disables it).
        sync_batchnorm: make every `BatchNormalization` layer use the
            statistics of the global batch under `tf.distribute` (TensorFlow
            backend only). Off by default, as in the authors' recipe; turn
            it on for small per-replica batches.
        name: name of the model; defaults to `"csl_<backbone>"`.
        head_hidden: `None` for a `Dense(num_classes)` head, or the width
            `H` of the authors' bottleneck head: `Dense(H)` (layer
            `"head_hidden"`) then `Dense(num_classes)`, no activation
            between (e.g. 512, as their OpenImages TResNets).

    Returns:
        A `keras.Model` from `"images"` (float32 RGB in [0, 255]) to
        `"logits"`, holding a default `ModelCard` (classes named by index,
        `"squash"` resizing): give it the real classes and preprocessing
        with `keras_csl.models.set_model_card`.

    Raises:
        ValueError: for an unknown backbone, a missing weights file or an
            out-of-range argument.
    """
    from_hub = hub.is_hub_backbone(backbone)
    if backbone not in BACKBONES and not from_hub:
        raise ValueError(
            f"Invalid value for argument `backbone`. Expected one of "
            f"{sorted(BACKBONES)} or 'hub:<keras-hub preset>'. "
            f"Received: backbone={backbone!r}"
        )
    for argument, value, minimum in (
        ("num_classes", num_classes, 1),
        ("image_size", image_size, 8),
    ):
        if not isinstance(value, int) or isinstance(value, bool) or value < minimum:
            raise ValueError(
                f"Invalid value for argument `{argument}`. Expected an "
                f"integer >= {minimum}. Received: {argument}={value!r}"
            )
    if not 0.0 <= dropout < 1.0:
        raise ValueError(
            "Invalid value for argument `dropout`. Expected a number in "
            f"[0, 1). Received: dropout={dropout!r}"
        )
    if head_hidden is not None and (
        not isinstance(head_hidden, int) or isinstance(head_hidden, bool)
        or head_hidden < 1
    ):
        raise ValueError(
            "Invalid value for argument `head_hidden`. Expected None or an "
            f"integer >= 1. Received: head_hidden={head_hidden!r}"
        )
    weight_names = (None, "imagenet", "preset") if from_hub else (None, "imagenet")
    if weights not in weight_names and not os.path.exists(str(weights)):
        hint = (
            " TResNet weights are made with `python -m "
            "keras_csl.models.convert_checkpoint` (docs/MODELS.md)."
            if backbone in TRESNET_VARIANTS else ""
        )
        raise ValueError(
            f"Invalid value for argument `weights`. Expected one of "
            f"{weight_names} or the path of an existing weights file. "
            f"Received: weights={weights!r} (no such file).{hint}"
        )

    if from_hub:
        preprocessing, network = hub.build_hub_backbone(backbone, image_size, weights)
        default_name = f"csl_{network.name}"
    else:
        preprocessing, network = BACKBONES[backbone](image_size, weights)
        default_name = f"csl_{backbone}"
    model = assemble_classifier(
        preprocessing, network, num_classes, image_size,
        dropout=dropout, head_hidden=head_hidden, name=name or default_name,
        architecture=str(backbone),
    )
    if sync_batchnorm:
        set_sync_batchnorm(model, True)
    return model


def assemble_classifier(
    preprocessing, network, num_classes, image_size, dropout=0.0,
    head_hidden=None, name=None, architecture="",
):
    """Input, card, preprocessing, `network`, head: the model `build_model` returns.

    Shared with the checkpoint converter (`keras_csl.models.convert_checkpoint`),
    so that a converted model has exactly the layout of a built one.
    """
    inputs = keras.Input((image_size, image_size, 3), name=INPUT_NAME)
    # A default card (classes named by index, "squash" resizing); training
    # or `set_model_card` replaces it with the real classes and settings.
    card = ModelCard(
        image_size=image_size,
        class_ids=tuple(str(i) for i in range(num_classes)),
        architecture=architecture,
    )
    x = ModelCardLayer(card)(inputs)
    for layer in preprocessing:
        x = layer(x)
    x = network(x)
    if dropout > 0:
        x = keras.layers.Dropout(dropout, name="head_dropout")(x)
    if head_hidden is not None:
        x = keras.layers.Dense(head_hidden, name="head_hidden")(x)
    outputs = keras.layers.Dense(num_classes, dtype="float32", name=OUTPUT_NAME)(x)
    return keras.Model(inputs, outputs, name=name)


def set_sync_batchnorm(model, synchronized=True):
    """Sets `synchronized` on every `BatchNormalization` layer, nested too.

    With `synchronized=True`, under a `tf.distribute` strategy each
    normalisation uses the mean and variance of the global batch (an
    all-reduce per layer and step) instead of the replica's own batch.

    Returns:
        The number of layers changed.
    """
    if synchronized and keras.backend.backend() != "tensorflow":
        raise ValueError(
            "Synchronized batch normalization needs the TensorFlow backend. "
            f"Received: backend={keras.backend.backend()!r}"
        )
    count = 0
    for layer in _all_layers(model):
        if isinstance(layer, keras.layers.BatchNormalization):
            layer.synchronized = synchronized
            count += 1
    return count


def _all_layers(layer):
    for child in getattr(layer, "layers", []):
        yield child
        yield from _all_layers(child)
