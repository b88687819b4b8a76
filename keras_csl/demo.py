"""The end-to-end demo of keras-csl as one function (`recipes/demo.py` runs it).

`run_demo(output_dir)` uses the package's own code at every step, on data it
makes itself (no download):

1. multi-label mosaics of real handwritten digits from scikit-learn
   (`keras_csl.data.mosaics`; 10 classes, class frequencies 0.55 to 0.16),
   written as OpenImages-style CSVs;
2. TFRecord shards from the OpenImages converter
   (`keras_csl.data.convert_openimages`);
3. partial annotation of the training set simulated twice, as the paper
   does for COCO: FPC and RPS label overlays with plots
   (`keras_csl.data.simulate_partial_labels`);
4. the paper's flow on each: a "negative" model, an "ignore" model, the
   class prior from the ignore model's predictions, then CSL ("selective")
   with that prior (`keras_csl.training.recipe.run`; every run folder keeps
   its `best.keras`, which carries its model card);
5. test mAP per mode and scheme (test labels are complete), a bar chart;
6. the best model exported for TF Serving (`keras_csl.export`, classes and
   preprocessing from its card) and one request answered by the export.

The modes differ in their focusing as well as in how they treat missing
labels (negative and ignore use none, CSL the authors' 1/4): the demo shows
the flow, not a controlled comparison; `benchmarks/partial_label_study.py`
and docs/RESULTS.md compare CSL with controls that share its focusing.

Needs the `demo` extra (scikit-learn, matplotlib, pillow).
"""

import dataclasses
import json
import logging
import os
import time

logger = logging.getLogger(__name__)

MODES = ("negative", "ignore", "selective")

# 10 classes, about 3 per image: the likelihood rule drops the batch_size
# likeliest missing labels of each batch, one per image on average (batch
# scope, as the authors' code; their top-k 5 is for 80 classes); missing
# labels of classes whose prior exceeds 0.3 (the four most frequent digits)
# count as unknown rather than negative.
# `TrainConfig.loss` of each mode (the rest are the loss's defaults).
LOSS = {
    "negative": dict(mode="negative", gamma_neg=0.0, gamma_unannotated=0.0),
    "ignore": dict(mode="ignore", gamma_neg=0.0, gamma_unannotated=0.0),
    "selective": dict(mode="selective", gamma_neg=1.0, gamma_unannotated=4.0,
                      likelihood_topk=1, prior_threshold=0.3),
}


