"""The paper's two-stage flow: estimate the class prior, then train CSL.

Ben-Baruch et al. (CVPR 2022) estimate the class prior `P_r(c)`
with a temporary model trained in "ignore" mode (un-annotated labels give
no loss, so the model is not pushed towards "absent"): its predicted
probabilities, averaged over the training images, estimate how often each
class is present. `estimate_prior` does that and writes the prior CSV that
`TrainConfig.prior` reads:

1. train the ignore-mode model (`ignore_mode_config(config)`, through
   `recipe.run`, into `<run_dir>/ignore-model`), unless `model_path` names
   one already trained (`best.keras` of an earlier run, or an export);
2. read the TRAINING images in evaluation mode (no augmentation, no
   shuffle, every image once, the config's `dataset_options` such as its
   label overlay) and, in the same pass, average the predictions
   (`priors.PredictionAverager`, the estimator of
   `priors.prior_from_predictions`) and count the partial labels (the
   naive prior of `priors.naive_prior`);
3. when the complete labels are known (simulated partial labels, or the
   synthetic data of smoke configs), compare both estimates with the true
   class frequencies: Spearman rank correlation and mean absolute error.

The running prior of `prior="online"` (`ClassPriorUpdater`) averages the
predictions of a moving model on augmented images; this flow averages the
final model on the images as they are, as the paper does. The whole life
cycle of a run's prior is told in `keras_csl.training.class_prior`.
"""

import dataclasses
import json
import logging
import math
import os
import time

import keras
import numpy as np
import tensorflow as tf

from keras_csl import priors
from keras_csl.training import inputs
from keras_csl.training.prior_report import to_jsonable
from keras_csl.training.prior_report import compare_with_truth
from keras_csl.training.prior_report import format_report  # noqa: F401
from keras_csl.training.prior_report import report_summary  # noqa: F401

logger = logging.getLogger(__name__)

IGNORE_RUN = "ignore-model"
PRIOR_FILE = "prior.csv"
NAIVE_PRIOR_FILE = "naive_prior.csv"
REPORT_FILE = "prior_report.json"
SYNTHETIC_DIR = "synthetic-data"
SYNTHETIC_FULL_DIR = "synthetic-data-full"


def ignore_mode_config(config):
    """The config of the temporary model: the same recipe in "ignore" mode.

    Example:

    >>> from keras_csl.training import TrainConfig
    >>> config = ignore_mode_config(TrainConfig(name="coco"))
    >>> config.name, config.loss["mode"], config.prior
    ('coco_ignore', 'ignore', 'none')
    """
    name = config.name if config.name.endswith("_ignore") else config.name + "_ignore"
    return dataclasses.replace(config.with_loss(mode="ignore"), name=name,
                               prior="none")


