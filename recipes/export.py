r"""Exports a trained model as a SavedModel for TensorFlow Serving.

    python recipes/export.py --model=ANY/PATH/model.keras --export_dir=exports/coco

writes `exports/coco/<version>/` (the next free version number: 1, 2, ...)
with the classes and the preprocessing of training, read from the model
card inside the `.keras` file: the file may be copied alone anywhere. A
training run folder works too (its `best.keras`, the better of the raw and
EMA weights at the best epoch, as `best.json` says):

    python recipes/export.py --run_dir=runs/coco_rps --export_dir=exports/coco \
        [--top_k=10] [--version=3]

Flags override the card (and the log says so): `--classes_csv`,
`--resize_mode`, `--resize_method`, `--[no]jpeg_downscale`,
`--[no]from_logits`. A model saved
before keras-csl wrote model cards takes them from its training run folder
(`config.json`, the `classes.csv` next to its `train_files`), with a
warning; with no run folder either, the defaults (classes named by index,
squash, JPEG downscale, logits), with a warning.

Time (2 CPU cores): about 10 s for the tiny CNN, 20 s for a ResNet50, mostly
TensorFlow's start-up. Output: the version folder, printed as JSON with the
signature names and output keys. Check it with
`saved_model_cli show --dir exports/coco/1 --all`; serving it is described
in docs/SERVING.md.
"""

import json
import logging

from absl import app
from absl import flags

FLAGS = flags.FLAGS


def define_flags():
    """Defines the command-line flags (only when run as a script)."""
    from keras_csl.models.card import RESIZE_METHODS
    from keras_csl.models.card import RESIZE_MODES

    flags.DEFINE_string("model", None, "A .keras model file (or a run folder).")
    flags.DEFINE_string("run_dir", None, "A training run folder (uses best.keras).")
    flags.DEFINE_string("export_dir", None, "TF Serving model base path.")
    flags.DEFINE_integer("version", None, "Version number (default: next free).")
    flags.DEFINE_integer("top_k", 10, "Top classes returned per image.")
    flags.DEFINE_string(
        "classes_csv", None,
        "Override: classes.csv (index,class_id,display_name) instead of the "
        "model card's classes.",
    )
    flags.DEFINE_enum(
        "resize_mode", None, list(RESIZE_MODES),
        "Override: resize mode (default: the model card's).",
    )
    flags.DEFINE_enum(
        "resize_method", None, list(RESIZE_METHODS),
        "Override: how the resized pixels are computed (default: the "
        "card's; pillow_bicubic: Pillow's default resize).",
    )
    flags.DEFINE_bool(
        "jpeg_downscale", None,
        "Override: decode large JPEGs at reduced scale (default: the card's).",
    )
    flags.DEFINE_bool(
        "from_logits", None,
        "Override: the model outputs logits; false: probabilities (default: "
        "the card's).",
    )
    flags.mark_flag_as_required("export_dir")


def main(argv):
    del argv
    logging.getLogger().setLevel(logging.INFO)
    if bool(FLAGS.run_dir) == bool(FLAGS.model):
        raise app.UsageError("Pass exactly one of --model and --run_dir.")
    from keras_csl.export import OUTPUT_KEYS
    from keras_csl.export import SIGNATURES
    from keras_csl.inference import export_model

    path = export_model(
        FLAGS.model or FLAGS.run_dir,
        FLAGS.export_dir,
        classes_csv=FLAGS.classes_csv,
        version=FLAGS.version,
        top_k=FLAGS.top_k,
        resize_mode=FLAGS.resize_mode,
        jpeg_downscale=FLAGS.jpeg_downscale,
        from_logits=FLAGS.from_logits,
        resize_method=FLAGS.resize_method,
    )
    print(json.dumps(dict(
        export=path, signatures=list(SIGNATURES), outputs=list(OUTPUT_KEYS)
    )))


if __name__ == "__main__":
    define_flags()
    app.run(main)
