"""TResNet (Ridnik et al., 2021) in Keras 3: the networks of the CSL paper.

The CSL paper's results are all TResNets: TResNet-M from ImageNet-21K on
COCO, TResNet-M and TResNet-L (its "V2" layout) on OpenImages. This module
builds them from Keras layers (plus `SpaceToDepth` and `BlurPool2D` from
`keras_csl.models.tresnet_layers`), on every backend and under mixed
precision, with the structure and layer order of timm's
`timm/models/tresnet.py` and the authors' `src/models/tresnet/tresnet.py`,
so that their weights convert one to one
(`keras_csl.models.convert_checkpoint`).

The network (`TResNetSpec`: blocks per stage, stem width `w`, V2):

- stem: `SpaceToDepth(4)` (`[S, S, 3]` to `[S/4, S/4, 48]`), a 3x3
  convolution to `w` channels, batch norm, leaky ReLU (slope 1e-2);
- four stages of `w`, `2w`, `4w`, `8w` "planes" and strides 1, 2, 2, 2:
  basic blocks in stages 1-2 (bottlenecks in V2), bottlenecks in stages
  3-4 (output `4 x planes`); squeeze-excitation in stages 1-3;
- every convolution has stride 1 and is followed by batch norm and a leaky
  ReLU (slope 1e-3) or nothing (the last one of a block); a stride-2 step
  is that convolution followed by `BlurPool2D` (anti-aliasing);
- shortcut of a block's first block when the shape changes: 2x2 average
  pooling (stride 2, ceil mode, padding not counted) then a 1x1 conv and
  batch norm; the block output is `ReLU(residual + shortcut)`;
- global average pooling: `8w x 4` features (2,048 for M and L V2).

The networks (`TRESNET_VARIANTS`):

| name | blocks | stem width | blocks in stages 1-2 | features |
|---|---|---|---|---|
| `tresnet_m` | 3, 4, 11, 3 | 64 | basic | 2048 |
| `tresnet_l` | 4, 5, 18, 3 | 76 (64 x 1.2) | basic | 2432 |
| `tresnet_xl` | 4, 5, 24, 3 | 83 (64 x 1.3) | basic | 2656 |
| `tresnet_v2_l` | 3, 4, 23, 3 | 64 | bottleneck | 2048 |

The authors' networks use InPlaceABN (batch norm whose scale acts as
`|weight| + eps`, fused with the activation); in inference it is a batch
norm with scale `|weight| + eps`, which the converter writes into a plain
`BatchNormalization`. Layer names follow timm's module names with `_` for
`.` (`body.layer2.0.conv1.conv` is the Keras layer `layer2_0_conv1_conv`).

`build_model("tresnet_m", ...)` puts `Rescaling(1/255)` before the
network, as the authors' preprocessing (no mean or std).
"""

import dataclasses
import logging
import os

import keras

from keras_csl.models.tresnet_layers import BlurPool2D
from keras_csl.models.tresnet_layers import SpaceToDepth

logger = logging.getLogger(__name__)

# Batch norm of timm and InPlaceABN: eps 1e-5, PyTorch momentum 0.1.
BN_EPSILON = 1e-5
BN_MOMENTUM = 0.9
STEM_SLOPE = 1e-2
BLOCK_SLOPE = 1e-3
# TResNet's stem halves twice (space-to-depth), its stages three times.
MIN_IMAGE_SIZE = 32
SIZE_MULTIPLE = 4


