r"""Exports a trained model as a SavedModel for TensorFlow Serving.

    python recipes/export.py --run_dir=runs/coco_rps --export_dir=exports/coco

writes `exports/coco/<version>/` (the next free version number: 1, 2, ...)
from the run's `best.keras` (the better of the raw and EMA weights at the
best epoch, as `best.json` says), with the
classes of the training data (`classes.csv` next to `train_files`) and the
run's resize mode. Or name the pieces yourself:

    python recipes/export.py --model=runs/coco_rps/best.keras \
        --classes_csv=data/coco/classes.csv --export_dir=exports/coco \
        [--top_k=10] [--resize_mode=squash] [--version=3]

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
        "jpeg_downscale", True, "Decode large JPEGs at reduced scale, as in training."
    )
    flags.mark_flag_as_required("export_dir")


def resolve_run_dir(run_dir):
    """`(model_path, classes_csv or None, resize_mode or None)` of a run folder."""
    model_path = os.path.join(run_dir, "best.keras")
    if not os.path.exists(model_path):
        raise ValueError(f"No best.keras in {run_dir}: has the run finished an epoch?")
    classes_csv = resize_mode = None
    config_path = os.path.join(run_dir, "config.json")
    if os.path.exists(config_path):
        with open(config_path) as f:
            config = json.load(f)
        resize_mode = (config.get("dataset_options") or {}).get("resize_mode")
        train_files = config.get("train_files") or ""
        candidate = os.path.join(os.path.dirname(train_files), "classes.csv")
        if train_files and os.path.exists(candidate):
            classes_csv = candidate
    return model_path, classes_csv, resize_mode


def export(
    model_path,
    export_dir,
    classes_csv=None,
    version=None,
    top_k=10,
    resize_mode="squash",
    jpeg_downscale=True,
):
    """Loads a `.keras` model and exports it; returns the version folder.

    Without `classes_csv` the classes are named by their index.
    """
    import keras

    import keras_csl.losses  # noqa: F401  (registers the package's objects)
    import keras_csl.models  # noqa: F401
    from keras_csl.data import read_classes_csv
    from keras_csl.export import export_for_serving

    model = keras.saving.load_model(model_path, compile=False)
    num_classes = int(model.outputs[0].shape[-1])
    if classes_csv:
        class_ids, names = read_classes_csv(classes_csv)
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
    )


def main(argv):
    del argv
    logging.getLogger().setLevel(logging.INFO)
    if bool(FLAGS.run_dir) == bool(FLAGS.model):
        raise app.UsageError("Pass exactly one of --run_dir and --model.")
    classes_csv, resize_mode = FLAGS.classes_csv, FLAGS.resize_mode
    if FLAGS.run_dir:
        model_path, run_classes, run_resize = resolve_run_dir(FLAGS.run_dir)
        classes_csv = classes_csv or run_classes
        resize_mode = resize_mode or run_resize
    else:
        model_path = FLAGS.model
    path = export(
        model_path,
        FLAGS.export_dir,
        classes_csv=classes_csv,
        version=FLAGS.version,
        top_k=FLAGS.top_k,
        resize_mode=resize_mode or "squash",
        jpeg_downscale=FLAGS.jpeg_downscale,
    )
    from keras_csl.export import OUTPUT_KEYS, SIGNATURES

    print(json.dumps(dict(export=path, signatures=list(SIGNATURES),
                          outputs=list(OUTPUT_KEYS))))


if __name__ == "__main__":
    define_flags()
    app.run(main)
