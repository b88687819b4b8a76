"""The model card: what it takes to use a trained model correctly, inside it.

A model's weights are not enough to tag a photo: the caller must also know
the input size, how encoded images were resized in training, whether large
JPEGs were decoded at reduced scale, whether the output is logits or
probabilities, and which class each output is. keras-csl keeps these in a
`ModelCard` that travels inside the model itself, as the configuration of
an identity layer named `"model_card"` right after the input
(`ModelCardLayer`). So `model.save("any/where.keras")`, Keras's own
`ModelCheckpoint`, `keras.saving.load_model` and a copy of the `.keras`
file alone all keep it; export, inference and evaluation read it from the
model and need no run folder.

Who writes it:

- `keras_csl.models.build_model` puts a default card into every model it
  builds (the input size, classes named by index, `"squash"` resizing);
- training (`keras_csl.training`) replaces it with the dataset's class ids
  and names and the training preprocessing before saving the best model;
- the checkpoint converter (`keras_csl.models.convert_checkpoint`) writes
  the authors' class ids (OpenImages MIDs) and their display names;
- anyone else with `set_model_card(model, card)`, the one public call.

A serving export (`keras_csl.export.export_for_serving`) copies the card to
`assets.extra/model_card.json` of the SavedModel, so a serving client can
read it too.

Example:

>>> model = keras_csl.models.build_model("tiny", num_classes=2, image_size=32)
>>> card = ModelCard(image_size=32, class_ids=("/m/01yrx", "/m/0bt9lr"),
...                  display_names=("Cat", "Dog"), resize_mode="pad")
>>> model = set_model_card(model, card)
>>> get_model_card(model).display_names
('Cat', 'Dog')
"""

import dataclasses
import json
import zipfile

import keras

CARD_FORMAT = "keras_csl_model_card"
CARD_VERSION = 1
# The name of the identity layer that holds the card.
CARD_LAYER_NAME = "model_card"
# How encoded images are resized to the model input (see
# `keras_csl.data.preprocessing`, which takes them from here).
RESIZE_MODES = ("squash", "pad", "crop")
# How the pixels are computed (`keras_csl.data.preprocessing`):
# "bilinear": TensorFlow's bilinear resize, no antialiasing (fast; the
# default of every model trained with keras-csl); "pillow_bicubic": what
# Pillow's `Image.open(path).resize((S, S))` gives (accurate JPEG IDCT,
# antialiased bicubic in two rounded passes), the preprocessing of the
# CSL authors' `infer.py`.
RESIZE_METHODS = ("bilinear", "pillow_bicubic")
# Every keras-csl model takes float32 RGB pixels in this range; its own
# scaling (e.g. /255 or the Caffe mean) is inside the model.
VALUE_RANGE = (0.0, 255.0)


