"""A real multi-label image set made from scikit-learn's handwritten digits.

The package's demo and studies need a multi-label dataset that needs no
download: each image is a mosaic of several real handwritten digits (the 8x8
scans bundled with scikit-learn, from the UCI optical digits set), and its
labels are the digits present. Labels are exhaustive, like COCO, so partial
annotation is simulated from them.

Digits are drawn with unequal frequencies (class `c` appears in a cell with
probability proportional to `0.85 ** c`), so the class prior varies by about
four times from "0" to "9": what CSL's class-aware rule is about. Train and
test mosaics are cut from disjoint digit scans.

Files are written in the OpenImages layout (`<ImageID>.jpg`,
`image-labels.csv`, `class-descriptions.csv`), so the demo converts them
with the same code path as OpenImages.
"""

import csv
import logging
import os

import numpy as np

logger = logging.getLogger(__name__)

NUM_CLASSES = 10
CLASS_IDS = tuple(f"/digit/{d}" for d in range(NUM_CLASSES))
DISPLAY_NAMES = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine")


def _load_digits():
    try:
        from sklearn.datasets import load_digits
    except ImportError:
        raise ImportError(
            "The digit mosaics need scikit-learn: pip install scikit-learn "
            "(or the package's [demo] extra)."
        ) from None
    digits = load_digits()
    return digits.images.astype("float32") / 16.0, digits.target.astype("int64")


def make_digit_mosaics(
    num_images, split="train", grid=3, cell_size=16, fill=0.45, seed=0
):
    """Generates mosaic images and their exhaustive labels.

    Example:

    >>> images, labels = make_digit_mosaics(4, seed=0)
    >>> images.shape, images.dtype, labels.shape
    ((4, 48, 48, 3), dtype('uint8'), (4, 10))

    Args:
        num_images: number of mosaics.
        split: `"train"` uses the first 1,200 digit scans, `"test"` the
            other 597, so no scan appears in both.
        grid: cells per side; each cell holds a digit with probability
            `fill` (at least one digit per image).
        cell_size: pixels per cell side (digits are upscaled from 8x8).
        fill: probability that a cell holds a digit.
        seed: random seed; equal arguments give equal arrays.

    Returns:
        `(images, labels)`: uint8 RGB `[N, grid*cell, grid*cell, 3]` and
        float32 `[N, 10]` with 1 where the digit is present, else 0.
    """
    if split not in ("train", "test"):
        raise ValueError(
            "Invalid value for argument `split`. Expected 'train' or 'test'. "
            f"Received: split={split!r}"
        )
    if not isinstance(num_images, int) or num_images < 1:
        raise ValueError(
            "Invalid value for argument `num_images`. Expected a positive "
            f"int. Received: num_images={num_images!r}"
        )
    scans, digit_of = _load_digits()
    scans, digit_of = (scans[:1200], digit_of[:1200]) if split == "train" else (scans[1200:], digit_of[1200:])
    by_class = [np.flatnonzero(digit_of == c) for c in range(NUM_CLASSES)]
    class_weights = 0.85 ** np.arange(NUM_CLASSES)
    class_weights /= class_weights.sum()

    rng = np.random.default_rng([seed, 0 if split == "train" else 1])
    side = grid * cell_size
    images = np.zeros((num_images, side, side, 3), dtype="uint8")
    labels = np.zeros((num_images, NUM_CLASSES), dtype="float32")
    scale = cell_size // 8
    for n in range(num_images):
        occupied = rng.random(grid * grid) < fill
        if not occupied.any():
            occupied[rng.integers(grid * grid)] = True
        background = rng.uniform(0, 60, size=3)
        canvas = np.broadcast_to(background, (side, side, 3)).copy()
        for cell in np.flatnonzero(occupied):
            digit = rng.choice(NUM_CLASSES, p=class_weights)
            scan = scans[rng.choice(by_class[digit])]
            ink = np.kron(scan, np.ones((scale, scale), dtype="float32"))
            colour = rng.uniform(150, 255, size=3)
            row, col = divmod(cell, grid)
            patch = canvas[row * cell_size : (row + 1) * cell_size, col * cell_size : (col + 1) * cell_size]
            patch[: ink.shape[0], : ink.shape[1]] = (
                patch[: ink.shape[0], : ink.shape[1]] * (1 - ink[..., None]) + colour * ink[..., None]
            )
            labels[n, digit] = 1.0
        images[n] = np.clip(np.rint(canvas), 0, 255).astype("uint8")
    return images, labels


def write_digit_mosaics(output_dir, num_images, split="train", seed=0, **kwargs):
    """Writes mosaics as JPEG files plus OpenImages-style label CSVs.

    Writes `<output_dir>/images/<ImageID>.jpg` (quality 95),
    `<output_dir>/<split>-image-labels.csv` (`ImageID,Source,LabelName,
    Confidence`, a row for every (image, class): 1 present, 0 absent) and
    `<output_dir>/class-descriptions.csv` (`LabelName,DisplayName`, no
    header, like the official file).

    Returns:
        dict with the paths: `images_dir`, `labels_csv`, `classes_csv`.
    """
    from PIL import Image

    images, labels = make_digit_mosaics(num_images, split=split, seed=seed, **kwargs)
    images_dir = os.path.join(output_dir, "images")
    os.makedirs(images_dir, exist_ok=True)
    labels_csv = os.path.join(output_dir, f"{split}-image-labels.csv")
    classes_csv = os.path.join(output_dir, "class-descriptions.csv")
    with open(labels_csv, "w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f, lineterminator="\n")
        writer.writerow(["ImageID", "Source", "LabelName", "Confidence"])
        for n in range(num_images):
            image_id = f"{split}{n:06d}"
            Image.fromarray(images[n]).save(
                os.path.join(images_dir, image_id + ".jpg"), quality=95
            )
            for c in range(NUM_CLASSES):
                writer.writerow([image_id, "mosaic", CLASS_IDS[c], int(labels[n, c])])
    with open(classes_csv, "w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f, lineterminator="\n")
        for class_id, name in zip(CLASS_IDS, DISPLAY_NAMES):
            writer.writerow([class_id, name])
    logger.info("Wrote %d %s mosaics to %s", num_images, split, output_dir)
    return {"images_dir": images_dir, "labels_csv": labels_csv, "classes_csv": classes_csv}
