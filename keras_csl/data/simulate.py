"""Simulated partial annotation of a fully labelled dataset (TensorFlow only).

The paper (Ben-Baruch et al., CVPR 2022, Sec. 5.2) evaluates on COCO made
partially annotated in two ways; both keep or drop *annotations*, never
images, so a dropped label becomes un-annotated (-1):

- `fpc` ("fixed per class", `param` = k): per class, keep k positive and
  k negative annotations chosen uniformly without replacement (all of them
  when the class has fewer), drop the rest.
- `rps` ("random per sample", `param` = p): drop each annotation
  independently with probability p.

Random procedure (reproducible with NumPy alone). Images are ordered by
image id (Python string order), which makes the result independent of the
sharding. For class index `c`, its positive (resp. negative) images are
listed in that order, and

- `fpc`: the kept positives are `pos[rng.choice(len(pos), min(k, len(pos)),
  replace=False)]` with `rng = numpy.random.default_rng([seed, c, 1])`, the
  kept negatives the same with `default_rng([seed, c, 0])`;
- `rps`: the class's annotated images (positives and negatives, in image
  order) get `u = numpy.random.default_rng([seed, c]).random(n)`; an
  annotation is dropped where `u < p`.

Where this deliberately differs from the authors' code
(`src/helper_functions/coco_simulation.py` of Alibaba-MIIL/PartialLabelingCSL):
they draw from NumPy's global RandomState, unseeded and in one stream over
all classes (fpc) or over the dense image x class matrix (rps), so results
depend on the image order of their data loader and on any earlier random
call; here each class has its own seeded stream, so a class's selection
depends only on the seed, the class index and its own annotations (adding a
class or an image of another class changes nothing else). `rps` draws only
for annotated entries, so it also works on sparse, partially annotated
datasets (their matrix had no -1 entries). Their unused `add_one_label`
option is not reproduced.
"""

import json
import logging
import os

import numpy as np
import tensorflow as tf

from keras_csl.data import features
from keras_csl.data import pipeline
from keras_csl.data import shards
from keras_csl.data import writer

logger = logging.getLogger(__name__)

SCHEMES = ("fpc", "rps")


def _read_labels(files, num_classes):
    """Returns image ids (file order) and (row, class) pairs of each kind."""
    image_ids, pairs, offset = [], {1: [], 0: []}, 0
    for batch in pipeline.read_labels(files, num_classes, with_targets=False):
        batch_ids = batch["id"].numpy()
        image_ids.extend(image_id.decode("utf-8") for image_id in batch_ids)
        for value, key in ((1, "positive"), (0, "negative")):
            lists = batch[key]
            rows = lists.value_rowids().numpy() + offset
            pairs[value].append(np.stack([rows, lists.flat_values.numpy()], axis=1))
        offset += len(batch_ids)
    pairs = {
        value: np.concatenate(chunks) if chunks else np.zeros((0, 2), np.int64)
        for value, chunks in pairs.items()
    }
    return image_ids, pairs


def _by_class(ranks, classes, num_classes):
    """Splits image ranks per class, each list ascending."""
    order = np.lexsort((ranks, classes))
    bounds = np.searchsorted(classes[order], np.arange(num_classes + 1))
    ranks = ranks[order]
    return [ranks[bounds[c] : bounds[c + 1]] for c in range(num_classes)]


def _select_fpc(positive, negative, k, seed):
    kept = {1: [], 0: []}
    for value, per_class in ((1, positive), (0, negative)):
        for c, ranks in enumerate(per_class):
            rng = np.random.default_rng([seed, c, value])
            chosen = rng.choice(len(ranks), min(k, len(ranks)), replace=False)
            kept[value].append(np.sort(ranks[chosen]))
    return kept[1], kept[0]


def _select_rps(positive, negative, p, seed):
    kept_positive, kept_negative = [], []
    for c, (pos, neg) in enumerate(zip(positive, negative)):
        annotated = np.concatenate([pos, neg])
        is_positive = np.concatenate(
            [np.ones(len(pos), bool), np.zeros(len(neg), bool)]
        )
        order = np.argsort(annotated, kind="stable")
        annotated, is_positive = annotated[order], is_positive[order]
        keep = np.random.default_rng([seed, c]).random(len(annotated)) >= p
        kept_positive.append(annotated[keep & is_positive])
        kept_negative.append(annotated[keep & ~is_positive])
    return kept_positive, kept_negative


