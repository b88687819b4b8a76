"""TFRecord datasets with partial labels (TensorFlow only)."""

from keras_csl.data.features import encode_example
from keras_csl.data.features import make_targets
from keras_csl.data.features import parse_example
from keras_csl.data.features import read_classes_csv
from keras_csl.data.features import read_label_overlay
from keras_csl.data.features import write_classes_csv
from keras_csl.data.features import write_label_overlay
from keras_csl.data.converters import convert_coco
from keras_csl.data.converters import convert_csv
from keras_csl.data.converters import convert_lvis
from keras_csl.data.converters import convert_openimages
from keras_csl.data.simulate import simulate_partial_labels
from keras_csl.data.simulate import simulate_targets
from keras_csl.data.pipeline import LabelOverlay
from keras_csl.data.pipeline import list_files
from keras_csl.data.pipeline import make_dataset
from keras_csl.data.preprocessing import decode_image
from keras_csl.data.preprocessing import preprocess_encoded
from keras_csl.data.preprocessing import resize_image
