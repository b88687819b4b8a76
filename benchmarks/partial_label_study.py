"""Do the paper's claims hold at small scale on real data? A seeded study.

    python benchmarks/partial_label_study.py --seeds=3            # everything
    python benchmarks/partial_label_study.py --datasets=mulan --seeds=3
    python benchmarks/partial_label_study.py --datasets=mulan --seeds=1 \\
        --epoch_scale=0.1 --output_dir=/tmp/study                 # smoke
    python benchmarks/partial_label_study.py --replot            # tables again

Datasets:
- `mulan`: ../shared/data/mulan-scene, 294 colour-moment features of real
  photos and 6 scene labels (1,211 train / 1,196 test rows); a small MLP,
  40 epochs.
- `digits`: the demo's mosaics of real handwritten digits (10 classes,
  `keras_csl.data.mosaics`, 3,000 train / 1,000 test); the package's tiny
  CNN, 12 epochs.
- `coco`: ../shared/data/coco-sample (53 real photos, 80 classes), only as
  a smoke run of the image path: far too small to compare modes.

For each scheme (full labels; RPS: drop each label with probability p;
FPC: keep k positives and k negatives per class) and seed, partial training
labels are simulated with `keras_csl.data.simulate_targets`, then seven
models are trained with `keras_csl.ClassAwareSelectiveLoss`:

- `negative_ce`: every un-annotated label is a negative, plain BCE;
- `negative_asl`: the same with ASL focusing (gammas 0 / 4 / 4, clip 0.05,
  the `AsymmetricLoss(gamma_neg=4, gamma_pos=0, clip=0.05)` line of the
  authors' train.py);
- `ignore_ce`: un-annotated labels are left out, plain BCE;
- `negative_focus`, `ignore_focus`: the controls of CSL, the negative and
  ignore modes with exactly CSL's focusing gammas for that scheme, so that
  CSL's margin over them is what its selection adds;
- `selective`: CSL with the prior estimated by `ignore_ce` (the paper's
  two-stage flow), threshold 0.5, likelihood top-k 1 (the authors use 5 on
  COCO; with 1-3 classes per image here, 5 per image would exempt most
  un-annotated labels);
- `selective_updater`: CSL whose prior `keras_csl.callbacks.
  ClassPriorUpdater` re-estimates after every epoch (one stage).

CSL's gammas (positive / negative / un-annotated) are those of the authors'
README training examples (Alibaba-MIIL/PartialLabelingCSL, README.md,
"Example of training with RPS simulation" and "... FPC simulation"):
0 / 1 / 4 for RPS, 0 / 3 / 4 for FPC; the full-label runs use the RPS
values. With full labels there is nothing to select, so `negative_focus`,
`ignore_focus` and `selective` optimise the same loss.

Test mAP is on fully labelled test sets; spread is the sample standard
deviation over seeds (ddof=1), and CSL's margin over each control is the
per-seed difference (same seed, same partial labels), as mean and
[min, max]. Prior quality compares each estimate with the true class
frequencies of the training set (Spearman rank correlation, mean absolute
error).

Writes `records.json` (every number, stamped with the git commit, whether
the tree was dirty, the command, versions and times), `tables.md` and PNG
plots to `--output_dir` (default docs/results), and prints the tables.

Measured time of the full study (`--seeds=3`, the first command) on a
quiet 2-core CPU (AMD EPYC; load average below 1 before the run, two
short jobs of about 2 minutes beside it):
mulan 273 s, digits 956 s, coco 42 s, 21 min 33 s in all with start-up
(`/usr/bin/time`; docs/results/records.json, "wall_seconds", 2026-11-30).
The smoke command took 71 s on a shared machine (load average 3-5).
"""

import datetime
import gzip
import json
import logging
import os
import pathlib
import platform
import subprocess
import sys
import time

import numpy as np
from absl import app
from absl import flags

_HERE = os.path.dirname(os.path.abspath(__file__))
if _HERE not in sys.path:
    sys.path.insert(0, _HERE)  # _machine

