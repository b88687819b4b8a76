"""The two-stage prior flow: estimate_prior end to end, and its command line.

One tiny ignore-mode run (module fixture) on synthetic TFRecords with
complete labels, made partial by a simulated FPC label overlay; every
number of its report is checked against an independent computation.
"""

import csv
import dataclasses
import json
import os
import pathlib
import subprocess
import sys

import keras
import numpy as np
import pytest
import scipy.stats

import keras_csl.models  # noqa: F401 (registers the layers of best.keras)
from keras_csl import priors
from keras_csl.data import make_dataset
from keras_csl.data import read_classes_csv
from keras_csl.data import read_label_overlay
from keras_csl.data import simulate_partial_labels
from keras_csl.training import TrainConfig
from keras_csl.training import inputs
from keras_csl.training import prior_flow
from keras_csl.training import train
from keras_csl.training.synthetic import synthetic_images
from keras_csl.training.synthetic import write_synthetic_dataset

REPO = pathlib.Path(__file__).resolve().parents[2]
NUM_TRAIN, NUM_VAL, NUM_CLASSES, SIZE, SEED = 100, 32, 5, 32, 1


@pytest.fixture(scope="module")
def flow(tmp_path_factory):
    root = tmp_path_factory.mktemp("prior_flow")
    full_dir = root / "full"
    train_files, val_files = write_synthetic_dataset(
        str(full_dir), NUM_TRAIN, NUM_VAL, NUM_CLASSES, SIZE,
        drop_probability=0.0, seed=SEED,
    )
    fpc_overlay = str(root / "fpc8.csv")
    simulate_partial_labels(str(full_dir), "fpc", 8, seed=0, overlay_path=fpc_overlay)
    # RPS with p=0 keeps every label: an overlay holding the complete labels.
    full_overlay = str(root / "complete.csv")
    simulate_partial_labels(
        str(full_dir), "rps", 0.0, seed=0, overlay_path=full_overlay
    )
    config = TrainConfig(
        name="flow", train_files=train_files, val_files=val_files,
        dataset_options={"label_overlay": fpc_overlay},
        backbone="tiny", weights=None, num_classes=NUM_CLASSES,
        image_size=SIZE, epochs=1, per_replica_batch_size=32,
        learning_rate=3e-3, precision="float32", randaugment_num_ops=0,
        cutout=False, log_every_steps=1,
        # Stage 2's settings: the flow must replace them for stage 1.
        loss=dict(mode="selective", gamma_unannotated=4.0, prior_threshold=0.5),
        prior=str(root / "not-yet-written.csv"),
    )
    run_dir = root / "run"
    report = prior_flow.estimate_prior(
        config, str(run_dir), full_labels=train_files, verbose=0
    )
    return dict(
        config=config, report=report, run_dir=run_dir, root=root,
        full_dir=full_dir, fpc_overlay=fpc_overlay, full_overlay=full_overlay,
    )


def eval_mode_images(config, batch_size=16):
    dataset = make_dataset(
        config.train_files, NUM_CLASSES, SIZE, batch_size, training=False
    )
    return np.concatenate([images.numpy() for images, _ in dataset])


def true_frequencies():
    labels = synthetic_images(NUM_TRAIN + NUM_VAL, NUM_CLASSES, SIZE, SEED)[1]
    return labels[:NUM_TRAIN].mean(axis=0)


def test_trains_an_ignore_mode_model(flow):
    report = flow["report"]
    assert report["ignore_run_dir"] == str(flow["run_dir"] / "ignore-model")
    assert report["model"] == str(flow["run_dir"] / "ignore-model" / "best.keras")
    saved = json.loads((flow["run_dir"] / "ignore-model" / "config.json").read_text())
    assert (saved["loss"]["mode"], saved["prior"]) == ("ignore", "none")
    # Only the mode changed: the other loss settings are the config's.
    assert dict(saved["loss"], mode="selective") == flow["config"].loss
    assert saved["dataset_options"] == {"label_overlay": flow["fpc_overlay"]}
    # Every training image once: no dropped remainder (100 = 3 x 32 + 4).
    assert report["num_images"] == NUM_TRAIN


