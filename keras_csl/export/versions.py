"""Numbered version folders under a TF Serving model base path.

TF Serving watches `--model_base_path` and serves its highest numbered
sub-folder; names that are not numbers are skipped. These functions pick
the next number for an export and the latest complete version to load.
"""

import logging
import os

import tensorflow as tf

logger = logging.getLogger(__name__)

SAVED_MODEL_FILES = ("saved_model.pb", "saved_model.pbtxt")


def holds_saved_model(path):
    """Whether `path` is a SavedModel folder (holds `saved_model.pb[txt]`)."""
    return any(
        tf.io.gfile.exists(os.path.join(os.fspath(path), name))
        for name in SAVED_MODEL_FILES
    )


def next_version(export_dir):
    """One more than the largest numeric folder in `export_dir` (1 if none)."""
    return max(_versions(export_dir), default=0) + 1


def latest_version_path(export_dir):
    """The path of the highest complete version folder in `export_dir`.

    Accepts a version folder itself (one holding `saved_model.pb`) too. A
    numbered folder without `saved_model.pb` (or `saved_model.pbtxt`), such
    as a copy still in progress, is skipped; a warning names the folders
    skipped.

    Example:

    ```python
    latest_version_path("exports/coco")  # "exports/coco/3"
    ```

    Raises:
        ValueError: if there is neither a SavedModel nor a complete version
            folder.
    """
    export_dir = os.fspath(export_dir)
    if holds_saved_model(export_dir):
        return export_dir
    incomplete = []
    for version in sorted(_versions(export_dir), reverse=True):
        path = os.path.join(export_dir, str(version))
        if holds_saved_model(path):
            if incomplete:
                logger.warning(
                    "Skipped version folders of %s without saved_model.pb: %s; "
                    "using version %d.", export_dir, incomplete, version,
                )
            return path
        incomplete.append(version)
    if incomplete:
        raise ValueError(
            f"No complete SavedModel in {export_dir}: its version folders "
            f"{sorted(incomplete)} hold no saved_model.pb (still being "
            "written or copied?)."
        )
    raise ValueError(
        f"No SavedModel found in {export_dir}: expected saved_model.pb or "
        "numbered version folders (1/, 2/, ...)."
    )


def _versions(export_dir):
    """The version numbers of the numbered folders in `export_dir`."""
    if not tf.io.gfile.isdir(export_dir):
        return []
    return [
        int(name.rstrip("/"))
        for name in tf.io.gfile.listdir(export_dir)
        if name.rstrip("/").isdigit()
    ]