@dataclasses.dataclass(frozen=True)
class TResNetSpec:
    """The layout of a TResNet: blocks per stage, stem width, V2 or not.

    Example:

    >>> spec = TRESNET_VARIANTS["tresnet_l"]
    >>> spec.layers, spec.stem_width, spec.num_features
    ((4, 5, 18, 3), 76, 2432)

    Attributes:
        layers: number of blocks in each of the four stages.
        stem_width: channels of the stem convolution, and the planes of
            stage 1 (`int(64 * width_factor)` in timm).
        v2: bottleneck blocks in stages 1-2 too (TResNet-L V2).
    """

    layers: tuple
    stem_width: int
    v2: bool = False

    def __post_init__(self):
        layers = tuple(self.layers)
        if len(layers) != 4 or not all(
            isinstance(n, int) and not isinstance(n, bool) and n >= 1 for n in layers
        ):
            raise ValueError(
                "Invalid value for argument `layers`. Expected four integers "
                f">= 1 (blocks per stage). Received: layers={self.layers!r}"
            )
        object.__setattr__(self, "layers", layers)
        if not isinstance(self.stem_width, int) or self.stem_width < 1:
            raise ValueError(
                "Invalid value for argument `stem_width`. Expected an "
                f"integer >= 1. Received: stem_width={self.stem_width!r}"
            )
        if not isinstance(self.v2, bool):
            raise ValueError(
                "Invalid value for argument `v2`. Expected True or False. "
                f"Received: v2={self.v2!r}"
            )

    @property
    def num_features(self):
        return self.stem_width * 8 * 4

    def stage_blocks(self, stage):
        """`"basic"` or `"bottleneck"`, for stage 1 to 4."""
        return "bottleneck" if self.v2 or stage >= 3 else "basic"

    def describe(self):
        layers = "-".join(str(n) for n in self.layers)
        return f"tresnet(layers={layers}, stem_width={self.stem_width}, v2={self.v2})"


TRESNET_VARIANTS = {
    "tresnet_m": TResNetSpec((3, 4, 11, 3), 64),
    "tresnet_l": TResNetSpec((4, 5, 18, 3), 76),
    "tresnet_xl": TResNetSpec((4, 5, 24, 3), 83),
    "tresnet_v2_l": TResNetSpec((3, 4, 23, 3), 64, v2=True),
}


def variant_name(spec):
    """The name of `spec` in `TRESNET_VARIANTS`, or `None`."""
    for name, known in TRESNET_VARIANTS.items():
        if known == spec:
            return name
    return None


def check_image_size(image_size):
    """Raises `ValueError` unless TResNet can take `image_size` pixels."""
    if (
        not isinstance(image_size, int)
        or image_size < MIN_IMAGE_SIZE
        or image_size % SIZE_MULTIPLE
    ):
        raise ValueError(
            "Invalid value for argument `image_size`. TResNet expects a "
            f"multiple of {SIZE_MULTIPLE} (space-to-depth stem) >= "
            f"{MIN_IMAGE_SIZE}. Received: image_size={image_size!r}"
        )


def build_tresnet(spec, image_size=224, name="tresnet"):
    """The TResNet network: `[N, S, S, 3]` in [0, 1] to `[N, features]`.

    The input is scaled to [0, 1] (what `build_model` feeds it after its
    `Rescaling(1/255)`); the output is the globally averaged feature vector
    (`spec.num_features` values per image), before any classifier.

    Example:

    >>> net = build_tresnet(TRESNET_VARIANTS["tresnet_m"], image_size=64)
    >>> net.output.shape, net.count_params()  # with batch-norm statistics
    ((None, 2048), 29401600)

    Args:
        spec: a `TResNetSpec` (e.g. `TRESNET_VARIANTS["tresnet_m"]`).
        image_size: side `S` of the square input (a multiple of 4, >= 32).
        name: name of the `keras.Model`.

    Returns:
        A functional `keras.Model`.

    Raises:
        ValueError: for an invalid `spec` or `image_size`.
    """
    if not isinstance(spec, TResNetSpec):
        raise ValueError(
            "Invalid value for argument `spec`. Expected a TResNetSpec. "
            f"Received: spec={spec!r}"
        )
    check_image_size(image_size)
    inputs = keras.Input((image_size, image_size, 3), name="pixels")
    x = SpaceToDepth(4, name="s2d")(inputs)
    x = _conv_bn(x, spec.stem_width, 3, "conv1", slope=STEM_SLOPE)
    in_channels = spec.stem_width
    for stage in range(1, 5):
        planes = spec.stem_width * 2 ** (stage - 1)
        kind = spec.stage_blocks(stage)
        out_channels = planes * (4 if kind == "bottleneck" else 1)
        for index in range(spec.layers[stage - 1]):
            stride = 2 if stage > 1 and index == 0 else 1
            prefix = f"layer{stage}_{index}"
            shortcut = x
            if index == 0 and (stride != 1 or in_channels != out_channels):
                shortcut = _downsample(x, out_channels, stride, prefix)
            block = _basic_block if kind == "basic" else _bottleneck_block
            x = block(x, planes, stride, use_se=stage < 4, prefix=prefix)
            x = keras.layers.Add(name=f"{prefix}_add")([x, shortcut])
            x = keras.layers.ReLU(name=f"{prefix}_act")(x)
            in_channels = out_channels
    x = keras.layers.GlobalAveragePooling2D(name="pool")(x)
    return keras.Model(inputs, x, name=name)


