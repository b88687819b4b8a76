"""Error of the bounded-memory mAP against the exact one, by score spread.

    python benchmarks/metric_error.py                     # all cases, ~1 min
    python benchmarks/metric_error.py --cases=rare_barely_trained --bins=1000
    python benchmarks/metric_error.py --smoke             # a 10 s check

`keras_csl.metrics.PartialMeanAveragePrecision(num_thresholds=B)` keeps,
per class, histograms of the annotated positives and negatives over `B`
bins, and scores the histograms. This script measures how far the result is
from the exact value (`partial_mean_average_precision` on the same float32
logits) on synthetic partial labels, for the score distributions that
matter:

- (a) spread-out scores: `trained` (negatives' logits N(-6, 2), positives'
  N(2, 2.5)) and `weak_signal` (N(0, 1.5), positives shifted by +1), on
  20,000 samples and 200 classes with prevalence log-uniform in 0.5 - 20 %
  and 30 % of the entries annotated (the case of docs/METRICS.md before);
- (b) concentrated scores, as from an untrained or barely trained model:
  `prior_bias` (each class's logits N(logit(prevalence), 0.3), positives
  +0.3: all probabilities within a factor of about 3 of the class's
  prevalence), `zero_bias` (N(0, 0.3), positives +0.3: everything near
  p = 0.5, the best case of probability bins) and `untrained` (N(0, 0.1),
  positives +0.1: as an untrained network's, or the tiny model's in
  tests/recipes/test_infer_evaluate.py), same labels as (a);
- (c) OpenImages-like rare classes: 50,000 samples, 100 classes, positives
  0.1 - 1 % of the samples (log-uniform), every positive and half of the
  negatives annotated (denser than OpenImages' verified labels, so harder
  for the histograms): `rare_trained` (N(-7, 1.5) against N(-1, 2)),
  `rare_barely_trained` (N(-4.5, 0.8) against N(-3.5, 0.8): 90 % of the
  probabilities in 0.003 - 0.04) and `rare_calibrated` (N(-9, 1.2) against
  N(-5, 2): probabilities mostly below 0.001);
- (d) `overconfident`: the labels of (a), negatives' logits N(-8, 4) and
  positives' N(12, 3): many logits beyond +-12, where a narrower logit
  range would merge them.

Variants, each at `--bins` (default 100, 1,000, 10,000):

- `mix16+middle`: the metric as it is (the default): equal bins of
  `u = (p + (clip(z, -16, 16) + 16) / 32) / 2`, the mean of the probability
  and the rescaled logit; the positives of a bin get the precision of the
  bin's middle positive (entries of a bin taken in random order);
- `prob+tie`: the metric before: equal bins of the probability, each bin
  scored as one tie group (`partial_mean_average_precision` on the bin
  indices, which is what it computed);
- `prob+middle`, `mix16+tie`: one change at a time;
- `logit<L>+middle`, `logit16+tie`: equal bins of the logit clipped to
  [-L, L].

The default runs the metric itself on the logits, in batches of 10,000
samples; the other `+middle` variants count their histograms in NumPy and
score them with the metric's own histogram code. Errors are in mAP points
(bounded - exact, macro average); the worst class is the largest |AP error|
of one class.

Expected time: about 1 minute on 2 cores (`--smoke`: 10 s). Measured
results are in docs/METRICS.md.
"""

import json
import time

from absl import app
from absl import flags

CASES = (
    "trained", "weak_signal", "prior_bias", "zero_bias", "untrained",
    "rare_trained", "rare_barely_trained", "rare_calibrated", "overconfident",
)
VARIANTS = (
    "mix16+middle", "prob+tie", "prob+middle", "mix16+tie",
    "logit16+middle", "logit12+middle", "logit8+middle", "logit16+tie",
)
DEFAULT = "mix16+middle"
OLD = "prob+tie"

