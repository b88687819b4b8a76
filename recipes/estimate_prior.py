r"""Estimates the class prior with an ignore-mode model (the paper's stage 1).

    python recipes/estimate_prior.py --config=recipes/configs/coco_fpc.py \
        --run_dir=runs/prior [--set field=value ...] \
        [--model=runs/old-ignore-run/best.keras] \
        [--full_labels=data/coco2014/train-*.tfrecord]

Trains a temporary model on the config's data in "ignore" mode (the same
recipe with `loss["mode"]="ignore"`, `prior="none"`) into
`<run_dir>/ignore-model`, or takes `--model` instead; averages its
predicted probabilities over the training images read in evaluation mode;
writes `<run_dir>/prior.csv`. Then stage 2, CSL with that prior:

    python recipes/train.py --config=recipes/configs/coco_fpc.py \
        --run_dir=runs/coco_fpc --set prior=runs/prior/prior.csv

(`--run_dir=runs/coco_fpc-prior` writes the prior where the `full`
variants of the COCO configs look for it, so no `--set prior` is needed;
`--config=...:prior` trains the temporary model on the shorter 10-epoch
schedule of the configs' `prior` variant.)

Prints the ten classes with the highest estimated prior next to the naive
prior (fraction of positives among the annotated labels) and, when the
complete labels are known (`--full_labels`: the dataset before simulation,
or a label overlay with complete labels; automatic for the smoke configs'
synthetic data), the rank correlation and mean absolute error of both
against the true class frequencies. The last line of stdout is a JSON
summary.

Output files in --run_dir: `prior.csv` (what `TrainConfig.prior` reads),
`naive_prior.csv`, `prior_report.json` (all numbers and vectors),
`ignore-model/` (the temporary run: `best.keras`, checkpoints, logs).

Time: the training of the config (see its docstring; the ignore-mode run
takes as long as the CSL run) plus one inference pass over the training
images (COCO, 82,081 images at 448 px: a few minutes on one GPU; not yet
timed). The smoke run (tiny CNN on 256 synthetic images, 2 epochs, CPU,
about 12 s on 2 cores; CI runs it with 64 images and 1 epoch in
tests/recipes/test_estimate_prior.py):

    python recipes/estimate_prior.py \
        --config=recipes/configs/coco_rps.py:smoke --run_dir=/tmp/prior-smoke

Expected result of the smoke run: a rough estimate, the temporary model
being trained for 16 steps: rank correlation 0.66 with the true class
frequencies (0.94 with `--set epochs=8`), against 1.0 for the naive prior,
which RPS leaves unbiased (each label is dropped with the same
probability). Under FPC the naive prior is biased; on MULAN scene
(../shared/BASELINES.md) the ignore-model estimate had a mean absolute
error of 0.16 against 0.32 for the naive one.

The estimation runs in this process on one device. With several hosts,
train the ignore-mode model with train.py (`--config=...:prior`), then run
this script on one host with `--model=<that run>/best.keras`.
"""

import json
import logging

from absl import app
from absl import flags

from keras_csl.training import prior_flow
from keras_csl.training import recipe

FLAGS = flags.FLAGS
flags.DEFINE_string(
    "config", None, "Config file and variant: path/to/config.py[:variant]."
)
flags.DEFINE_string("run_dir", None, "Folder for the prior, report and model.")
flags.DEFINE_multi_string(
    "set", [], "Config override `field=value` (repeatable), e.g. epochs=5."
)
flags.DEFINE_string(
    "model", None,
    "A trained ignore-mode model (.keras file or export): skips training.",
)
flags.DEFINE_string(
    "full_labels", None,
    "Complete labels of the training images (TFRecord pattern, dataset "
    "folder or label overlay .csv), to score the estimate.",
)
flags.DEFINE_integer(
    "steps", None, "Read at most this many batches of the training data."
)
flags.mark_flags_as_required(["config", "run_dir"])


def main(argv):
    del argv
    logging.getLogger().setLevel(logging.INFO)
    config = recipe.load_config(FLAGS.config, FLAGS.set)
    report = prior_flow.estimate_prior(
        config,
        FLAGS.run_dir,
        model_path=FLAGS.model,
        full_labels=FLAGS.full_labels,
        steps=FLAGS.steps,
    )
    print(prior_flow.format_report(report))
    print(json.dumps(prior_flow.report_summary(report)))


if __name__ == "__main__":
    app.run(main)
