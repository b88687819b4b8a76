"""Converters from annotation formats to keras-csl TFRecord datasets.

Each converter reads its format into `keras_csl.data.writer.Item`s and
hands them to `keras_csl.data.writer.write_dataset`, which writes the
shards, `classes.csv`, `<split>-summary.json` and `<split>-report.csv`.
The command line is `python -m keras_csl.data.convert <format> ...`.
"""

from keras_csl.data.converters.coco import convert_coco
from keras_csl.data.converters.coco import convert_lvis
from keras_csl.data.converters.generic import convert_csv
from keras_csl.data.converters.openimages import convert_openimages
