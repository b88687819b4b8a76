"""TFRecord datasets with partial labels (TensorFlow only).

The folder, from annotation files to batches:

- `converters/`: annotation formats (OpenImages, COCO, LVIS, a generic
  CSV) to `writer.Item`s; `convert.py` is their command line.
- `writer/`: `Item`s to sharded TFRecords, with `WriterOptions`, the
  report of what was skipped, and resumable shards.
- `features.py`: the on-disk example layout (`encode_example`,
  `decode_example`, `parse_labels`, the label rule), `classes.csv` and
  label overlays; `shards.py`: shard names and the shard-set check.
- `pipeline.py`: the readers, `make_dataset` (images and targets) and
  `read_labels` (labels only); `overlay.py`, `preprocessing.py` (shared
  with the serving export) and `augment.py`/`augment_ops.py` serve it.
- `simulate.py`: partial annotation of a fully labelled dataset (FPC,
  RPS); `mosaics.py`: the demo's synthetic digit images.
"""

from keras_csl.data.features import decode_example
from keras_csl.data.features import encode_example
from keras_csl.data.features import make_targets
from keras_csl.data.features import parse_labels
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
from keras_csl.data.pipeline import read_labels
from keras_csl.data.preprocessing import decode_image
from keras_csl.data.preprocessing import preprocess_encoded
from keras_csl.data.preprocessing import resize_image
from keras_csl.data.shards import check_shard_set
from keras_csl.data.writer import WriterOptions