def _conv_bn(x, filters, kernel_size, name, slope=BLOCK_SLOPE, stride=1):
    """timm's ConvNormAct: conv (stride 1), batch norm, leaky ReLU, blur.

    `slope=None` leaves out the activation; `stride=2` adds the blur.
    """
    x = keras.layers.Conv2D(
        filters, kernel_size, padding="same", use_bias=False, name=f"{name}_conv"
    )(x)
    x = keras.layers.BatchNormalization(
        epsilon=BN_EPSILON, momentum=BN_MOMENTUM, name=f"{name}_bn"
    )(x)
    if slope is not None:
        x = keras.layers.LeakyReLU(negative_slope=slope, name=f"{name}_act")(x)
    if stride == 2:
        x = BlurPool2D(name=f"{name}_aa")(x)
    return x


def _squeeze_excite(x, reduced, prefix):
    channels = x.shape[-1]
    s = keras.layers.GlobalAveragePooling2D(keepdims=True, name=f"{prefix}_se_pool")(x)
    s = keras.layers.Dense(reduced, activation="relu", name=f"{prefix}_se_fc1")(s)
    s = keras.layers.Dense(channels, activation="sigmoid", name=f"{prefix}_se_fc2")(s)
    return keras.layers.Multiply(name=f"{prefix}_se_scale")([x, s])


