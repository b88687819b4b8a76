"""Keeps the best model of a run: raw or averaged weights, with its card."""

import json
import logging
import math

import keras

from keras_csl.callbacks import _backend
from keras_csl.callbacks import _saving

logger = logging.getLogger(__name__)


class BestModelCheckpoint(keras.callbacks.Callback):
    """Saves the better of the raw and the averaged (EMA) weights when it improves.

    At the end of each epoch it reads `logs[monitor]` (the raw weights'
    score, e.g. from `PartialMAPValidation`) and `logs[monitor + "_ema"]`
    (the averaged weights'), takes the higher, and when it beats the best
    so far saves the model holding those weights, as the authors'
    `validate_multi` keeps the better of the model and its EMA. Files, from
    `filepath="run/best.keras"`: `best.keras` (an uncompiled model, no
    optimizer, with its model card: the card's `extra` gets `best_epoch`,
    `val_map` and `weights`: "raw" or "ema"), `best.weights.h5` and
    `best.json` (`epoch`, `val_map`, `weights`, `monitor`). It adds
    `logs[monitor + "_best"]`.

    Why not `keras.callbacks.ModelCheckpoint(save_best_only=True)`: it
    saves the weights the model holds, with one monitored value; here the
    file must hold whichever of two weight sets scored higher, and say
    which. Under `MultiWorkerMirroredStrategy` every worker swaps the
    averaged weights in and out, and only the chief writes.

    `on_train_begin` forgets the best score, unless `TrainingCheckpoint`
    restored it for this run (`get_state`/`set_state`).

    Example:

    ```python
    ema = keras_csl.callbacks.ModelEMA()
    model.fit(train_ds, epochs=10, callbacks=[
        ema,
        keras_csl.callbacks.PartialMAPValidation(val_ds, ema=ema),
        keras_csl.callbacks.BestModelCheckpoint("runs/a/best.keras", ema=ema),
    ])
    ```

    Args:
        filepath: the `.keras` file to write, or `None` to track the best
            score without writing.
        monitor: log key of the raw weights' score (higher is better).
        ema: optional `ModelEMA` whose averaged weights compete.
        card: the `ModelCard` to write (default: the model's own card).
        verbose: 1 logs each new best.

    Attributes:
        best: the best score so far (`-inf` before any).
        best_epoch: its epoch, 1-based (0 before any).
        best_source: `"raw"` or `"ema"`.
    """

    def __init__(self, filepath=None, monitor="val_map", ema=None, card=None,
                 verbose=1):
        super().__init__()
        if filepath is not None and not str(filepath).endswith(".keras"):
            raise ValueError(
                "Invalid value for argument `filepath`. Expected a path ending "
                f"in .keras, or None. Received: filepath={filepath!r}"
            )
        self.filepath = None if filepath is None else str(filepath)
        self.monitor = monitor
        self.ema = ema
        self.card = card
        self.verbose = verbose
        self._reset()
        self._restored = False

    def _reset(self):
        self.best = -math.inf
        self.best_epoch = 0
        self.best_source = "raw"

    def on_train_begin(self, logs=None):
        if not self._restored:
            self._reset()
        self._restored = False

    def on_epoch_begin(self, epoch, logs=None):
        self._restored = False

    def on_epoch_end(self, epoch, logs=None):
        logs = {} if logs is None else logs
        candidates = [("raw", logs.get(self.monitor))]
        if self.ema is not None:
            candidates.append(("ema", logs.get(self.monitor + "_ema")))
        candidates = [
            (source, float(value)) for source, value in candidates
            if value is not None and math.isfinite(float(value))
        ]
        if candidates:
            source, value = max(candidates, key=lambda item: item[1])
            if value > self.best:
                self.best, self.best_epoch, self.best_source = value, epoch + 1, source
                self._save()
        if math.isfinite(self.best):
            logs[self.monitor + "_best"] = self.best

    def _save(self):
        if self.filepath is None:
            return
        chief = _backend.model_is_chief(self.model)
        if self.best_source == "ema":
            with self.ema.averaged_weights():
                if chief:
                    self._write()
        elif chief:
            self._write()

    def _write(self):
        extra = {"best_epoch": self.best_epoch, "val_map": self.best,
                 "weights": self.best_source}
        _saving.save_inference_model(
            self.model, self.filepath, card=self.card, extra=extra,
            weights_path=_saving.sibling(self.filepath, ".weights.h5"),
        )
        with _backend.open_file(_saving.sibling(self.filepath, ".json"), "w") as f:
            f.write(json.dumps({
                "epoch": self.best_epoch,
                "val_map": self.best,
                "weights": self.best_source,
                "monitor": self.monitor,
            }) + "\n")
        if self.verbose:
            logger.info(
                "Epoch %d: %s %.4f (%s weights) is the best so far; saved %s.",
                self.best_epoch, self.monitor, self.best, self.best_source,
                self.filepath,
            )

    def get_state(self):
        """The best score, epoch and source, for `TrainingCheckpoint`."""
        return {"best": self.best, "best_epoch": self.best_epoch,
                "best_source": self.best_source}

    def set_state(self, state):
        self.best = float(state["best"])
        self.best_epoch = int(state["best_epoch"])
        self.best_source = str(state["best_source"])
        self._restored = True