def estimate_prior(
    config,
    run_dir,
    model_path=None,
    full_labels=None,
    steps=None,
    batch_size=None,
    verbose=1,
):
    """Estimates the class prior with an ignore-mode model; writes its CSV.

    Example (CPU, about 10 s; the smoke config trains on synthetic images,
    whose complete labels are known):

    ```python
    from keras_csl.training import prior_flow, recipe
    config = recipe.load_config("recipes/configs/coco_rps.py:smoke")
    report = prior_flow.estimate_prior(config, "runs/prior-smoke")
    print(prior_flow.format_report(report))
    report["comparison"]["prior"]["rank_correlation"]  # 0.66 (2 epochs)
    # then: TrainConfig.prior = report["prior_csv"]
    ```

    Files written in `run_dir`: `prior.csv` (the estimate, in the format
    `TrainConfig.prior` reads: `index,class_id,prior,display_name`),
    `naive_prior.csv` (the naive prior from the partial labels),
    `prior_report.json` (the returned numbers, arrays as lists),
    `ignore-model/` (the training run, unless `model_path` is given) and,
    for synthetic configs, the synthetic dataset (`synthetic-data/`, and
    `synthetic-data-full/` with its complete labels).

    Args:
        config: the `TrainConfig` of the dataset (any mode: the temporary
            model trains with `ignore_mode_config(config)`).
        run_dir: output folder.
        model_path: a trained model to estimate with instead of training
            one: a `.keras` file (e.g. `<run_dir>/best.keras` of an earlier
            ignore-mode run; it must output logits) or a serving export
            (`keras_csl.export`), for `config.num_classes` classes.
        full_labels: the complete labels of the training images, to
            measure the estimates against: a TFRecord file pattern or a
            dataset folder (e.g. the dataset before the simulation, or the
            same TFRecords whose labels `dataset_options["label_overlay"]`
            replaced), or a label overlay `.csv` holding the complete
            labels. Images are matched by image id. `None`: no comparison,
            except for synthetic configs, whose complete labels are known.
        steps: read at most this many batches of the training data
            (`None`: all of it).
        batch_size: images per prediction batch; default
            `config.per_replica_batch_size`.
        verbose: 0 silent, 1 progress bars (training and estimation).

    Returns:
        A dict: `prior_csv`, `naive_prior_csv`, `report_json`, `model`
        (the model used), `ignore_run_dir` (`None` with `model_path`),
        `train_files`, `label_overlay`, `num_images`, `num_classes`,
        `class_ids`, `display_names`, `prior` and `naive_prior` (float32
        vectors), `rank_correlation_prior_naive`, `top_classes` (the ten
        highest estimated priors: index, class id, name, prior, naive prior
        and true frequency), `full_labels` (its source or `None`),
        `true_frequency` (or `None`), `comparison` (`None`, or for `"prior"`
        and `"naive_prior"`: `rank_correlation` and `mean_absolute_error`
        against the true frequencies), `seconds`.

    Raises:
        ValueError: for a config without training data, a model whose
            input size or number of classes differs from the config, or
            complete labels that miss some training images.
    """
    started = time.perf_counter()
    config.validate()
    run_dir = os.fspath(run_dir)
    os.makedirs(run_dir, exist_ok=True)
    if config.synthetic_examples > 0:
        config, synthetic_full = _write_synthetic(config, run_dir)
        if full_labels is None:
            full_labels = synthetic_full
    if not config.train_files:
        raise ValueError(
            "Invalid value for config field `train_files`. Expected the "
            "training TFRecords (or `synthetic_examples` > 0). Received: "
            "train_files=''"
        )
    if steps is not None and (
        not isinstance(steps, int) or isinstance(steps, bool) or steps < 1
    ):
        raise ValueError(
            "Invalid value for argument `steps`. Expected None or an int >= 1. "
            f"Received: steps={steps!r}"
        )
    batch_size = config.per_replica_batch_size if batch_size is None else batch_size

    ignore_run_dir = None
    if model_path is None:
        ignore_run_dir = os.path.join(run_dir, IGNORE_RUN)
        model_path = _train_ignore_model(config, ignore_run_dir, verbose)
    class_ids, display_names, classes_csv = inputs.dataset_classes(config)
    predictor = _load_checked_predictor(model_path, config, classes_csv)

    logger.info("Estimating the class prior of %s with %s.",
                config.train_files, model_path)
    pass_result = _estimation_pass(
        predictor, config, batch_size, steps, keep_ids=full_labels is not None,
        verbose=verbose,
    )
    prior, naive = pass_result["prior"], pass_result["naive_prior"]

    true_frequency, comparison, unannotated = None, None, None
    if full_labels is not None:
        true_frequency, unannotated = _true_frequencies(
            full_labels, config, pass_result["image_ids"]
        )
        comparison = {
            name: compare_with_truth(values, true_frequency)
            for name, values in (("prior", prior), ("naive_prior", naive))
        }

    prior_csv = os.path.join(run_dir, PRIOR_FILE)
    naive_csv = os.path.join(run_dir, NAIVE_PRIOR_FILE)
    if os.path.exists(prior_csv):
        logger.info("Overwriting %s.", prior_csv)
    priors.write_prior_csv(prior_csv, prior, class_ids, display_names)
    priors.write_prior_csv(naive_csv, naive, class_ids, display_names)

    top = []
    for index, _, value in priors.top_classes(prior, k=10):
        top.append({
            "index": index,
            "class_id": class_ids[index],
            "name": display_names[index],
            "prior": value,
            "naive_prior": float(naive[index]),
            "true_frequency": (
                None if true_frequency is None else float(true_frequency[index])
            ),
        })
    report = {
        "prior_csv": prior_csv,
        "naive_prior_csv": naive_csv,
        "report_json": os.path.join(run_dir, REPORT_FILE),
        "model": os.fspath(model_path),
        "ignore_run_dir": ignore_run_dir,
        "train_files": config.train_files,
        "label_overlay": config.dataset_options.get("label_overlay"),
        "num_images": pass_result["num_images"],
        "num_classes": config.num_classes,
        "class_ids": class_ids,
        "display_names": display_names,
        "prior": prior,
        "naive_prior": naive,
        "rank_correlation_prior_naive": priors.rank_correlation(prior, naive),
        "top_classes": top,
        "full_labels": None if full_labels is None else os.fspath(full_labels),
        "full_labels_unannotated_fraction": unannotated,
        "true_frequency": true_frequency,
        "comparison": comparison,
        "seconds": time.perf_counter() - started,
    }
    with open(report["report_json"], "w", encoding="utf-8") as f:
        json.dump(to_jsonable(report), f, indent=1)
        f.write("\n")
    logger.info(
        "Class prior of %d classes over %d training images written to %s.",
        config.num_classes, report["num_images"], prior_csv,
    )
    return report