def test_prior_csv_reads_back_in_class_order(flow):
    report = flow["report"]
    class_ids, names = read_classes_csv(str(flow["full_dir"] / "classes.csv"))
    by_index = priors.read_prior_csv(report["prior_csv"], num_classes=NUM_CLASSES)
    by_id = priors.read_prior_csv(report["prior_csv"], class_ids=class_ids)
    np.testing.assert_array_equal(by_index, report["prior"])
    np.testing.assert_array_equal(by_id, report["prior"])
    with open(report["prior_csv"], newline="") as f:
        rows = list(csv.reader(f))
    assert rows[0] == ["index", "class_id", "prior", "display_name"]
    assert [row[:2] for row in rows[1:]] == [
        [str(i), c] for i, c in enumerate(class_ids)
    ]
    assert [row[3] for row in rows[1:]] == names


def test_estimate_is_the_mean_sigmoid_of_predict(flow):
    report, config = flow["report"], flow["config"]
    model = keras.saving.load_model(report["model"], compile=False)
    logits = model.predict(eval_mode_images(config), batch_size=16, verbose=0)
    expected = (1.0 / (1.0 + np.exp(-logits.astype("float64")))).mean(axis=0)
    np.testing.assert_allclose(report["prior"], expected, atol=1e-5, rtol=0)


def test_naive_prior_is_the_positive_fraction_of_annotated_labels(flow):
    report = flow["report"]
    positives = np.zeros(NUM_CLASSES)
    annotated = np.zeros(NUM_CLASSES)
    for positive, negative in read_label_overlay(flow["fpc_overlay"]).values():
        positives[positive] += 1
        annotated[positive] += 1
        annotated[negative] += 1
    expected = positives / annotated
    # FPC 8 keeps 8 positives and 8 negatives per class (fewer positives
    # for the rarest): a naive prior near 0.5 whatever the true frequency.
    assert annotated.max() == 16 and 0.4 < expected.min() <= expected.max() == 0.5
    np.testing.assert_allclose(report["naive_prior"], expected, rtol=1e-6)
    np.testing.assert_allclose(
        priors.read_prior_csv(report["naive_prior_csv"], num_classes=NUM_CLASSES),
        expected, rtol=1e-6,
    )


def test_comparison_with_the_true_frequencies(flow):
    report = flow["report"]
    truth = true_frequencies()
    np.testing.assert_allclose(report["true_frequency"], truth, rtol=1e-6)
    assert report["full_labels_unannotated_fraction"] == 0.0
    for key in ("prior", "naive_prior"):
        numbers = report["comparison"][key]
        estimate = np.asarray(report[key], dtype="float64")
        spearman = scipy.stats.spearmanr(estimate, truth).statistic
        if np.isnan(spearman):  # a constant estimate (the FPC naive prior)
            assert np.isnan(numbers["rank_correlation"])
        else:
            assert numbers["rank_correlation"] == pytest.approx(spearman, abs=1e-9)
        assert numbers["mean_absolute_error"] == pytest.approx(
            np.abs(estimate - truth).mean(), abs=1e-7
        )
    # The JSON file holds the same numbers (NaN written as null).
    saved = json.loads(pathlib.Path(report["report_json"]).read_text())
    np.testing.assert_allclose(saved["prior"], report["prior"], rtol=0)
    assert saved["comparison"]["prior"] == pytest.approx(report["comparison"]["prior"])
    assert saved["top_classes"][0]["index"] == int(np.argmax(report["prior"]))
    text = prior_flow.format_report(saved)
    assert "rank corr." in text and report["top_classes"][0]["name"] in text


def test_model_path_skips_training_and_complete_overlay_scores(flow, tmp_path):
    report = prior_flow.estimate_prior(
        flow["config"], str(tmp_path), model_path=flow["report"]["model"],
        full_labels=flow["full_overlay"], verbose=0,
    )
    assert report["ignore_run_dir"] is None
    assert not (tmp_path / "ignore-model").exists()
    np.testing.assert_allclose(report["prior"], flow["report"]["prior"], atol=1e-6)
    np.testing.assert_allclose(report["true_frequency"], true_frequencies(), rtol=1e-6)


