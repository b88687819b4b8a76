"""`WriterOptions`: how a converter writes shards, one object for every format."""

import dataclasses
import math
import os
from typing import Optional

import numpy as np

from keras_csl.data import preprocessing

# The largest fraction of label rows a conversion may reject by default.
# A consistent input rejects no row (the COCO sample of ../shared/data
# converts with none rejected), while a systematic mistake (renamed
# columns, a class file of another dataset or version) rejects whole
# classes or every row, far more than 1%. 1% still lets a hand-made CSV
# with a few typos per thousand rows through (each one reported); anything
# beyond is an opt-in.
DEFAULT_MAX_REJECTED_FRACTION = 0.01


def _flag(help_text, parse=None):
    """Field metadata: the CLI help (and value parser) of a writer option."""
    return {"help": help_text, "parse": parse}


@dataclasses.dataclass(frozen=True)
class WriterOptions:
    """How a converter writes shards: one object for every format.

    Every converter (`convert_openimages`, `convert_coco`, `convert_lvis`,
    `convert_csv`) and `writer.write_dataset` takes these options, either
    as this object (`options=`) or as keyword arguments of the same names;
    the command line has a flag for each field but `verbose`. Values are
    checked once, here; integers may be NumPy integers and are stored as
    Python `int`s.

    Example:

    >>> options = WriterOptions(num_shards=8, resize_short_side=256)
    >>> options.replace(split="val").split
    'val'
    >>> WriterOptions(num_shards=0)
    Traceback (most recent call last):
    ...
    ValueError: Invalid value for argument `num_shards`. Expected a positive ...

    Args:
        num_shards: number of TFRecord shards of the split.
        split: name prefix of the output files (`train-00000-of-00008...`).
        resize_short_side: if set, images whose short side is larger are
            resized to it and re-encoded as JPEG (the authors used 256).
        jpeg_quality: JPEG quality of re-encoded images, in [1, 100].
        validate_images: decode every image once to check it (without it,
            only missing, empty and non-JPEG/PNG files are caught).
        strict: raise `ValueError` on the first bad input (label row or
            image) instead of skipping and reporting it; on a rerun, also
            for a bad image an earlier lenient run skipped.
        max_rejected_fraction: the largest fraction of the input's label
            rows that may be rejected (unknown class, invalid value,
            malformed row, conflicting duplicate) before the conversion
            refuses to write; in [0, 1], 1 accepts any fraction. A
            conversion with no usable label row fails whatever the value.
        num_workers: worker processes, each writing whole shards; 1 writes
            in the calling process. The default is `min(CPUs, images to
            write // 1000, shards to write)`, at least 1, where "to write"
            leaves out the shards a rerun resumes.
        verbose: 1 shows a progress bar, 0 does not.

    Raises:
        ValueError: for a value out of range, naming the field.
    """

    num_shards: int = dataclasses.field(
        metadata=_flag("Number of TFRecord shards (required).", int)
    )
    split: str = dataclasses.field(
        default="train", metadata=_flag("Name prefix of the output files.", str)
    )
    resize_short_side: Optional[int] = dataclasses.field(
        default=None,
        metadata=_flag(
            "Re-encode images with a larger short side to this size (JPEG).", int
        ),
    )
    jpeg_quality: int = dataclasses.field(
        default=90, metadata=_flag("Quality of re-encoded JPEGs, 1-100.", int)
    )
    validate_images: bool = dataclasses.field(
        default=True, metadata=_flag("Decode every image to check it.")
    )
    strict: bool = dataclasses.field(
        default=False, metadata=_flag("Make any bad label row or image fatal.")
    )
    max_rejected_fraction: float = dataclasses.field(
        default=DEFAULT_MAX_REJECTED_FRACTION,
        metadata=_flag(
            "Largest fraction of label rows that may be rejected before the "
            "conversion refuses to write (1 accepts any; no usable row "
            "always fails).",
            float,
        ),
    )
    num_workers: Optional[int] = dataclasses.field(
        default=None,
        metadata=_flag(
            "Worker processes, each writing whole shards (default: min(CPUs, "
            "images to write / 1000, shards to write), at least 1).",
            int,
        ),
    )
    verbose: int = 1

    def __post_init__(self):
        check = preprocessing.check_positive_int

        def set_field(name, value):  # The dataclass is frozen.
            object.__setattr__(self, name, value)

        set_field("num_shards", check("num_shards", self.num_shards))
        set_field(
            "resize_short_side",
            check("resize_short_side", self.resize_short_side, allow_none=True),
        )
        set_field(
            "num_workers", check("num_workers", self.num_workers, allow_none=True)
        )
        if not isinstance(self.split, str) or not self.split or (
            os.sep in self.split or "/" in self.split
        ):
            raise ValueError(
                "Invalid value for argument `split`. Expected a non-empty name "
                f"without '/'. Received: split={self.split!r}"
            )
        quality = self.jpeg_quality
        if isinstance(quality, bool) or not isinstance(quality, (int, np.integer)) or (
            not 1 <= quality <= 100
        ):
            raise ValueError(
                "Invalid value for argument `jpeg_quality`. Expected an integer "
                f"in [1, 100]. Received: jpeg_quality={quality!r}"
            )
        set_field("jpeg_quality", int(quality))
        for name in ("validate_images", "strict"):
            if not isinstance(getattr(self, name), (bool, np.bool_)):
                raise ValueError(
                    f"Invalid value for argument `{name}`. Expected True or "
                    f"False. Received: {name}={getattr(self, name)!r}"
                )
            set_field(name, bool(getattr(self, name)))
        fraction = self.max_rejected_fraction
        if isinstance(fraction, bool) or not isinstance(
            fraction, (int, float, np.integer, np.floating)
        ) or not (math.isfinite(fraction) and 0 <= fraction <= 1):
            raise ValueError(
                "Invalid value for argument `max_rejected_fraction`. Expected "
                f"a number in [0, 1]. Received: max_rejected_fraction={fraction!r}"
            )
        set_field("max_rejected_fraction", float(fraction))
        if isinstance(self.verbose, bool) or self.verbose not in (0, 1, 2):
            raise ValueError(
                "Invalid value for argument `verbose`. Expected 0, 1 or 2. "
                f"Received: verbose={self.verbose!r}"
            )
        set_field("verbose", int(self.verbose))

    def replace(self, **changes):
        """A copy with some fields changed (validated again)."""
        return dataclasses.replace(self, **changes)

    def to_dict(self):
        return dataclasses.asdict(self)

    @classmethod
    def resolve(cls, options=None, caller="write_dataset", **overrides):
        """The options of a converter call: `options`, with keyword overrides.

        Converters take `options=None, **writer_options`; this turns the
        two into one `WriterOptions`, so a call can pass either.

        Args:
            options: a `WriterOptions`, or `None`.
            caller: the function name, for error messages.
            **overrides: fields of `WriterOptions` (e.g. `num_shards=8`).

        Raises:
            TypeError: for a keyword that is not a field, a missing
                `num_shards`, or `options` of another type.
        """
        names = [field.name for field in dataclasses.fields(cls)]
        unknown = sorted(set(overrides) - set(names))
        if unknown:
            raise TypeError(
                f"{caller}() got unexpected keyword arguments {unknown}. "
                f"Expected the fields of WriterOptions: {', '.join(names)}."
            )
        if options is None:
            if "num_shards" not in overrides:
                raise TypeError(
                    f"{caller}() needs `num_shards` (e.g. num_shards=8) or "
                    "`options=WriterOptions(num_shards=...)`."
                )
            return cls(**overrides)
        if not isinstance(options, cls):
            raise TypeError(
                f"Invalid value for argument `options` of {caller}(). Expected "
                "a keras_csl.data.WriterOptions or None (other settings go by "
                f"keyword, e.g. num_shards=8). Received: options={options!r}"
            )
        return options.replace(**overrides) if overrides else options