# ------------------------------------------------------------------ stages


def _write_synthetic(config, run_dir):
    """Writes the synthetic data of a smoke config once, with its full labels.

    The same call as `recipe.run` makes (same sizes and seed, hence the same
    images), plus a copy whose training labels are complete. Returns the
    config reading the files, and the pattern of the complete copy.
    """
    from keras_csl.training.synthetic import write_synthetic_dataset

    from keras_csl.training.recipe import synthetic_dataset_args

    common = synthetic_dataset_args(config)  # The images `recipe.run` writes.
    train_files, val_files = write_synthetic_dataset(
        os.path.join(run_dir, SYNTHETIC_DIR), **common
    )
    full_files, _ = write_synthetic_dataset(
        os.path.join(run_dir, SYNTHETIC_FULL_DIR), drop_probability=0.0, **common
    )
    config = dataclasses.replace(
        config,
        train_files=train_files,
        val_files=val_files,
        train_examples=config.synthetic_examples,
        synthetic_examples=0,
    )
    return config, full_files


def _train_ignore_model(config, ignore_run_dir, verbose):
    """Trains (or resumes) the ignore-mode run; returns the model file."""
    from keras_csl.training import recipe

    ignore_config = ignore_mode_config(config)
    logger.info("Training the ignore-mode model in %s.", ignore_run_dir)
    recipe.run(ignore_config, ignore_run_dir, verbose=verbose)
    best = os.path.join(ignore_run_dir, "best.keras")
    if os.path.exists(best):
        return best
    # No validation set: the last weights (written by the run, with its card).
    return os.path.join(ignore_run_dir, "final.keras")


def _load_checked_predictor(model_path, config, classes_csv):
    from keras_csl.export import load_predictor

    if not tf.io.gfile.exists(os.fspath(model_path)):
        raise ValueError(
            "Invalid value for argument `model_path`. Expected a .keras file "
            f"or an export. Received: model_path={model_path!r} (not found)"
        )
    predictor = load_predictor(model_path, classes_csv=classes_csv)
    if predictor.num_classes != config.num_classes:
        raise ValueError(
            f"Invalid value for argument `model_path`. The model at "
            f"{model_path} has {predictor.num_classes} outputs; the config "
            f"has num_classes={config.num_classes}."
        )
    if predictor.image_size != config.image_size:
        raise ValueError(
            f"Invalid value for argument `model_path`. The model at "
            f"{model_path} takes {predictor.image_size} px images; the config "
            f"has image_size={config.image_size}."
        )
    return predictor


