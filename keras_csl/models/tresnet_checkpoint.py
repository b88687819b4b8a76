"""PyTorch TResNet weights into the Keras TResNet: read, recognise, map, check.

Two key layouts are read (`LAYOUTS`), from `.pth` files (needs torch) or
`.safetensors` files (read with NumPy alone, `read_safetensors`):

- `"timm"`: timm's `tresnet_*` state dicts (`body.conv1.conv.weight`,
  `body.layer2.0.conv1.bn.running_var`, ...), plain batch norm;
- `"authors"`: the CSL authors' (and the original TResNet repository's)
  InPlaceABN models (`body.conv1.0.weight`, `body.conv1.1.weight`; a
  stride-2 convolution is `convK.0.0` / `convK.0.1` because its blur sits
  in the same `Sequential`). InPlaceABN scales by `|weight| + eps`
  (mapillary/inplace_abn), so the converted batch-norm scale is
  `|weight| + 1e-5`; timm's `checkpoint_filter_fn` does the same.

The classifier is `head.fc` (one linear layer) or the authors' bottleneck
head `head.fc.embedding_generator.0` + `head.fc.FC` (two linear layers),
in either layout.

The architecture is inferred from the keys (blocks per stage, stem width,
bottleneck blocks in stage 1 for V2), so TResNet-L V2, which the authors'
repository does not define, converts like the others. Every key must map
to exactly one Keras weight with the right shape: an unknown or missing key
or a wrong shape raises `ValueError` naming it. Only batch norm's
`num_batches_tracked` counters (no Keras counterpart, not used in
inference) are left out, and counted in the report.
"""

import json
import logging
import os
import re
import struct

import keras
import numpy as np

from keras_csl.models.tresnet import TRESNET_VARIANTS
from keras_csl.models.tresnet import TResNetSpec
from keras_csl.models.tresnet import variant_name

logger = logging.getLogger(__name__)

LAYOUTS = ("timm", "authors")
# InPlaceABN's epsilon, added to |weight| (mapillary/inplace_abn).
ABN_EPSILON = 1e-5
COUNTER_SUFFIX = ".num_batches_tracked"
HEAD_KEYS = {
    "plain": ("head.fc.weight", "head.fc.bias"),
    "bottleneck": (
        "head.fc.embedding_generator.0.weight",
        "head.fc.embedding_generator.0.bias",
        "head.fc.FC.weight",
        "head.fc.FC.bias",
    ),
}
_STEM_KEY = {"timm": "body.conv1.conv.weight", "authors": "body.conv1.0.weight"}
_SAFETENSORS_DTYPES = {
    "F64": "<f8", "F32": "<f4", "F16": "<f2", "I64": "<i8", "I32": "<i4",
    "I16": "<i2", "I8": "i1", "U8": "u1", "BOOL": "?",
}


def read_checkpoint(path, allow_pickle=False):
    """Reads a `.pth` or `.safetensors` file: `(state_dict, extras)`.

    `state_dict` maps key to NumPy array. `extras` holds what else a `.pth`
    file has: `"idx_to_class"` (the authors' `{index: class id}`),
    `"ignored"` (other top-level entries of a `.pth` dict, e.g. an
    optimizer state, not converted).

    Args:
        path: the checkpoint file.
        allow_pickle: let torch unpickle arbitrary objects (only for files
            you trust); by default only tensors and plain containers load.

    Raises:
        ValueError: for a missing file or one that holds no state dict.
        ImportError: for a `.pth` file when torch is not installed.
    """
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise ValueError(
            "Invalid value for argument `checkpoint`. Expected an existing "
            f".pth or .safetensors file. Received: checkpoint={path!r} (no such file)"
        )
    if path.endswith(".safetensors"):
        tensors, _ = read_safetensors(path)
        return _strip_module_prefix(tensors), {}
    return _read_torch(path, allow_pickle)