def _basic_block(x, planes, stride, use_se, prefix):
    x = _conv_bn(x, planes, 3, f"{prefix}_conv1", stride=stride)
    x = _conv_bn(x, planes, 3, f"{prefix}_conv2", slope=None)
    if use_se:
        x = _squeeze_excite(x, max(planes // 4, 64), prefix)
    return x


def _bottleneck_block(x, planes, stride, use_se, prefix):
    x = _conv_bn(x, planes, 1, f"{prefix}_conv1")
    x = _conv_bn(x, planes, 3, f"{prefix}_conv2", stride=stride)
    if use_se:
        # Squeeze-excitation on the `planes` channels, before the expansion.
        x = _squeeze_excite(x, max(planes * 4 // 8, 64), prefix)
    return _conv_bn(x, planes * 4, 1, f"{prefix}_conv3", slope=None)


def _downsample(x, out_channels, stride, prefix):
    # timm's Sequential: index 0 the pooling (stride 2 only), then the conv.
    index = 0
    if stride == 2:
        x = keras.layers.AveragePooling2D(
            2, strides=2, padding="same", name=f"{prefix}_downsample_0_pool"
        )(x)
        index = 1
    return _conv_bn(x, out_channels, 1, f"{prefix}_downsample_{index}", slope=None)


def tresnet_backbone(variant):
    """A `BACKBONES` entry of `build_model` for a `TRESNET_VARIANTS` name."""
    spec = TRESNET_VARIANTS[variant]

    def build(image_size, weights):
        if weights == "imagenet":
            raise ValueError(
                "Invalid value for argument `weights`. TResNet weights cannot "
                f"be downloaded by keras-csl: convert them first, e.g. timm's "
                "`tresnet_m.miil_in21k` (ImageNet-21K, the paper's COCO "
                "start) with `python -m keras_csl.models.convert_checkpoint "
                "--checkpoint=model.safetensors --output=tresnet_m_in21k.keras`"
                ", then pass weights='tresnet_m_in21k.keras' (docs/MODELS.md). "
                "Received: weights='imagenet'"
            )
        network = build_tresnet(spec, image_size, name=variant)
        if weights is not None:
            load_backbone_weights(network, weights)
        return preprocessing_layers(), network

    return build


def preprocessing_layers():
    """`[Rescaling(1/255)]`: the authors' and timm's TResNet input, no mean/std."""
    return [keras.layers.Rescaling(1.0 / 255.0, name="rescaling")]


def load_backbone_weights(network, path):
    """Loads the weights of a TResNet backbone from a `.keras` or `.weights.h5`.

    A `.keras` file is any model whose nested backbone has `network`'s name
    and weights (a converted checkpoint, a trained `build_model` model): its
    backbone weights are copied, whatever its classes, head or image size.
    A `.weights.h5` file holds the backbone alone
    (`model.get_layer("tresnet_m").save_weights(path)`).

    Raises:
        ValueError: if the file holds no such backbone or its weights do not
            fit (the first differing weight is named).
    """
    path = os.fspath(path)
    if path.endswith(".keras"):
        from keras_csl.models.hub import load_model

        source = load_model(path, compile=False)
        donor = _find_submodel(source, network.name)
        if donor is None:
            found = sorted(
                layer.name for layer in source.layers if isinstance(layer, keras.Model)
            )
            raise ValueError(
                f"Invalid value for argument `weights`. The model in {path} "
                f"has no {network.name!r} backbone (its nested models: "
                f"{found or 'none'}). Received: weights={path!r}"
            )
        _copy_weights(donor, network, path)
        logger.info("Loaded the %s backbone weights of %s.", network.name, path)
        return
    try:
        network.load_weights(path)
    except ValueError as error:
        raise ValueError(
            f"Invalid value for argument `weights`. Could not load {path} into "
            f"the {network.name!r} backbone: expected the weights of that "
            f"backbone alone (`model.get_layer({network.name!r})"
            ".save_weights(path)`) or a .keras model holding it. "
            f"Received: weights={path!r} ({error})"
        ) from error


def _find_submodel(model, name):
    for layer in model.layers:
        if isinstance(layer, keras.Model) and layer.name == name:
            return layer
    return None


def _copy_weights(donor, network, path):
    donor_weights = {_relative_path(v, donor): v for v in donor.weights}
    target_weights = {_relative_path(v, network): v for v in network.weights}
    if set(donor_weights) != set(target_weights):
        extra = sorted(set(donor_weights) - set(target_weights))
        missing = sorted(set(target_weights) - set(donor_weights))
        raise ValueError(
            f"Invalid value for argument `weights`. The {network.name!r} "
            f"backbone in {path} has a different structure: "
            f"{len(missing)} weights missing (first: {missing[:3]}), "
            f"{len(extra)} unexpected (first: {extra[:3]})."
        )
    for key, target in target_weights.items():
        source = donor_weights[key]
        if tuple(source.shape) != tuple(target.shape):
            raise ValueError(
                f"Invalid value for argument `weights`. Weight {key} of the "
                f"{network.name!r} backbone in {path} has shape "
                f"{tuple(source.shape)}; expected {tuple(target.shape)}."
            )
        target.assign(source.value)


def _relative_path(variable, model):
    path = variable.path
    prefix = model.name + "/"
    return path[len(prefix):] if path.startswith(prefix) else path