from _machine import cpu_model  # noqa: E402

FLAGS = flags.FLAGS


def define_flags():
    """Defines the command-line flags (only when run as a script)."""
    flags.DEFINE_list("datasets", ["mulan", "digits", "coco"], "Datasets to run.")
    flags.DEFINE_integer("seeds", 3, "Seeds per (scheme, mode).")
    flags.DEFINE_string("output_dir", None, "Where tables and plots go (default docs/results).")
    flags.DEFINE_float("epoch_scale", 1.0, "Multiplies the epochs (smaller = faster, less converged).")
    flags.DEFINE_bool("replot", False, "Only redraw plots and tables from <output_dir>/records.json.")


REPO = pathlib.Path(__file__).resolve().parents[1]
SHARED_DATA = REPO.parent / "shared" / "data"

# Column order of the tables: the plain and ASL baselines, then the four
# models that share CSL's focusing and differ only in selection.
MODES = (
    "negative_ce", "negative_asl", "ignore_ce",
    "negative_focus", "ignore_focus", "selective", "selective_updater",
)
CSL_MODES = ("selective", "selective_updater")
CONTROLS = ("ignore_ce", "negative_ce", "ignore_focus", "negative_focus")
PRIOR_SOURCES = ("naive", "negative_ce", "ignore_ce", "updater")

# The authors' README examples: (gamma_pos, gamma_neg, gamma_unannotated).
CSL_GAMMAS = {"rps": (0.0, 1.0, 4.0), "fpc": (0.0, 3.0, 4.0), "full": (0.0, 1.0, 4.0)}


def loss_settings(mode, scheme):
    """Keyword arguments of `ClassAwareSelectiveLoss` for a mode and scheme."""
    if mode == "negative_ce":
        return dict(mode="negative", gamma_pos=0.0, gamma_neg=0.0, gamma_unannotated=0.0)
    if mode == "ignore_ce":
        return dict(mode="ignore", gamma_pos=0.0, gamma_neg=0.0, gamma_unannotated=0.0)
    if mode == "negative_asl":
        return dict(mode="negative", gamma_pos=0.0, gamma_neg=4.0, gamma_unannotated=4.0, clip=0.05)
    gamma_pos, gamma_neg, gamma_unannotated = CSL_GAMMAS[scheme]
    gammas = dict(gamma_pos=gamma_pos, gamma_neg=gamma_neg, gamma_unannotated=gamma_unannotated)
    if mode == "negative_focus":
        return dict(mode="negative", **gammas)
    if mode == "ignore_focus":
        return dict(mode="ignore", **gammas)
    if mode in CSL_MODES:
        return dict(mode="selective", likelihood_topk=1, prior_threshold=0.5, **gammas)
    raise ValueError(f"Invalid value for argument `mode`. Expected one of {MODES}. Received: mode={mode!r}")


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


def train(dataset, x, y, settings, seed, prior=None, epochs=10, updater=False):
    """Trains one model; returns it and its loss (whose prior the updater set)."""
    import keras

    import keras_csl

    num_classes = y.shape[1]
    model = build(dataset, x.shape[1:], num_classes, seed)
    loss = keras_csl.ClassAwareSelectiveLoss(num_classes=num_classes, prior=prior, **settings)
    callbacks, metrics = [], []
    if updater:
        metrics = [keras_csl.metrics.MeanPrediction(num_classes)]
        callbacks = [keras_csl.callbacks.ClassPriorUpdater(loss, verbose=0)]
    model.compile(optimizer=keras.optimizers.Adam(1e-3), loss=loss, metrics=metrics)
    model.fit(x, y, batch_size=64, epochs=epochs, verbose=0, callbacks=callbacks, shuffle=True)
    return model, loss


def probabilities(model, x):
    logits = model.predict(x, batch_size=256, verbose=0).astype("float64")
    return 1.0 / (1.0 + np.exp(-logits))


