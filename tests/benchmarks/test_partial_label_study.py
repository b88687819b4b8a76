"""The partial-label study's pieces run and its tables read what they should."""

import importlib.util
import pathlib

import numpy as np
import pytest

REPO = pathlib.Path(__file__).resolve().parents[2]
_spec = importlib.util.spec_from_file_location(
    "benchmarks_partial_label_study", REPO / "benchmarks" / "partial_label_study.py"
)
study = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(study)


def test_read_arff(tmp_path):
    path = tmp_path / "tiny.arff"
    path.write_text("@relation x\n% comment\n@attribute a numeric\n@data\n0.5,1\n0.25,0\n")
    np.testing.assert_array_equal(study.read_arff(path), [[0.5, 1.0], [0.25, 0.0]])


def test_mulan_study_smoke(shared_data, tmp_path, monkeypatch):
    monkeypatch.setitem(study.SCHEMES, "mulan", (("fpc", 20),))
    records = study.run_dataset("mulan", seeds=1, epoch_scale=0.05, log=lambda _: None)
    modes = [r["mode"] for r in records if "map" in r]
    assert modes == list(study.MODES)
    assert all(0 < r["map"] <= 100 for r in records if "map" in r)
    sources = {r["mode"] for r in records if "mae" in r}
    assert sources == {"prior:naive", "prior:negative", "prior:ignore", "prior:updater"}
    # FPC 20 keeps 20 positives and 20 negatives of each of the 6 classes.
    assert records[0]["annotated"] == pytest.approx(6 * 40 / (1211 * 6))
    table = study.summarize(records)
    assert "| FPC 20 |" in table and "n/a / " in table  # Constant naive prior.
    study.plot(records, "mulan", tmp_path / "mulan.png")
    assert (tmp_path / "mulan.png").stat().st_size > 1000
