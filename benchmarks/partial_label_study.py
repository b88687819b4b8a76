"""Do the paper's claims hold at small scale on real data? A seeded study.

    python benchmarks/partial_label_study.py                      # everything
    python benchmarks/partial_label_study.py --datasets=mulan --seeds=3
    python benchmarks/partial_label_study.py --datasets=coco --seeds=1  # smoke

Datasets:
- `mulan`: ../shared/data/mulan-scene, 294 colour-moment features of real
  photos and 6 scene labels (1,211 train / 1,196 test rows); a small MLP.
- `digits`: the demo's mosaics of real handwritten digits (10 classes,
  `keras_csl.data.mosaics`); the package's tiny CNN.
- `coco`: ../shared/data/coco-sample (53 real photos, 80 classes), only as
  a smoke run of the image path: far too small to compare modes.

For each scheme (full labels; RPS: drop each label with p = 0.5, 0.8; FPC:
keep a few positives and as many negatives per class) and seed, partial
training labels are simulated with `keras_csl.data.simulate_targets`, then
five models are trained:

- `negative`: every un-annotated label counts as negative (plain BCE);
- `negative_asl`: the same with ASL focusing (gamma_neg 4, clip 0.05);
- `ignore`: un-annotated labels are left out;
- `selective`: CSL with the prior estimated by the `ignore` model (the
  paper's two-stage flow), threshold 0.5, likelihood top-k 1, focusing
  gammas 0 / 1 / 4 (positive / negative / un-annotated) as the authors'
  RPS recipe;
- `selective_updater`: CSL whose prior is re-estimated after every epoch
  by `ClassPriorUpdater` from the training predictions (one stage).

Test mAP is on fully labelled test sets. The prior-estimation quality
compares each estimate with the true class frequencies of the training set
(Spearman rank correlation and mean absolute error): the ignore model's
mean prediction, the negative model's, and the naive fraction of positives
among the annotated labels.

Writes `docs/RESULTS.md`-ready markdown tables and PNG plots to
`--output_dir` (default docs/results) and prints them. Expected time on a
2-core CPU, 3 seeds: mulan about 5 minutes (measured 304 s), digits about
15-18 minutes (measured 1,059 s), coco under a minute (measured 38 s);
docs/RESULTS.md's run, with another job on the CPU part of the time.
"""

import gzip
import json
import logging
import os
import pathlib
import time

import numpy as np
from absl import app
from absl import flags

flags.DEFINE_list("datasets", ["mulan", "digits", "coco"], "Datasets to run.")
flags.DEFINE_integer("seeds", 3, "Seeds per (scheme, mode).")
flags.DEFINE_string("output_dir", None, "Where tables and plots go (default docs/results).")
flags.DEFINE_float("epoch_scale", 1.0, "Multiplies the epochs (smaller = faster, less converged).")
flags.DEFINE_bool("replot", False, "Only redraw plots and tables from <output_dir>/records.json.")
FLAGS = flags.FLAGS

REPO = pathlib.Path(__file__).resolve().parents[1]
SHARED_DATA = REPO.parent / "shared" / "data"

MODES = ("negative", "negative_asl", "ignore", "selective", "selective_updater")
LOSS_SETTINGS = {
    "negative": dict(mode="negative", gamma_pos=0.0, gamma_neg=0.0, gamma_unannotated=0.0),
    "negative_asl": dict(mode="negative", gamma_pos=0.0, gamma_neg=4.0, gamma_unannotated=4.0, clip=0.05),
    "ignore": dict(mode="ignore", gamma_pos=0.0, gamma_neg=0.0, gamma_unannotated=0.0),
    # The authors' RPS recipe gammas (0 / 1 / 4); top-k 1, as few classes
    # per image would make their top-k 5 drop most un-annotated labels.
    "selective": dict(
        mode="selective", gamma_pos=0.0, gamma_neg=1.0, gamma_unannotated=4.0,
        likelihood_topk=1, prior_threshold=0.5,
    ),
}
LOSS_SETTINGS["selective_updater"] = LOSS_SETTINGS["selective"]


