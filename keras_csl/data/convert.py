r"""Command line: annotations -> sharded TFRecords, and partial-label simulation.

    python -m keras_csl.data.convert <format> --flag=value ...

Formats and their required flags (all also take `--split`,
`--resize_short_side`, `--jpeg_quality`, `--strict`, `--num_workers`,
`--novalidate_images`):

- `openimages`: `--labels_csv` (repeatable), `--classes_csv`,
  `--images_dir`, `--output_dir`, `--num_shards`; optional
  `--trainable_classes_csv`.
- `coco`, `lvis`: `--annotations_json`, `--images_dir`, `--output_dir`,
  `--num_shards`.
- `csv`: `--labels_csv` (repeatable), `--output_dir`, `--num_shards`;
  optional `--images_dir` (default: each CSV's folder), `--classes_csv`.
- `simulate`: `--dataset_dir`, `--scheme` (fpc or rps), `--param`,
  `--seed`, and `--output_dir` and/or `--overlay_path`; optional
  `--plot_path`, `--split`.

Example (the 53-image sample: about 7 s, mostly importing TensorFlow):

    python -m keras_csl.data.convert openimages \
        --labels_csv=../shared/data/coco-sample/image-labels.csv \
        --classes_csv=../shared/data/coco-sample/class-descriptions.csv \
        --images_dir=../shared/data/coco-sample/images \
        --output_dir=/tmp/coco-sample-tfr --num_shards=4
    python -m keras_csl.data.convert simulate --dataset_dir=/tmp/coco-sample-tfr \
        --scheme=fpc --param=5 --seed=0 --overlay_path=/tmp/fpc5.csv

It prints the summary (without the per-class counts, which are in
`<output_dir>/<split>-summary.json`) and exits with status 1 on a fatal
error (any bad input under `--strict`). The Python functions are
`keras_csl.data.convert_openimages`, `convert_coco`, `convert_lvis`,
`convert_csv` and `simulate_partial_labels`; this module only parses flags.
"""

import json
import logging
import sys

from absl import app
from absl import flags

from keras_csl.data.converters import convert_coco
from keras_csl.data.converters import convert_csv
from keras_csl.data.converters import convert_lvis
from keras_csl.data.converters import convert_openimages
from keras_csl.data.simulate import simulate_partial_labels

FORMATS = ("openimages", "coco", "lvis", "csv", "simulate")
REQUIRED = {
    "openimages": (
        "labels_csv",
        "classes_csv",
        "images_dir",
        "output_dir",
        "num_shards",
    ),
    "coco": ("annotations_json", "images_dir", "output_dir", "num_shards"),
    "lvis": ("annotations_json", "images_dir", "output_dir", "num_shards"),
    "csv": ("labels_csv", "output_dir", "num_shards"),
    "simulate": ("dataset_dir", "scheme", "param", "seed"),
}