def run_demo(output_dir, num_train=2400, num_test=600, epochs=8, fpc=100, rps=0.7,
             seed=0, log=logger.info):
    """Runs the whole demo; returns a dict of results (also saved as JSON).

    Example (2 CPU cores, about 2 minutes):

    ```python
    summary = run_demo("csl_demo_output", log=print)
    summary["map"]["FPC 100"]
    # One run's figures (the README's): {"negative": 59.99, "ignore": 70.74,
    # "selective": 72.93}
    ```

    Args:
        output_dir: where everything is written (created if needed).
        num_train: training mosaics.
        num_test: test mosaics (complete labels).
        epochs: epochs per model.
        fpc: FPC: labels kept per class and kind.
        rps: RPS: probability of dropping a label.
        seed: seed of the data, the simulation and training.
        log: a function taking one line of progress (default: this module's
            logger at INFO; the recipe passes `print`).

    Returns:
        A dict: `seconds`, `map` (scheme -> mode -> test mAP %), `best`,
        `plot`, `served` (the export's path and its answer to one request).

    Raises:
        RuntimeError: if the conversion skipped any image.
    """
    import numpy as np

    from keras_csl import priors
    from keras_csl.data import convert_openimages
    from keras_csl.data import make_dataset
    from keras_csl.data import mosaics
    from keras_csl.data import read_classes_csv
    from keras_csl.data import simulate_partial_labels
    from keras_csl.training import TrainConfig
    from keras_csl.training import recipe

    start = time.perf_counter()
    steps_total = 4 + 2 * (len(MODES) + 1)
    step = [0]

    def stage(message):
        step[0] += 1
        log(f"[{step[0]:2d}/{steps_total}] {time.perf_counter() - start:5.0f} s  {message}")

    os.makedirs(output_dir, exist_ok=True)
    raw = os.path.join(output_dir, "raw")
    records = os.path.join(output_dir, "tfrecords")

    stage(f"Making {num_train} + {num_test} digit mosaics")
    train_files = mosaics.write_digit_mosaics(raw, num_train, "train", seed=seed)
    test_files = mosaics.write_digit_mosaics(raw, num_test, "test", seed=seed)

    stage("Converting them to TFRecords with the OpenImages converter")
    for split, files in (("train", train_files), ("test", test_files)):
        summary = convert_openimages(
            files["labels_csv"], files["classes_csv"], files["images_dir"], records,
            num_shards=2, split=split, num_workers=1, verbose=0,
        )
        log(f"        {split}: {summary['images']} images, {summary['images_skipped']} skipped")
        if summary["images"] != {"train": num_train, "test": num_test}[split]:
            raise RuntimeError(f"Conversion skipped images; see {summary['report']}")
    class_ids, names = read_classes_csv(os.path.join(records, "classes.csv"))

    stage(f"Simulating partial labels: FPC {fpc} and RPS {rps:g}")
    schemes = {}
    for scheme, param in (("fpc", fpc), ("rps", rps)):
        name = f"{scheme.upper()} {param:g}"
        overlay = os.path.join(output_dir, "labels", f"{scheme}.csv")
        stats = simulate_partial_labels(
            records, scheme, param, seed=seed, overlay_path=overlay,
            plot_path=os.path.join(output_dir, "labels", f"{scheme}.png"),
        )
        before, after = stats["labels_before"], stats["labels_after"]
        kept = (after["positive"] + after["negative"]) / max(1, before["positive"] + before["negative"])
        log(f"        {name}: {100 * kept:.1f}% of the labels kept")
        schemes[name] = overlay

    base = TrainConfig(
        name="demo",
        train_files=os.path.join(records, "train-*.tfrecord"),
        val_files=os.path.join(records, "test-*.tfrecord"),
        train_examples=num_train,
        backbone="tiny", weights=None, num_classes=len(class_ids), image_size=48,
        epochs=epochs, per_replica_batch_size=64, learning_rate=3e-3,
        ema_decay=0.0, precision="float32", cutout=False, randaugment_num_ops=0,
        flip=False, prior="none", seed=seed, log_every_steps=1000,
    )

    results = {}
    best = None
    for name, overlay in schemes.items():
        results[name] = {}
        for mode in MODES:
            if mode == "selective":
                stage(f"{name}: estimating the class prior with the ignore model")
                ignore_model = results[name]["ignore"]["model"]
                eval_train = make_dataset(
                    base.train_files, base.num_classes, base.image_size, 256,
                    training=False, label_overlay=overlay,
                )
                prior = priors.prior_from_predictions(ignore_model, eval_train, verbose=0)
                prior_path = os.path.join(output_dir, "runs", _slug(name), "prior.csv")
                priors.write_prior_csv(prior_path, prior, class_ids, names)
                top = ", ".join(f"{n} {v:.2f}" for _, n, v in priors.top_classes(prior, 4, names))
                log(f"        prior (top 4): {top}")
            stage(f"{name}: training the {mode} model")
            config = dataclasses.replace(
                base,
                dataset_options={"label_overlay": overlay},
                prior=prior_path if mode == "selective" else "none",
                loss=LOSS[mode],
            )
            run_dir = os.path.join(output_dir, "runs", _slug(name), mode)
            result = recipe.run(config, run_dir, verbose=0)
            final_map = float(result.history[-1]["val_map"]) if result.history else float("nan")
            results[name][mode] = {"map": final_map, "model": result.model, "run_dir": run_dir}
            log(f"        test mAP {final_map:.2f}")
            if best is None or final_map > best[0]:
                best = (final_map, name, mode, result.model)

    table = _table(results)
    log("\nTest mAP (%) on complete labels, final epoch:\n" + table)
    plot_path = os.path.join(output_dir, "demo_results.png")
    _plot(results, plot_path)

    stage(f"Exporting the best model ({best[2]} on {best[1]}, mAP {best[0]:.2f}) and serving one request")
    served = _export_and_serve(best[3], output_dir, names, raw, seed, log)

    summary = {
        "seconds": round(time.perf_counter() - start, 1),
        "map": {s: {m: round(v["map"], 2) for m, v in modes.items()} for s, modes in results.items()},
        "best": {"scheme": best[1], "mode": best[2], "map": round(best[0], 2)},
        "plot": plot_path,
        "served": served,
    }
    with open(os.path.join(output_dir, "demo_results.json"), "w", encoding="utf-8") as f:
        json.dump(summary, f, indent=1)
    log(f"\nDone in {summary['seconds']:.0f} s. Results: {output_dir}/demo_results.json, plot: {plot_path}")
    return summary


