"""Inference with a trained model: predict, tag, evaluate (TensorFlow).

Every setting comes from the model: its `ModelCard` (inside the `.keras`
file, or in `assets.extra/model_card.json` of a serving export) gives the
image size, resize mode, JPEG downscale, from-logits, class ids and names.

- `model_files`: `load_model_with_card`, `export_model` (a `.keras` file
  or a run folder, with its card; `recipes/export.py`).
- `legacy`: the one reader of training run folders, for models saved
  before model cards.
- `predictor`: `Predictor` and `load_predictor` (exports, `.keras` files,
  run folders behind one `predict_encoded` / `predict_images`).
- `tagging`: `tag_images` and friends (`recipes/infer.py`).
- `evaluation`, `scoring`, `plots`: `evaluate` (`recipes/evaluate.py`).
"""

from keras_csl.inference.evaluation import CSV_COLUMNS
from keras_csl.inference.evaluation import evaluate
from keras_csl.inference.legacy import training_run_settings
from keras_csl.inference.model_files import export_model
from keras_csl.inference.model_files import load_model_with_card
from keras_csl.inference.model_files import resolve_model_path
from keras_csl.inference.plots import plot_ap_vs_frequency
from keras_csl.inference.plots import plot_pr_curves
from keras_csl.inference.predictor import InvalidImageError
from keras_csl.inference.predictor import Predictor
from keras_csl.inference.predictor import load_predictor
from keras_csl.inference.tagging import IMAGE_EXTENSIONS
from keras_csl.inference.tagging import draw_tags
from keras_csl.inference.tagging import format_table
from keras_csl.inference.tagging import list_images
from keras_csl.inference.tagging import select_tags
from keras_csl.inference.tagging import tag_images
