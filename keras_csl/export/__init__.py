"""Export for TensorFlow Serving (TensorFlow only); see `docs/SERVING.md`."""

from keras_csl.export.serving import BYTES_INPUT
from keras_csl.export.serving import BYTES_SIGNATURE
from keras_csl.export.serving import IMAGES_INPUT
from keras_csl.export.serving import IMAGES_SIGNATURE
from keras_csl.export.serving import METADATA_DIR
from keras_csl.export.serving import METADATA_FILE
from keras_csl.export.serving import OUTPUT_KEYS
from keras_csl.export.serving import SIGNATURES
from keras_csl.export.serving import export_for_serving
from keras_csl.export.serving import latest_version_path
from keras_csl.export.serving import load_for_serving
from keras_csl.export.serving import next_version
from keras_csl.export.predictor import Predictor
from keras_csl.export.predictor import load_predictor
from keras_csl.export.predictor import resolve_training_settings
from keras_csl.export.predictor import training_run_settings
