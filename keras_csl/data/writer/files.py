"""Text files on a local disk or behind a URL (`gs://...`), for csv and JSON."""

import tensorflow as tf


def open_text(path):
    """Opens a text file for csv: local files natively, URLs via tf.io.gfile."""
    if "://" in str(path):
        return tf.io.gfile.GFile(path, "r")
    return open(path, "r", newline="", encoding="utf-8-sig")


def atomic_write_text(path, text):
    """Writes a text file through a temporary name, so it is whole or absent."""
    tmp = path + ".tmp"
    with tf.io.gfile.GFile(tmp, "w") as f:
        f.write(text)
    tf.io.gfile.rename(tmp, path, overwrite=True)