@dataclasses.dataclass(frozen=True)
class ModelCard:
    """What a model needs around it: input, preprocessing, outputs, classes.

    Example:

    >>> card = ModelCard(image_size=224, class_ids=("/m/01yrx",),
    ...                  display_names=("Cat",))
    >>> card.num_classes, card.resize_mode, card.resize_method
    (1, 'squash', 'bilinear')

    Attributes:
        image_size: side `S` of the square `[S, S, 3]` model input.
        class_ids: one class id (string) per model output, in output order;
            e.g. OpenImages MIDs (`"/m/01yrx"`) or COCO category ids.
        display_names: one human-readable name per output; defaults to the
            class ids.
        resize_mode: how encoded images are resized to `S x S`, as in
            training: `"squash"` (ignore the aspect ratio, as the authors),
            `"pad"` or `"crop"` (`keras_csl.data.preprocessing`).
        resize_method: how the resized pixels are computed, as in
            training (`RESIZE_METHODS`): `"bilinear"` (TensorFlow's
            bilinear resize, the default) or `"pillow_bicubic"` (Pillow's
            default resize, antialiased bicubic, as the CSL authors'
            `infer.py`); a card without the field reads as `"bilinear"`.
        jpeg_downscale: whether large JPEGs are decoded at 1/2, 1/4 or 1/8
            scale before resizing, as in training.
        from_logits: whether the model outputs logits (the sigmoid is
            applied by the predictor and the serving signature) rather than
            probabilities.
        architecture: the backbone or network name (e.g. `"tresnet_m"`).
        source: where the weights come from (a training run, a converted
            checkpoint), free text.
        extra: other JSON-serialisable facts (e.g. the best epoch and its
            validation mAP); never read by keras-csl itself.
    """

    image_size: int
    class_ids: tuple
    display_names: tuple = None
    resize_mode: str = "squash"
    resize_method: str = "bilinear"
    jpeg_downscale: bool = True
    from_logits: bool = True
    architecture: str = ""
    source: str = ""
    extra: dict = dataclasses.field(default_factory=dict)

    def __post_init__(self):
        _check(
            isinstance(self.image_size, int)
            and not isinstance(self.image_size, bool)
            and self.image_size >= 1,
            "image_size", "a positive int", self.image_size,
        )
        class_ids = _strings(self.class_ids, "class_ids")
        _check(len(class_ids) >= 1, "class_ids", "at least one class id",
               self.class_ids)
        object.__setattr__(self, "class_ids", class_ids)
        names = class_ids if self.display_names is None else _strings(
            self.display_names, "display_names"
        )
        _check(
            len(names) == len(class_ids), "display_names",
            f"one name per class id ({len(class_ids)})",
            f"{len(names)} names",
        )
        object.__setattr__(self, "display_names", names)
        _check(self.resize_mode in RESIZE_MODES, "resize_mode",
               f"one of {RESIZE_MODES}", self.resize_mode)
        _check(self.resize_method in RESIZE_METHODS, "resize_method",
               f"one of {RESIZE_METHODS}", self.resize_method)
        for name in ("jpeg_downscale", "from_logits"):
            _check(isinstance(getattr(self, name), bool), name, "True or False",
                   getattr(self, name))
        for name in ("architecture", "source"):
            _check(isinstance(getattr(self, name), str), name, "a string",
                   getattr(self, name))
        _check(isinstance(self.extra, dict), "extra", "a dict", self.extra)
        try:
            json.dumps(self.extra)
        except (TypeError, ValueError) as error:
            raise ValueError(
                "Invalid value for argument `extra`. Expected a "
                f"JSON-serialisable dict. Received: extra={self.extra!r} "
                f"({error})"
            ) from None

    @property
    def num_classes(self):
        return len(self.class_ids)

    def replace(self, **changes):
        """A copy with some fields changed (and checked again)."""
        return dataclasses.replace(self, **changes)

    def to_dict(self):
        """A plain, JSON-serialisable dict (what the `.keras` file holds)."""
        return dict(
            format=CARD_FORMAT,
            version=CARD_VERSION,
            image_size=self.image_size,
            value_range=list(VALUE_RANGE),
            resize_mode=self.resize_mode,
            resize_method=self.resize_method,
            jpeg_downscale=self.jpeg_downscale,
            from_logits=self.from_logits,
            architecture=self.architecture,
            source=self.source,
            num_classes=self.num_classes,
            class_ids=list(self.class_ids),
            display_names=list(self.display_names),
            extra=dict(self.extra),
        )

    def to_json(self):
        return json.dumps(self.to_dict(), indent=1, ensure_ascii=False)

    @classmethod
    def from_dict(cls, values):
        """The card of `to_dict()`; unknown or inconsistent fields raise.

        Raises:
            ValueError: if `values` is not a card of a known version, has
                unknown fields, or its fields are invalid.
        """
        if not isinstance(values, dict) or values.get("format") != CARD_FORMAT:
            raise ValueError(
                "Invalid model card. Expected a dict with "
                f"format={CARD_FORMAT!r}. Received: {_preview(values)}"
            )
        if values.get("version") != CARD_VERSION:
            raise ValueError(
                f"Unsupported model card version {values.get('version')!r}: "
                f"this keras-csl reads version {CARD_VERSION}. Upgrade "
                "keras-csl to read this model."
            )
        fields = {f.name for f in dataclasses.fields(cls)}
        derived = {"format", "version", "value_range", "num_classes"}
        unknown = sorted(set(values) - fields - derived)
        if unknown:
            raise ValueError(
                f"Invalid model card. Unknown fields {unknown}; expected "
                f"{sorted(fields | derived)}."
            )
        if "value_range" in values and list(values["value_range"]) != list(
            VALUE_RANGE
        ):
            raise ValueError(
                "Invalid model card. Expected value_range="
                f"{list(VALUE_RANGE)}. Received: value_range="
                f"{values['value_range']!r}"
            )
        card = cls(**{k: v for k, v in values.items() if k in fields})
        if "num_classes" in values and values["num_classes"] != card.num_classes:
            raise ValueError(
                f"Invalid model card. num_classes={values['num_classes']!r} "
                f"but {card.num_classes} class ids."
            )
        return card

    @classmethod
    def from_json(cls, text):
        return cls.from_dict(json.loads(text))

    def check_model(self, model):
        """Raises `ValueError` unless `model`'s input and output fit the card."""
        input_shape = tuple(model.inputs[0].shape)
        output_shape = tuple(model.outputs[0].shape)
        if output_shape[-1] != self.num_classes:
            raise ValueError(
                "Invalid model card for model "
                f"{model.name!r}: the model has {output_shape[-1]} outputs, "
                f"the card {self.num_classes} class ids."
            )
        sides = [s for s in input_shape[1:3] if s is not None]
        if any(side != self.image_size for side in sides):
            raise ValueError(
                f"Invalid model card for model {model.name!r}: its input is "
                f"{input_shape[1:3]}, the card says image_size="
                f"{self.image_size}."
            )


