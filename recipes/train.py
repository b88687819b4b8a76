r"""Trains a multi-label classifier with the Class-aware Selective Loss.

    python recipes/train.py --config=recipes/configs/coco_rps.py[:variant] \
        --run_dir=runs/coco_rps [--set field=value ...]

Each config file's docstring gives its commands, hardware, time and the
paper's mAP. The smoke variant (what CI runs; tiny CNN on 256 synthetic
images, CPU, well under a minute):

    python recipes/train.py --config=recipes/configs/coco_rps.py:smoke \
        --run_dir=/tmp/csl-smoke

Distribution: all visible GPUs by default (MirroredStrategy); several hosts
with TF_CONFIG (MultiWorkerMirroredStrategy), see docs/TRAINING.md. Rerun
the same command with the same --run_dir to resume after an interruption.
"""

import json
import logging

from absl import app
from absl import flags

from keras_csl.training import recipe

FLAGS = flags.FLAGS
flags.DEFINE_string(
    "config", None, "Config file and variant: path/to/config.py[:variant]."
)
flags.DEFINE_string("run_dir", None, "Folder for checkpoints, logs and models.")
flags.DEFINE_multi_string(
    "set", [], "Config override `field=value` (repeatable), e.g. epochs=5."
)
flags.mark_flags_as_required(["config", "run_dir"])


def main(argv):
    del argv
    logging.getLogger().setLevel(logging.INFO)
    config = recipe.load_config(FLAGS.config, FLAGS.set)
    result = recipe.run(config, FLAGS.run_dir)
    summary = dict(
        run_dir=result.run_dir,
        best_map=result.best_map,
        best_epoch=result.best_epoch,
        best_weights=result.best_source,
        iterations=result.iterations,
        global_batch_size=result.global_batch_size,
    )
    print(json.dumps(summary))


if __name__ == "__main__":
    app.run(main)
