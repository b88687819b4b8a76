r"""Evaluates a model on TFRecords: mAP, per-class AP, plots.

    python recipes/evaluate.py --export_dir=exports/coco \
        --data='data/coco/val-*.tfrecord' --output_dir=eval/coco \
        [--label_overlay=data/coco/val-partial.csv] [--pr_classes=person,car]

or with a training run's Keras model (a run folder or its `best.keras`):

    python recipes/evaluate.py --model=runs/coco_rps \
        --data='data/coco/val-*.tfrecord' --output_dir=eval/coco

The classes come from the export, else from `--classes_csv` (default: the
`classes.csv` next to the TFRecords, else the training run's). Images are
decoded and resized with the export's settings (image size, resize mode,
`jpeg_downscale`), or for a `.keras` model with those of its training run
(`config.json`) unless `--resize_mode` / `--[no]jpeg_downscale` are given,
by the training pipeline (`keras_csl.data.make_dataset`, evaluation mode).
A label overlay is checked as training checks it
(`keras_csl.data.LabelOverlay`: class indices in range, at least one row).

Metrics (percent; `keras_csl.metrics.partial_mean_average_precision`):

- `partial_map`: mean AP over the annotated entries of the labels (those of
  `--label_overlay` where given, else those of the TFRecords); a class
  without an annotated positive and negative is left out.
- `full_map`: the ordinary mAP on complete labels: the TFRecords' own
  labels when they have no un-annotated (-1) entry, else null. COCO's
  labels are complete; OpenImages' are not, so it reports `partial_map`
  only, as the paper does.

Memory: by default every prediction and target is kept (float64 for the
mAP; about 29 bytes per image and class: 30-40 GB for the 125,436 x 9,605
OpenImages test set). `--num_thresholds=1000` streams the batches instead
through `PartialMeanAveragePrecision(num_thresholds=1000)`: per class, two
1,000-bin histograms of the annotated positives and negatives (77 MB for
9,605 classes, twice that with `--label_overlay`), exact counts, a mAP
within about 0.03 points of the exact one unless the model's scores barely
vary (docs/METRICS.md), and precision-recall curves drawn from the
histograms (one point per bin).

Files written to `--output_dir`: `metrics.json`; `per_class_ap.csv`
(`index,class_id,display_name,ap,positives,negatives,frequency`, with
`frequency` = annotated positives / images, and `full_ap` when an overlay
is given); `ap_vs_frequency.png` (AP of each class against its frequency,
log scale); `pr_curves.png` (precision-recall curves of `--pr_classes`,
default: the 6 classes with the most positives).

Time (2 shared CPU cores): 53 COCO photos with a tiny CNN take about 15 s,
mostly TensorFlow's start-up; a ResNet50 at 224 px needs about 90 ms per
image on such a CPU, and the pipeline decodes about 800 images/s.
"""

import csv
import json
import logging
import math
import os

from absl import app
from absl import flags

FLAGS = flags.FLAGS


def define_flags():
    """Defines the command-line flags (only when run as a script)."""
    flags.DEFINE_string("export_dir", None, "A serving export (base path or version).")
    flags.DEFINE_string(
        "model", None, "A training run folder, a .keras file or a SavedModel folder."
    )
    flags.DEFINE_string("data", None, "TFRecord file pattern (keras_csl.data layout).")
    flags.DEFINE_string(
        "classes_csv", None,
        "classes.csv (default: the export's classes, else next to the data).",
    )
    flags.DEFINE_string("label_overlay", None, "Partial labels to evaluate on.")
    flags.DEFINE_integer("image_size", None, "Must match the model's (a check).")
    flags.DEFINE_integer("batch_size", 32, "Images per batch.")
    flags.DEFINE_string("output_dir", None, "Folder for the CSV, plots and metrics.")
    flags.DEFINE_list(
        "pr_classes", [], "Classes to plot PR curves of (ids, names or indices)."
    )
    flags.DEFINE_enum(
        "resize_mode", None, ["squash", "pad", "crop"],
        "Resize mode of training, for a .keras model (default: the run's, "
        "else squash).",
    )
    flags.DEFINE_bool(
        "jpeg_downscale", None,
        "Decode large JPEGs at reduced scale, for a .keras model (default: "
        "the run's, else true).",
    )
    flags.DEFINE_bool(
        "from_logits", None,
        "The .keras model outputs logits (default true; false: probabilities).",
    )
    flags.DEFINE_integer(
        "num_thresholds", None,
        "Bounded memory: score through this many score bins per class "
        "(e.g. 1000) instead of keeping every prediction (default: exact).",
    )
    flags.mark_flags_as_required(["data"])