# ---------------------------------------------------------------- data


def read_arff(path):
    """Rows of a dense ARFF file (gzip or plain) as a float32 array."""
    opener = gzip.open if str(path).endswith(".gz") else open
    rows, in_data = [], False
    with opener(path, "rt") as f:
        for line in f:
            line = line.strip()
            if not line or line.startswith("%"):
                continue
            if in_data:
                rows.append([float(v) for v in line.split(",")])
            elif line.lower() == "@data":
                in_data = True
    return np.asarray(rows, dtype="float32")


def load_mulan_scene(root=SHARED_DATA / "mulan-scene", num_labels=6):
    """(x_train, y_train, x_test, y_test, class_names) of MULAN scene."""
    train = read_arff(pathlib.Path(root) / "scene-train.arff.gz")
    test = read_arff(pathlib.Path(root) / "scene-test.arff.gz")
    names = ["Beach", "Sunset", "FallFoliage", "Field", "Mountain", "Urban"]
    return (
        train[:, :-num_labels], train[:, -num_labels:],
        test[:, :-num_labels], test[:, -num_labels:], names,
    )


def load_digits(num_train=3000, num_test=1000, seed=0):
    from keras_csl.data import mosaics

    x_train, y_train = mosaics.make_digit_mosaics(num_train, "train", seed=seed)
    x_test, y_test = mosaics.make_digit_mosaics(num_test, "test", seed=seed)
    return (
        x_train.astype("float32"), y_train, x_test.astype("float32"), y_test,
        list(mosaics.DISPLAY_NAMES),
    )


def load_coco_sample(root=SHARED_DATA / "coco-sample", image_size=96):
    """The 53 shared photos with full labels, for a smoke run only."""
    import csv

    from keras_csl.data import preprocessing

    with open(pathlib.Path(root) / "class-descriptions.csv", encoding="utf-8") as f:
        classes = [row for row in csv.reader(f) if row]
    index = {mid: i for i, (mid, _) in enumerate(classes)}
    labels = {}
    with open(pathlib.Path(root) / "image-labels.csv", encoding="utf-8") as f:
        for row in csv.DictReader(f):
            labels.setdefault(row["ImageID"], np.zeros(len(classes), "float32"))
            labels[row["ImageID"]][index[row["LabelName"]]] = float(row["Confidence"])
    ids = sorted(labels)
    images = np.stack([
        preprocessing.preprocess_encoded(
            (pathlib.Path(root) / "images" / f"{i}.jpg").read_bytes(), image_size
        ).numpy()
        for i in ids
    ])
    y = np.stack([labels[i] for i in ids])
    return images[:40], y[:40], images[40:], y[40:], [name for _, name in classes]


SCHEMES = {
    "mulan": (("full", None), ("rps", 0.5), ("rps", 0.8), ("fpc", 50)),
    "digits": (("full", None), ("rps", 0.5), ("rps", 0.8), ("fpc", 100)),
    "coco": (("rps", 0.5),),
}
EPOCHS = {"mulan": 40, "digits": 12, "coco": 3}


# ---------------------------------------------------------------- models


def build(dataset, input_shape, num_classes, seed):
    import keras

    keras.utils.set_random_seed(seed)
    if dataset == "mulan":
        inputs = keras.Input(input_shape, name="features")
        hidden = keras.layers.Dense(128, activation="relu")(inputs)
        hidden = keras.layers.Dropout(0.2)(hidden)
        outputs = keras.layers.Dense(num_classes, dtype="float32", name="logits")(hidden)
        return keras.Model(inputs, outputs)
    from keras_csl.models import build_model

    return build_model("tiny", num_classes=num_classes, image_size=input_shape[0])


