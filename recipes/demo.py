"""End-to-end demo of keras-csl on data it makes itself (no download).

    python recipes/demo.py                     # about 2-3 minutes on 2 CPU cores
    python recipes/demo.py --output_dir=/tmp/csl-demo --epochs=10

What it does, with the package's own code at every step:

1. Makes a real multi-label image set: mosaics of handwritten digits from
   scikit-learn (`keras_csl.data.mosaics`; 10 classes, digits present in
   an image are its labels, class frequencies from 0.55 down to 0.16).
2. Writes it as OpenImages-style CSVs and converts them to TFRecord shards
   with the OpenImages converter (`keras_csl.data.convert_openimages`).
3. Simulates partial annotation of the training set twice, as the paper
   does for COCO: FPC (a fixed number of positive and negative labels per
   class) and RPS (each label dropped with a probability), as label
   overlays (`keras_csl.data.simulate_partial_labels`), with plots.
4. Runs the paper's flow on each: a "negative" model (every missing label
   is a negative), an "ignore" model (missing labels left out), the class
   prior estimated from the ignore model's predictions, then CSL
   ("selective") with that prior. All with `keras_csl.training.train`.
5. Prints test mAP per mode and scheme (test labels are complete) and saves
   a bar chart.
6. Exports the best model for TF Serving and answers one request from the
   export (`serving_default` on a test image's JPEG bytes).

Everything goes under `--output_dir` (default `./csl_demo_output`). The
flow itself is `keras_csl.demo.run_demo`; this script parses the flags.
Expected (2-core CPU, 8 epochs): CSL above "negative" on both schemes, by
several mAP points under FPC; numbers vary a little with the machine.
"""

import logging
import os
import sys

# Keep TensorFlow's C++ INFO lines out of the demo's own progress lines.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from absl import app  # noqa: E402
from absl import flags  # noqa: E402
from absl import logging as absl_logging  # noqa: E402

FLAGS = flags.FLAGS


def define_flags():
    flags.DEFINE_string("output_dir", "csl_demo_output", "Where everything is written.")
    flags.DEFINE_integer("num_train", 2400, "Training mosaics.")
    flags.DEFINE_integer("num_test", 600, "Test mosaics (complete labels).")
    flags.DEFINE_integer("epochs", 8, "Epochs per model.")
    flags.DEFINE_integer("fpc", 100, "FPC: labels kept per class and kind.")
    flags.DEFINE_float("rps", 0.7, "RPS: probability of dropping a label.")
    flags.DEFINE_integer("seed", 0, "Seed of data, simulation and training.")


def main(argv):
    del argv
    # Stage lines are printed; keep TensorFlow's INFO chatter out of the way.
    absl_logging.set_verbosity(absl_logging.WARNING)
    logging.getLogger("keras_csl").setLevel(logging.WARNING)
    from keras_csl.demo import run_demo

    run_demo(
        FLAGS.output_dir, FLAGS.num_train, FLAGS.num_test, FLAGS.epochs,
        FLAGS.fpc, FLAGS.rps, FLAGS.seed, log=print,
    )


if __name__ == "__main__":
    define_flags()
    sys.exit(app.run(main))