DEFAULT_PR_CLASSES = 6
CSV_COLUMNS = (
    "index", "class_id", "display_name", "ap", "positives", "negatives", "frequency",
)


def evaluate(
    model,
    data,
    classes_csv=None,
    output_dir=None,
    image_size=None,
    batch_size=32,
    pr_classes=None,
    label_overlay=None,
    resize_mode=None,
    num_thresholds=None,
    jpeg_downscale=None,
    from_logits=None,
):
    """Predicts `data`, computes partial (and full) mAP, writes CSV and plots.

    Example:

    ```python
    result = evaluate("exports/coco", "data/coco/val-*.tfrecord",
                      output_dir="eval/coco")
    result["partial_map"], result["full_map"]  # e.g. 80.1, 80.1
    ```

    Args:
        model: a `keras_csl.export.Predictor`, or a path for
            `keras_csl.export.load_predictor`.
        data: a TFRecord file pattern (or a list of them), or a
            `tf.data.Dataset` of `(images, targets)` or
            `(images, targets, image_ids)` batches already preprocessed.
        classes_csv: `classes.csv`; defaults to the export's classes, else
            to `classes.csv` next to the TFRecords.
        output_dir: where to write `metrics.json`, `per_class_ap.csv` and
            the plots (nothing is written when None).
        image_size: if given, must equal the model's input size.
        batch_size: images per batch (TFRecords only).
        pr_classes: classes (ids, display names or indices) whose
            precision-recall curves are plotted.
        label_overlay: a label overlay CSV (`image_id,positive,negative`)
            giving the partial labels to evaluate; images not in it keep
            the labels of the records.
        resize_mode: the training resize mode, for a `.keras` model
            (default: its training run's, else `"squash"`).
        num_thresholds: `None` (default): exact APs from every prediction,
            kept in memory (about 29 bytes per image and class). An integer
            (e.g. 1000): stream the batches through
            `PartialMeanAveragePrecision(num_thresholds=...)`, whose memory
            is `8 * classes * num_thresholds` bytes (twice that with a label
            overlay) whatever the number of images; mAP within about 0.03
            points of the exact one unless the scores barely vary
            (docs/METRICS.md); PR curves drawn from the histograms.
        jpeg_downscale: as in training, for a `.keras` model (default: its
            training run's, else True).
        from_logits: whether a `.keras` model outputs logits (default True).

    Returns:
        A dict: `partial_map`, `partial_map_weighted`, `full_map` (percent;
        None unless complete labels are available), `labels_complete`,
        `num_images`, `num_classes`, `classes_evaluated`,
        `annotated_fraction`, `num_thresholds`, `resize_mode` and
        `jpeg_downscale` (the preprocessing used), `per_class` (list of CSV
        rows as dicts), and the paths of the files written (`files`).

    Raises:
        ValueError: for classes that differ from the model's, an image size
            other than the model's, an invalid label overlay (a class index
            outside [0, C), no row) or one without image ids, an empty
            dataset, a `batch_size` that is not a positive int, or
            `num_thresholds` not an integer >= 2.
    """
    import numpy as np
    import tensorflow as tf

    from keras_csl.data import LabelOverlay
    from keras_csl.data import make_dataset
    from keras_csl.data import read_classes_csv
    from keras_csl.export import Predictor
    from keras_csl.export import load_predictor

    if not isinstance(batch_size, int) or isinstance(batch_size, bool) or (
        batch_size < 1
    ):
        raise ValueError(
            "Invalid value for argument `batch_size`. Expected a positive int. "
            f"Received: batch_size={batch_size!r}"
        )
    if isinstance(data, os.PathLike):
        data = os.fspath(data)
    if label_overlay is not None:
        label_overlay = os.fspath(label_overlay)
    if classes_csv is None and isinstance(data, str):
        candidate = os.path.join(os.path.dirname(data), "classes.csv")
        classes_csv = candidate if os.path.exists(candidate) else None
    if not isinstance(model, Predictor):
        predictor = load_predictor(
            model, classes_csv=classes_csv, resize_mode=resize_mode,
            jpeg_downscale=jpeg_downscale, from_logits=from_logits,
        )
    else:
        predictor = model
        if classes_csv:
            csv_ids, csv_names = read_classes_csv(classes_csv)
            numbered = [str(i) for i in range(predictor.num_classes)]
            if predictor.class_ids not in (list(map(str, csv_ids)), numbered):
                raise ValueError(
                    f"Invalid value for argument `classes_csv`. Its classes "
                    f"differ from the model's. Received: classes_csv={classes_csv!r}"
                )
    class_ids, names = predictor.class_ids, predictor.display_names
    if classes_csv and isinstance(model, Predictor):
        class_ids, names = [str(c) for c in csv_ids], list(csv_names)
    if image_size is not None and image_size != predictor.image_size:
        raise ValueError(
            "Invalid value for argument `image_size`. Expected the model's "
            f"input size {predictor.image_size}. Received: image_size={image_size}"
        )
    if isinstance(data, tf.data.Dataset):
        dataset = data
    else:
        dataset = make_dataset(
            data, predictor.num_classes, predictor.image_size, batch_size,
            training=False, resize_mode=predictor.resize_mode,
            jpeg_downscale=predictor.jpeg_downscale, return_ids=True,
        )

    # Checked before any prediction, as training checks it.
    overlay = (
        LabelOverlay(label_overlay, predictor.num_classes) if label_overlay else None
    )
    batches = _predicted_batches(predictor, dataset, overlay)
    if num_thresholds is None:
        summary = _exact_summary(batches)
    else:
        summary = _bounded_summary(
            batches, predictor.num_classes, num_thresholds,
            with_overlay=label_overlay is not None,
        )
    if not summary["num_images"]:
        raise ValueError(f"No image in {data!r}.")
    per_class_ap, full_ap = summary["per_class_ap"], summary["full_ap"]
    positives, negatives = summary["positives"], summary["negatives"]
    labels_complete = summary["labels_complete"]
    partial_map = _mean(per_class_ap)
    weighted_map = _mean(per_class_ap, weights=positives)
    full_map = _mean(full_ap) if labels_complete else None
    if not labels_complete:
        full_ap = None

    num_images = summary["num_images"]
    rows = []
    for c in range(len(class_ids)):
        row = dict(
            index=c,
            class_id=class_ids[c],
            display_name=names[c],
            ap=_finite(per_class_ap[c]),
            positives=int(positives[c]),
            negatives=int(negatives[c]),
            frequency=float(positives[c]) / num_images,
        )
        if label_overlay is not None:
            row["full_ap"] = _finite(full_ap[c]) if full_ap is not None else None
        rows.append(row)
    result = dict(
        partial_map=_finite(partial_map),
        partial_map_weighted=_finite(weighted_map),
        full_map=_finite(full_map),
        labels_complete=labels_complete,
        num_images=num_images,
        num_classes=len(class_ids),
        classes_evaluated=int(np.isfinite(per_class_ap).sum()),
        annotated_fraction=summary["annotated"] / (num_images * len(class_ids)),
        num_thresholds=num_thresholds,
        resize_mode=predictor.resize_mode,
        jpeg_downscale=predictor.jpeg_downscale,
        model=str(predictor.source),
        data=data if isinstance(data, (str, list)) else "tf.data.Dataset",
        label_overlay=label_overlay,
        per_class=rows,
        files={},
    )
    logging.info(
        "%d images: partial mAP %.2f, full mAP %s, %d of %d classes evaluated "
        "(%s)", num_images, partial_map,
        "n/a" if full_map is None else f"{full_map:.2f}",
        result["classes_evaluated"], len(class_ids),
        "exact" if num_thresholds is None else f"{num_thresholds} score bins",
    )
    if output_dir is not None:
        os.makedirs(output_dir, exist_ok=True)
        files = result["files"]
        files["per_class_ap"] = os.path.join(output_dir, "per_class_ap.csv")
        _write_csv(files["per_class_ap"], rows)
        files["ap_vs_frequency"] = os.path.join(output_dir, "ap_vs_frequency.png")
        plot_ap_vs_frequency(rows, result, files["ap_vs_frequency"])
        chosen = _choose_classes(pr_classes, class_ids, names, positives)
        files["pr_curves"] = os.path.join(output_dir, "pr_curves.png")
        curves = [
            (names[c], *summary["curve"](c), per_class_ap[c], int(positives[c]))
            for c in chosen
        ]
        plot_pr_curves(curves, files["pr_curves"])
        files["metrics"] = os.path.join(output_dir, "metrics.json")
        with open(files["metrics"], "w", encoding="utf-8") as f:
            json.dump(
                {k: v for k, v in result.items() if k != "per_class"}, f,
                indent=1, ensure_ascii=False,
            )
    return result