def _per_image(per_class, num_images):
    """Inverse of `_by_class`: a sorted class list per image rank."""
    ranks = np.concatenate(per_class) if per_class else np.zeros(0, np.int64)
    classes = np.repeat(np.arange(len(per_class)), [len(r) for r in per_class])
    order = np.lexsort((classes, ranks))
    bounds = np.searchsorted(ranks[order], np.arange(num_images + 1))
    classes = classes[order]
    return [classes[bounds[i] : bounds[i + 1]] for i in range(num_images)]


def _check_args(scheme, param, seed, output_dir, overlay_path, dataset_dir):
    if scheme not in SCHEMES:
        raise ValueError(
            f"Invalid value for argument `scheme`. Expected one of {SCHEMES}. "
            f"Received: scheme={scheme!r}"
        )
    if scheme == "fpc" and (
        isinstance(param, bool) or not float(param).is_integer() or param < 0
    ):
        raise ValueError(
            "Invalid value for argument `param`. Expected a non-negative "
            "integer (annotations kept per class) for scheme 'fpc'. "
            f"Received: param={param!r}"
        )
    if scheme == "rps" and not 0 <= param <= 1:
        raise ValueError(
            "Invalid value for argument `param`. Expected a drop probability "
            f"in [0, 1] for scheme 'rps'. Received: param={param!r}"
        )
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise ValueError(
            "Invalid value for argument `seed`. Expected a non-negative "
            f"integer. Received: seed={seed!r}"
        )
    if output_dir is None and overlay_path is None:
        raise ValueError("Pass `output_dir` (a new dataset), `overlay_path`, or both.")
    if output_dir is not None and os.path.abspath(output_dir) == os.path.abspath(
        dataset_dir
    ):
        raise ValueError(
            "Invalid value for argument `output_dir`: it must differ from "
            f"`dataset_dir`. Received: output_dir={output_dir!r}"
        )


def simulate_targets(targets, scheme, param, seed=0):
    """Simulated partial annotation of an in-memory label matrix.

    The same procedure as `simulate_partial_labels` (module docstring),
    with the rows of `targets` in place of the images in id order: on a
    dataset whose rows are sorted by image id, both give the same labels.

    Example:

    >>> full = np.array([[1, 0], [1, 1], [0, 1], [1, 0]])
    >>> simulate_targets(full, "fpc", 1, seed=0)  # 1 pos + 1 neg per class
    array([[-1., -1.],
           [-1., -1.],
           [ 0.,  1.],
           [ 1.,  0.]], dtype=float32)

    Args:
        targets: array `[samples, classes]` in {1, 0, -1}.
        scheme: `"fpc"` or `"rps"`.
        param: annotations kept per class and kind (fpc) or the drop
            probability (rps).
        seed: non-negative integer seed.

    Returns:
        float32 array of the shape of `targets`, in {1, 0, -1}.
    """
    _check_args(scheme, param, seed, None, "in-memory", None)
    targets = np.asarray(targets)
    if targets.ndim != 2:
        raise ValueError(
            "Invalid value for argument `targets`. Expected a 2D array "
            f"[samples, classes]. Received: shape={targets.shape}"
        )
    num_classes = targets.shape[1]
    positive = [np.flatnonzero(targets[:, c] == 1) for c in range(num_classes)]
    negative = [np.flatnonzero(targets[:, c] == 0) for c in range(num_classes)]
    if scheme == "fpc":
        kept_positive, kept_negative = _select_fpc(positive, negative, int(param), int(seed))
    else:
        kept_positive, kept_negative = _select_rps(positive, negative, float(param), int(seed))
    result = np.full(targets.shape, -1.0, dtype="float32")
    for c in range(num_classes):
        result[kept_positive[c], c] = 1.0
        result[kept_negative[c], c] = 0.0
    return result


