"""Evaluating a model on TFRecords: partial and full mAP, per-class AP, plots.

`evaluate` predicts a dataset with a `Predictor` (an export or a `.keras`
file, with its model card's classes and preprocessing), scores it with
`keras_csl.inference.scoring`, and writes the results:

- `metrics.json`: the returned numbers;
- `per_class_ap.csv`: `index,class_id,display_name,ap,positives,negatives,
  frequency` (`frequency` = annotated positives / images; plus `full_ap`
  with a label overlay);
- `ap_vs_frequency.png` and `pr_curves.png` (`keras_csl.inference.plots`).

Metrics are in percent (`keras_csl.metrics.partial_mean_average_precision`):
`partial_map` over the annotated entries of the labels evaluated (those of
a label overlay where given, else those of the records; a class without an
annotated positive and negative is left out), and `full_map`, the ordinary
mAP, when the records' own labels are complete (no -1), else None.
"""

import csv
import json
import logging
import math
import os

import numpy as np

from keras_csl.inference import scoring

logger = logging.getLogger(__name__)

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
    check_shards=True,
    resize_method=None,
):
    """Predicts `data`, computes partial (and full) mAP, writes CSV and plots.

    Example:

    ```python
    result = evaluate("exports/coco", "data/coco/val-*.tfrecord",
                      output_dir="eval/coco")
    result["partial_map"], result["full_map"]  # e.g. 80.1, 80.1
    ```

    Args:
        model: a `keras_csl.inference.Predictor`, or a path for
            `load_predictor` (an export, a `.keras` file, a run folder).
        data: a TFRecord file pattern (or a list of them), or a
            `tf.data.Dataset` of `(images, targets)` or
            `(images, targets, image_ids)` batches already preprocessed.
        classes_csv: a `classes.csv` whose names replace the model card's
            (its class ids must be the model's, unless the model's are
            indices). Default: the card's classes.
        output_dir: where to write `metrics.json`, `per_class_ap.csv` and
            the plots (nothing is written when None).
        image_size: if given, must equal the model's input size.
        batch_size: images per batch (TFRecords only).
        pr_classes: classes (ids, display names or indices) whose
            precision-recall curves are plotted; default: the 6 with the
            most positives.
        label_overlay: a label overlay CSV (`image_id,positive,negative`)
            giving the partial labels to evaluate; images not in it keep
            the labels of the records.
        resize_mode: for a `.keras` model, overrides the card's; for an
            export or a `Predictor`, a value other than the card's raises.
        num_thresholds: `None` (default): exact APs from every prediction,
            kept in memory (about 29 bytes per image and class). An integer
            (e.g. 1000): stream the batches through
            `PartialMeanAveragePrecision(num_thresholds=...)`, whose memory
            is `8 * classes * num_thresholds` bytes (twice that with a label
            overlay) whatever the number of images; mAP within about 0.03
            points of the exact one unless the scores barely vary
            (docs/METRICS.md); PR curves drawn from the histograms.
        jpeg_downscale: as `resize_mode`.
        from_logits: as `resize_mode`.
        check_shards: check that `data` names a whole shard set written by
            the converter, with the model's number of classes in its
            `classes.csv` (`keras_csl.data.make_dataset`); False reads
            hand-made or partial shard sets.
        resize_method: as `resize_mode`.

    Returns:
        A dict: `partial_map`, `partial_map_weighted`, `full_map` (percent;
        None unless complete labels are available), `labels_complete`,
        `num_images`, `num_classes`, `classes_evaluated`,
        `annotated_fraction`, `num_thresholds`, `resize_mode`,
        `resize_method` and `jpeg_downscale` (the preprocessing used), `model`, `data`,
        `label_overlay`, `per_class` (list of CSV rows as dicts), and the
        paths of the files written (`files`).

    Raises:
        ValueError: for classes that differ from the model's, settings
            other than those of an export or a `Predictor`, an image size
            other than the model's, an invalid label overlay (a class index
            outside [0, C), no row) or one without image ids, an empty
            dataset, a `batch_size` that is not a positive int, or
            `num_thresholds` not an integer >= 2.
    """
    import tensorflow as tf

    from keras_csl.data import LabelOverlay
    from keras_csl.data import make_dataset
    from keras_csl.data.preprocessing import check_positive_int
    from keras_csl.inference.predictor import as_predictor

    batch_size = check_positive_int("batch_size", batch_size)
    if isinstance(data, os.PathLike):
        data = os.fspath(data)
    if label_overlay is not None:
        label_overlay = os.fspath(label_overlay)
    predictor = as_predictor(
        model, classes_csv=classes_csv, resize_mode=resize_mode,
        jpeg_downscale=jpeg_downscale, from_logits=from_logits,
        resize_method=resize_method,
    )
    class_ids, names = predictor.class_ids, predictor.display_names
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
            jpeg_downscale=predictor.jpeg_downscale,
            resize_method=predictor.resize_method, return_ids=True,
            check_shards=check_shards,
        )
    # Checked before any prediction, as training checks it.
    overlay = (
        LabelOverlay(label_overlay, predictor.num_classes) if label_overlay else None
    )
    batches = _predicted_batches(predictor, dataset, overlay)
    if num_thresholds is None:
        summary = scoring.exact_summary(batches)
    else:
        summary = scoring.bounded_summary(
            batches, predictor.num_classes, num_thresholds,
            with_overlay=label_overlay is not None,
        )
    if not summary["num_images"]:
        raise ValueError(f"No image in {data!r}.")

    rows = per_class_rows(summary, class_ids, names, with_full=overlay is not None)
    per_class_ap = summary["per_class_ap"]
    partial_map = scoring.mean_ap(per_class_ap)
    full_map = scoring.mean_ap(summary["full_ap"]) if summary[
        "labels_complete"] else None
    num_images = summary["num_images"]
    result = dict(
        partial_map=_finite(partial_map),
        partial_map_weighted=_finite(
            scoring.mean_ap(per_class_ap, weights=summary["positives"])
        ),
        full_map=_finite(full_map),
        labels_complete=summary["labels_complete"],
        num_images=num_images,
        num_classes=len(class_ids),
        classes_evaluated=int(np.isfinite(per_class_ap).sum()),
        annotated_fraction=summary["annotated"] / (num_images * len(class_ids)),
        num_thresholds=num_thresholds,
        resize_mode=predictor.resize_mode,
        resize_method=predictor.resize_method,
        jpeg_downscale=predictor.jpeg_downscale,
        model=str(predictor.source),
        data=data if isinstance(data, (str, list)) else "tf.data.Dataset",
        label_overlay=label_overlay,
        per_class=rows,
        files={},
    )
    logger.info(
        "%d images: partial mAP %.2f, full mAP %s, %d of %d classes evaluated "
        "(%s)", num_images, partial_map,
        "n/a" if full_map is None else f"{full_map:.2f}",
        result["classes_evaluated"], len(class_ids),
        "exact" if num_thresholds is None else f"{num_thresholds} score bins",
    )
    if output_dir is not None:
        result["files"] = write_reports(
            result, summary, output_dir, choose_classes(
                pr_classes, class_ids, names, summary["positives"]
            ),
        )
    return result


