r"""Exports a trained model as a SavedModel for TensorFlow Serving.

    python recipes/export.py --run_dir=runs/coco_rps --export_dir=exports/coco

writes `exports/coco/<version>/` (the next free version number: 1, 2, ...)
from the run's `best.keras` (the better of the raw and EMA weights at the
best epoch, as `best.json` says), with the
classes of the training data (`classes.csv` next to `train_files`) and the
run's preprocessing (`resize_mode` and `jpeg_downscale` of its
`dataset_options`). Or name the pieces yourself:

    python recipes/export.py --model=runs/coco_rps/best.keras \
        --classes_csv=data/coco/classes.csv --export_dir=exports/coco \
        [--top_k=10] [--resize_mode=squash] [--nojpeg_downscale] [--version=3]

A flag given explicitly wins over the run's setting; a `.keras` file in a
run folder gets the run's settings too. `--nofrom_logits` exports a model
whose outputs are probabilities already.

Time (2 CPU cores): about 10 s for the tiny CNN, 20 s for a ResNet50 (5 s
of it writing the 93 MB SavedModel), mostly TensorFlow's start-up. Output:
the version folder, printed as JSON with the signature names and output
keys. Check it with `saved_model_cli show --dir exports/coco/1 --all`;
serving it is described in docs/SERVING.md.
"""

import json
import logging
import os

from absl import app
from absl import flags

FLAGS = flags.FLAGS


def define_flags():
    """Defines the command-line flags (only when run as a script)."""
    flags.DEFINE_string("run_dir", None, "A training run folder (uses best.keras).")
    flags.DEFINE_string("model", None, "A .keras model file (instead of --run_dir).")
    flags.DEFINE_string(
        "classes_csv", None,
        "classes.csv of the training data (index,class_id,display_name); with "
        "--run_dir, found next to the training files by default.",
    )
    flags.DEFINE_string("export_dir", None, "TF Serving model base path.")
    flags.DEFINE_integer("version", None, "Version number (default: next free).")
    flags.DEFINE_integer("top_k", 10, "Top classes returned per image.")
    flags.DEFINE_enum(
        "resize_mode", None, ["squash", "pad", "crop"],
        "Resize mode of training (default: the run's, else squash).",
    )
    flags.DEFINE_bool(
        "jpeg_downscale", None,
        "Decode large JPEGs at reduced scale, as in training (default: the "
        "run's, else true).",
    )
    flags.DEFINE_bool(
        "from_logits", True,
        "The model outputs logits (false: probabilities already).",
    )
    flags.mark_flag_as_required("export_dir")


def resolve_run_dir(run_dir):
    """`(model_path, classes_csv, resize_mode, jpeg_downscale)` of a run folder.

    The last three are None where the run does not say
    (`keras_csl.export.training_run_settings`).
    """
    from keras_csl.export import training_run_settings

    settings = training_run_settings(run_dir)
    if not os.path.exists(settings["model_path"]):
        raise ValueError(f"No best.keras in {run_dir}: has the run finished an epoch?")
    return (
        settings["model_path"], settings["classes_csv"], settings["resize_mode"],
        settings["jpeg_downscale"],
    )


def export(
    model_path,
    export_dir,
    classes_csv=None,
    version=None,
    top_k=10,
    resize_mode=None,
    jpeg_downscale=None,
    from_logits=True,
):
    """Loads a `.keras` model and exports it; returns the version folder.

    `classes_csv`, `resize_mode` and `jpeg_downscale` default to those of
    the training run when `model_path` is in a run folder, else to index
    names, `"squash"` and True (`keras_csl.export.resolve_training_settings`).
    """
    import keras_csl.losses  # noqa: F401  (registers the package's objects)
    import keras_csl.models
    from keras_csl.data import read_classes_csv
    from keras_csl.export import export_for_serving
    from keras_csl.export import resolve_training_settings

    classes_csv, resize_mode, jpeg_downscale = resolve_training_settings(
        model_path, classes_csv, resize_mode, jpeg_downscale
    )
    model = keras_csl.models.load_model(model_path, compile=False)
    num_classes = int(model.outputs[0].shape[-1])
    if classes_csv:
        class_ids, names = read_classes_csv(classes_csv)
        if len(class_ids) != num_classes:
            raise ValueError(
                "Invalid value for argument `classes_csv`. Expected one class "
                f"per output of the model {model_path} ({num_classes}). "
                f"Received: classes_csv={os.fspath(classes_csv)!r}, which "
                f"lists {len(class_ids)} classes"
            )
    else:
        logging.warning("No classes_csv: classes are named by their index.")
        class_ids = names = [str(i) for i in range(num_classes)]
    return export_for_serving(
        model,
        export_dir,
        class_ids,
        names,
        version=version,
        top_k=top_k,
        resize_mode=resize_mode,
        jpeg_downscale=jpeg_downscale,
        from_logits=from_logits,
    )


def main(argv):
    del argv
    logging.getLogger().setLevel(logging.INFO)
    if bool(FLAGS.run_dir) == bool(FLAGS.model):
        raise app.UsageError("Pass exactly one of --run_dir and --model.")
    # A flag given explicitly wins; export() fills the rest from the run.
    model_path = resolve_run_dir(FLAGS.run_dir)[0] if FLAGS.run_dir else FLAGS.model
    path = export(
        model_path,
        FLAGS.export_dir,
        classes_csv=FLAGS.classes_csv,
        version=FLAGS.version,
        top_k=FLAGS.top_k,
        resize_mode=FLAGS.resize_mode,
        jpeg_downscale=FLAGS.jpeg_downscale,
        from_logits=FLAGS.from_logits,
    )
    from keras_csl.export import OUTPUT_KEYS, SIGNATURES

    print(json.dumps(dict(export=path, signatures=list(SIGNATURES),
                          outputs=list(OUTPUT_KEYS))))


if __name__ == "__main__":
    define_flags()
    app.run(main)