def read_safetensors(path):
    """Reads a `.safetensors` file with NumPy: `(tensors, metadata)`.

    The format (huggingface/safetensors): an 8-byte little-endian header
    length, a JSON header `{name: {"dtype", "shape", "data_offsets"}}` plus
    an optional `"__metadata__"` string map, then the raw little-endian
    data. bfloat16 tensors are widened to float32 exactly.

    Raises:
        ValueError: for a malformed file or an unsupported dtype.
    """
    with open(path, "rb") as handle:
        head = handle.read(8)
        if len(head) != 8:
            raise ValueError(f"Invalid safetensors file {path}: shorter than 8 bytes.")
        (header_size,) = struct.unpack("<Q", head)
        file_size = os.path.getsize(path)
        if header_size > file_size - 8:
            raise ValueError(
                f"Invalid safetensors file {path}: header of {header_size} "
                f"bytes in a file of {file_size} bytes."
            )
        try:
            header = json.loads(handle.read(header_size).decode("utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError) as error:
            raise ValueError(f"Invalid safetensors file {path}: bad header ({error}).") from None
    data = np.memmap(path, dtype=np.uint8, mode="r", offset=8 + header_size)
    metadata = header.pop("__metadata__", None) or {}
    tensors = {}
    for name, entry in header.items():
        dtype, shape = entry["dtype"], tuple(entry["shape"])
        begin, end = entry["data_offsets"]
        if not 0 <= begin <= end <= len(data):
            raise ValueError(
                f"Invalid safetensors file {path}: tensor {name!r} has data "
                f"offsets {begin}..{end} outside the {len(data)} data bytes."
            )
        raw = np.asarray(data[begin:end])
        if dtype == "BF16":
            array = (raw.view("<u2").astype(np.uint32) << 16).view(np.float32)
        elif dtype in _SAFETENSORS_DTYPES:
            array = raw.view(_SAFETENSORS_DTYPES[dtype])
        else:
            raise ValueError(
                f"Unsupported dtype {dtype!r} of tensor {name!r} in {path}; "
                f"expected one of {sorted(_SAFETENSORS_DTYPES) + ['BF16']}."
            )
        if array.size != int(np.prod(shape)):
            raise ValueError(
                f"Invalid safetensors file {path}: tensor {name!r} of shape "
                f"{shape} has {array.size} values."
            )
        tensors[name] = array.reshape(shape).copy()
    return tensors, metadata


def _read_torch(path, allow_pickle):
    try:
        import torch
    except ImportError as error:
        raise ImportError(
            f"Reading {path} needs PyTorch: pip install 'keras-csl[torch]' "
            "(or convert the weights to .safetensors, which need no torch)."
        ) from error
    try:
        loaded = torch.load(path, map_location="cpu", weights_only=not allow_pickle)
    except Exception as error:  # torch raises many types for foreign files
        hint = (
            " It holds objects other than tensors: if you trust the file, "
            "pass allow_pickle=True (--allow_pickle)."
            if not allow_pickle and "weights_only" in str(error) else ""
        )
        raise ValueError(
            f"Cannot read the PyTorch checkpoint {path}: "
            f"{type(error).__name__}: {str(error)[:500]}.{hint}"
        ) from None
    if not isinstance(loaded, dict):
        raise ValueError(
            f"Invalid checkpoint {path}: expected a dict (a state dict, or "
            f"{{'model': state_dict, ...}}). Received: {type(loaded).__name__}"
        )
    extras = {}
    state = loaded
    for wrapper in ("model", "state_dict"):
        if isinstance(loaded.get(wrapper), dict):
            state = loaded[wrapper]
            extras["idx_to_class"] = loaded.get("idx_to_class")
            extras["ignored"] = sorted(
                str(k) for k in loaded if k not in (wrapper, "idx_to_class")
            )
            break
    tensors = {}
    for key, value in state.items():
        if not isinstance(value, torch.Tensor):
            raise ValueError(
                f"Invalid checkpoint {path}: state dict entry {key!r} is a "
                f"{type(value).__name__}, not a tensor."
            )
        value = value.detach().cpu()
        if value.dtype == torch.bfloat16:
            value = value.float()
        tensors[str(key)] = value.numpy()
    return _strip_module_prefix(tensors), extras


def _strip_module_prefix(tensors):
    """Drops the `module.` prefix that torch's DataParallel adds to every key."""
    if tensors and all(key.startswith("module.") for key in tensors):
        logger.info("Stripping the 'module.' prefix of all %d keys.", len(tensors))
        return {key[len("module."):]: value for key, value in tensors.items()}
    return tensors


def detect_layout(state_dict):
    """`"timm"` or `"authors"`, from the key of the stem convolution.

    Raises:
        ValueError: if neither layout's stem key is present.
    """
    found = [layout for layout, key in _STEM_KEY.items() if key in state_dict]
    if len(found) != 1:
        raise ValueError(
            "Unknown checkpoint layout: expected a TResNet state dict with "
            f"exactly one of the stem keys {sorted(_STEM_KEY.values())}. "
            f"Received: {len(state_dict)} keys, first {sorted(state_dict)[:5]}"
        )
    return found[0]


def infer_spec(state_dict, layout):
    """The `TResNetSpec` of a state dict, from its keys and the stem shape.

    Raises:
        ValueError: if the stem is not a 3x3 convolution of the 48 channels
            of space-to-depth RGB, or a stage has no blocks.
    """
    stem = state_dict[_STEM_KEY[layout]]
    if stem.ndim != 4 or stem.shape[1:] != (48, 3, 3):
        raise ValueError(
            f"Invalid TResNet checkpoint: key {_STEM_KEY[layout]!r} has shape "
            f"{stem.shape}; expected (width, 48, 3, 3), a 3x3 convolution of "
            "the 48 space-to-depth channels of an RGB image."
        )
    layers = []
    for stage in range(1, 5):
        pattern = re.compile(rf"^body\.layer{stage}\.(\d+)\.")
        indices = {int(m.group(1)) for m in map(pattern.match, state_dict) if m}
        if not indices:
            raise ValueError(
                f"Invalid TResNet checkpoint: no keys of stage {stage} "
                f"('body.layer{stage}.<block>.*')."
            )
        layers.append(max(indices) + 1)
    v2 = any(key.startswith("body.layer1.0.conv3.") for key in state_dict)
    return TResNetSpec(tuple(layers), int(stem.shape[0]), v2=v2)


def infer_head(state_dict):
    """`(num_classes, head_hidden)`: `head_hidden` is `None` for `head.fc`.

    Raises:
        ValueError: if the state dict has no (or an inconsistent) head.
    """
    has = {kind: any(k in state_dict for k in keys) for kind, keys in HEAD_KEYS.items()}
    if has["plain"] == has["bottleneck"]:
        raise ValueError(
            "Invalid TResNet checkpoint: expected exactly one classifier head, "
            f"{HEAD_KEYS['plain'][0]!r} or the bottleneck head "
            f"{HEAD_KEYS['bottleneck'][0]!r} + {HEAD_KEYS['bottleneck'][2]!r}. "
            f"Received: {'both' if has['plain'] else 'neither'}"
        )
    if has["plain"]:
        weight = _get(state_dict, "head.fc.weight")
        return int(weight.shape[0]), None
    hidden = _get(state_dict, "head.fc.embedding_generator.0.weight")
    final = _get(state_dict, "head.fc.FC.weight")
    return int(final.shape[0]), int(hidden.shape[0])


def _get(state_dict, key):
    if key not in state_dict:
        raise ValueError(f"Invalid TResNet checkpoint: missing key {key!r}.")
    return state_dict[key]


def resolve_spec(state_dict, layout, architecture=None):
    """The spec to build: inferred, and checked against `architecture`.

    Args:
        architecture: `None` (infer; it must be one of `TRESNET_VARIANTS`),
            a `TRESNET_VARIANTS` name (the checkpoint must fit it), or
            `"custom"` (any TResNet layout, as found in the keys).

    Returns:
        `(spec, name)`: `name` is the variant name, or `spec.describe()`
        for a custom layout.

    Raises:
        ValueError: for an unknown `architecture`, or a checkpoint whose
            layout is not the one asked for (or, with `None`, no known one).
    """
    choices = sorted(TRESNET_VARIANTS) + ["custom"]
    if architecture is not None and architecture not in choices:
        raise ValueError(
            "Invalid value for argument `architecture`. Expected None (infer "
            f"from the keys) or one of {choices}. "
            f"Received: architecture={architecture!r}"
        )
    inferred = infer_spec(state_dict, layout)
    if architecture == "custom":
        return inferred, variant_name(inferred) or inferred.describe()
    if architecture is None:
        name = variant_name(inferred)
        if name is None:
            raise ValueError(
                f"Unknown TResNet architecture: the checkpoint's keys give "
                f"{inferred.describe()}, none of {sorted(TRESNET_VARIANTS)} "
                "(a truncated file looks like this too). Pass "
                "architecture='custom' to convert this layout as it is."
            )
        return inferred, name
    expected = TRESNET_VARIANTS[architecture]
    if expected != inferred:
        raise ValueError(
            f"Invalid value for argument `architecture`: the checkpoint is "
            f"{inferred.describe()}, {architecture} is {expected.describe()}. "
            f"Received: architecture={architecture!r}"
        )
    return expected, architecture


def weight_map(model, network_name, layout):
    """`{checkpoint key: (Keras variable, transform)}` for a built classifier.

    Derived from the Keras layers themselves (layer `layer2_0_conv1_conv` is
    timm's module `body.layer2.0.conv1.conv`), so the map cannot miss a
    layer of the model: `load_state_dict` checks that every Keras weight is
    assigned once.
    """
    if layout not in LAYOUTS:
        raise ValueError(
            f"Invalid value for argument `layout`. Expected one of {LAYOUTS}. "
            f"Received: layout={layout!r}"
        )
    network = model.get_layer(network_name)
    blurred = {layer.name[: -len("_aa")] for layer in network.layers if layer.name.endswith("_aa")}
    entries = {}
    for layer in network.layers:
        if not layer.weights:
            continue
        module = _module_path(layer.name, blurred, layout)
        if isinstance(layer, keras.layers.Conv2D):
            entries[module + ".weight"] = (layer.kernel, "conv")
        elif isinstance(layer, keras.layers.BatchNormalization):
            scale = "abn_scale" if layout == "authors" else "copy"
            entries[module + ".weight"] = (layer.gamma, scale)
            entries[module + ".bias"] = (layer.beta, "copy")
            entries[module + ".running_mean"] = (layer.moving_mean, "copy")
            entries[module + ".running_var"] = (layer.moving_variance, "copy")
        elif isinstance(layer, keras.layers.Dense):
            entries[module + ".weight"] = (layer.kernel, "conv1x1_dense")
            entries[module + ".bias"] = (layer.bias, "copy")
        else:
            raise ValueError(f"No checkpoint mapping for layer {layer.name!r}.")
    names = {layer.name for layer in model.layers}
    heads = (("head_hidden", "head.fc.embedding_generator.0"), ("logits", "head.fc.FC"))
    if "head_hidden" not in names:
        heads = (("logits", "head.fc"),)
    for layer_name, module in heads:
        layer = model.get_layer(layer_name)
        entries[module + ".weight"] = (layer.kernel, "linear")
        entries[module + ".bias"] = (layer.bias, "copy")
    return entries


def _module_path(layer_name, blurred, layout):
    """The PyTorch module of a Keras TResNet layer, in `layout`."""
    timm = "body." + layer_name.replace("_", ".")
    if layout == "timm":
        return timm
    match = re.fullmatch(r"(.*)_(conv|bn)", layer_name)
    if match is None:  # squeeze-excitation fc1/fc2: same in both layouts
        return timm
    base, part = match.groups()
    index = "0" if part == "conv" else "1"
    prefix = "body." + base.replace("_", ".")
    if base in blurred:  # Sequential(conv2d_ABN, AntiAliasDownsampleLayer)
        return f"{prefix}.0.{index}"
    return f"{prefix}.{index}"


def _transform(array, how):
    array = np.asarray(array, dtype=np.float32)
    if how == "conv":
        return array.transpose(2, 3, 1, 0) if array.ndim == 4 else array
    if how == "conv1x1_dense":
        return array[:, :, 0, 0].T if array.ndim == 4 else array
    if how == "linear":
        return array.T if array.ndim == 2 else array
    if how == "abn_scale":
        return np.abs(array) + ABN_EPSILON
    return array


def load_state_dict(model, network_name, state_dict, layout):
    """Assigns a checkpoint to a built Keras TResNet classifier, strictly.

    Returns:
        A dict report: `"assigned"` (number of tensors),
        `"counters_skipped"` (`num_batches_tracked` keys, unused).

    Raises:
        ValueError: naming the unknown and missing keys, or the first
            tensor whose shape does not fit.
    """
    entries = weight_map(model, network_name, layout)
    counters = sorted(k for k in state_dict if k.endswith(COUNTER_SUFFIX))
    unknown_counters = [
        k for k in counters
        if k[: -len(COUNTER_SUFFIX)] + ".running_mean" not in entries
    ]
    keys = set(state_dict) - set(counters)
    unknown = sorted(keys - set(entries)) + unknown_counters
    missing = sorted(set(entries) - keys)
    if unknown or missing:
        raise ValueError(
            f"The checkpoint does not fit the Keras {network_name} "
            f"({layout} layout): {len(unknown)} unknown keys "
            f"{_first(unknown)}, {len(missing)} missing keys {_first(missing)}."
        )
    assigned = {}
    for key, (variable, how) in entries.items():
        value = _transform(state_dict[key], how)
        if tuple(value.shape) != tuple(variable.shape):
            raise ValueError(
                f"Shape mismatch for checkpoint key {key!r}: "
                f"{tuple(state_dict[key].shape)} gives {tuple(value.shape)}, "
                f"the Keras weight {variable.path} is {tuple(variable.shape)}."
            )
        if not np.all(np.isfinite(value)):
            raise ValueError(f"Checkpoint key {key!r} holds NaN or infinite values.")
        assigned[id(variable)] = (variable, value)
    every = {id(v) for v in model.weights}
    if set(assigned) != every:
        unassigned = [v.path for v in model.weights if id(v) not in assigned]
        raise ValueError(f"Keras weights left unassigned: {_first(unassigned)}")
    for variable, value in assigned.values():
        variable.assign(value)
    return {"assigned": len(entries), "counters_skipped": len(counters)}


def _first(keys, limit=8):
    keys = list(keys)
    shown = ", ".join(repr(k) for k in keys[:limit])
    return f"[{shown}{', ...' if len(keys) > limit else ''}]"
