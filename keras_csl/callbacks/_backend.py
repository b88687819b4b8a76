"""What the callbacks need from the backend and the distribution (private).

The callbacks compute with `keras.ops` only. The few places where the
backend matters are here: the `tf.distribute` strategy of a model trained
on TensorFlow (its scope, the role of this worker), compiling a small
update into a graph on TensorFlow, and where a worker writes its files.
TensorFlow is imported only when the backend is TensorFlow.
"""

import contextlib
import os
import shutil
import tempfile

import keras


def strategy_of(model):
    """The `tf.distribute` strategy of `model` on TensorFlow, else `None`."""
    if model is None or keras.backend.backend() != "tensorflow":
        return None
    return getattr(model, "distribute_strategy", None)


def scope(model):
    """The model's distribution scope (variables created in it are mirrored)."""
    strategy = strategy_of(model)
    return strategy.scope() if strategy is not None else contextlib.nullcontext()


def is_multi_worker(strategy):
    if strategy is None:
        return False
    import tensorflow as tf

    return isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy)


def task(strategy):
    """`(task_type, task_id)` of this worker; `(None, 0)` for one process."""
    resolver = getattr(strategy, "cluster_resolver", None)
    if not is_multi_worker(strategy) or resolver is None:
        return None, 0
    return resolver.task_type, int(resolver.task_id or 0)


def is_chief(strategy):
    """Whether this worker keeps the files: the `chief` task if the cluster
    has one, else worker 0 (TensorFlow's convention); a single process
    always."""
    task_type, task_id = task(strategy)
    if task_type is None or task_type == "chief":
        return True
    has_chief = "chief" in strategy.cluster_resolver.cluster_spec().as_dict()
    return task_type == "worker" and task_id == 0 and not has_chief


def model_is_chief(model):
    return is_chief(strategy_of(model))


def compiled(fn):
    """`fn` as a graph function on TensorFlow (one call instead of one eager
    op per variable); as it is on other backends."""
    if keras.backend.backend() != "tensorflow":
        return fn
    import tensorflow as tf

    return tf.function(fn)


@contextlib.contextmanager
def write_folder(path, chief):
    """Yields the folder to write `path`'s files into.

    The chief writes into `path` itself. Other workers write the same files
    into a scratch folder, deleted on exit: every worker must take part in
    saving (reading some variables runs collective operations), but only
    the chief's copy is kept, as TensorFlow's multi-worker guide does.
    """
    if chief:
        makedirs(path)
        yield path
        return
    scratch = tempfile.mkdtemp(prefix="keras-csl-worker-")
    try:
        yield scratch
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


def gfile():
    """`tf.io.gfile` when TensorFlow is installed (gs:// paths), else `None`."""
    try:
        import tensorflow as tf
    except ImportError:
        return None
    return tf.io.gfile


def makedirs(path):
    files = gfile()
    if files is not None:
        files.makedirs(path)
    else:
        os.makedirs(path, exist_ok=True)


def exists(path):
    files = gfile()
    return files.exists(path) if files is not None else os.path.exists(path)


def rename(source, target):
    """Renames `source` to `target`, replacing it (a file or a folder)."""
    files = gfile()
    if files is None:
        if os.path.isdir(target):
            shutil.rmtree(target)
        os.replace(source, target)
        return
    if files.isdir(target):
        files.rmtree(target)
    files.rename(source, target, overwrite=True)


def remove(path):
    files = gfile()
    if files is None:
        if os.path.isdir(path):
            shutil.rmtree(path)
        elif os.path.exists(path):
            os.remove(path)
        return
    if files.isdir(path):
        files.rmtree(path)
    elif files.exists(path):
        files.remove(path)


def open_file(path, mode="r"):
    files = gfile()
    if files is not None:
        return files.GFile(path, mode)
    return open(path, mode, encoding=None if "b" in mode else "utf-8")


def listdir(path):
    files = gfile()
    if files is not None:
        return files.listdir(path) if files.isdir(path) else []
    return os.listdir(path) if os.path.isdir(path) else []