@keras.saving.register_keras_serializable(package="keras_csl")
class ModelCardLayer(keras.layers.Layer):
    """An identity layer whose configuration is the model's `ModelCard`.

    It passes its input through unchanged (float32, no weights), so it
    costs nothing; it exists so that the card is saved and loaded with the
    model by Keras itself. Use `set_model_card` rather than this class.
    """

    def __init__(self, card=None, **kwargs):
        kwargs.setdefault("name", CARD_LAYER_NAME)
        # float32 with no autocast: the pixels pass through untouched under
        # any mixed-precision policy.
        kwargs["dtype"] = "float32"
        kwargs.setdefault("autocast", False)
        super().__init__(**kwargs)
        if isinstance(card, dict):
            card = ModelCard.from_dict(card)
        if card is not None and not isinstance(card, ModelCard):
            raise ValueError(
                "Invalid value for argument `card`. Expected a ModelCard or "
                f"its dict. Received: card of type {type(card).__name__}"
            )
        self.card = card

    def call(self, inputs):
        return inputs

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        config = super().get_config()
        config["card"] = None if self.card is None else self.card.to_dict()
        config.pop("dtype", None)
        return config


def card_layer(model):
    """The `ModelCardLayer` of `model` (nested models searched), or `None`."""
    for layer in _all_layers(model):
        if isinstance(layer, ModelCardLayer):
            return layer
    return None


def get_model_card(model):
    """The `ModelCard` of a `keras.Model`, or `None` if it has none."""
    layer = card_layer(model)
    return None if layer is None else layer.card


