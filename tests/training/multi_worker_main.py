"""One worker of the two-process test (run by test_multi_worker.py).

    TF_CONFIG=... python multi_worker_main.py OUT.npz [RUN_DIR]

Trains the small model of test_multi_worker.py under
MultiWorkerMirroredStrategy (one CPU replica per process) and writes the
final raw and EMA weights to OUT.npz.
"""

import json
import os
import sys

os.environ.setdefault("KERAS_BACKEND", "tensorflow")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

# The strategy must exist before TensorFlow runs any op.
from keras_csl.training import distribute  # noqa: E402

strategy = distribute.make_strategy("auto")

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from test_multi_worker import train_small  # noqa: E402

import numpy as np  # noqa: E402

result = train_small(strategy, sys.argv[2] if len(sys.argv) > 2 else None)
np.savez(sys.argv[1], *result.model.get_weights(), *result.ema.averaged_values())
print(json.dumps(dict(
    iterations=result.iterations,
    best_map=result.best_map,
    chief=distribute.is_chief(strategy),
    workers=distribute.num_workers(strategy),
    replicas=strategy.num_replicas_in_sync,
)))
