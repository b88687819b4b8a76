"""Checkpoint the whole training state each epoch; resume from it."""

import io
import json
import logging
import os
import re

import keras
import numpy as np

from keras_csl.callbacks import _backend

logger = logging.getLogger(__name__)

FORMAT = "keras_csl_training_checkpoint"
VERSION = 1
_NAME = re.compile(r"^ckpt-(\d+)$")
WEIGHTS_FILE = "model.weights.h5"
ARRAYS_FILE = "state.npz"
STATE_FILE = "state.json"  # Written last: marks a complete checkpoint.


class TrainingCheckpoint(keras.callbacks.Callback):
    """Saves the training state after each epoch and restores it on restart.

    A checkpoint holds the model's weights and the optimizer's state with
    its step counter (`model.save_weights`), the class prior of the loss,
    the state of the callbacks in `track` (e.g. `ModelEMA`'s averaged
    weights, `BestModelCheckpoint`'s best score), and the number of epochs
    done. It is written to `<directory>/ckpt-<epochs done>/` under a
    temporary name, then renamed; the last `keep` are kept. On
    `on_train_begin` the latest complete checkpoint, if any, is restored and
    training goes on with the next epoch (as Keras's own `BackupAndRestore`
    does, through `model._initial_epoch`), so a killed run loses at most
    the epoch in progress and ends with the weights of an uninterrupted one
    when each epoch's data order depends on the epoch only.

    Why not `keras.callbacks.BackupAndRestore`: it saves model and
    optimizer only (not the averaged weights, the prior or the best score),
    writes the same file from every worker of a multi-worker run, keeps no
    history and deletes its backup at the end. Here every worker saves
    (reading variables may run collective operations) but only the chief's
    copy is kept (the others write to a scratch folder and delete it).

    Example:

    ```python
    ema = keras_csl.callbacks.ModelEMA()
    best = keras_csl.callbacks.BestModelCheckpoint("runs/a/best.keras", ema=ema)
    checkpoint = keras_csl.callbacks.TrainingCheckpoint(
        "runs/a/checkpoints", track=[ema, best])
    model.fit(train_ds, epochs=10, callbacks=[ema, best, checkpoint])
    # killed? The same call again resumes after the last finished epoch.
    ```

    Args:
        directory: folder of the checkpoints (only this callback's files).
        loss: the loss whose `prior_variable` is saved; default
            `model.loss` when it has one.
        track: callbacks (or objects) with `get_state()` returning a dict
            of arrays and plain values, and `set_state(dict)`; saved under
            their class name, which must be unique.
        keep: checkpoints kept. Defaults to 2.
    """

    def __init__(self, directory, loss=None, track=(), keep=2):
        super().__init__()
        if not directory:
            raise ValueError(
                "Invalid value for argument `directory`. Expected a folder. "
                f"Received: directory={directory!r}"
            )
        if not isinstance(keep, int) or isinstance(keep, bool) or keep < 1:
            raise ValueError(
                "Invalid value for argument `keep`. Expected an integer >= 1. "
                f"Received: keep={keep!r}"
            )
        names = [type(item).__name__ for item in track]
        if len(set(names)) != len(names):
            raise ValueError(
                "Invalid value for argument `track`. Expected objects of "
                f"different classes. Received: {names}"
            )
        self.directory = os.fspath(directory)
        self.loss = loss
        self.track = list(track)
        self.keep = keep

    # ---------------------------------------------------------------- files

    def checkpoints(self):
        """`[(epochs done, path)]` of the complete checkpoints, oldest first."""
        found = []
        for name in _backend.listdir(self.directory):
            match = _NAME.match(name.rstrip("/"))
            path = os.path.join(self.directory, name.rstrip("/"))
            if match and _backend.exists(os.path.join(path, STATE_FILE)):
                found.append((int(match.group(1)), path))
        return sorted(found)

    def latest(self):
        """Path of the latest complete checkpoint, or `None`."""
        found = self.checkpoints()
        return found[-1][1] if found else None

    # ------------------------------------------------------------- restore

    def on_train_begin(self, logs=None):
        self.restore()

    def restore(self, path=None):
        """Restores `path` (default: the latest checkpoint); returns its epoch.

        Raises:
            ValueError: for a folder of the old `tf.train.Checkpoint`
                format, a checkpoint of another format version, or one
                whose step count does not match `epochs x steps`.
        """
        self._check_not_old_format()
        path = path or self.latest()
        if path is None:
            return 0
        with _backend.open_file(os.path.join(path, STATE_FILE)) as f:
            state = json.loads(f.read())
        if state.get("format") != FORMAT or state.get("version") != VERSION:
            raise ValueError(
                f"Cannot resume from {path}: expected a {FORMAT} of version "
                f"{VERSION}. Received: format={state.get('format')!r}, "
                f"version={state.get('version')!r}"
            )
        with _backend.open_file(os.path.join(path, ARRAYS_FILE), "rb") as f:
            arrays = dict(np.load(io.BytesIO(f.read())))
        model = self.model
        optimizer = getattr(model, "optimizer", None)
        if optimizer is not None and not optimizer.built:
            with _backend.scope(model):
                optimizer.build(model.trainable_variables)
        model.load_weights(os.path.join(path, WEIGHTS_FILE))
        variable = self._prior_variable()
        if variable is not None and "prior" in arrays:
            variable.assign(arrays["prior"])
        for item in self.track:
            name = type(item).__name__
            item_state = dict(state["tracked"].get(name, {}))
            prefix = name + "/"
            item_state.update({
                key[len(prefix):]: value for key, value in arrays.items()
                if key.startswith(prefix)
            })
            item.set_state(item_state)
        epoch = int(state["epoch"])
        self._check_steps(path, epoch)
        model._initial_epoch = epoch  # As keras.callbacks.BackupAndRestore.
        logger.info("Resumed from %s: %d epoch(s) done, step %d.", path, epoch,
                    self._iterations())
        return epoch

    def _check_not_old_format(self):
        if _backend.exists(os.path.join(self.directory, "checkpoint")):
            raise ValueError(
                f"Cannot resume from {self.directory}: it holds checkpoints of "
                "an older keras-csl (tf.train.Checkpoint format), which this "
                "version cannot restore. Start a new run folder; the old "
                "run's best.keras still loads."
            )

    def _check_steps(self, path, epoch):
        steps = (self.params or {}).get("steps")
        optimizer = getattr(self.model, "optimizer", None)
        if not steps or optimizer is None or isinstance(
            optimizer, keras.optimizers.LossScaleOptimizer
        ):
            return  # A float16 run skips overflowing steps.
        iterations = self._iterations()
        if iterations != epoch * steps:
            raise ValueError(
                f"Cannot resume from {path}: it holds {iterations} optimizer "
                f"steps after {epoch} epochs; {steps} steps per epoch give "
                f"{epoch * steps}. Was the run started with another batch "
                "size or dataset size? Use a new folder."
            )

    # ---------------------------------------------------------------- save

    def on_epoch_end(self, epoch, logs=None):
        self.save(epoch + 1)

    def save(self, epochs_done):
        """Writes the checkpoint of `epochs_done` epochs (every worker)."""
        chief = _backend.model_is_chief(self.model)
        final = os.path.join(self.directory, f"ckpt-{epochs_done}")
        folder_path = final + ".partial"
        arrays, tracked = {}, {}
        variable = self._prior_variable()
        if variable is not None:
            arrays["prior"] = keras.ops.convert_to_numpy(variable)
        for item in self.track:
            name = type(item).__name__
            tracked[name] = {}
            for key, value in item.get_state().items():
                if isinstance(value, np.ndarray):
                    arrays[f"{name}/{key}"] = value
                else:
                    tracked[name][key] = value
        state = {"format": FORMAT, "version": VERSION, "epoch": epochs_done,
                 "iterations": self._iterations(), "tracked": tracked}
        with _backend.write_folder(folder_path, chief) as folder:
            self.model.save_weights(os.path.join(folder, WEIGHTS_FILE))
            buffer = io.BytesIO()
            np.savez(buffer, **arrays)
            with _backend.open_file(os.path.join(folder, ARRAYS_FILE), "wb") as f:
                f.write(buffer.getvalue())
            with _backend.open_file(os.path.join(folder, STATE_FILE), "w") as f:
                f.write(json.dumps(state, indent=1) + "\n")
        if chief:
            _backend.rename(folder_path, final)
            for _, old in self.checkpoints()[:-self.keep]:
                _backend.remove(old)

    # -------------------------------------------------------------- helpers

    def _prior_variable(self):
        loss = self.loss if self.loss is not None else getattr(self.model, "loss", None)
        return getattr(loss, "prior_variable", None)

    def _iterations(self):
        optimizer = getattr(self.model, "optimizer", None)
        if optimizer is None:
            return 0
        return int(keras.ops.convert_to_numpy(optimizer.iterations))