flags.DEFINE_list("cases", list(CASES), "Score distributions to measure.")
flags.DEFINE_list("bins", ["100", "1000", "10000"], "num_thresholds values.")
flags.DEFINE_list("variants", list(VARIANTS), "Binning variants.")
flags.DEFINE_integer("seed", 0, "Random seed of the labels and scores.")
flags.DEFINE_boolean("smoke", False, "Small data: checks that it runs.")
flags.DEFINE_string("json", None, "Also write the results to this file.")
FLAGS = flags.FLAGS


def make_case(case, rng, smoke=False):
    """`(targets, logits)` of one case: int8 1/0/-1 and float32."""
    import numpy as np

    if case.startswith("rare"):
        samples, classes = (5000, 20) if smoke else (50000, 100)
        prevalence = np.exp(rng.uniform(np.log(0.001), np.log(0.01), classes))
        present = rng.random((samples, classes)) < prevalence
        annotated = present | (rng.random((samples, classes)) < 0.5)
    else:
        samples, classes = (4000, 40) if smoke else (20000, 200)
        prevalence = np.exp(rng.uniform(np.log(0.005), np.log(0.2), classes))
        present = rng.random((samples, classes)) < prevalence
        annotated = rng.random((samples, classes)) < 0.3
    targets = np.where(annotated, present, -1).astype("int8")
    shape = present.shape

    def normal(mean, std):
        return rng.normal(mean, std, shape)

    if case == "trained":
        logits = np.where(present, normal(2.0, 2.5), normal(-6.0, 2.0))
    elif case == "weak_signal":
        logits = normal(0.0, 1.5) + 1.0 * present
    elif case == "prior_bias":
        bias = np.log(prevalence / (1 - prevalence))
        logits = bias + normal(0.0, 0.3) + 0.3 * present
    elif case == "zero_bias":
        logits = normal(0.0, 0.3) + 0.3 * present
    elif case == "untrained":
        logits = normal(0.0, 0.1) + 0.1 * present
    elif case == "rare_trained":
        logits = np.where(present, normal(-1.0, 2.0), normal(-7.0, 1.5))
    elif case == "rare_barely_trained":
        logits = np.where(present, normal(-3.5, 0.8), normal(-4.5, 0.8))
    elif case == "rare_calibrated":
        logits = np.where(present, normal(-5.0, 2.0), normal(-9.0, 1.2))
    elif case == "overconfident":
        logits = np.where(present, normal(12.0, 3.0), normal(-8.0, 4.0))
    else:
        raise ValueError(
            f"Invalid value for argument `cases`. Expected some of {CASES}. "
            f"Received: {case!r}"
        )
    return targets, logits.astype("float32")


def bin_indices(logits, space, bins):
    """Bin of each float32 logit under `space`: "prob" or "logit<L>"."""
    import numpy as np

    if space == "prob":
        # sigmoid in float32, as the metric did before.
        values = (1.0 / (1.0 + np.exp(-logits.astype("float64")))).astype(
            "float32"
        )
        index = np.floor(values * np.float32(bins))
    elif space.startswith("mix"):
        limit = float(space[len("mix"):])
        probabilities = 1.0 / (1.0 + np.exp(-logits.astype("float64")))
        values = probabilities + (np.clip(logits, -limit, limit) + limit) / (2 * limit)
        index = np.floor(values / 2 * bins)
    else:
        limit = np.float32(space[len("logit"):])
        values = np.clip(logits, -limit, limit)
        index = np.floor((values + limit) * np.float32(bins / (2 * limit)))
    return np.minimum(index, bins - 1).astype("int64")


