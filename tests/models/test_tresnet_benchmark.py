"""Smoke run of benchmarks/tresnet_speed.py (tiny sizes; nothing is timed)."""

import importlib.util
import os
import pathlib
import subprocess
import sys

import pytest

SCRIPT = pathlib.Path(__file__).resolve().parents[2] / "benchmarks" / "tresnet_speed.py"


@pytest.mark.slow
def test_tresnet_speed_tiny_run():
    command = [sys.executable, str(SCRIPT), "--tiny", "--nojax", "--stages"]
    # timm may be installed and still fail to import (torchvision built
    # for another torch): ask a subprocess.
    with_torch = importlib.util.find_spec("timm") is not None and subprocess.run(
        [sys.executable, "-c", "import timm"], capture_output=True, timeout=300
    ).returncode == 0
    if not with_torch:
        command.append("--notorch")
    result = subprocess.run(
        command, capture_output=True, text=True, timeout=900,
        env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3"),
    )
    assert result.returncode == 0, result.stderr[-3000:]
    out = result.stdout
    assert "TResNet-M inference, batch 2, 64 px" in out
    assert "keras tf graph" in out and "keras tf XLA" in out
    # A timed PyTorch row ("pytorch <version> timm <version>") only with timm.
    has_torch_row = any(line.startswith("pytorch ") for line in out.splitlines())
    assert has_torch_row == with_torch
    for stage in ("stem", "layer1", "layer4", "head"):
        assert f"  {stage}" in out
    lines = out[out.index("training step"):].splitlines()
    assert lines[2].startswith("tresnet_m") and lines[3].startswith("resnet50")