def _slug(name):
    return name.lower().replace(" ", "-")


def _table(results):
    header = f"{'scheme':<10}" + "".join(f"{m:>12}" for m in MODES)
    lines = [header, "-" * len(header)]
    for scheme, modes in results.items():
        lines.append(f"{scheme:<10}" + "".join(f"{modes[m]['map']:>12.2f}" for m in MODES))
    return "\n".join(lines)


def _plot(results, path):
    import numpy as np
    from matplotlib.figure import Figure

    schemes = list(results)
    fig = Figure(figsize=(6, 3.5))
    ax = fig.subplots()
    width = 0.8 / len(MODES)
    for i, mode in enumerate(MODES):
        values = [results[s][mode]["map"] for s in schemes]
        bars = ax.bar(np.arange(len(schemes)) + (i - 1) * width, values, width, label=mode)
        ax.bar_label(bars, fmt="%.1f", fontsize=7)
    ax.set_xticks(np.arange(len(schemes)))
    ax.set_xticklabels(schemes)
    ax.set_ylabel("test mAP (%)")
    low = min(results[s][m]["map"] for s in schemes for m in MODES)
    ax.set_ylim(max(0.0, low - 15), 100)
    ax.set_title("Digit mosaics with simulated partial labels")
    ax.legend(loc="upper left", ncol=len(MODES), fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def _export_and_serve(model, output_dir, names, raw_dir, seed, log):
    import numpy as np
    import tensorflow as tf

    from keras_csl.data import mosaics
    from keras_csl.export import export_for_serving

    export_dir = os.path.join(output_dir, "export")
    # Classes, image size and preprocessing come from the model's card,
    # which training wrote.
    path = export_for_serving(model, export_dir, top_k=5)
    serving = tf.saved_model.load(path).signatures["serving_default"]
    image_path = os.path.join(raw_dir, "images", "test000000.jpg")
    with open(image_path, "rb") as f:
        response = serving(image_bytes=tf.constant([f.read()]))
    # Mosaics are drawn in sequence: the first of one equals the first of many.
    _, labels = mosaics.make_digit_mosaics(1, "test", seed=seed)
    truth = [names[i] for i in np.flatnonzero(labels[0])]
    if not bool(response["valid"].numpy()[0]):
        raise RuntimeError(f"The export could not decode {image_path}")
    scores = response["top_k_scores"].numpy()[0]
    tags = [t.decode() for t in response["top_k_names"].numpy()[0]]
    answer = [(tag, round(float(score), 3)) for tag, score in zip(tags, scores)]
    log(f"        exported to {path}")
    log(f"        request: {image_path}; true digits: {', '.join(truth)}")
    log("        response (top 5): " + ", ".join(f"{t} {s:.2f}" for t, s in answer))
    return {"export": path, "image": image_path, "truth": truth, "top_k": answer}
