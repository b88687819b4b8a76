"""The README's main job, shrunk: every stage runs and leaves its files."""

import json
import os

import numpy as np
import pytest

from keras_csl import demo
from keras_csl.models import read_model_card


@pytest.mark.slow
def test_demo_end_to_end(tmp_path):
    lines = []
    summary = demo.run_demo(
        str(tmp_path), num_train=320, num_test=128, epochs=2, fpc=20, rps=0.5,
        log=lines.append,
    )
    assert set(summary["map"]) == {"FPC 20", "RPS 0.5"}
    for modes in summary["map"].values():
        assert set(modes) == {"negative", "ignore", "selective"}
        # Ten classes: chance mAP is about the mean class frequency (~35%).
        assert all(np.isfinite(v) and 20 < v <= 100 for v in modes.values())
    assert os.path.isfile(tmp_path / "demo_results.png")
    assert os.path.isfile(tmp_path / "labels" / "fpc.png")
    saved = json.loads((tmp_path / "demo_results.json").read_text())
    assert saved["best"]["map"] == max(v for m in saved["map"].values() for v in m.values())
    served = summary["served"]
    assert os.path.isfile(os.path.join(served["export"], "saved_model.pb"))
    assert len(served["top_k"]) == 5
    scores = [score for _, score in served["top_k"]]
    assert scores == sorted(scores, reverse=True)
    # The prior written for CSL comes from the ignore model.
    prior_csv = tmp_path / "runs" / "fpc-20" / "prior.csv"
    assert prior_csv.read_text().startswith("index,class_id,prior,display_name")
    assert any("Test mAP" in line for line in lines)
    # Every run keeps a best.keras that describes itself.
    card = read_model_card(tmp_path / "runs" / "rps-0.5" / "selective" / "best.keras")
    from keras_csl.data import mosaics
    assert card.class_ids == tuple(mosaics.CLASS_IDS)
    assert card.display_names == tuple(mosaics.DISPLAY_NAMES)
    assert card.image_size == 48 and card.resize_mode == "squash"


def test_demo_plot_leaves_the_matplotlib_backend_alone(tmp_path):
    import matplotlib

    previous = matplotlib.get_backend()
    matplotlib.use("svg")
    try:
        results = {
            scheme: {mode: {"map": 60.0 + i} for i, mode in enumerate(demo.MODES)}
            for scheme in ("FPC 100", "RPS 0.7")
        }
        demo._plot(results, tmp_path / "plot.png")
        assert matplotlib.get_backend() == "svg"
    finally:
        matplotlib.use(previous)
    assert (tmp_path / "plot.png").read_bytes()[:4] == b"\x89PNG"