def simulate_partial_labels(
    dataset_dir,
    scheme,
    param,
    seed,
    output_dir=None,
    overlay_path=None,
    plot_path=None,
    split="train",
    stats_path=None,
):
    """Makes a converted dataset partially annotated, as in the paper.

    Reads the labels of `<dataset_dir>/<split>-*.tfrecord`, keeps a seeded
    subset of the annotations (see the module docstring for `fpc`, `rps`
    and the exact random procedure) and writes the result as a new dataset
    (the same shards and images, new labels), as a label overlay
    (`features.write_label_overlay`, one row per image), or both, with
    per-class statistics and, optionally, a plot of the class frequencies
    before and after.

    Example:

    ```python
    stats = keras_csl.data.simulate_partial_labels(
        "/data/coco-tfr", "fpc", 1000, seed=0,
        overlay_path="/data/coco-fpc1000.csv", plot_path="/tmp/freq.png")
    stats["labels_after"]["positive"]  # at most 80 * 1000
    ```

    Args:
        dataset_dir: a converted dataset (shards and `classes.csv`).
        scheme: `"fpc"` or `"rps"`.
        param: annotations kept per class and per kind (fpc, an integer),
            or the drop probability (rps, in [0, 1]).
        seed: non-negative integer seed.
        output_dir: if set, the new dataset is written there (shards named
            as in `dataset_dir`, `classes.csv`, `<split>-summary.json`); a
            `classes.csv` already there must hold the same classes.
        overlay_path: if set, the label overlay CSV is written there.
        plot_path: if set, an image of the class frequencies before and
            after (needs matplotlib).
        split: the split to read (and write).
        stats_path: where to write the statistics as JSON; defaults to
            `<output_dir>/<split>-simulation.json`, else next to the
            overlay (`<overlay without extension>.stats.json`).

    Returns:
        A stats dict: scheme, param, seed, `num_images`, `num_classes`,
        label counts before and after (`labels_before`, `labels_after`),
        per-class counts (`per_class`) and the output paths.

    Raises:
        ValueError: on invalid arguments, a dataset without a complete set
            of shards, duplicate image ids, or an `output_dir` holding
            another conversion's shards or classes.
    """
    _check_args(scheme, param, seed, output_dir, overlay_path, dataset_dir)
    param = int(param) if scheme == "fpc" else float(param)
    seed = int(seed)
    dataset_dir = os.fspath(dataset_dir)
    class_ids, names = features.read_classes_csv(
        os.path.join(dataset_dir, features.CLASSES_FILE)
    )
    num_classes = len(class_ids)
    files = shards.split_files(dataset_dir, split)
    image_ids, pairs = _read_labels(files, num_classes)
    num_images = len(image_ids)
    order = sorted(range(num_images), key=image_ids.__getitem__)
    sorted_ids = [image_ids[i] for i in order]
    for previous, current in zip(sorted_ids, sorted_ids[1:]):
        if previous == current:
            raise ValueError(f"Duplicate image id {current!r} in {dataset_dir}.")
    rank = np.empty(num_images, np.int64)
    rank[order] = np.arange(num_images)
    positive = _by_class(rank[pairs[1][:, 0]], pairs[1][:, 1], num_classes)
    negative = _by_class(rank[pairs[0][:, 0]], pairs[0][:, 1], num_classes)

    if scheme == "fpc":
        kept_positive, kept_negative = _select_fpc(positive, negative, int(param), seed)
    else:
        kept_positive, kept_negative = _select_rps(
            positive, negative, float(param), seed
        )
    new_positive = _per_image(kept_positive, num_images)
    new_negative = _per_image(kept_negative, num_images)

    def counts(per_class):
        return [int(len(ranks)) for ranks in per_class]

    def totals(pos, neg):
        return {
            "positive": sum(pos),
            "negative": sum(neg),
            "unannotated": num_images * num_classes - sum(pos) - sum(neg),
        }

    per_class = {
        "class_id": list(class_ids),
        "positive_before": counts(positive),
        "negative_before": counts(negative),
        "positive_after": counts(kept_positive),
        "negative_after": counts(kept_negative),
    }
    stats = {
        "scheme": scheme,
        "param": param,
        "seed": seed,
        "split": split,
        "dataset_dir": dataset_dir,
        "num_images": num_images,
        "num_classes": num_classes,
        "labels_before": totals(
            per_class["positive_before"], per_class["negative_before"]
        ),
        "labels_after": totals(
            per_class["positive_after"], per_class["negative_after"]
        ),
        "per_class": per_class,
    }

    for path in (overlay_path, plot_path, stats_path):
        if path is not None and os.path.dirname(os.fspath(path)):
            tf.io.gfile.makedirs(os.path.dirname(os.fspath(path)))
    if output_dir is not None:
        _write_dataset(
            files,
            split,
            output_dir,
            {image_id: r for r, image_id in enumerate(sorted_ids)},
            new_positive,
            new_negative,
            class_ids,
            names,
        )
        summary = {
            "split": split,
            "num_shards": len(files),
            "num_classes": num_classes,
            "images": num_images,
            "labels": stats["labels_after"],
            "per_class": {
                "positive": per_class["positive_after"],
                "negative": per_class["negative_after"],
            },
            "simulation": {
                "scheme": scheme,
                "param": param,
                "seed": seed,
                "source": dataset_dir,
            },
        }
        writer.atomic_write_text(
            os.path.join(output_dir, shards.SUMMARY_PATTERN.format(split=split)),
            json.dumps(summary, indent=1) + "\n",
        )
        shards.mark_complete(output_dir, split)
    if overlay_path is not None:
        features.write_label_overlay(
            overlay_path,
            (
                (image_id, new_positive[r], new_negative[r])
                for r, image_id in enumerate(sorted_ids)
            ),
        )
    if plot_path is not None:
        plot_class_frequencies(stats, plot_path, names)
    if stats_path is None:
        if output_dir is not None:
            stats_path = os.path.join(output_dir, f"{split}-simulation.json")
        else:
            stats_path = os.path.splitext(overlay_path)[0] + ".stats.json"
    stats["outputs"] = {
        "output_dir": output_dir and os.fspath(output_dir),
        "overlay_path": overlay_path and os.fspath(overlay_path),
        "plot_path": plot_path and os.fspath(plot_path),
        "stats_path": os.fspath(stats_path),
    }
    writer.atomic_write_text(os.fspath(stats_path), json.dumps(stats, indent=1) + "\n")
    logger.info(
        "%s(%s, seed %d): kept %d of %d positive and %d of %d negative labels "
        "of %d images.",
        scheme,
        param,
        seed,
        stats["labels_after"]["positive"],
        stats["labels_before"]["positive"],
        stats["labels_after"]["negative"],
        stats["labels_before"]["negative"],
        num_images,
    )
    return stats


