"""What a conversion could not use: rejected label rows and skipped images.

Converters record every input they cannot use in a `Problems`: label rows
through `reject_labels` (they count towards `max_rejected_fraction`),
everything else (images, class files, empty files) through `add`. Each
entry becomes a row of `<split>-report.csv`; `log_summary` logs one
WARNING line per kind of problem with its count and first example; and
`check_label_rows` refuses a conversion that has no usable label row, or
more rejected rows than the user allowed.
"""

import collections
import dataclasses
import math


@dataclasses.dataclass(frozen=True)
class Problem:
    """One rejected input: where it is, what it was and why."""

    file: str
    line: str
    value: str
    reason: str

    @property
    def kind(self):
        """The reason without its details, e.g. "undecodable image"."""
        return reason_kind(self.reason)

    def message(self):
        return f"{where(self.file, self.line)}: {self.reason}. Received: {self.value!r}"


def where(file, line):
    """`"file, line 3"`, or `"file"` without a line, for messages."""
    return f"{file}, line {line}" if line != "" else file


def reason_kind(reason):
    # "undecodable image (jpeg::Uncompress failed...)" -> "undecodable image"
    return reason.split(" (", 1)[0]


class Problems:
    """Collects rejected inputs; raises on the first one when `strict`.

    Example:

    >>> problems = Problems()
    >>> problems.reject_labels("l.csv", 3, "/m/x", "unknown class id")
    >>> problems.add("l.csv", 4, "img.jpg", "missing image")
    >>> problems.counts(), problems.labels_rejected
    ({'unknown class id': 1, 'missing image': 1}, 1)

    Args:
        strict: raise `ValueError` (with the problem's message) instead of
            recording it.
    """

    def __init__(self, strict=False):
        self.strict = strict
        self.rows = []
        self.labels_rejected = 0

    def add(self, file, line, value, reason):
        """Records an input that is not a label row (an image, a class...)."""
        problem = Problem(str(file), str(line), str(value), reason)
        if self.strict:
            raise ValueError(problem.message())
        self.rows.append(problem)

    def reject_labels(self, file, line, value, reason, count=1):
        """Records a rejected label row (`count` label statements of it)."""
        self.add(file, line, value, reason)
        self.labels_rejected += count

    def counts(self):
        """`{kind: number of entries}`, in order of first appearance."""
        return dict(collections.Counter(problem.kind for problem in self.rows))

    def summary_lines(self):
        """One line per kind: count, kind and the first example."""
        first = {}
        for problem in self.rows:
            first.setdefault(problem.kind, problem)
        return [
            f"{count} x {kind} (first: {first[kind].message()})"
            for kind, count in self.counts().items()
        ]

    def log_summary(self, logger, what="Skipped"):
        for line in self.summary_lines():
            logger.warning("%s: %s", what, line)


def check_label_rows(
    problems, read, max_rejected_fraction, expected, found, dropped=0
):
    """Refuses a conversion with no usable label row or too many rejected.

    A label row is one label statement of the input: an OpenImages CSV
    row, a COCO/LVIS annotation or negative id, a class id of a generic
    CSV row. `rejected` comes from `problems.labels_rejected`; `dropped`
    rows were left out on purpose (classes outside a trainable list) and
    count neither way.

    Example:

    >>> problems = Problems()
    >>> for line in range(2, 6):
    ...     problems.reject_labels("l.csv", line, "x", "unknown class id")
    >>> check_label_rows(problems, 400, 0.01, "ImageID,...", "ImageID,...")
    {'read': 400, 'rejected': 4, 'dropped': 0, 'usable': 396}

    Args:
        problems: the `Problems` of the label reading.
        read: label rows read, rejected ones included.
        max_rejected_fraction: largest allowed `rejected / (read - dropped)`.
        expected: what the input should look like, for the message.
        found: what it looked like (e.g. each file's first row).
        dropped: rows left out on purpose.

    Returns:
        `{"read", "rejected", "dropped", "usable"}` counts, for the summary.

    Raises:
        ValueError: when no row is usable, or more than
            `max_rejected_fraction` of them were rejected; the message
            gives one line per kind of problem, what was expected and what
            was found.
    """
    rejected = problems.labels_rejected
    considered = read - dropped
    usable = considered - rejected
    counts = {"read": read, "rejected": rejected, "dropped": dropped, "usable": usable}
    details = "".join(f"\n  {line}" for line in problems.summary_lines())
    hint = f"\nExpected {expected}.\nFound: {found}."
    if usable <= 0:
        if read == 0:
            head = "No usable label row: the input holds no label row."
        else:
            head = (
                f"No usable label row: {rejected} of the {read} label rows were "
                "rejected"
            )
            if dropped:
                head += f" and {dropped} left out (classes outside the trainable list)"
            head += ":"
        raise ValueError(head + details + hint)
    fraction = rejected / considered
    if fraction > max_rejected_fraction:
        allow = math.ceil(fraction * 100) / 100
        raise ValueError(
            f"{rejected} of the {considered} label rows ({100 * fraction:.1f}%) "
            f"were rejected, more than max_rejected_fraction="
            f"{max_rejected_fraction:g} allows:{details}{hint}\nFix the input, or "
            f"accept the loss with max_rejected_fraction={allow:g} (command "
            f"line: --max_rejected_fraction={allow:g}); the report then lists "
            "every rejected row."
        )
    return counts