def _predicted_batches(predictor, dataset, overlay):
    """Yields `(probabilities, record_targets, eval_targets)` per batch.

    `eval_targets` are the record targets with the label overlay (a
    `keras_csl.data.LabelOverlay`, or None) applied.
    """
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
        logger.warning(
            "%d of %d images are not in the label overlay: they keep the "
            "labels of the records.", missing, images,
        )


def per_class_rows(summary, class_ids, names, with_full):
    """One dict per class: the columns of `per_class_ap.csv`."""
    per_class_ap, full_ap = summary["per_class_ap"], summary["full_ap"]
    positives, negatives = summary["positives"], summary["negatives"]
    rows = []
    for c in range(len(class_ids)):
        row = dict(
            index=c,
            class_id=class_ids[c],
            display_name=names[c],
            ap=_finite(per_class_ap[c]),
            positives=int(positives[c]),
            negatives=int(negatives[c]),
            frequency=float(positives[c]) / summary["num_images"],
        )
        if with_full:
            row["full_ap"] = (
                _finite(full_ap[c]) if summary["labels_complete"] else None
            )
        rows.append(row)
    return rows


def write_reports(result, summary, output_dir, chosen):
    """Writes the CSV, the two plots and `metrics.json`; returns their paths."""
    from keras_csl.inference import plots

    os.makedirs(output_dir, exist_ok=True)
    rows = result["per_class"]
    files = dict(
        per_class_ap=os.path.join(output_dir, "per_class_ap.csv"),
        ap_vs_frequency=os.path.join(output_dir, "ap_vs_frequency.png"),
        pr_curves=os.path.join(output_dir, "pr_curves.png"),
        metrics=os.path.join(output_dir, "metrics.json"),
    )
    _write_csv(files["per_class_ap"], rows)
    plots.plot_ap_vs_frequency(rows, result, files["ap_vs_frequency"])
    curves = [
        (
            rows[c]["display_name"], *summary["curve"](c),
            summary["per_class_ap"][c], rows[c]["positives"],
        )
        for c in chosen
    ]
    plots.plot_pr_curves(curves, files["pr_curves"])
    with open(files["metrics"], "w", encoding="utf-8") as f:
        json.dump(
            {k: v for k, v in dict(result, files=files).items() if k != "per_class"},
            f, indent=1, ensure_ascii=False,
        )
    return files


def choose_classes(pr_classes, class_ids, names, positives):
    """Class indices from ids, names or indices; default: most positives.

    Raises:
        ValueError: naming a value that is none of them.
    """
    if not pr_classes:
        order = np.argsort(-np.asarray(positives), kind="stable")
        return [int(c) for c in order[:DEFAULT_PR_CLASSES] if positives[c] > 0]
    chosen = []
    for value in pr_classes:
        value = str(value).strip()
        if value in class_ids:
            chosen.append(list(class_ids).index(value))
        elif value in names:
            chosen.append(list(names).index(value))
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
