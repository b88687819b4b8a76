r"""Evaluates a model on TFRecords: mAP, per-class AP, plots.

    python recipes/evaluate.py --export_dir=exports/coco \
        --data='data/coco/val-*.tfrecord' --output_dir=eval/coco \
        [--label_overlay=data/coco/val-partial.csv] [--pr_classes=person,car]

or with a `.keras` file (or a training run folder, its `best.keras`):

    python recipes/evaluate.py --model=ANY/PATH/model.keras \
        --data='data/coco/val-*.tfrecord' --output_dir=eval/coco

The classes, image size and preprocessing come from the model card; for a
`.keras` model `--classes_csv`, `--resize_mode`, `--resize_method`,
`--[no]jpeg_downscale` and `--[no]from_logits` override it. Images are
decoded and resized with those settings by the training pipeline
(`keras_csl.data.make_dataset`, evaluation mode). A label overlay is checked as training checks it.

Metrics (percent): `partial_map` over the annotated entries of the labels
(those of `--label_overlay` where given, else of the TFRecords), and
`full_map` on complete labels (the TFRecords' own, when they have no
un-annotated entry; else null). Memory: by default every prediction is
kept (about 29 bytes per image and class: 30-40 GB for the 125,436 x 9,605
OpenImages test set); `--num_thresholds=1000` streams the batches through
`PartialMeanAveragePrecision(num_thresholds=1000)` instead (77 MB for 9,605
classes; mAP within about 0.03 points, docs/METRICS.md).

Files written to `--output_dir` (`keras_csl.inference.evaluate`):
`metrics.json`, `per_class_ap.csv`, `ap_vs_frequency.png`, `pr_curves.png`
(of `--pr_classes`, default: the 6 classes with the most positives).

Time (2 shared CPU cores): 53 COCO photos with a tiny CNN take about 15 s,
mostly TensorFlow's start-up; a ResNet50 at 224 px needs about 90 ms per
image on such a CPU.
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

    flags.DEFINE_string("export_dir", None, "A serving export (base path or version).")
    flags.DEFINE_string(
        "model", None, "A .keras file, a training run folder or a SavedModel folder."
    )
    flags.DEFINE_string("data", None, "TFRecord file pattern (keras_csl.data layout).")
    flags.DEFINE_string(
        "classes_csv", None,
        "Override: class names (the ids must be the model's; default: the "
        "model card's classes).",
    )
    flags.DEFINE_string("label_overlay", None, "Partial labels to evaluate on.")
    flags.DEFINE_integer("image_size", None, "Must match the model's (a check).")
    flags.DEFINE_integer("batch_size", 32, "Images per batch.")
    flags.DEFINE_string("output_dir", None, "Folder for the CSV, plots and metrics.")
    flags.DEFINE_list(
        "pr_classes", [], "Classes to plot PR curves of (ids, names or indices)."
    )
    flags.DEFINE_enum(
        "resize_mode", None, list(RESIZE_MODES),
        "Override, for a .keras model: the card's resize mode.",
    )
    flags.DEFINE_enum(
        "resize_method", None, list(RESIZE_METHODS),
        "Override, for a .keras model: how the resized pixels are computed "
        "(default: the card's; pillow_bicubic: Pillow's default resize).",
    )
    flags.DEFINE_bool(
        "jpeg_downscale", None,
        "Override, for a .keras model: the card's JPEG downscale.",
    )
    flags.DEFINE_bool(
        "from_logits", None,
        "Override, for a .keras model: whether it outputs logits.",
    )
    flags.DEFINE_integer(
        "num_thresholds", None,
        "Bounded memory: score through this many score bins per class "
        "(e.g. 1000) instead of keeping every prediction (default: exact).",
    )
    flags.DEFINE_bool(
        "check_shards", True,
        "Check that --data names a whole shard set of the converter with the "
        "model's classes (--nocheck_shards: hand-made or partial sets).",
    )
    flags.mark_flags_as_required(["data"])


def main(argv):
    del argv
    logging.getLogger().setLevel(logging.INFO)
    if bool(FLAGS.export_dir) == bool(FLAGS.model):
        raise app.UsageError("Pass exactly one of --export_dir and --model.")
    from keras_csl.inference import evaluate

    result = evaluate(
        FLAGS.export_dir or FLAGS.model,
        FLAGS.data,
        classes_csv=FLAGS.classes_csv,
        output_dir=FLAGS.output_dir,
        image_size=FLAGS.image_size,
        batch_size=FLAGS.batch_size,
        pr_classes=FLAGS.pr_classes,
        label_overlay=FLAGS.label_overlay,
        resize_mode=FLAGS.resize_mode,
        num_thresholds=FLAGS.num_thresholds,
        jpeg_downscale=FLAGS.jpeg_downscale,
        from_logits=FLAGS.from_logits,
        resize_method=FLAGS.resize_method,
        check_shards=FLAGS.check_shards,
    )
    print(json.dumps({k: v for k, v in result.items() if k != "per_class"}))


if __name__ == "__main__":
    define_flags()
    app.run(main)