def define_flags(flag_values=flags.FLAGS):
    """Defines the command-line flags (only when run as a program)."""
    fv = flag_values
    flags.DEFINE_multi_string("labels_csv", None, "Label CSV file(s).", flag_values=fv)
    flags.DEFINE_string("classes_csv", None, "Class descriptions CSV.", flag_values=fv)
    flags.DEFINE_string(
        "trainable_classes_csv",
        None,
        "OpenImages: MIDs to keep, one a line.",
        flag_values=fv,
    )
    flags.DEFINE_string("annotations_json", None, "COCO / LVIS JSON.", flag_values=fv)
    flags.DEFINE_string("images_dir", None, "Folder of the images.", flag_values=fv)
    flags.DEFINE_string("output_dir", None, "Output folder.", flag_values=fv)
    flags.DEFINE_integer(
        "num_shards", None, "Number of TFRecord shards.", flag_values=fv
    )
    flags.DEFINE_string("split", "train", "Output file prefix.", flag_values=fv)
    flags.DEFINE_integer(
        "resize_short_side",
        None,
        "Re-encode images with a larger short side to this size (JPEG).",
        flag_values=fv,
    )
    flags.DEFINE_integer(
        "jpeg_quality", 90, "Quality of re-encoded JPEGs.", flag_values=fv
    )
    flags.DEFINE_boolean("strict", False, "Make any bad input fatal.", flag_values=fv)
    flags.DEFINE_integer(
        "num_workers",
        None,
        "Worker processes, each writing whole shards (default: min(CPUs, "
        "images to write / 1000, shards to write), at least 1; a rerun leaves "
        "out the shards it resumes).",
        flag_values=fv,
    )
    flags.DEFINE_boolean(
        "validate_images", True, "Decode every image to check it.", flag_values=fv
    )
    flags.DEFINE_string(
        "dataset_dir", None, "simulate: converted dataset.", flag_values=fv
    )
    flags.DEFINE_enum(
        "scheme", None, ["fpc", "rps"], "simulate: scheme.", flag_values=fv
    )
    flags.DEFINE_float(
        "param",
        None,
        "simulate: k per class (fpc) or drop probability (rps).",
        flag_values=fv,
    )
    flags.DEFINE_integer("seed", None, "simulate: random seed.", flag_values=fv)
    flags.DEFINE_string(
        "overlay_path", None, "simulate: label overlay CSV.", flag_values=fv
    )
    flags.DEFINE_string(
        "plot_path", None, "simulate: class-frequency plot.", flag_values=fv
    )


def run_from_flags(fmt, fv=flags.FLAGS):
    """Runs one format with the parsed flags; returns the summary dict."""
    missing = [name for name in REQUIRED[fmt] if fv[name].value is None]
    if fmt == "simulate" and fv.output_dir is None and fv.overlay_path is None:
        missing.append("output_dir or overlay_path")
    if missing:
        raise app.UsageError(f"`{fmt}` needs --{', --'.join(missing)}.", exitcode=2)
    if fmt == "simulate":
        return simulate_partial_labels(
            fv.dataset_dir,
            fv.scheme,
            int(fv.param) if fv.scheme == "fpc" and fv.param.is_integer() else fv.param,
            fv.seed,
            output_dir=fv.output_dir,
            overlay_path=fv.overlay_path,
            plot_path=fv.plot_path,
            split=fv.split,
        )
    common = dict(
        output_dir=fv.output_dir,
        num_shards=fv.num_shards,
        split=fv.split,
        resize_short_side=fv.resize_short_side,
        strict=fv.strict,
        num_workers=fv.num_workers,
        verbose=1,
        jpeg_quality=fv.jpeg_quality,
        validate_images=fv.validate_images,
    )
    if fmt == "openimages":
        return convert_openimages(
            fv.labels_csv,
            fv.classes_csv,
            fv.images_dir,
            trainable_classes_csv=fv.trainable_classes_csv,
            **common,
        )
    if fmt == "csv":
        return convert_csv(
            fv.labels_csv, fv.images_dir, classes_csv=fv.classes_csv, **common
        )
    converter = convert_coco if fmt == "coco" else convert_lvis
    return converter(fv.annotations_json, fv.images_dir, **common)


def main(argv):
    if len(argv) != 2 or argv[1] not in FORMATS:
        raise app.UsageError(
            f"Usage: python -m keras_csl.data.convert <{'|'.join(FORMATS)}> "
            f"--flag=value ... Received: {' '.join(argv[1:]) or 'no format'}"
        )
    logging.getLogger().setLevel(logging.INFO)
    try:
        summary = run_from_flags(argv[1])
    except (ValueError, OSError) as error:
        logging.error("%s", error)
        sys.exit(1)
    summary = {k: v for k, v in summary.items() if k != "per_class"}
    print(json.dumps(summary, indent=1))


def run():
    define_flags()
    app.run(main)


if __name__ == "__main__":
    run()