def test_steps_limits_the_pass_and_the_truth(flow, tmp_path):
    report = prior_flow.estimate_prior(
        flow["config"], str(tmp_path), model_path=flow["report"]["model"],
        full_labels=flow["config"].train_files, steps=1, verbose=0,
    )
    assert report["num_images"] == 32
    # The truth is over the same 32 images (matched by id), not all 100.
    ids = np.concatenate([
        ids.numpy() for _, _, ids in make_dataset(
            flow["config"].train_files, NUM_CLASSES, SIZE, 32, training=False,
            return_ids=True,
        ).take(1)
    ])
    rows = [int(i.decode().split("-")[1]) for i in ids]
    labels = synthetic_images(NUM_TRAIN + NUM_VAL, NUM_CLASSES, SIZE, SEED)[1]
    np.testing.assert_allclose(
        report["true_frequency"], labels[rows].mean(axis=0), rtol=1e-6
    )


def test_refuses_mismatched_models_and_incomplete_truth(flow, tmp_path):
    config, model = flow["config"], flow["report"]["model"]
    with pytest.raises(ValueError, match="takes 32 px images"):
        prior_flow.estimate_prior(
            dataclasses.replace(config, image_size=24), str(tmp_path),
            model_path=model, verbose=0,
        )
    with pytest.raises(ValueError, match="classes.csv lists 5 classes"):
        prior_flow.estimate_prior(
            dataclasses.replace(config, num_classes=4), str(tmp_path),
            model_path=model, verbose=0,
        )
    partial_truth = tmp_path / "some.csv"
    lines = pathlib.Path(flow["full_overlay"]).read_text().splitlines()
    partial_truth.write_text("\n".join(lines[:11]) + "\n")
    with pytest.raises(ValueError, match="90 of the 100 training images"):
        prior_flow.estimate_prior(
            config, str(tmp_path), model_path=model,
            full_labels=str(partial_truth), verbose=0,
        )


def test_prior_csv_is_the_prior_of_the_next_training(flow):
    prior_csv = flow["report"]["prior_csv"]
    config = dataclasses.replace(flow["config"], prior=prior_csv, ema_decay=0.0)
    seen = {}

    class RecordPrior(keras.callbacks.Callback):
        def on_train_begin(self, logs=None):
            seen["begin"] = keras.ops.convert_to_numpy(
                self.model.loss.prior_variable
            )

    rng = np.random.default_rng(0)
    images = rng.uniform(0, 255, (32, SIZE, SIZE, 3)).astype("float32")
    targets = rng.choice([-1.0, 0.0, 1.0], (32, NUM_CLASSES)).astype("float32")
    result = train(
        config, inputs.in_memory_train_data(images, targets, 32),
        steps_per_epoch=1, callbacks=[RecordPrior()], verbose=0,
    )
    expected = priors.read_prior_csv(prior_csv, num_classes=NUM_CLASSES)
    np.testing.assert_array_equal(seen["begin"], expected)
    np.testing.assert_array_equal(seen["begin"], flow["report"]["prior"])
    assert result.loss.mode == "selective"
    np.testing.assert_array_equal(result.loss.prior, expected)


def test_command_line_smoke_run(tmp_path):
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3", CUDA_VISIBLE_DEVICES="")
    result = subprocess.run(
        [
            sys.executable, str(REPO / "recipes" / "estimate_prior.py"),
            "--config=recipes/configs/coco_rps.py:smoke",
            f"--run_dir={tmp_path}", "--set", "epochs=1",
            "--set", "synthetic_examples=64",
        ],
        capture_output=True, text=True, env=env, timeout=300, cwd=REPO,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    lines = result.stdout.strip().splitlines()
    summary = json.loads(lines[-1])
    assert summary["prior_csv"] == str(tmp_path / "prior.csv")
    assert summary["num_images"] == 64
    # Synthetic data: the complete labels are known, so both are scored.
    assert set(summary["comparison"]) == {"prior", "naive_prior"}
    assert any(line.startswith("Top 6 classes") for line in lines)
    assert len(priors.read_prior_csv(summary["prior_csv"], num_classes=6)) == 6
    assert (tmp_path / "prior_report.json").exists()
    assert (tmp_path / "ignore-model" / "best.keras").exists()
