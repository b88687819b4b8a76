r"""Command line: annotations -> sharded TFRecords, and partial-label simulation.

    python -m keras_csl.data.convert <format> --flag=value ...
    python -m keras_csl.data.convert <format> --help   # that format's input and flags

Formats: `openimages`, `coco`, `lvis`, `csv` (converters: each also takes
the writer flags `--num_shards` (required), `--split`,
`--resize_short_side`, `--jpeg_quality`, `--[no]validate_images`,
`--[no]strict`, `--max_rejected_fraction`, `--num_workers`: the fields of
`keras_csl.data.WriterOptions`) and `simulate`.

Example (the 53-image sample: about 7 s, mostly importing TensorFlow):

    python -m keras_csl.data.convert openimages \
        --labels_csv=../shared/data/coco-sample/image-labels.csv \
        --classes_csv=../shared/data/coco-sample/class-descriptions.csv \
        --images_dir=../shared/data/coco-sample/images \
        --output_dir=/tmp/coco-sample-tfr --num_shards=4
    python -m keras_csl.data.convert simulate --dataset_dir=/tmp/coco-sample-tfr \
        --scheme=fpc --param=5 --seed=0 --overlay_path=/tmp/fpc5.csv

It logs one WARNING line per kind of skipped input (with its count and
first example) to stderr, prints the summary as JSON to stdout (without the
per-class counts, which are in `<output_dir>/<split>-summary.json`), and
exits with status 1 and the error on stderr when the conversion is refused (no usable label row,
more rejected label rows than `--max_rejected_fraction`, no image stored,
any bad input under `--strict`), 2 for invalid flags. The Python functions
are `keras_csl.data.convert_openimages`, `convert_coco`, `convert_lvis`,
`convert_csv` and `simulate_partial_labels`; this module only parses flags.
"""

import argparse
import dataclasses
import json
import logging
import sys

from keras_csl.data.converters import coco
from keras_csl.data.converters import generic
from keras_csl.data.converters import openimages
from keras_csl.data.writer.options import WriterOptions

FORMATS = ("openimages", "coco", "lvis", "csv", "simulate")
SUMMARY_LINES = {
    "openimages": "OpenImages image-level labels "
    "(ImageID,Source,LabelName,Confidence).",
    "coco": "COCO instances JSON (exhaustive labels).",
    "lvis": "LVIS v1 JSON (federated labels).",
    "csv": "A generic CSV: image,positive,negative.",
    "simulate": "Partial annotation (FPC, RPS) of a converted dataset.",
}
SIMULATE_HELP = """\
Input (--dataset_dir): a converted dataset (shards and classes.csv) whose
  labels are made partial: fpc keeps --param positive and --param negative
  annotations per class, rps drops each annotation with probability
  --param. Output: a new dataset (--output_dir: same shards and images,
  new labels) and/or a label overlay CSV (--overlay_path).
"""


def _add_writer_flags(parser):
    """One flag per `WriterOptions` field but `verbose`."""
    group = parser.add_argument_group(
        "writing (keras_csl.data.WriterOptions; defaults in brackets)"
    )
    group.add_argument("--output_dir", required=True, help="Output folder.")
    for field in dataclasses.fields(WriterOptions):
        if field.name == "verbose":
            continue
        help_text = field.metadata["help"]
        if field.metadata["parse"] is None:  # A boolean: --name / --noname.
            group.add_argument(
                f"--{field.name}",
                dest=field.name,
                action="store_true",
                default=field.default,
                help=f"{help_text} [{field.default}]",
            )
            group.add_argument(
                f"--no{field.name}", dest=field.name, action="store_false"
            )
            continue
        required = field.default is dataclasses.MISSING
        group.add_argument(
            f"--{field.name}",
            type=field.metadata["parse"],
            required=required,
            default=None if required else field.default,
            help=help_text if required else f"{help_text} [{field.default}]",
        )


