"""The benchmark scripts' figures: train_step's FLOPs, TFLOP/s and MFU, the GPU peak table, and
sweep_throughput's jobs/hour. They run as the README shows, as scripts from the repository."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[2]
BENCHMARKS = ROOT / "benchmarks"
sys.path.insert(0, str(BENCHMARKS))  # the scripts import their siblings by name

from roofline import GPU_PEAKS, compute_precision, device_peak  # noqa: E402

TINY_STEP = ["encoder=resnet18", "model.decoder_width=16", "dataset.height=32",
             "dataset.width=64", "dataset.batch_size=2", "dataset.train_size=4",
             "trainer.device=cpu"]
TINY_SWEEP = ["encoder=resnet18", "model.decoder_width=16", "dataset.height=32",
              "dataset.width=64", "dataset.batch_size=2", "dataset.train_size=2",
              "dataset.val_size=2", "trainer.epochs=1", "trainer.device=cpu"]


def run_json(script: str, *args: str) -> dict:
    """Run benchmarks/<script> and return the JSON it prints, failing with its stderr."""
    done = subprocess.run([sys.executable, str(BENCHMARKS / script), *args], cwd=ROOT,
                          capture_output=True, text=True, timeout=900, check=False)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-4000:]
    return json.loads(done.stdout)


def step_json(*args: str) -> dict:
    return run_json("train_step.py", "--steps", "1", "--steady-steps", "1",
                    "--data-batches", "1", *args, *TINY_STEP)


def test_train_step_counts_flops_and_has_no_cpu_peak() -> None:
    result = step_json()
    assert result["flops_per_image_step"] > 2 * result["flops_per_image_forward"] > 0
    assert result["achieved_tflops"] > 0 and result["steady_achieved_tflops"] > 0
    assert result["mfu_precision"] == "fp32"
    assert result["peak_tflops"] is None and result["mfu"] is None
    assert result["steady_mfu"] is None and "--peak-tflops" in result["peak_source"]


def test_train_step_mfu_is_achieved_over_the_given_peak() -> None:
    result = step_json("--peak-tflops", "2.5")
    assert result["peak_tflops"] == 2.5 and result["peak_source"] == "--peak-tflops"
    assert result["mfu"] == pytest.approx(result["achieved_tflops"] / 2.5)
    assert result["steady_mfu"] == pytest.approx(result["steady_achieved_tflops"] / 2.5)
    step = result["flops_per_image_step"] * result["batch_size"] / result["step_s_median"]
    assert result["achieved_tflops"] == pytest.approx(step / 1e12)


@pytest.mark.parametrize(("name", "precision", "peak", "row"), [
    ("NVIDIA H100 80GB HBM3", "bf16", 989.4, "H100 SXM"),
    ("NVIDIA H100 PCIe", "bf16", 756.5, "H100 PCIe"),
    ("NVIDIA H100 NVL", "tf32", 417.5, "H100 NVL"),
    ("NVIDIA H200", "bf16", 989.4, "H200 SXM"),
    ("NVIDIA GH200 480GB", "fp16", 989.4, "GH200"),
    ("NVIDIA A100-SXM4-80GB", "bf16", 312.0, "A100"),
    ("NVIDIA A100 80GB PCIe", "tf32", 156.0, "A100"),
    ("NVIDIA A10G", "bf16", 70.0, "A10G"),
    ("NVIDIA A10", "bf16", 125.0, "A10"),
    ("NVIDIA L40S", "bf16", 362.05, "L40S"),
    ("NVIDIA L4", "fp16", 121.0, "L4"),
    ("NVIDIA GeForce RTX 4090", "bf16", 165.2, "RTX 4090"),
    ("NVIDIA GeForce RTX 3090", "tf32", 35.6, "RTX 3090"),
    ("Tesla V100-SXM2-16GB", "fp16", 125.0, "V100 SXM2"),
    ("Tesla V100-PCIE-32GB", "fp32", 14.0, "V100 PCIe"),
])
def test_peak_table_matches_device_names(monkeypatch: pytest.MonkeyPatch, name: str,
                                         precision: str, peak: float, row: str) -> None:
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda device=None: name)
    found = device_peak(torch.device("cuda"), precision)
    assert found.tflops == peak and found.source.startswith(f"{row}, {precision} dense")


def test_peak_table_unknowns_and_override(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda device=None: "Tesla V100-SXM2-16GB")
    assert device_peak(torch.device("cuda"), "bf16").tflops is None  # no bf16 tensor cores
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda device=None: "Some GPU 9000")
    assert "not in the peak table" in device_peak(torch.device("cuda"), "bf16").source
    assert device_peak(torch.device("cuda"), "bf16", override=3.0).tflops == 3.0
    assert device_peak(torch.device("cpu"), "fp32").tflops is None
    assert all(row.fp32 > 0 for row in GPU_PEAKS)


def test_compute_precision_follows_the_step(monkeypatch: pytest.MonkeyPatch) -> None:
    cpu, cuda = torch.device("cpu"), torch.device("cuda")
    assert [compute_precision(p, cpu) for p in ("32", "bf16-mixed")] == ["fp32", "bf16"]
    assert compute_precision("16-mixed", cuda) == "fp16"
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device=None: (9, 0))
    monkeypatch.setattr(torch.backends.cudnn, "allow_tf32", True)
    assert compute_precision("32", cuda) == "tf32"
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device=None: (7, 0))
    assert compute_precision("32", cuda) == "fp32"  # no TF32 before Ampere


@pytest.mark.slow
def test_sweep_throughput_runs_both_modes(tmp_path: Path) -> None:
    out = tmp_path / "sweep.json"
    result = run_json("sweep_throughput.py", "--jobs", "2", "--out", str(out), *TINY_SWEEP)
    assert result["ok"] and json.loads(out.read_text()) == result
    modes = {run["mode"]: run for run in result["runs"]}
    assert set(modes) == {"sequential", "packed"}
    for run in modes.values():
        assert run["finished"] == 2 and not run["failures"] and run["jobs_per_hour"] > 0
    assert modes["packed"]["torch_threads_per_job"]  # joblib's cap, logged by each job


@pytest.mark.slow
def test_sweep_throughput_reports_failed_jobs() -> None:
    done = subprocess.run([sys.executable, str(BENCHMARKS / "sweep_throughput.py"), "--jobs", "1",
                           "--modes", "sequential", *TINY_SWEEP, "trainer.precision=16-mixed"],
                          cwd=ROOT, capture_output=True, text=True, timeout=600, check=False)
    assert done.returncode == 1, done.stderr[-3000:]
    result = json.loads(done.stdout)
    (run,) = result["runs"]
    assert not result["ok"] and run["finished"] == 0
    assert run["failures"][0]["status"] == "failed" and "16-mixed" in run["failures"][0]["error"]
