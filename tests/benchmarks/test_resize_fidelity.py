"""Smoke tests of benchmarks/resize_fidelity.py at tiny sizes (no timing asserted)."""

import importlib.util
import os
import pathlib
import subprocess
import sys

import numpy as np
import tensorflow as tf

REPO = pathlib.Path(__file__).resolve().parents[2]
SCRIPT = REPO / "benchmarks" / "resize_fidelity.py"


def _load():
    spec = importlib.util.spec_from_file_location("benchmarks_resize_fidelity", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


resize_fidelity = _load()


def _photos(folder, count=3):
    """Smooth synthetic JPEGs in `<folder>/images`, like the coco sample."""
    rng = np.random.default_rng(0)
    (folder / "images").mkdir(parents=True)
    for i in range(count):
        small = rng.integers(0, 256, (6, 8, 3), np.uint8)
        picture = tf.image.resize(small, [96 + 8 * i, 128]).numpy().astype(np.uint8)
        jpeg = tf.io.encode_jpeg(picture, quality=90).numpy()
        (folder / "images" / f"{i:03d}.jpg").write_bytes(jpeg)
    return resize_fidelity.read_photos(folder)


def test_pixel_table_ranks_the_ways_against_pillow(tmp_path):
    photos = _photos(tmp_path)
    names = list(resize_fidelity.WAYS) + list(resize_fidelity.STEPS)
    results = resize_fidelity.pixel_differences(photos, 32, names)
    assert set(results) == set(names)
    assert results["pillow_bicubic"]["mean"] <= 0.01
    assert results["pillow_bicubic"]["max"] <= 1.0
    # Pillow decodes with the accurate IDCT and antialiases: the others differ.
    for other in ("bilinear+downscale", "bilinear", "pillow_bicubic_fast_idct"):
        assert results[other]["mean"] > 10 * results["pillow_bicubic"]["mean"], other
    table = resize_fidelity.format_pixel_table(results, 32)
    assert all(f"| {name} |" in table for name in names)


def test_speed_rows_and_table(tmp_path):
    encoded = [data for _, data in _photos(tmp_path)]
    rows = resize_fidelity.speed_rows(
        encoded, 32, batch_size=4, threads=1, num_images=8, rounds=2, log=lambda _: None
    )
    ways = list(resize_fidelity.WAYS) + [resize_fidelity.PILLOW]
    assert [r["way"] for r in rows] == ways * 2
    assert all(r["images_per_s"] > 0 and r["cpu_ms"] >= 0 for r in rows)
    table = resize_fidelity.format_speed_table(rows, 1)
    assert "| bilinear+downscale | " in table and "| 1.00 |" in table
    assert all(f"| {name} |" in table for name in ways)


def test_script_without_the_sample_says_so_and_exits_0(tmp_path):
    result = subprocess.run(
        [sys.executable, str(SCRIPT), f"--data={tmp_path / 'missing'}"],
        capture_output=True, text=True, timeout=120,
        env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3"),
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert "Skipped: the coco sample is not at" in result.stdout
