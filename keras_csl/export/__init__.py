"""Export for TensorFlow Serving (TensorFlow only); see `docs/SERVING.md`.

- `serving`: `export_for_serving` (a model and its card to a versioned
  SavedModel), `load_for_serving`, `read_export_card`.
- `signatures`: the graph functions of the two signatures (decoding that
  flags bad images instead of failing the batch, probabilities, top-k).
- `cards`: the card an export uses (the model's, then overrides).
- `versions`: numbered version folders.

`Predictor`, `load_predictor`, `training_run_settings` and
`resolve_training_settings` live in `keras_csl.inference` and are
re-exported here for code written before it existed.
"""

import importlib

from keras_csl.export.serving import BYTES_INPUT
from keras_csl.export.serving import BYTES_SIGNATURE
from keras_csl.export.serving import CARD_FILE
from keras_csl.export.serving import IMAGES_INPUT
from keras_csl.export.serving import IMAGES_SIGNATURE
from keras_csl.export.serving import METADATA_DIR
from keras_csl.export.serving import METADATA_FILE
from keras_csl.export.serving import SIGNATURES
from keras_csl.export.serving import export_for_serving
from keras_csl.export.serving import load_for_serving
from keras_csl.export.serving import read_export_card
from keras_csl.export.signatures import OUTPUT_KEYS
from keras_csl.export.signatures import make_probabilities_fn
from keras_csl.export.versions import latest_version_path
from keras_csl.export.versions import next_version

# Imported on first use: keras_csl.inference imports this package.
_FROM_INFERENCE = {
    "Predictor": "keras_csl.inference.predictor",
    "load_predictor": "keras_csl.inference.predictor",
    "training_run_settings": "keras_csl.inference.legacy",
    "resolve_training_settings": "keras_csl.inference.legacy",
}


def __getattr__(name):
    if name in _FROM_INFERENCE:
        return getattr(importlib.import_module(_FROM_INFERENCE[name]), name)
    raise AttributeError(f"module 'keras_csl.export' has no attribute {name!r}")
