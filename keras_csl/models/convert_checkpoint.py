r"""Converts PyTorch TResNet checkpoints into keras-csl `.keras` models.

    python -m keras_csl.models.convert_checkpoint \
        --checkpoint=mtresnet_opim_86.72.pth --output=mtresnet_opim.keras \
        --class_descriptions=oidv6-class-descriptions.csv

reads the CSL authors' OpenImages checkpoints
(`{'model': state_dict, 'idx_to_class': {index: MID}}`, InPlaceABN keys,
bottleneck head) or timm's TResNet weights (`.pth`, or `.safetensors`
read without torch), infers the architecture and head from the keys
(`keras_csl.models.tresnet_checkpoint`), and writes a `.keras` model that
`keras_csl.models.load_model` loads: `build_model`'s layout (input
`"images"`, float RGB in [0, 255], `/255` inside, float32 logits) with a
`ModelCard` holding the class ids (the checkpoint's MIDs), their display
names (from an OpenImages class-descriptions CSV `LabelName,DisplayName`),
the preprocessing the weights expect (`CARD_PREPROCESSING`), the image
size, the architecture and the checkpoint's file name as `source`.

The preprocessing in the card, by the checkpoint's layout:

- the authors' checkpoints get their `infer.py`'s: `PIL.Image.open(path)
  .resize((S, S))` then `/255`, i.e. `resize_mode="squash"`,
  `resize_method="pillow_bicubic"` and `jpeg_downscale=False` (a full
  decode: on the 53 COCO photos of `../shared/data/coco-sample` at 224 px
  the pixels then differ from Pillow's by 0.0002 grey levels on average,
  against 2.2 with JPEGs decoded at reduced scale first and 2.8 with
  keras-csl's default preprocessing; `benchmarks/resize_fidelity.py`);
- timm's weights (ImageNet backbones, to fine-tune) get keras-csl's
  defaults, `"squash"`, `"bilinear"`, `jpeg_downscale=True`: timm's own
  evaluation transform (bilinear resize of the shorter side to 256, centre
  crop to 224) is none of keras-csl's resize modes anyway, and fine-tuning
  (`keras_csl.training`) writes its own card with the preprocessing it
  trains with, whose defaults these are.

Classes, in order of precedence: `classes_csv` (keras-csl's
`index,class_id,display_name` file), else the checkpoint's `idx_to_class`,
else the output index (`"0"`, `"1"`, ...). A class id without a display
name keeps its id as name, with a logged warning and the ids listed in the
returned `Conversion`.

Output: a `.keras` file of 143 MB for TResNet-M with 9,605 classes; time
and memory in docs/MODELS.md. `.pth` files need
`pip install 'keras-csl[torch]'`.
"""

import argparse
import dataclasses
import json
import logging
import os
import sys

from keras_csl.models import tresnet_checkpoint
from keras_csl.models.backbones import assemble_classifier
from keras_csl.models.card import ModelCard
from keras_csl.models.card import set_model_card
from keras_csl.models.tresnet import TRESNET_VARIANTS
from keras_csl.models.tresnet import build_tresnet
from keras_csl.models.tresnet import check_image_size
from keras_csl.models.tresnet import preprocessing_layers

logger = logging.getLogger(__name__)

DEFAULT_IMAGE_SIZE = 224
# The model card's preprocessing for each checkpoint layout (see the module
# docstring): the authors' `infer.py`, or keras-csl's defaults for timm's.
CARD_PREPROCESSING = {
    "authors": dict(
        resize_mode="squash", resize_method="pillow_bicubic", jpeg_downscale=False
    ),
    "timm": {},
}


@dataclasses.dataclass(frozen=True)
class Conversion:
    """What `convert_checkpoint` wrote and what it left out.

    Attributes:
        output: path of the `.keras` file.
        architecture: variant name (e.g. `"tresnet_m"`), or the layout of a
            custom TResNet.
        layout: `"authors"` or `"timm"` (`tresnet_checkpoint.LAYOUTS`).
        num_classes: outputs of the model.
        head_hidden: width of the bottleneck head, or `None`.
        tensors: number of checkpoint tensors converted.
        counters_skipped: `num_batches_tracked` entries left out (unused in
            inference, no Keras counterpart).
        classes_from: `"classes_csv"`, `"idx_to_class"` or `"index"`.
        unnamed_classes: class ids for which no display name was found
            (their id is their name).
        ignored_entries: other top-level entries of the checkpoint file
            (e.g. `"epoch"`), not converted.
    """

    output: str
    architecture: str
    layout: str
    num_classes: int
    head_hidden: object
    tensors: int
    counters_skipped: int
    classes_from: str
    unnamed_classes: tuple = ()
    ignored_entries: tuple = ()


