"""The report of the prior estimation flow: numbers and text (`prior_flow`)."""

import numpy as np

from keras_csl import priors


def compare_with_truth(estimate, truth):
    """Spearman rank correlation and mean absolute error against the truth.

    Example:

    >>> compare_with_truth([0.1, 0.5, 0.3], [0.2, 0.4, 0.3])
    {'rank_correlation': 1.0, 'mean_absolute_error': 0.06666666666666667}
    """
    estimate = np.asarray(estimate, dtype="float64")
    truth = np.asarray(truth, dtype="float64")
    return {
        "rank_correlation": priors.rank_correlation(estimate, truth),
        "mean_absolute_error": float(np.mean(np.abs(estimate - truth))),
    }


def format_report(report, k=10):
    """The top-`k` classes and the comparison table of a report, as text.

    Args:
        report: what `estimate_prior` returns (or its JSON, read back).
        k: number of classes listed (at most those of the report's
            `top_classes` are known without the vectors).

    Returns:
        A multi-line string.
    """
    prior = np.asarray(report["prior"], dtype="float64")
    naive = np.asarray(report["naive_prior"], dtype="float64")
    truth = report.get("true_frequency")
    truth = None if truth is None else np.asarray(truth, dtype="float64")
    names = report["display_names"]
    width = max([len("class")] + [len(names[i]) for i, _, _ in
                                   priors.top_classes(prior, k)])
    lines = [
        f"Class prior of {report['num_classes']} classes over "
        f"{report['num_images']} training images (model: {report['model']}).",
        f"Top {min(k, len(prior))} classes by the estimated prior:",
        f"  {'#':>3}  {'class':<{width}}  {'estimate':>8}  {'naive':>8}"
        + (f"  {'true':>8}" if truth is not None else ""),
    ]
    for rank, (index, _, value) in enumerate(priors.top_classes(prior, k), 1):
        line = (f"  {rank:>3}  {names[index]:<{width}}  {value:8.4f}  "
                f"{naive[index]:8.4f}")
        if truth is not None:
            line += f"  {truth[index]:8.4f}"
        lines.append(line)
    lines.append(
        "Rank correlation of the estimate with the naive prior: "
        f"{_number(report['rank_correlation_prior_naive'])}"
    )
    if report.get("comparison"):
        lines.append(f"Against the true class frequencies ({report['full_labels']}):")
        lines.append(f"  {'prior':<28}  {'rank corr.':>10}  {'MAE':>8}")
        for key, label in (("prior", "ignore-mode model (estimate)"),
                           ("naive_prior", "naive (partial labels)")):
            numbers = report["comparison"][key]
            lines.append(
                f"  {label:<28}  {_number(numbers['rank_correlation']):>10}  "
                f"{_number(numbers['mean_absolute_error']):>8}"
            )
    lines.append(f"Prior CSV: {report['prior_csv']}")
    return "\n".join(lines)


def report_summary(report):
    """The report without its vectors, JSON-ready (NaN as `None`)."""
    keys = ("prior_csv", "naive_prior_csv", "report_json", "model",
            "ignore_run_dir", "num_images", "num_classes",
            "rank_correlation_prior_naive", "full_labels", "comparison",
            "seconds")
    return to_jsonable({key: report[key] for key in keys})


def _number(value):
    return "n/a" if value is None or not np.isfinite(value) else f"{value:.4f}"


def to_jsonable(value):
    """`value` with NumPy arrays and scalars as plain lists and numbers, NaN
    and infinities as `None` (strict JSON)."""
    if isinstance(value, dict):
        return {key: to_jsonable(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [to_jsonable(item) for item in value]
    if isinstance(value, np.ndarray):
        return [to_jsonable(item) for item in value.tolist()]
    if isinstance(value, (np.floating, float)):
        return float(value) if np.isfinite(value) else None
    if isinstance(value, np.integer):
        return int(value)
    return value
