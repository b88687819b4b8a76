"""Evaluation plots: AP against class frequency, precision-recall curves.

matplotlib is imported on first use; it comes with
`pip install "keras-csl[demo]"`. The figures are drawn without pyplot, so
the caller's matplotlib backend (e.g. a notebook's) is left as it is.
"""

import numpy as np


def plot_ap_vs_frequency(rows, result, path, annotate=5):
    """Scatter of each class's AP against its frequency (log scale).

    Args:
        rows: per-class dicts with `ap` (percent or None), `frequency`
            (annotated positives / images) and `display_name`, as in
            `evaluate()["per_class"]`.
        result: a dict with `partial_map` and `num_images`.
        path: the PNG file to write.
        annotate: how many of the lowest-AP classes to list.

    Returns:
        `path`.
    """
    fig = _figure(figsize=(8, 5.5), dpi=120)
    from matplotlib import ticker

    evaluated = [r for r in rows if r["ap"] is not None and r["frequency"] > 0]
    ax = fig.subplots()
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
    return path


def plot_pr_curves(curves, path):
    """Precision-recall curves, one figure.

    `curves` holds one `(name, precision, recall, ap, positives)` per class,
    `precision` and `recall` by decreasing threshold (as from
    `keras_csl.metrics.curves`). Each curve steps through the precision at
    every recall level reached. Returns `path`.
    """
    fig = _figure(figsize=(7, 6), dpi=120)
    ax = fig.subplots()
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
    return path


def _percent(value, _):
    return f"{value:g}%"


def _figure(**kwargs):
    """A `matplotlib.figure.Figure`: no pyplot, no global backend change."""
    try:
        from matplotlib.figure import Figure
    except ImportError:
        raise ImportError(
            "The evaluation plots need matplotlib: pip install matplotlib "
            "(or pip install keras-csl[demo])."
        ) from None
    return Figure(**kwargs)