def convert_checkpoint(
    checkpoint,
    output,
    architecture=None,
    classes_csv=None,
    class_descriptions=None,
    image_size=DEFAULT_IMAGE_SIZE,
    allow_pickle=False,
):
    """Converts a TResNet checkpoint into a `.keras` model with its card.

    Example:

    ```python
    conversion = convert_checkpoint(
        "mtresnet_opim_86.72.pth", "mtresnet_opim.keras",
        class_descriptions="oidv6-class-descriptions.csv")
    conversion.architecture, conversion.num_classes, conversion.head_hidden
    # ('tresnet_m', 9605, 512)
    model = keras_csl.models.load_model("mtresnet_opim.keras")
    ```

    Args:
        checkpoint: a `.pth` (needs torch) or `.safetensors` file, in the
            authors' or timm's layout.
        output: the `.keras` file to write (its folder is created).
        architecture: `None` to infer it (it must be one of
            `TRESNET_VARIANTS`), a variant name to insist on, or
            `"custom"` for any TResNet layout found in the keys.
        classes_csv: keras-csl `classes.csv` (`index,class_id,display_name`)
            naming the outputs; overrides the checkpoint's `idx_to_class`.
        class_descriptions: OpenImages class descriptions CSV
            (`LabelName,DisplayName`) giving the display names of MIDs;
            it must name at least one of the class ids.
        image_size: input side of the model (a multiple of 4, >= 32); the
            authors' OpenImages models are trained at 224.
        allow_pickle: let torch unpickle arbitrary objects in a `.pth`
            (only for files you trust).

    Returns:
        A `Conversion` (what was converted and what was left out).

    Raises:
        ValueError: for unknown or missing keys, shape mismatches, an
            unknown architecture, class files that do not fit the head, or
            a class descriptions file that names none of the class ids.
        ImportError: for a `.pth` file without torch installed.
    """
    output = os.fspath(output)
    if not output.endswith(".keras"):
        raise ValueError(
            "Invalid value for argument `output`. Expected a path ending in "
            f"'.keras'. Received: output={output!r}"
        )
    check_image_size(image_size)
    state, extras = tresnet_checkpoint.read_checkpoint(checkpoint, allow_pickle)
    layout = tresnet_checkpoint.detect_layout(state)
    spec, name = tresnet_checkpoint.resolve_spec(state, layout, architecture)
    num_classes, head_hidden = tresnet_checkpoint.infer_head(state)
    logger.info(
        "%s: %s layout, %s, %d classes, %s head.", checkpoint, layout, name,
        num_classes, f"bottleneck ({head_hidden})" if head_hidden else "linear",
    )

    # The names build_model gives (backbone "tresnet_m", model "csl_tresnet_m"),
    # so that build_model(..., weights=<this file>) finds the backbone.
    network_name = name if name in TRESNET_VARIANTS else "tresnet"
    network = build_tresnet(spec, image_size, name=network_name)
    model = assemble_classifier(
        preprocessing_layers(), network, num_classes, image_size, head_hidden=head_hidden,
        name=f"csl_{network_name}",
    )
    report = tresnet_checkpoint.load_state_dict(model, network_name, state, layout)

    class_ids, names, classes_from = _classes(
        num_classes, classes_csv, extras.get("idx_to_class"), checkpoint
    )
    unnamed = ()
    if classes_from != "classes_csv":
        names, unnamed = _display_names(class_ids, class_descriptions, classes_from)
    card = ModelCard(
        image_size=image_size,
        class_ids=tuple(class_ids),
        display_names=tuple(names),
        architecture=name,
        source=os.path.basename(os.fspath(checkpoint)),
        **CARD_PREPROCESSING[layout],
    )
    logger.info(
        "Model card preprocessing (%s layout): resize_mode=%r, "
        "resize_method=%r, jpeg_downscale=%r.", layout, card.resize_mode,
        card.resize_method, card.jpeg_downscale,
    )
    model = set_model_card(model, card)
    folder = os.path.dirname(os.path.abspath(output))
    os.makedirs(folder, exist_ok=True)
    model.save(output)
    ignored = tuple(extras.get("ignored") or ())
    if ignored:
        logger.info("Top-level checkpoint entries not converted: %s", list(ignored))
    conversion = Conversion(
        output=output, architecture=name, layout=layout, num_classes=num_classes,
        head_hidden=head_hidden, tensors=report["assigned"],
        counters_skipped=report["counters_skipped"], classes_from=classes_from,
        unnamed_classes=tuple(unnamed), ignored_entries=ignored,
    )
    logger.info(
        "Wrote %s: %d tensors converted, %d num_batches_tracked counters left "
        "out.", output, conversion.tensors, conversion.counters_skipped,
    )
    return conversion


