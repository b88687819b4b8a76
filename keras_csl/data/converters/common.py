"""Reading helpers shared by the converters: class lists and label rows."""

import array
import csv
import os

import tensorflow as tf

from keras_csl.data import writer

_FILE_BITS = 6
_LINE_BITS = 34
_LOC_BITS = _FILE_BITS + _LINE_BITS
_LOC_MASK = (1 << _LOC_BITS) - 1
_MAX_CLASSES = 1 << 21

CLASS_HEADERS = (("LabelName", "DisplayName"), ("class_id", "display_name"))


def as_list(paths):
    """One path or a list of paths -> a list of `str` paths."""
    if isinstance(paths, (str, os.PathLike)):
        return [os.fspath(paths)]
    return [os.fspath(path) for path in paths]


class LabelTable:
    """Groups (image, class, 0/1) label rows by image, compactly.

    OpenImages has ~60M label rows for ~1.9M images: each image holds one
    `array("q")` whose first entry is where the image was first seen and
    whose others pack `(class, value, file, line)` into one int64, so the
    table costs ~8 bytes per row and duplicates can still be traced back to
    their file and line.
    """

    def __init__(self, files):
        self.files = list(files)
        if len(self.files) > 1 << _FILE_BITS:
            raise ValueError(
                f"At most {1 << _FILE_BITS} label files at once. "
                f"Received: {len(self.files)}"
            )
        self._rows = {}
        self.duplicate_rows = 0
        self.conflicts = 0

    def __len__(self):
        return len(self._rows)

    def __contains__(self, image_id):
        return image_id in self._rows

    @staticmethod
    def _loc(file_index, line):
        if line >= 1 << _LINE_BITS:
            raise ValueError(f"Line number {line} is too large.")
        return (file_index << _LINE_BITS) | line

    def where(self, loc):
        return self.files[loc >> _LINE_BITS], loc & ((1 << _LINE_BITS) - 1)

    def touch(self, image_id, file_index, line):
        """Registers an image (with no label from this row)."""
        if image_id not in self._rows:
            self._rows[image_id] = array.array("q", (self._loc(file_index, line),))

    def add(self, image_id, class_index, value, file_index, line):
        """Adds one label row; `value` is 1 (positive) or 0 (negative)."""
        if class_index >= _MAX_CLASSES:
            raise ValueError(f"At most {_MAX_CLASSES} classes. Received: {class_index}")
        loc = self._loc(file_index, line)
        entries = self._rows.get(image_id)
        if entries is None:
            entries = self._rows[image_id] = array.array("q", (loc,))
        entries.append(((2 * class_index + value) << _LOC_BITS) | loc)

    def resolve(self, class_ids, problems):
        """Yields `(image_id, file, line, positive, negative)` sorted by id.

        Identical duplicate rows count in `duplicate_rows`. A class given
        both values for one image is a conflict: it is reported (at the
        first row that disagrees with the image's first row for that class)
        and left un-annotated; all its rows count as rejected label rows.
        """
        for image_id in sorted(self._rows):
            entries = self._rows.pop(image_id)
            file, line = self.where(entries[0])
            labels = sorted(entries[1:])
            positive, negative = array.array("i"), array.array("i")
            start = 0
            while start < len(labels):
                class_index = labels[start] >> (_LOC_BITS + 1)
                stop = start + 1
                while (
                    stop < len(labels)
                    and labels[stop] >> (_LOC_BITS + 1) == class_index
                ):
                    stop += 1
                group = labels[start:stop]
                values = {(entry >> _LOC_BITS) & 1 for entry in group}
                if len(values) == 1:
                    (positive if values.pop() else negative).append(class_index)
                    self.duplicate_rows += len(group) - 1
                else:
                    self.conflicts += 1
                    group.sort(key=lambda entry: entry & _LOC_MASK)
                    first_value = (group[0] >> _LOC_BITS) & 1
                    other = next(
                        e for e in group if (e >> _LOC_BITS) & 1 != first_value
                    )
                    first_file, first_line = self.where(group[0] & _LOC_MASK)
                    other_file, other_line = self.where(other & _LOC_MASK)
                    problems.reject_labels(
                        other_file,
                        other_line,
                        f"{image_id},{class_ids[class_index]},{1 - first_value}",
                        f"conflicting duplicate (value {first_value} at "
                        f"{first_file}, line {first_line}; left un-annotated)",
                        count=len(group),
                    )
                start = stop
            yield image_id, file, line, positive, negative


def read_class_descriptions(path, problems):
    """Reads `class_id,display_name` rows, with or without a header.

    The header, if any, is a first row equal to `LabelName,DisplayName` (the
    OpenImages file) or `class_id,display_name`. A row with a single column
    is a class whose display name is its id. Display names need not be
    unique; a repeated class id keeps its first row (a different name is
    reported).

    Returns:
        `(class_ids, display_names)` lists, in file order.

    Raises:
        ValueError: if the file holds no class.
    """
    class_ids, names, seen = [], [], {}
    with writer.open_text(path) as f:
        reader = csv.reader(f)
        for row in reader:
            if (
                reader.line_num == 1
                and tuple(c.strip() for c in row[:2]) in CLASS_HEADERS
            ):
                continue
            if not row or not row[0].strip():
                if any(cell.strip() for cell in row):
                    problems.add(path, reader.line_num, ",".join(row), "malformed row")
                continue
            class_id = row[0].strip()
            name = row[1] if len(row) > 1 else class_id
            if class_id in seen:
                if names[seen[class_id]] != name:
                    problems.add(
                        path,
                        reader.line_num,
                        ",".join(row),
                        f"duplicate class id (first named {names[seen[class_id]]!r}; "
                        "first kept)",
                    )
                continue
            seen[class_id] = len(class_ids)
            class_ids.append(class_id)
            names.append(name)
    if not class_ids:
        raise ValueError(f"{path}: no class found in the classes file.")
    return class_ids, names


def read_class_subset(path, class_ids, display_names, problems):
    """Restricts classes to the ids listed in `path`, one per line, in its order.

    Ids missing from `class_ids` are reported and skipped.
    """
    known = dict(zip(class_ids, display_names))
    subset_ids, subset_names, seen = [], [], set()
    with writer.open_text(path) as f:
        for line, text in enumerate(f, 1):
            class_id = text.strip()
            if not class_id or class_id in seen:
                continue
            seen.add(class_id)
            if class_id not in known:
                problems.add(path, line, class_id, "unknown class id")
                continue
            subset_ids.append(class_id)
            subset_names.append(known[class_id])
    if not subset_ids:
        raise ValueError(f"{path}: no known class found in the class list.")
    return subset_ids, subset_names


def first_rows(paths, limit=3):
    """`"a.csv starts with 'x,y'; b.csv ..."`: the first row of each file.

    For error messages that say what a label file looked like; files
    beyond `limit` are counted, not read.
    """
    described = []
    for path in paths[:limit]:
        try:
            with writer.open_text(path) as f:
                row = next(csv.reader(f), None)
        except (OSError, UnicodeDecodeError, tf.errors.OpError) as error:
            described.append(f"{path} could not be read ({error})")
            continue
        text = ",".join(row) if row else ""
        described.append(
            f"{path} starts with {text[:200]!r}" if row else f"{path} is empty"
        )
    if len(paths) > limit:
        described.append(f"and {len(paths) - limit} more files")
    return "; ".join(described)