def run_dataset(dataset, seeds, epoch_scale=1.0, log=print):
    """Trains every (scheme, seed, mode); returns a list of result dicts."""
    from keras_csl import priors
    from keras_csl.data import simulate_targets
    from keras_csl.metrics import partial_mean_average_precision

    loader = {"mulan": load_mulan_scene, "digits": load_digits, "coco": load_coco_sample}[dataset]
    x_train, y_train, x_test, y_test, _ = loader()
    epochs = max(1, int(round(EPOCHS[dataset] * epoch_scale)))
    true_frequency = y_train.mean(0)
    records = []
    for scheme, param in SCHEMES[dataset]:
        name = scheme_name(scheme, param)
        for seed in range(seeds):
            if scheme == "full":
                partial = y_train.copy()
            else:
                partial = simulate_targets(y_train, scheme, param, seed=seed)
            estimates = {"naive": priors.naive_prior(partial)}
            for mode in MODES:  # ignore_ce comes before selective: its prior.
                start = time.perf_counter()
                settings = loss_settings(mode, scheme)
                prior = estimates["ignore_ce"] if mode == "selective" else None
                model, loss = train(
                    dataset, x_train, partial, settings, seed, prior=prior,
                    epochs=epochs, updater=mode == "selective_updater",
                )
                if mode in ("ignore_ce", "negative_ce"):
                    estimates[mode] = probabilities(model, x_train).mean(0).astype("float32")
                if mode == "selective_updater":
                    estimates["updater"] = np.asarray(loss.prior, "float32")
                test_map, _ = partial_mean_average_precision(y_test, probabilities(model, x_test))
                records.append(dict(
                    dataset=dataset, scheme=name, seed=seed, mode=mode,
                    map=float(test_map), seconds=time.perf_counter() - start,
                    epochs=epochs, annotated=float((partial != -1).mean()),
                    loss=settings,
                ))
                log(f"{dataset} {name} seed {seed} {mode}: mAP {test_map:.2f} "
                    f"({records[-1]['seconds']:.0f} s)")
            for source, estimate in estimates.items():
                records.append(dict(
                    dataset=dataset, scheme=name, seed=seed, mode=f"prior:{source}",
                    rank_correlation=priors.rank_correlation(estimate, true_frequency),
                    mae=float(np.abs(estimate - true_frequency).mean()),
                ))
    return records


def scheme_name(scheme, param):
    if scheme == "full":
        return "full labels"
    return f"{scheme.upper()} {param:g}"


# ---------------------------------------------------------------- report


def mean_and_spread(values):
    """'mean ± sample std (ddof=1)', or the mean alone for one value."""
    values = np.asarray(values, "float64")
    if values.size == 1:
        return f"{values[0]:.1f}"
    return f"{values.mean():.1f} ± {values.std(ddof=1):.1f}"


def paired_differences(records, dataset, scheme, mode, control):
    """Per-seed mAP of `mode` minus `control` (same seed, same labels)."""
    maps = {}
    for r in records:
        if r["dataset"] == dataset and r["scheme"] == scheme and "map" in r:
            maps[(r["mode"], r["seed"])] = r["map"]
    seeds = sorted(s for m, s in maps if m == mode and (control, s) in maps)
    return np.asarray([maps[(mode, s)] - maps[(control, s)] for s in seeds], "float64")


def margin_cell(differences):
    """'+mean [min, max]' of per-seed differences."""
    if differences.size == 0:
        return ""
    if differences.size == 1:
        return f"{differences[0]:+.1f}"
    return f"{differences.mean():+.1f} [{differences.min():+.1f}, {differences.max():+.1f}]"