def _predicted_batches(predictor, dataset, overlay):
    """Yields `(probabilities, record_targets, eval_targets)` per batch.

    `eval_targets` are the record targets with the label overlay (a
    `keras_csl.data.LabelOverlay`, or None) applied.
    """
    import numpy as np

    missing = images = 0
    for batch in dataset:
        scores = predictor.predict_images(
            batch[0].numpy(), batch_size=max(1, len(batch[0]))
        )
        record_targets = batch[1].numpy().astype("float32")
        eval_targets = record_targets
        if overlay is not None:
            if len(batch) < 3:
                raise ValueError(
                    "A label overlay needs image ids: pass TFRecords, or a "
                    "dataset of (images, targets, image_ids)."
                )
            eval_targets, batch_missing = overlay.apply(batch[2], record_targets)
            eval_targets = eval_targets.numpy()
            missing += int(np.sum(batch_missing.numpy()))
        images += len(scores)
        yield np.asarray(scores, "float32"), record_targets, eval_targets
    if missing:
        logging.warning(
            "%d of %d images are not in the label overlay: they keep the "
            "labels of the records.", missing, images,
        )


def _exact_summary(batches):
    """Per-class APs and counts from every score and target, kept in memory."""
    import numpy as np

    from keras_csl.metrics import partial_mean_average_precision

    scores, record_targets, eval_targets = [], [], []
    for batch_scores, batch_records, batch_targets in batches:
        scores.append(batch_scores)
        record_targets.append(batch_records)
        eval_targets.append(batch_targets)
    if not scores:
        return dict(num_images=0)
    # Without an overlay the evaluated targets are the records' (one copy).
    overlaid = any(r is not e for r, e in zip(record_targets, eval_targets))
    scores = np.concatenate(scores).astype("float64")
    record_targets = np.concatenate(record_targets).astype("float64")
    if overlaid:
        eval_targets = np.concatenate(eval_targets).astype("float64")
    else:
        eval_targets = record_targets
    labels_complete = bool((record_targets != -1).all())
    _, per_class_ap = partial_mean_average_precision(eval_targets, scores)
    full_ap = None
    if labels_complete:
        # Without an overlay the evaluated labels are the records': reuse.
        full_ap = (
            partial_mean_average_precision(record_targets, scores)[1]
            if overlaid else per_class_ap
        )

    def curve(c):
        return precision_recall_curve(eval_targets[:, c], scores[:, c])

    return dict(
        num_images=len(scores),
        per_class_ap=per_class_ap,
        full_ap=full_ap,
        labels_complete=labels_complete,
        positives=(eval_targets == 1).sum(axis=0),
        negatives=(eval_targets == 0).sum(axis=0),
        annotated=int((eval_targets != -1).sum()),
        curve=curve,
    )