def train(dataset, x, y, mode, seed, prior=None, epochs=10):
    """Trains one model; returns it and its loss (the prior for selective)."""
    import keras

    import keras_csl

    num_classes = y.shape[1]
    model = build(dataset, x.shape[1:], num_classes, seed)
    loss = keras_csl.ClassAwareSelectiveLoss(
        num_classes=num_classes, prior=prior, **LOSS_SETTINGS[mode]
    )
    callbacks, metrics = [], []
    if mode == "selective_updater":
        metrics = [keras_csl.metrics.MeanPrediction(num_classes)]
        callbacks = [keras_csl.callbacks.ClassPriorUpdater(loss, verbose=0)]
    model.compile(optimizer=keras.optimizers.Adam(1e-3), loss=loss, metrics=metrics)
    model.fit(
        x, y, batch_size=64, epochs=epochs, verbose=0, callbacks=callbacks,
        shuffle=True,
    )
    return model, loss


def mean_probabilities(model, x):
    logits = model.predict(x, batch_size=256, verbose=0).astype("float64")
    return 1.0 / (1.0 + np.exp(-logits))


def run_dataset(dataset, seeds, epoch_scale=1.0, log=print):
    """Trains every (scheme, seed, mode); returns a list of result dicts."""
    from keras_csl import priors
    from keras_csl.data import simulate_targets
    from keras_csl.metrics import partial_mean_average_precision

    loader = {"mulan": load_mulan_scene, "digits": load_digits, "coco": load_coco_sample}[dataset]
    x_train, y_train, x_test, y_test, names = loader()
    epochs = max(1, int(round(EPOCHS[dataset] * epoch_scale)))
    true_frequency = y_train.mean(0)
    records = []
    for scheme, param in SCHEMES[dataset]:
        for seed in range(seeds):
            if scheme == "full":
                partial = y_train.copy()
            else:
                partial = simulate_targets(y_train, scheme, param, seed=seed)
            estimates = {"naive": priors.naive_prior(partial)}
            for mode in MODES:
                if mode in ("selective",) and "ignore" not in estimates:
                    raise RuntimeError("the ignore model runs before selective")
                start = time.perf_counter()
                prior = estimates["ignore"] if mode == "selective" else None
                model, loss = train(dataset, x_train, partial, mode, seed, prior=prior, epochs=epochs)
                if mode in ("ignore", "negative"):
                    estimates[mode] = mean_probabilities(model, x_train).mean(0).astype("float32")
                if mode == "selective_updater":
                    estimates["updater"] = loss.prior
                test_map, _ = partial_mean_average_precision(y_test, mean_probabilities(model, x_test))
                records.append(dict(
                    dataset=dataset, scheme=_scheme_name(scheme, param), seed=seed,
                    mode=mode, map=float(test_map), seconds=time.perf_counter() - start,
                    annotated=float((partial != -1).mean()),
                ))
                log(f"{dataset} {_scheme_name(scheme, param)} seed {seed} {mode}: mAP {test_map:.2f}")
            for source, estimate in estimates.items():
                records.append(dict(
                    dataset=dataset, scheme=_scheme_name(scheme, param), seed=seed,
                    mode=f"prior:{source}",
                    rank_correlation=priors.rank_correlation(estimate, true_frequency),
                    mae=float(np.abs(estimate - true_frequency).mean()),
                ))
    return records


def _scheme_name(scheme, param):
    if scheme == "full":
        return "full labels"
    return f"{scheme.upper()} {param:g}"


# ---------------------------------------------------------------- report


