"""Writes labelled images into sharded TFRecords (TensorFlow only).

The format converters (`keras_csl.data.converters`) turn each annotation
format into `Item`s (image id, image path, class indices) and a `Problems`
(rejected input rows); `write_dataset` does the rest, the same way for
every format, with the `WriterOptions` of the call:

- `options.py`: `WriterOptions`, the settings every converter shares
  (shards, split, resizing, strictness, workers, ...), checked once.
- `problems.py`: `Problem`, `Problems` and `check_label_rows`: what was
  rejected and why, one WARNING line per kind, and the refusal of a
  conversion whose label rows are unusable.
- `images.py`: reading, checking and re-encoding one image.
- `shard.py`: writing one shard in a worker, and the resume markers that
  let a rerun skip complete shards.
- `dataset.py`: `Item` and `write_dataset`: shards, `classes.csv`,
  `<split>-summary.json` and `<split>-report.csv`
  (`file,line,value,reason`, one row per skipped item).
- `files.py`: text files on a local disk or behind a URL.

The shard names and the `.<split>-incomplete` marker are defined in
`keras_csl.data.shards`, which the readers check.
"""

from keras_csl.data.shards import check_stale_shards
from keras_csl.data.shards import shard_name
from keras_csl.data.writer.dataset import IMAGES_PER_WORKER
from keras_csl.data.writer.dataset import REPORT_HEADER
from keras_csl.data.writer.dataset import Item
from keras_csl.data.writer.dataset import write_classes
from keras_csl.data.writer.dataset import write_dataset
from keras_csl.data.writer.files import atomic_write_text
from keras_csl.data.writer.files import open_text
from keras_csl.data.writer.options import DEFAULT_MAX_REJECTED_FRACTION
from keras_csl.data.writer.options import WriterOptions
from keras_csl.data.writer.problems import Problem
from keras_csl.data.writer.problems import Problems
from keras_csl.data.writer.problems import check_label_rows
from keras_csl.data.writer.shard import FORMAT_VERSION
