"""The partial-label study's pieces run and its tables read what they should."""

import importlib.util
import json
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


def _gammas(settings):
    return settings["gamma_pos"], settings["gamma_neg"], settings["gamma_unannotated"]


@pytest.mark.parametrize(
    "scheme, expected",
    # The authors' README: RPS 0 / 1 / 4, FPC 0 / 3 / 4 (pos / neg / unann).
    [("rps", (0.0, 1.0, 4.0)), ("fpc", (0.0, 3.0, 4.0)), ("full", (0.0, 1.0, 4.0))],
)
def test_controls_share_csl_focusing(scheme, expected):
    settings = {mode: study.loss_settings(mode, scheme) for mode in study.MODES}
    for mode in ("negative_focus", "ignore_focus", "selective", "selective_updater"):
        assert _gammas(settings[mode]) == expected, mode
    assert settings["negative_focus"]["mode"] == "negative"
    assert settings["ignore_focus"]["mode"] == "ignore"
    assert settings["selective"]["mode"] == "selective"
    # The controls differ from CSL in the selection only.
    for control in ("negative_focus", "ignore_focus"):
        differing = {
            k for k in set(settings[control]) | set(settings["selective"])
            if settings[control].get(k) != settings["selective"].get(k)
        }
        assert differing == {"mode", "likelihood_topk", "prior_threshold"}, control
    assert _gammas(settings["negative_ce"]) == _gammas(settings["ignore_ce"]) == (0, 0, 0)
    assert settings["negative_asl"]["clip"] == 0.05


def test_unknown_mode_is_an_error():
    with pytest.raises(ValueError, match="mode='selectiv'"):
        study.loss_settings("selectiv", "rps")


def _records(maps_by_mode):
    return [
        dict(dataset="mulan", scheme="RPS 0.5", seed=seed, mode=mode, map=value)
        for mode, values in maps_by_mode.items()
        for seed, value in enumerate(values)
    ]


def test_table_spread_is_sample_std_and_margins_are_paired():
    maps = {mode: [70.0, 71.0, 72.0] for mode in study.MODES}
    maps["selective"] = [74.0, 72.0, 78.0]  # sample std 3.06; ddof=0 gives 2.49
    maps["ignore_focus"] = [73.0, 72.5, 75.0]
    records = _records(maps)
    table = study.summarize(records)
    row = next(line for line in table.splitlines() if line.startswith("| RPS 0.5 | 71.0"))
    cells = [c.strip() for c in row.split("|")[2:-1]]
    assert cells[study.MODES.index("selective")] == "74.7 ± 3.1"
    assert cells[study.MODES.index("negative_ce")] == "71.0 ± 1.0"
    # Per seed: 74 - 73 = 1, 72 - 72.5 = -0.5, 78 - 75 = 3.
    differences = study.paired_differences(records, "mulan", "RPS 0.5", "selective", "ignore_focus")
    np.testing.assert_allclose(differences, [1.0, -0.5, 3.0])
    assert study.margin_cell(differences) == "+1.2 [-0.5, +3.0]"
    assert "| RPS 0.5 | +3.7 [+1.0, +6.0] | +3.7 [+1.0, +6.0] | +1.2 [-0.5, +3.0] |" in table


def test_one_seed_has_no_spread():
    records = _records({mode: [70.0] for mode in study.MODES})
    table = study.summarize(records)
    assert "one seed over 1 seed(s)" in table and "±" not in table


def test_mulan_study_smoke(shared_data, tmp_path, monkeypatch):
    monkeypatch.setitem(study.SCHEMES, "mulan", (("fpc", 20),))
    records = study.run_dataset("mulan", seeds=1, epoch_scale=0.05, log=lambda _: None)
    runs = [r for r in records if "map" in r]
    assert [r["mode"] for r in runs] == list(study.MODES)
    assert all(0 < r["map"] <= 100 for r in runs)
    # FPC runs use the FPC recipe's gammas.
    assert _gammas(next(r for r in runs if r["mode"] == "selective")["loss"]) == (0, 3, 4)
    sources = {r["mode"] for r in records if "mae" in r}
    assert sources == {f"prior:{s}" for s in study.PRIOR_SOURCES}
    # FPC 20 keeps 20 positives and 20 negatives of each of the 6 classes.
    assert runs[0]["annotated"] == pytest.approx(6 * 40 / (1211 * 6))
    meta = dict(command="test", commit="abc", dirty=False)
    table = study.write_outputs(tmp_path, meta, records)
    assert "| FPC 20 |" in table and "n/a / " in table  # Constant naive prior.
    assert json.loads((tmp_path / "records.json").read_text())["meta"]["commit"] == "abc"
    assert (tmp_path / "tables.md").read_text().startswith("<!-- test at commit abc")
    assert study.read_records(tmp_path / "records.json") == (meta, json.loads(json.dumps(records)))
    study.plot(records, "mulan", tmp_path / "mulan.png")
    assert (tmp_path / "mulan.png").stat().st_size > 1000


def test_provenance_names_the_commit():
    meta = study.provenance(["partial_label_study.py", "--seeds=1"])
    assert meta["command"].endswith("partial_label_study.py --seeds=1")
    if meta["commit"] is not None:  # Inside a git checkout.
        assert len(meta["commit"]) == 40 and isinstance(meta["dirty"], bool)
        assert all(not name.startswith(" ") for name in meta["changed_files"])