def _bounded_summary(batches, num_classes, num_thresholds, with_overlay):
    """Per-class APs and counts from histograms: memory O(classes x bins).

    The APs come from `PartialMeanAveragePrecision(num_thresholds=...)`;
    with a label overlay, a second metric scores the records' own labels
    (for `full_ap`).
    """
    import keras
    import numpy as np

    from keras_csl.metrics import PartialMeanAveragePrecision

    def make_metric():
        return PartialMeanAveragePrecision(
            num_classes, from_logits=False, num_thresholds=num_thresholds
        )

    metric = make_metric()
    full_metric = make_metric() if with_overlay else None
    positives = np.zeros(num_classes, "int64")
    negatives = np.zeros(num_classes, "int64")
    num_images = annotated = 0
    labels_complete = True
    for scores, record_targets, eval_targets in batches:
        metric.update_state(eval_targets, scores)
        if full_metric is not None:
            full_metric.update_state(record_targets, scores)
        positives += (eval_targets == 1).sum(axis=0)
        negatives += (eval_targets == 0).sum(axis=0)
        annotated += int((eval_targets != -1).sum())
        labels_complete &= bool((record_targets != -1).all())
        num_images += len(scores)
    per_class_ap = metric.per_class_ap()
    full_ap = per_class_ap if full_metric is None else full_metric.per_class_ap()
    histograms = {}

    def curve(c):
        if not histograms:
            for key in ("positive_counts", "negative_counts"):
                histograms[key] = keras.ops.convert_to_numpy(getattr(metric, key))
        return precision_recall_from_histograms(
            histograms["positive_counts"][c], histograms["negative_counts"][c]
        )

    return dict(
        num_images=num_images,
        per_class_ap=per_class_ap,
        full_ap=full_ap,
        labels_complete=labels_complete,
        positives=positives,
        negatives=negatives,
        annotated=annotated,
        curve=curve,
    )


