"""One JSON line of metrics per epoch, safe to resume."""

import json
import logging
import os
import time

import keras
import numpy as np

from keras_csl.callbacks import _backend

logger = logging.getLogger(__name__)


class MetricsLogger(keras.callbacks.Callback):
    """Writes each epoch's logs as one JSON line (`metrics.jsonl`).

    Each line is `{"epoch": <1-based>, <every log value>}` plus the
    learning rate of the next step (Keras's convention, as
    `keras.callbacks.TensorBoard` logs it), the training time of the epoch
    as `steps_per_second` and, given the global batch size,
    `images_per_second`. Put it after the callbacks that add values to the
    epoch's logs (validation, best model, class prior).

    Why not `keras.callbacks.CSVLogger`: its columns are fixed by the first
    epoch (values that appear later, such as the prior's statistics after a
    warm-up, are lost), every worker of a multi-worker run writes the file,
    and a run resumed after a crash between the log line and the checkpoint
    would log that epoch twice. Here only the chief writes, and lines of
    epochs at or after the first epoch of this `fit` (re-run after a
    resume) are dropped before it starts.

    Example:

    ```python
    model.fit(train_ds, epochs=3, callbacks=[
        keras_csl.callbacks.MetricsLogger("runs/a/metrics.jsonl")])
    # {"epoch": 1, "loss": 0.61, "learning_rate": 0.0002, ...}
    ```

    Args:
        path: the file, or `None` to keep the records in memory only.
        global_batch_size: images per step over all replicas, for
            `images_per_second`.

    Attributes:
        records: the dicts logged by the current `fit`, one per epoch.
    """

    def __init__(self, path=None, global_batch_size=None):
        super().__init__()
        self.path = None if path is None else str(path)
        self.global_batch_size = global_batch_size
        self.records = []

    def on_train_begin(self, logs=None):
        self.records = []
        self._trimmed = False

    def on_epoch_begin(self, epoch, logs=None):
        if not self._trimmed:
            self._trimmed = True
            self._drop_lines_from(epoch + 1)
        self._started = None
        self._steps = 0

    def on_train_batch_begin(self, batch, logs=None):
        if self._started is None:
            self._started = time.perf_counter()

    def on_train_batch_end(self, batch, logs=None):
        self._steps = batch + 1

    def on_epoch_end(self, epoch, logs=None):
        record = {"epoch": epoch + 1}
        record.update({key: _plain(value) for key, value in (logs or {}).items()})
        optimizer = getattr(self.model, "optimizer", None)
        if optimizer is not None and "learning_rate" not in record:
            record["learning_rate"] = float(
                keras.ops.convert_to_numpy(optimizer.learning_rate)
            )
        if self._started is not None and self._steps:
            seconds = max(time.perf_counter() - self._started, 1e-9)
            record["steps_per_second"] = self._steps / seconds
            if self.global_batch_size:
                record["images_per_second"] = (
                    self._steps * self.global_batch_size / seconds
                )
        self.records.append(record)
        if self.path is not None and _backend.model_is_chief(self.model):
            _backend.makedirs(os.path.dirname(self.path) or ".")
            with _backend.open_file(self.path, "a") as f:
                f.write(json.dumps(record, allow_nan=True) + "\n")

    def _drop_lines_from(self, first_epoch):
        """Drops the lines of epochs >= `first_epoch` (they will be redone)."""
        if self.path is None or not _backend.model_is_chief(self.model):
            return
        if not _backend.exists(self.path):
            return
        with _backend.open_file(self.path) as f:
            lines = [line for line in f.read().splitlines() if line.strip()]
        kept = [line for line in lines if json.loads(line).get("epoch", 0) < first_epoch]
        if len(kept) != len(lines):
            logger.info("%s: dropping %d line(s) of epochs >= %d (resumed run).",
                        self.path, len(lines) - len(kept), first_epoch)
            with _backend.open_file(self.path, "w") as f:
                f.write("".join(line + "\n" for line in kept))


def _plain(value):
    """A JSON-friendly value: NumPy scalars to Python, tensors to floats."""
    if isinstance(value, (bool, int, str)) or value is None:
        return value
    if isinstance(value, (float, np.floating)):
        return float(value)
    if isinstance(value, np.integer):
        return int(value)
    try:
        array = np.asarray(keras.ops.convert_to_numpy(value))
    except Exception:  # Not a tensor: leave it to json (or its repr).
        return repr(value)
    return float(array) if array.size == 1 else array.tolist()

