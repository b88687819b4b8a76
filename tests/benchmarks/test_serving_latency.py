"""Smoke test of benchmarks/serving_latency.py: its pieces run at tiny sizes.

No timing is asserted (these machines are shared and noisy).
"""

import importlib.util
import pathlib

SCRIPT = pathlib.Path(__file__).resolve().parents[2] / "benchmarks" / "serving_latency.py"


def test_measure_and_table_at_tiny_size():
    spec = importlib.util.spec_from_file_location("benchmarks_serving_latency", SCRIPT)
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    rows = script.measure(
        ["tiny"], [1, 2], image_size=32, num_classes=3, calls=1, warmup=1,
        rounds=2, data=None,
    )
    whats = sorted({(r[0], r[1]) for r in rows})
    assert whats == [
        ("decode (flagging)", "-"), ("decode (map_fn)", "-"), ("serve", "tiny")
    ]
    assert all(len(r[4]) == 2 and min(r[4]) > 0 for r in rows)
    assert len(script.decode_ratios(rows)) == 2
    text = script.table(rows)
    assert "| serve | tiny | 32x32 JPEGs | 2 |" in text
    assert "flagging / map_fn decode, 32x32 JPEGs, batch 1:" in text