def _mean(per_class_ap, weights=None):
    """Mean of the defined (finite) per-class APs; NaN if there is none."""
    import numpy as np

    evaluated = np.isfinite(per_class_ap)
    if not evaluated.any():
        return float("nan")
    if weights is not None:
        weights = np.asarray(weights, "float64")[evaluated]
    return float(np.average(per_class_ap[evaluated], weights=weights))


def precision_recall_curve(targets, scores):
    """Precision and recall of one class over its annotated entries.

    Entries with target -1 are left out; tied scores form one point (as in
    `keras_csl.metrics.partial_mean_average_precision`).

    Returns:
        `(precision, recall)` NumPy vectors, by decreasing threshold; empty
        when the class has no annotated positive.
    """
    import numpy as np

    targets = np.asarray(targets, dtype="float64")
    scores = np.asarray(scores, dtype="float64")
    annotated = targets != -1
    targets, scores = targets[annotated], scores[annotated]
    num_positives = targets.sum()
    if num_positives == 0:
        return np.zeros(0), np.zeros(0)
    order = np.argsort(-scores, kind="stable")
    scores, hits = scores[order], np.cumsum(targets[order])
    ends = np.r_[np.flatnonzero(np.diff(scores)), len(scores) - 1]
    return hits[ends] / (ends + 1.0), hits[ends] / num_positives


def precision_recall_from_histograms(positive_counts, negative_counts):
    """Precision and recall of one class from its bounded-mode histograms.

    `positive_counts` and `negative_counts` are the class's counts of
    annotated positives and negatives per bin (a row of
    `PartialMeanAveragePrecision.positive_counts` / `negative_counts`, bins
    by increasing score). Each non-empty bin is one point, its entries taken
    as tied: the curve `precision_recall_curve` gives on the bin indices.

    Returns:
        `(precision, recall)` NumPy vectors, by decreasing threshold; empty
        when the class has no annotated positive.
    """
    import numpy as np

    positive_counts = np.asarray(positive_counts, "float64")[::-1]
    counts = positive_counts + np.asarray(negative_counts, "float64")[::-1]
    num_positives = positive_counts.sum()
    if num_positives == 0:
        return np.zeros(0), np.zeros(0)
    hits, annotated = np.cumsum(positive_counts), np.cumsum(counts)
    ends = np.flatnonzero(counts)
    return hits[ends] / annotated[ends], hits[ends] / num_positives


def plot_ap_vs_frequency(rows, result, path, annotate=5):
    """Scatter of each class's AP against its frequency (log scale)."""
    plt = _pyplot()
    from matplotlib import ticker

    evaluated = [r for r in rows if r["ap"] is not None and r["frequency"] > 0]
    fig, ax = plt.subplots(figsize=(8, 5.5), dpi=120)
    if evaluated:
        frequency = [100.0 * r["frequency"] for r in evaluated]
        ax.scatter(
            frequency, [r["ap"] for r in evaluated], s=18, alpha=0.6,
            color="tab:blue", label="one class",
        )
        ax.axhline(
            result["partial_map"], color="tab:red", linestyle="--", linewidth=1,
            label=f"mAP {result['partial_map']:.1f}",
        )
        ax.set_xscale("log")
        ax.set_xlim(min(frequency) / 1.5, min(100.0, max(frequency) * 1.5))
        ax.xaxis.set_major_locator(ticker.LogLocator(subs=(1.0, 2.0, 5.0)))
        ax.xaxis.set_major_formatter(ticker.FuncFormatter(_percent))
        ax.xaxis.set_minor_formatter(ticker.NullFormatter())
        ax.legend(loc="upper right", fontsize=8)
        worst = sorted(evaluated, key=lambda r: r["ap"])[:annotate]
        ax.text(
            0.99, 0.02,
            "lowest AP:\n" + "\n".join(
                f"{r['display_name']}: {r['ap']:.1f}" for r in worst
            ),
            transform=ax.transAxes, ha="right", va="bottom", fontsize=7,
            bbox=dict(boxstyle="round", facecolor="white", alpha=0.8),
        )
    else:
        ax.text(0.5, 0.5, "no class has annotated positives and negatives",
                ha="center", va="center", transform=ax.transAxes)
    ax.set_ylim(0, 102)
    ax.set_xlabel("class frequency: annotated positives / images (%, log scale)")
    ax.set_ylabel("average precision (%)")
    ax.set_title(
        f"AP against class frequency: {len(evaluated)} classes, "
        f"{result['num_images']} images"
    )
    ax.grid(True, which="major", alpha=0.3)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path