def _classes(num_classes, classes_csv, idx_to_class, checkpoint):
    """`(class_ids, display_names or None, where they came from)`."""
    if classes_csv is not None:
        from keras_csl.data.features import read_classes_csv

        class_ids, names = read_classes_csv(os.fspath(classes_csv))
        if len(class_ids) != num_classes:
            raise ValueError(
                f"Invalid value for argument `classes_csv`. The checkpoint has "
                f"{num_classes} outputs; {classes_csv} lists {len(class_ids)} "
                f"classes. Received: classes_csv={os.fspath(classes_csv)!r}"
            )
        return class_ids, names, "classes_csv"
    if idx_to_class is None:
        logger.warning(
            "%s holds no class ids (idx_to_class): the %d classes are named by "
            "index; pass classes_csv to name them.", checkpoint, num_classes,
        )
        return [str(i) for i in range(num_classes)], None, "index"
    if not isinstance(idx_to_class, dict):
        raise ValueError(
            f"Invalid checkpoint {checkpoint}: idx_to_class is a "
            f"{type(idx_to_class).__name__}; expected a dict {{index: class id}}."
        )
    by_index = {}
    for key, value in idx_to_class.items():
        try:
            index = int(key)
        except (TypeError, ValueError):
            raise ValueError(
                f"Invalid checkpoint {checkpoint}: idx_to_class key {key!r} is "
                "not an integer index."
            ) from None
        by_index[index] = str(value)
    if sorted(by_index) != list(range(num_classes)):
        raise ValueError(
            f"Invalid checkpoint {checkpoint}: idx_to_class has "
            f"{len(by_index)} entries (indices {min(by_index, default=None)}.."
            f"{max(by_index, default=None)}); expected indices 0.."
            f"{num_classes - 1}, one per output of the head."
        )
    if list(by_index) != sorted(by_index):
        logger.warning(
            "%s: idx_to_class is not stored in index order; output i is "
            "named by idx_to_class[i] (the authors' infer.py would take the "
            "stored order).", checkpoint,
        )
    return [by_index[i] for i in range(num_classes)], None, "idx_to_class"


def _read_class_descriptions(path):
    """`{class id: display name}` of a class descriptions CSV (local or URL).

    The reader of the dataset converters: an optional `LabelName,DisplayName`
    header, a UTF-8 byte order mark allowed; a malformed row or a class id
    named twice differently is an error naming the file and line.
    """
    import tensorflow as tf

    from keras_csl.data.converters.common import read_class_descriptions
    from keras_csl.data.writer import Problems

    path = os.fspath(path)
    if not tf.io.gfile.exists(path):
        raise ValueError(
            "Invalid value for argument `class_descriptions`. Expected an "
            f"existing CSV file. Received: class_descriptions={path!r} (no such file)"
        )
    class_ids, names = read_class_descriptions(path, Problems(strict=True))
    return dict(zip(class_ids, names))


def _display_names(class_ids, class_descriptions, classes_from):
    """`(names, ids without a description)`; the id stands in for a missing name."""
    if class_descriptions is None:
        if classes_from == "idx_to_class":
            logger.warning(
                "No class_descriptions file given: the %d classes keep their "
                "ids (e.g. %r) as display names.", len(class_ids), class_ids[0],
            )
        return list(class_ids), ()
    descriptions = _read_class_descriptions(class_descriptions)
    unnamed = tuple(i for i in class_ids if i not in descriptions)
    if len(unnamed) == len(class_ids):
        raise ValueError(
            "Invalid value for argument `class_descriptions`. None of the "
            f"{len(class_ids)} class ids (e.g. {class_ids[0]!r}) is in "
            f"{class_descriptions}: expected an OpenImages class descriptions "
            "CSV (LabelName,DisplayName rows) naming the checkpoint's class "
            f"ids. Received: class_descriptions={os.fspath(class_descriptions)!r}"
        )
    if unnamed:
        logger.warning(
            "%d of %d class ids have no display name in %s (their id is used): "
            "%s%s", len(unnamed), len(class_ids), class_descriptions,
            list(unnamed[:10]), " ..." if len(unnamed) > 10 else "",
        )
    return [descriptions.get(i, i) for i in class_ids], unnamed


def main(argv=None):
    """The command line; prints the `Conversion` as JSON."""
    parser = argparse.ArgumentParser(
        prog="python -m keras_csl.models.convert_checkpoint",
        description="Convert a PyTorch TResNet checkpoint (the CSL authors' or "
        "timm's) into a keras-csl .keras model with its model card.",
    )
    parser.add_argument("--checkpoint", required=True, help=".pth or .safetensors file")
    parser.add_argument("--output", required=True, help="the .keras file to write")
    parser.add_argument(
        "--architecture", default=None,
        choices=sorted(TRESNET_VARIANTS) + ["custom"],
        help="default: inferred from the keys",
    )
    parser.add_argument("--classes_csv", default=None,
                        help="keras-csl classes.csv naming the outputs")
    parser.add_argument("--class_descriptions", default=None,
                        help="OpenImages LabelName,DisplayName CSV")
    parser.add_argument("--image_size", type=int, default=DEFAULT_IMAGE_SIZE)
    parser.add_argument("--allow_pickle", action="store_true",
                        help="unpickle any object in a trusted .pth file")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(message)s")
    conversion = convert_checkpoint(
        args.checkpoint, args.output, architecture=args.architecture,
        classes_csv=args.classes_csv, class_descriptions=args.class_descriptions,
        image_size=args.image_size, allow_pickle=args.allow_pickle,
    )
    print(json.dumps(dataclasses.asdict(conversion), indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