def _write_dataset(
    files, split, output_dir, rank_of, new_positive, new_negative, class_ids, names
):
    """Copies the shards with replaced class lists (same names and images)."""
    tf.io.gfile.makedirs(output_dir)
    shards.check_stale_shards(output_dir, split, len(files))
    writer.write_classes(output_dir, class_ids, names)
    shards.mark_incomplete(output_dir, split, "keras_csl.data.simulate_partial_labels")

    def labels_of(image_id):
        rank = rank_of[image_id]
        return new_positive[rank], new_negative[rank]

    for path in files:
        target = os.path.join(output_dir, os.path.basename(path))
        with tf.io.TFRecordWriter(target + ".tmp") as out:
            for record in tf.data.TFRecordDataset(
                path, buffer_size=1 << 20
            ).as_numpy_iterator():
                out.write(features.relabel_example(record, labels_of))
        tf.io.gfile.rename(target + ".tmp", target, overwrite=True)


def plot_class_frequencies(stats, path, display_names=None):
    """Plots each class's positive and negative frequency before and after.

    Classes are sorted by their original positive frequency; the frequency
    is the fraction of images with that label (as in the authors' plot).

    Args:
        stats: the dict returned by `simulate_partial_labels`.
        path: output image path (e.g. `.png`).
        display_names: optional class names (unused in the plot axis when
            there are more than 40 classes).
    """
    try:
        from matplotlib.figure import Figure
    except ImportError:
        raise ImportError(
            "`plot_path` needs matplotlib: pip install matplotlib."
        ) from None
    per_class = stats["per_class"]
    n = max(stats["num_images"], 1)
    before = np.asarray(per_class["positive_before"]) / n
    order = np.argsort(-before, kind="stable")
    figure = Figure(figsize=(8, 6), tight_layout=True)
    axes = figure.subplots(2, 1, sharex=True)
    for ax, kind in zip(axes, ("positive", "negative")):
        ax.plot(np.asarray(per_class[f"{kind}_before"])[order] / n, label="original")
        ax.plot(np.asarray(per_class[f"{kind}_after"])[order] / n, label="simulated")
        ax.set_ylabel(f"{kind} frequency")
        ax.legend()
    axes[0].set_title(
        f"{stats['scheme']}({stats['param']}), seed {stats['seed']}: "
        f"{stats['num_images']} images, {stats['num_classes']} classes"
    )
    if display_names is not None and len(order) <= 40:
        axes[1].set_xticks(range(len(order)))
        axes[1].set_xticklabels([display_names[i] for i in order], rotation=90)
    else:
        axes[1].set_xlabel("classes, by original positive frequency")
    with tf.io.gfile.GFile(os.fspath(path), "wb") as f:
        figure.savefig(f, format=os.path.splitext(os.fspath(path))[1][1:] or "png")