def _estimation_pass(predictor, config, batch_size, steps, keep_ids, verbose):
    """One evaluation-mode pass: mean prediction and partial-label counts."""
    from keras_csl.data import make_dataset

    options = dict(config.dataset_options, resize_mode=config.resize_mode,
                   resize_method=config.resize_method,
                   jpeg_downscale=config.jpeg_downscale)
    # Every training image once, as it is: evaluation mode, whatever the
    # options say about augmentation or repetition.
    options.update(augment=False, repeat=False, return_ids=True)
    dataset = make_dataset(
        config.train_files,
        config.num_classes,
        config.image_size,
        batch_size,
        False,
        **options,
    )
    total = _expected_batches(config, batch_size)
    if steps is not None:
        total = steps if total is None else min(steps, total)
    progbar = keras.utils.Progbar(total, unit_name="batch") if verbose else None
    averager = priors.PredictionAverager(from_logits=False)
    partial = priors.LabelCounter()
    image_ids = [] if keep_ids else None
    for step, (images, targets, ids) in enumerate(dataset):
        if steps is not None and step >= steps:
            break
        averager.update(predictor.predict_images(images.numpy(), len(images)))
        partial.update(targets.numpy())
        if image_ids is not None:
            image_ids.extend(ids.numpy().tolist())
        if progbar is not None:
            progbar.update(step + 1)
    if not averager.count:
        raise ValueError(f"No training images read from {config.train_files}.")
    return {
        "prior": averager.result(),
        "naive_prior": partial.result(),
        "num_images": averager.count,
        "image_ids": image_ids,
    }


def _expected_batches(config, batch_size):
    """Batches of the pass, for the progress bar; `None` when unknown."""
    examples = config.train_examples
    if examples is None:
        try:
            examples = inputs.count_examples(config.train_files)
        except ValueError:
            return None
    return math.ceil(examples / batch_size)


def _true_frequencies(full_labels, config, image_ids):
    """Class frequencies of the complete labels of the images read.

    Returns `(frequencies, unannotated_fraction)`: the fraction of positives
    among the annotated entries of each class (the frequency itself when
    the labels are complete), and the fraction of entries that were not
    annotated (0 for complete labels; a warning is logged otherwise).
    """
    from keras_csl.data import features
    from keras_csl.data import read_labels

    full_labels = os.fspath(full_labels)
    wanted = set(image_ids)
    if len(wanted) != len(image_ids):
        logger.warning(
            "%d duplicate image ids among the %d training images: each is "
            "counted once in the true frequencies.",
            len(image_ids) - len(wanted), len(image_ids),
        )
    counts = priors.LabelCounter()
    found = set()
    if full_labels.endswith(".csv"):
        overlay = features.read_label_overlay(full_labels)
        rows = [(key.encode("utf-8"), value) for key, value in overlay.items()]
        for image_id, (positive, negative) in rows:
            if image_id in wanted and image_id not in found:
                found.add(image_id)
                _check_indices(full_labels, positive + negative, config.num_classes)
                row = np.full([1, config.num_classes], -1.0, np.float32)
                row[0, negative] = 0.0
                row[0, positive] = 1.0
                counts.update(row)
    else:
        pattern = full_labels
        if tf.io.gfile.isdir(full_labels):
            pattern = os.path.join(full_labels, os.path.basename(config.train_files))
        for batch in read_labels(pattern, config.num_classes):
            targets = batch["targets"].numpy()
            keep = []
            for row, image_id in enumerate(batch["id"].numpy().tolist()):
                if image_id in wanted and image_id not in found:
                    found.add(image_id)
                    keep.append(row)
            if keep:
                counts.update(targets[keep])
    missing = wanted - found
    if missing:
        examples = sorted(i.decode("utf-8", "replace") for i in missing)[:5]
        raise ValueError(
            f"Invalid value for argument `full_labels`. {len(missing)} of the "
            f"{len(wanted)} training images are not in {full_labels}, e.g. "
            f"{examples}"
        )
    entries = counts.count * config.num_classes
    unannotated = float(1.0 - counts.annotated.sum() / entries)
    if unannotated > 0:
        logger.warning(
            "The labels in %s are not complete (%.1f%% of the entries are "
            "un-annotated): the 'true' frequencies are those of the annotated "
            "entries.", full_labels, 100 * unannotated,
        )
    return counts.result(), unannotated


def _check_indices(path, classes, num_classes):
    bad = [c for c in classes if not 0 <= c < num_classes]
    if bad:
        raise ValueError(
            f"Invalid label overlay {path}: class indices {bad} outside "
            f"[0, {num_classes})"
        )