def summarize(records):
    """Markdown tables: mAP, CSL's margin over its controls, prior quality."""
    lines = []
    by = {}
    for r in records:
        by.setdefault((r["dataset"], r["scheme"], r["mode"]), []).append(r)
    datasets = sorted({r["dataset"] for r in records}, key=["mulan", "digits", "coco"].index)
    for dataset in datasets:
        schemes = list(dict.fromkeys(r["scheme"] for r in records if r["dataset"] == dataset))
        seeds = len({r["seed"] for r in records if r["dataset"] == dataset})
        spread = "mean ± sample std (ddof=1)" if seeds > 1 else "one seed"
        lines.append(f"### {dataset}: test mAP (%), {spread} over {seeds} seed(s)\n")
        lines.append("| scheme | " + " | ".join(MODES) + " |")
        lines.append("|---" * (len(MODES) + 1) + "|")
        for scheme in schemes:
            cells = []
            for mode in MODES:
                values = [r["map"] for r in by.get((dataset, scheme, mode), [])]
                cells.append(mean_and_spread(values) if values else "")
            lines.append(f"| {scheme} | " + " | ".join(cells) + " |")
        lines.append("")
        for csl in CSL_MODES:
            lines.append(
                f"### {dataset}: {csl} minus each control, mAP points, "
                f"mean [min, max] of the {seeds} per-seed differences\n"
            )
            lines.append("| scheme | " + " | ".join(f"- {c}" for c in CONTROLS) + " |")
            lines.append("|---" * (len(CONTROLS) + 1) + "|")
            for scheme in schemes:
                cells = [margin_cell(paired_differences(records, dataset, scheme, csl, c)) for c in CONTROLS]
                lines.append(f"| {scheme} | " + " | ".join(cells) + " |")
            lines.append("")
        if not any(r["mode"].startswith("prior:") and r["dataset"] == dataset for r in records):
            continue
        lines.append(
            f"### {dataset}: prior estimate vs true class frequency, "
            f"rank correlation / MAE (MAE: {spread})\n"
        )
        lines.append("| scheme | " + " | ".join(PRIOR_SOURCES) + " |")
        lines.append("|---" * (len(PRIOR_SOURCES) + 1) + "|")
        for scheme in schemes:
            cells = []
            for source in PRIOR_SOURCES:
                rs = by.get((dataset, scheme, f"prior:{source}"), [])
                if not rs:
                    cells.append("")
                    continue
                rhos = [r["rank_correlation"] for r in rs if np.isfinite(r["rank_correlation"])]
                maes = np.asarray([r["mae"] for r in rs])
                # A constant estimate (naive prior under FPC) has no ranking.
                rho = f"{np.mean(rhos):.2f}" if rhos else "n/a"
                mae = f"{maes.mean():.3f}" + (f" ± {maes.std(ddof=1):.3f}" if maes.size > 1 else "")
                cells.append(f"{rho} / {mae}")
            lines.append(f"| {scheme} | " + " | ".join(cells) + " |")
        lines.append("")
    return "\n".join(lines)