def set_model_card(model, card):
    """Gives `model` its card; returns the model to use from now on.

    A model from `keras_csl.models.build_model` (or any model holding a
    `ModelCardLayer`) gets the new card in place and is returned as it is.
    Any other model is wrapped: a new functional model, input -> card layer
    -> `model`, sharing `model`'s layers and weights, is returned (call this
    before compiling or building an optimizer for it).

    Example:

    ```python
    model = keras_csl.models.build_model("resnet50", 80, image_size=448)
    model = keras_csl.models.set_model_card(model, keras_csl.models.ModelCard(
        image_size=448, class_ids=coco_ids, display_names=coco_names,
        resize_mode="squash", architecture="resnet50"))
    model.save("coco.keras")  # the card travels inside
    ```

    Args:
        model: a `keras.Model` from `[N, S, S, 3]` images to `[N, C]` scores.
        card: a `ModelCard` (or its dict) with `C` classes and `S` pixels.

    Returns:
        The model holding the card (`model` itself when it had a card layer).

    Raises:
        ValueError: if the card does not fit the model's input or output.
    """
    if isinstance(card, dict):
        card = ModelCard.from_dict(card)
    if not isinstance(card, ModelCard):
        raise ValueError(
            "Invalid value for argument `card`. Expected a ModelCard. "
            f"Received: card of type {type(card).__name__}"
        )
    if not isinstance(model, keras.Model) or len(model.inputs) != 1 or len(
        model.outputs
    ) != 1:
        raise ValueError(
            "Invalid value for argument `model`. Expected a keras.Model with "
            f"one image input and one output. Received: {model!r}"
        )
    card.check_model(model)
    layer = card_layer(model)
    if layer is not None:
        layer.card = card
        return model
    original = model.inputs[0]
    inputs = keras.Input(
        shape=tuple(original.shape[1:]), dtype=original.dtype,
        name=_input_name(original),
    )
    outputs = model(ModelCardLayer(card)(inputs))
    return keras.Model(inputs, outputs, name=model.name)


def read_model_card(path):
    """The `ModelCard` inside a `.keras` file, without building the model.

    Reads the file's `config.json` only: fast even for large models, and it
    needs none of the model's custom layers to be importable.

    Returns:
        The card, or `None` for a `.keras` file without one (e.g. saved by
        keras-csl before model cards, or by other code).

    Raises:
        ValueError: if `path` is not a readable `.keras` file, or its card
            is invalid.
    """
    path = str(path)
    opener, errors = _opener()
    try:
        with opener(path) as handle, zipfile.ZipFile(handle) as archive:
            config = json.loads(archive.read("config.json").decode("utf-8"))
    except errors as error:
        raise ValueError(
            f"Cannot read a model card from {path}: expected a .keras file "
            f"(a zip holding config.json). {type(error).__name__}: {error}"
        ) from None
    found = _find_card_config(config)
    return None if found is None else ModelCard.from_dict(found)


def _opener():
    """`(open function, errors it raises)`: tf.io.gfile where installed."""
    errors = (OSError, KeyError, zipfile.BadZipFile, ValueError)
    try:
        import tensorflow as tf
    except ImportError:  # JAX- or PyTorch-only installs read local files.
        return (lambda path: open(path, "rb")), errors
    return (lambda path: tf.io.gfile.GFile(path, "rb")), errors + (
        tf.errors.OpError,
    )


def _find_card_config(node):
    """Depth-first search of a Keras config for the card layer's config."""
    if isinstance(node, dict):
        if node.get("class_name") == "ModelCardLayer" and isinstance(
            node.get("config"), dict
        ):
            return node["config"].get("card")
        for value in node.values():
            found = _find_card_config(value)
            if found is not None:
                return found
    elif isinstance(node, list):
        for value in node:
            found = _find_card_config(value)
            if found is not None:
                return found
    return None


def _all_layers(model):
    for layer in getattr(model, "layers", []):
        yield layer
        yield from _all_layers(layer)


def _input_name(tensor):
    name = getattr(tensor, "name", None) or "images"
    return name.split(":")[0]


def _strings(values, argument):
    if isinstance(values, (str, bytes)) or not hasattr(values, "__iter__"):
        raise ValueError(
            f"Invalid value for argument `{argument}`. Expected a sequence of "
            f"strings. Received: {argument}={_preview(values)}"
        )
    result = []
    for value in values:
        if isinstance(value, bytes):
            value = value.decode("utf-8")
        if not isinstance(value, str):
            raise ValueError(
                f"Invalid value for argument `{argument}`. Expected strings. "
                f"Received: {value!r} of type {type(value).__name__}"
            )
        result.append(value)
    return tuple(result)


def _preview(value, limit=120):
    text = repr(value)
    return text if len(text) <= limit else text[:limit] + "..."


def _check(condition, argument, expected, value):
    if not condition:
        raise ValueError(
            f"Invalid value for argument `{argument}`. Expected {expected}. "
            f"Received: {argument}={_preview(value)}"
        )