def _percent(value, _):
    return f"{value:g}%"


def plot_pr_curves(curves, path):
    """Precision-recall curves, one figure.

    `curves` holds one `(name, precision, recall, ap, positives)` per class,
    `precision` and `recall` by decreasing threshold (as from
    `precision_recall_curve` or `precision_recall_from_histograms`). Each
    curve steps through the precision at every recall level reached.
    """
    import numpy as np

    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(7, 6), dpi=120)
    drawn = 0
    for name, precision, recall, ap, positives in curves:
        if len(precision) == 0:
            continue
        reached = np.diff(recall, prepend=0.0) > 0
        precision, recall = precision[reached], recall[reached]
        ap_text = "n/a" if not np.isfinite(ap) else f"{ap:.1f}"
        label = f"{name} (AP {ap_text}, {positives} pos.)"
        ax.step(np.r_[0.0, recall], np.r_[precision[0], precision], where="pre",
                label=label)
        drawn += 1
    if not drawn:
        ax.text(0.5, 0.5, "no chosen class has annotated positives",
                ha="center", va="center", transform=ax.transAxes)
    else:
        ax.legend(loc="best", fontsize=8)
    ax.set_xlim(0, 1.01)
    ax.set_ylim(0, 1.02)
    ax.set_xlabel("recall")
    ax.set_ylabel("precision")
    ax.set_title("Precision-recall curves (annotated entries only)")
    ax.grid(True, alpha=0.3)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path


def _pyplot():
    try:
        import matplotlib
    except ImportError:
        raise ImportError(
            "The evaluation plots need matplotlib: pip install matplotlib "
            "(or pip install keras-csl[demo])."
        ) from None
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _choose_classes(pr_classes, class_ids, names, positives):
    """Class indices from ids, names or indices; default: most positives."""
    import numpy as np

    if not pr_classes:
        order = np.argsort(-positives, kind="stable")
        return [int(c) for c in order[:DEFAULT_PR_CLASSES] if positives[c] > 0]
    chosen = []
    for value in pr_classes:
        value = str(value).strip()
        if value in class_ids:
            chosen.append(class_ids.index(value))
        elif value in names:
            chosen.append(names.index(value))
        elif value.isdigit() and int(value) < len(class_ids):
            chosen.append(int(value))
        else:
            raise ValueError(
                "Invalid value for argument `pr_classes`. Expected class ids, "
                f"display names or indices. Received: {value!r}"
            )
    return chosen


def _write_csv(path, rows):
    columns = list(CSV_COLUMNS) + (["full_ap"] if rows and "full_ap" in rows[0] else [])
    with open(path, "w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, fieldnames=columns, lineterminator="\n")
        writer.writeheader()
        for row in rows:
            writer.writerow(
                {k: "" if row[k] is None else _round(row[k]) for k in columns}
            )


def _round(value):
    return round(value, 4) if isinstance(value, float) else value


def _finite(value):
    return None if value is None or not math.isfinite(value) else float(value)


def main(argv):
    del argv
    logging.getLogger().setLevel(logging.INFO)
    if bool(FLAGS.export_dir) == bool(FLAGS.model):
        raise app.UsageError("Pass exactly one of --export_dir and --model.")
    result = evaluate(
        FLAGS.export_dir or FLAGS.model,
        FLAGS.data,
        classes_csv=FLAGS.classes_csv,
        output_dir=FLAGS.output_dir,
        image_size=FLAGS.image_size,
        batch_size=FLAGS.batch_size,
        pr_classes=FLAGS.pr_classes,
        label_overlay=FLAGS.label_overlay,
        resize_mode=FLAGS.resize_mode,
        num_thresholds=FLAGS.num_thresholds,
        jpeg_downscale=FLAGS.jpeg_downscale,
        from_logits=FLAGS.from_logits,
    )
    print(json.dumps({k: v for k, v in result.items() if k != "per_class"}))


if __name__ == "__main__":
    define_flags()
    app.run(main)