def plot(records, dataset, path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = [r for r in records if r["dataset"] == dataset and "map" in r]
    schemes = list(dict.fromkeys(r["scheme"] for r in rows))
    fig, ax = plt.subplots(figsize=(10, 4))
    width = 0.8 / len(MODES)
    for i, mode in enumerate(MODES):
        means, stds = [], []
        for scheme in schemes:
            values = [r["map"] for r in rows if r["scheme"] == scheme and r["mode"] == mode]
            means.append(np.mean(values))
            stds.append(np.std(values, ddof=1) if len(values) > 1 else 0.0)
        x = np.arange(len(schemes)) + (i - (len(MODES) - 1) / 2) * width
        ax.bar(x, means, width, yerr=stds, label=mode, capsize=2)
    ax.set_xticks(np.arange(len(schemes)))
    ax.set_xticklabels(schemes)
    ax.set_ylabel("test mAP (%), error bar: sample std")
    low = min(r["map"] for r in rows)
    ax.set_ylim(max(0, low - 10), min(100, max(r["map"] for r in rows) + 5))
    ax.set_title(f"{dataset}: modes under simulated partial labels")
    ax.legend(fontsize=7, ncol=4, loc="upper center", bbox_to_anchor=(0.5, -0.08))
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def provenance(argv):
    """The commit, dirtiness, command, versions and machine of a run."""

    def git(*args):
        try:
            return subprocess.run(
                ["git", *args], cwd=REPO, capture_output=True, text=True, check=True
            ).stdout.rstrip("\n")  # Not strip(): porcelain lines start with a space.
        except (OSError, subprocess.CalledProcessError):
            return None

    import keras
    import tensorflow as tf

    status = git("status", "--porcelain", "--untracked-files=no")
    return dict(
        commit=git("rev-parse", "HEAD") or None,
        dirty=None if status is None else bool(status),
        changed_files=[] if not status else [line[3:] for line in status.splitlines()],
        command=" ".join(["python benchmarks/partial_label_study.py", *argv[1:]]),
        started_utc=datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        machine=f"{os.cpu_count()} CPUs ({cpu_model()})",
        load_average_start=list(os.getloadavg()),
        python=platform.python_version(), tensorflow=tf.__version__,
        keras=keras.__version__, numpy=np.__version__,
        keras_backend=keras.backend.backend(),
        wall_seconds={},
    )


def read_records(path):
    """(meta, records) of a records.json; older files were a bare list."""
    data = json.loads(pathlib.Path(path).read_text())
    if isinstance(data, list):
        return {}, data
    return data["meta"], data["records"]


def write_outputs(output_dir, meta, records):
    (output_dir / "records.json").write_text(json.dumps(dict(meta=meta, records=records), indent=1))
    table = summarize(records)
    (output_dir / "tables.md").write_text(
        f"<!-- {meta.get('command', '')} at commit {meta.get('commit')} "
        f"(dirty: {meta.get('dirty')}) -->\n\n" + table
    )
    return table


def main(argv):
    del argv  # absl keeps only what it did not parse; provenance needs sys.argv.
    logging.getLogger("keras_csl").setLevel(logging.WARNING)  # Per-epoch prior logs.
    output_dir = pathlib.Path(FLAGS.output_dir or REPO / "docs" / "results")
    output_dir.mkdir(parents=True, exist_ok=True)
    if FLAGS.replot:
        meta, records = read_records(output_dir / "records.json")
        for dataset in sorted({r["dataset"] for r in records}):
            plot(records, dataset, output_dir / f"{dataset}.png")
        print(write_outputs(output_dir, meta, records))
        return 0
    meta = provenance(sys.argv)
    meta.update(datasets=FLAGS.datasets, seeds=FLAGS.seeds, epoch_scale=FLAGS.epoch_scale)
    if meta["dirty"]:
        print(f"Warning: uncommitted changes to {meta['changed_files']}; records.json says so.")
    records, table = [], "Nothing ran."
    for dataset in FLAGS.datasets:
        if dataset not in SCHEMES:
            raise app.UsageError(f"Unknown dataset {dataset!r}; expected one of {list(SCHEMES)}.")
        if dataset in ("mulan", "coco"):
            folder = SHARED_DATA / ("mulan-scene" if dataset == "mulan" else "coco-sample")
            if not folder.is_dir():
                print(f"{dataset}: skipped, {folder} not found")
                continue
        start = time.perf_counter()
        records.extend(run_dataset(dataset, FLAGS.seeds, FLAGS.epoch_scale,
                                   log=lambda line: print(line, flush=True)))
        meta["wall_seconds"][dataset] = round(time.perf_counter() - start, 1)
        print(f"{dataset}: {meta['wall_seconds'][dataset]:.0f} s", flush=True)
        plot(records, dataset, output_dir / f"{dataset}.png")
        # Written after each dataset, so a crash keeps what was done.
        meta["load_average_end"] = list(os.getloadavg())
        meta["finished_utc"] = datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")
        table = write_outputs(output_dir, meta, records)
    print(table)
    return 0


if __name__ == "__main__":
    define_flags()
    app.run(main)