def bounded_map(targets, logits, variant, bins, batch=10000):
    """`(mean AP, per-class AP)` of one variant, percent."""
    import numpy as np

    from keras_csl.metrics import PartialMeanAveragePrecision
    from keras_csl.metrics import partial_mean_average_precision

    space, estimator = variant.split("+")
    if estimator == "tie":
        return partial_mean_average_precision(
            targets, bin_indices(logits, space, bins)
        )
    if variant != DEFAULT:
        # The variant's histograms, scored by the metric's own code.
        import keras

        from keras_csl.metrics import average_precision

        index = bin_indices(logits, space, bins)
        index = index + bins * np.arange(targets.shape[1])
        size = targets.shape[1] * bins
        positive_counts, negative_counts = (
            np.bincount(index[targets == t], minlength=size)
            .reshape(-1, bins).astype("float32")
            for t in (1, 0)
        )
        per_class, _ = average_precision._histogram_average_precision(
            keras.ops.convert_to_tensor(positive_counts),
            keras.ops.convert_to_tensor(negative_counts),
        )
        per_class = 100.0 * keras.ops.convert_to_numpy(per_class)
        return float(np.nanmean(per_class)), per_class.astype("float64")
    scores = logits
    metric = PartialMeanAveragePrecision(targets.shape[1], num_thresholds=bins)
    for start in range(0, len(targets), batch):
        metric.update_state(
            targets[start:start + batch], scores[start:start + batch]
        )
    return float(metric.result()), metric.per_class_ap()


def measure(cases, variants, bin_counts, seed=0, smoke=False):
    """Rows of `{case, variant, bins, exact, error, worst}`."""
    import numpy as np

    from keras_csl.metrics import partial_mean_average_precision

    rows = []
    for case in cases:
        rng = np.random.default_rng([seed, CASES.index(case)])
        targets, logits = make_case(case, rng, smoke)
        exact, exact_per_class = partial_mean_average_precision(targets, logits)
        for variant in variants:
            for bins in bin_counts:
                value, per_class = bounded_map(targets, logits, variant, bins)
                both = np.isfinite(per_class) & np.isfinite(exact_per_class)
                rows.append(dict(
                    case=case, variant=variant, bins=bins, exact=exact,
                    error=value - exact,
                    worst=float(np.max(np.abs(
                        per_class[both] - exact_per_class[both]
                    ))),
                ))
    return rows


def format_tables(rows, bin_counts):
    """Markdown: default and old per case and B; all variants at one B."""
    lines = []
    cases = list(dict.fromkeys(r["case"] for r in rows))
    variants = list(dict.fromkeys(r["variant"] for r in rows))
    cell = {(r["case"], r["variant"], r["bins"]): r for r in rows}

    def text(row):
        return f"{row['error']:+.3f} ({row['worst']:.2f})"

    shown = [v for v in (DEFAULT, OLD) if v in variants]
    header = " | ".join(f"{v}, B = {b:,}" for v in shown for b in bin_counts)
    lines.append(f"| scores | exact mAP | {header} |")
    lines.append("|---|---:|" + "---:|" * (len(shown) * len(bin_counts)))
    for case in cases:
        exact = cell[(case, variants[0], bin_counts[0])]["exact"]
        values = " | ".join(
            text(cell[(case, v, b)]) for v in shown for b in bin_counts
        )
        lines.append(f"| {case} | {exact:.3f} | {values} |")
    middle = 1000 if 1000 in bin_counts else bin_counts[len(bin_counts) // 2]
    lines.append("")
    lines.append(f"All variants at B = {middle:,}:")
    lines.append("")
    lines.append("| scores | " + " | ".join(variants) + " |")
    lines.append("|---|" + "---:|" * len(variants))
    for case in cases:
        values = " | ".join(text(cell[(case, v, middle)]) for v in variants)
        lines.append(f"| {case} | {values} |")
    return "\n".join(lines)


def main(argv):
    del argv
    bin_counts = [int(b) for b in FLAGS.bins]
    for variant in FLAGS.variants:
        if variant not in VARIANTS:
            raise app.UsageError(
                f"Unknown variant {variant!r}: expected some of {VARIANTS}."
            )
    start = time.perf_counter()
    rows = measure(
        FLAGS.cases, FLAGS.variants, bin_counts, FLAGS.seed, FLAGS.smoke
    )
    print("mAP error in points, bounded - exact (largest |error| of one "
          "class in brackets)\n")
    print(format_tables(rows, bin_counts))
    print(f"\n{time.perf_counter() - start:.0f} s")
    if FLAGS.json:
        with open(FLAGS.json, "w", encoding="utf-8") as f:
            json.dump(rows, f, indent=1)


if __name__ == "__main__":
    app.run(main)