def summarize(records):
    """Markdown tables: mAP (mean +- std over seeds) and prior quality."""
    lines = []
    by = {}
    for r in records:
        by.setdefault((r["dataset"], r["scheme"], r["mode"]), []).append(r)
    datasets = sorted({r["dataset"] for r in records}, key=["mulan", "digits", "coco"].index)
    for dataset in datasets:
        schemes = list(dict.fromkeys(r["scheme"] for r in records if r["dataset"] == dataset))
        seeds = len({r["seed"] for r in records if r["dataset"] == dataset})
        lines.append(f"### {dataset}: test mAP (%), mean ± std over {seeds} seed(s)\n")
        lines.append("| scheme | " + " | ".join(MODES) + " |")
        lines.append("|---" * (len(MODES) + 1) + "|")
        for scheme in schemes:
            cells = []
            for mode in MODES:
                values = [r["map"] for r in by.get((dataset, scheme, mode), [])]
                cells.append(f"{np.mean(values):.1f} ± {np.std(values):.1f}" if values else "")
            lines.append(f"| {scheme} | " + " | ".join(cells) + " |")
        lines.append("")
        lines.append(f"### {dataset}: prior estimate vs true class frequency (rank correlation / MAE)\n")
        sources = ("naive", "negative", "ignore", "updater")
        lines.append("| scheme | " + " | ".join(sources) + " |")
        lines.append("|---" * (len(sources) + 1) + "|")
        for scheme in schemes:
            cells = []
            for source in sources:
                rs = by.get((dataset, scheme, f"prior:{source}"), [])
                if not rs:
                    cells.append("")
                    continue
                rhos = [r["rank_correlation"] for r in rs if np.isfinite(r["rank_correlation"])]
                mae = np.mean([r["mae"] for r in rs])
                # A constant estimate (naive prior under FPC) has no ranking.
                rho = f"{np.mean(rhos):.2f}" if rhos else "n/a"
                cells.append(f"{rho} / {mae:.3f}")
            lines.append(f"| {scheme} | " + " | ".join(cells) + " |")
        lines.append("")
    return "\n".join(lines)


def plot(records, dataset, path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = [r for r in records if r["dataset"] == dataset and "map" in r]
    schemes = list(dict.fromkeys(r["scheme"] for r in rows))
    fig, ax = plt.subplots(figsize=(9, 4))
    width = 0.8 / len(MODES)
    for i, mode in enumerate(MODES):
        means, stds = [], []
        for scheme in schemes:
            values = [r["map"] for r in rows if r["scheme"] == scheme and r["mode"] == mode]
            means.append(np.mean(values))
            stds.append(np.std(values))
        ax.bar(np.arange(len(schemes)) + (i - (len(MODES) - 1) / 2) * width, means, width, yerr=stds, label=mode, capsize=2)
    ax.set_xticks(np.arange(len(schemes)))
    ax.set_xticklabels(schemes)
    ax.set_ylabel("test mAP (%)")
    low = min(r["map"] for r in rows)
    ax.set_ylim(max(0, low - 10), min(100, max(r["map"] for r in rows) + 5))
    ax.set_title(f"{dataset}: mode comparison under simulated partial labels")
    ax.legend(fontsize=8, ncol=len(MODES), loc="upper center", bbox_to_anchor=(0.5, -0.08))
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main(argv):
    del argv
    logging.getLogger("keras_csl").setLevel(logging.WARNING)  # Per-epoch prior logs.
    output_dir = pathlib.Path(FLAGS.output_dir or REPO / "docs" / "results")
    output_dir.mkdir(parents=True, exist_ok=True)
    if FLAGS.replot:
        records = json.loads((output_dir / "records.json").read_text())
        for dataset in sorted({r["dataset"] for r in records}):
            plot(records, dataset, output_dir / f"{dataset}.png")
        print(summarize(records))
        return
    records = []
    for dataset in FLAGS.datasets:
        needs_shared = dataset in ("mulan", "coco")
        folder = SHARED_DATA / ("mulan-scene" if dataset == "mulan" else "coco-sample")
        if needs_shared and not folder.is_dir():
            print(f"{dataset}: skipped, {folder} not found")
            continue
        start = time.perf_counter()
        records.extend(run_dataset(dataset, FLAGS.seeds, FLAGS.epoch_scale))
        print(f"{dataset}: {time.perf_counter() - start:.0f} s")
        plot(records, dataset, output_dir / f"{dataset}.png")
    (output_dir / "records.json").write_text(json.dumps(records, indent=1))
    table = summarize(records)
    (output_dir / "tables.md").write_text(table)
    print(table)


if __name__ == "__main__":
    app.run(main)