def _add_format_flags(parser, fmt):
    if fmt == "openimages":
        parser.add_argument(
            "--labels_csv",
            action="append",
            required=True,
            help="Label CSV (repeatable).",
        )
        parser.add_argument(
            "--classes_csv", required=True, help="Class descriptions CSV."
        )
        parser.add_argument("--images_dir", required=True, help="Folder of the images.")
        parser.add_argument(
            "--trainable_classes_csv", help="MIDs to keep, one a line (optional)."
        )
    elif fmt in ("coco", "lvis"):
        parser.add_argument("--annotations_json", required=True, help="The JSON file.")
        parser.add_argument("--images_dir", required=True, help="Folder of the images.")
    elif fmt == "csv":
        parser.add_argument(
            "--labels_csv",
            action="append",
            required=True,
            help="Label CSV (repeatable).",
        )
        parser.add_argument(
            "--images_dir", help="Folder the image paths are relative to [the CSV's]."
        )
        parser.add_argument("--classes_csv", help="Classes file (optional).")
    if fmt != "simulate":
        _add_writer_flags(parser)
        return
    parser.add_argument("--dataset_dir", required=True, help="A converted dataset.")
    parser.add_argument("--scheme", required=True, choices=("fpc", "rps"))
    parser.add_argument(
        "--param",
        type=float,
        required=True,
        help="Annotations kept per class and kind (fpc) or drop probability (rps).",
    )
    parser.add_argument("--seed", type=int, required=True, help="Random seed.")
    parser.add_argument("--output_dir", help="Folder of the new dataset.")
    parser.add_argument("--overlay_path", help="Path of the label overlay CSV.")
    parser.add_argument("--plot_path", help="Class-frequency plot (needs matplotlib).")
    parser.add_argument("--split", default="train", help="The split to read [train].")


def make_parser():
    """The argument parser: one sub-command per format, each with its help."""
    parser = argparse.ArgumentParser(
        prog="python -m keras_csl.data.convert",
        description="Annotations to sharded TFRecords, and partial-label "
        "simulation. `<format> --help` shows a format's input and flags.",
    )
    commands = parser.add_subparsers(dest="format", metavar="<format>", required=True)
    inputs = {
        "openimages": openimages.INPUT_HELP,
        "coco": coco.INPUT_HELP["coco"],
        "lvis": coco.INPUT_HELP["lvis"],
        "csv": generic.INPUT_HELP,
        "simulate": SIMULATE_HELP,
    }
    for fmt in FORMATS:
        command = commands.add_parser(
            fmt,
            help=SUMMARY_LINES[fmt],
            description=f"{SUMMARY_LINES[fmt]}\n\n{inputs[fmt]}",
            formatter_class=argparse.RawDescriptionHelpFormatter,
        )
        _add_format_flags(command, fmt)
    return parser


def run_from_args(args):
    """Runs one format with parsed arguments; returns the summary dict."""
    from keras_csl.data import converters
    from keras_csl.data.simulate import simulate_partial_labels

    if args.format == "simulate":
        if args.output_dir is None and args.overlay_path is None:
            raise ValueError("`simulate` needs --output_dir, --overlay_path or both.")
        param = args.param
        if args.scheme == "fpc" and param.is_integer():
            param = int(param)
        return simulate_partial_labels(
            args.dataset_dir,
            args.scheme,
            param,
            args.seed,
            output_dir=args.output_dir,
            overlay_path=args.overlay_path,
            plot_path=args.plot_path,
            split=args.split,
        )
    options = WriterOptions(
        **{
            field.name: getattr(args, field.name)
            for field in dataclasses.fields(WriterOptions)
            if field.name != "verbose"
        }
    )
    if args.format == "openimages":
        return converters.convert_openimages(
            args.labels_csv,
            args.classes_csv,
            args.images_dir,
            args.output_dir,
            options,
            trainable_classes_csv=args.trainable_classes_csv,
        )
    if args.format == "csv":
        return converters.convert_csv(
            args.labels_csv,
            args.images_dir,
            args.output_dir,
            options,
            classes_csv=args.classes_csv,
        )
    converter = {"coco": converters.convert_coco, "lvis": converters.convert_lvis}
    return converter[args.format](
        args.annotations_json, args.images_dir, args.output_dir, options
    )


def main(argv=None):
    """Parses `argv` (default `sys.argv[1:]`), runs; returns the exit status.

    Prints the summary JSON to stdout, or the error to stderr (status 1);
    invalid flags exit with status 2 (argparse), `--help` with 0.
    """
    args = make_parser().parse_args(argv)
    try:
        summary = run_from_args(args)
    except (ValueError, OSError) as error:
        print(f"Error: {error}", file=sys.stderr)
        return 1
    summary = {k: v for k, v in summary.items() if k != "per_class"}
    print(json.dumps(summary, indent=1))
    return 0


def run():
    """The program: logs to stderr (INFO and up), exits with `main`'s status."""
    logging.basicConfig(
        level=logging.INFO, format="%(levelname)s %(name)s: %(message)s", force=True
    )
    sys.exit(main())


if __name__ == "__main__":
    run()
