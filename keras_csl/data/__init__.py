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
