"""GPU placement of a local sweep's jobs: slots, waiting, freeing, validation, and what a job
records of where it ran. CUDA is simulated (a GPU count, patched torch.cuda functions)."""

from __future__ import annotations

import copy
import json
import logging
import re
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
import torch
import yaml
from helpers.config import CONF_DIR, TINY, compose_config
from helpers.sweep_settings import tiny_overrides
from hydra import compose, initialize_config_dir
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, OmegaConf, open_dict, read_write

from xtask_mt.config.validate import validate_config
from xtask_mt.engine import sweep_job
from xtask_mt.errors import ConfigError
from xtask_mt.locks import is_abandoned
from xtask_mt.runtime.placement import SLOTS_DIR, GpuSlots, PlacementSettings

EIGHT_GPUS_TWO_EACH = [gpu for gpu in range(8) for _ in range(2)]


def eight_gpus_two_jobs_each(folder: Path) -> GpuSlots:
    settings = PlacementSettings.from_config({"jobs_per_gpu": 2, "gpus": "auto"})
    return GpuSlots(folder, settings.devices(8), settings.jobs_per_gpu)


def test_sixteen_jobs_fill_eight_gpus_two_each_and_a_seventeenth_waits(tmp_path, caplog):
    caplog.set_level(logging.INFO, logger="xtask_mt.runtime.placement")
    slots = eight_gpus_two_jobs_each(tmp_path)
    held = [slots.try_take(job) for job in range(16)]
    assert [h.slot.gpu for h in held] == EIGHT_GPUS_TWO_EACH
    assert [h.slot.index for h in held] == list(range(16))
    assert held[6].slot.device == "cuda:3"
    assert held[6].slot.describe() == "placed on GPU 3 (slot 6 of 16, 2 jobs per GPU)"
    assert slots.try_take(16) is None  # no slot while all are held

    got = []
    waiter = threading.Thread(target=lambda: got.append(slots.take(16, poll_s=0.02)))
    waiter.start()
    time.sleep(0.3)
    assert waiter.is_alive() and got == []
    held[5].release()
    waiter.join(timeout=10)
    assert not waiter.is_alive()
    assert (got[0].slot.index, got[0].slot.gpu) == (5, 2)  # the slot job 5 freed
    waits = [r.getMessage() for r in caplog.records if "waits for a free GPU slot" in r.message]
    assert len(waits) == 1 and "all 16 (8 GPUs x 2 jobs per GPU)" in waits[0]  # once, not per poll
    for h in [*held, *got]:
        h.release()


def test_a_job_tries_its_own_slot_first_then_any_free_one(tmp_path):
    slots = eight_gpus_two_jobs_each(tmp_path)
    first = slots.try_take(20)
    assert (first.slot.index, first.slot.gpu) == (4, 2)  # 20 % 16
    second = slots.try_take(20)
    assert (second.slot.index, second.slot.gpu) == (5, 2)
    other = slots.try_take(15)
    assert other.slot.index == 15
    for h in (first, second, other):
        h.release()
    assert slots.try_take(20).slot.index == 4


def test_listed_gpus_and_one_job_each(tmp_path):
    settings = PlacementSettings.from_config(OmegaConf.create({"jobs_per_gpu": 1,
                                                               "gpus": [2, 5]}))
    slots = GpuSlots(tmp_path, settings.devices(8), settings.jobs_per_gpu)
    held = [slots.try_take(job) for job in range(2)]
    assert [h.slot.device for h in held] == ["cuda:2", "cuda:5"]
    assert held[1].slot.describe() == "placed on GPU 5 (slot 1 of 2, 1 job per GPU)"
    assert slots.try_take(2) is None


def test_a_job_that_fails_frees_its_slot(tmp_path):
    slots = eight_gpus_two_jobs_each(tmp_path)
    with pytest.raises(RuntimeError, match="training broke"), slots.take(0) as held:
        assert held.slot.index == 0
        assert slots.try_take(0).slot.index == 1  # slot 0 is taken while the job runs
        raise RuntimeError("training broke")
    assert slots.try_take(0).slot.index == 0


_HOLDER = """
import sys, time
from pathlib import Path
from xtask_mt.runtime.placement import GpuSlots
held = GpuSlots(Path(sys.argv[1]), [0], 1).take(0)
print("holding", held.slot.device, flush=True)
time.sleep(300)
"""


def test_a_killed_job_frees_its_slot(tmp_path):
    slots = GpuSlots(tmp_path, [0], 1)
    holder = subprocess.Popen([sys.executable, "-c", _HOLDER, str(tmp_path)],
                              stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "holding cuda:0"
        assert slots.try_take(0) is None
    finally:
        holder.kill()  # SIGKILL: the job gets no chance to clean up
        holder.wait(timeout=30)
    held = slots.try_take(0)
    assert held is not None and held.slot.device == "cuda:0"
    held.release()


@pytest.mark.parametrize("node,message", [
    ({"jobs_per_gpu": 0}, "placement.jobs_per_gpu=0: expected an integer >= 1"),
    ({"jobs_per_gpu": 1.5}, "placement.jobs_per_gpu=1.5"),
    ({"jobs_per_gpu": True}, "placement.jobs_per_gpu=True"),
    ({"gpus": "all"}, "placement.gpus='all': expected auto"),
    ({"gpus": []}, "placement.gpus=[]"),
    ({"gpus": [0, 0]}, "distinct GPU indices"),
    ({"gpus": [-1]}, "GPU indices >= 0"),
    ({"gpus": [[0]]}, "placement.gpus=[[0]]"),
    ({"gpus": 3}, "e.g. 'placement.gpus=[0,1]'"),
])
def test_bad_settings_are_refused_with_key_and_value(node: dict[str, Any], message: str):
    with pytest.raises(ConfigError, match=re.escape(message)):
        PlacementSettings.from_config(node)


def test_both_bad_settings_are_named_in_one_line():
    with pytest.raises(ConfigError) as caught:
        PlacementSettings.from_config({"jobs_per_gpu": 0, "gpus": "x"})
    text = str(caught.value)
    assert "placement.jobs_per_gpu=0" in text and "placement.gpus='x'" in text
    assert "\n" not in text


def test_a_gpu_the_job_does_not_see_is_refused(monkeypatch):
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "0,1,2,3")
    settings = PlacementSettings(jobs_per_gpu=1, gpus=(1, 4, 9))
    with pytest.raises(ConfigError, match=r"names GPU\(s\) \[4, 9\] that this job does not "
                       r"see: it sees 4 GPUs \(0 to 3, CUDA_VISIBLE_DEVICES='0,1,2,3'\)"):
        settings.devices(4)
    assert settings.devices(10) == (1, 4, 9)
    with pytest.raises(ConfigError, match="sees none"):
        PlacementSettings().devices(0)


def test_validation_refuses_a_bad_placement_with_the_other_problems():
    validate_config(compose_config([*TINY, "placement.jobs_per_gpu=4",
                                    "placement.gpus=[0,1]"]))
    with pytest.raises(ConfigError) as caught:
        validate_config(compose_config([*TINY, "placement.jobs_per_gpu=0", "loss.alpha=2"]))
    assert "placement.jobs_per_gpu=0" in str(caught.value) and "loss.alpha=2" in str(caught.value)


# --- a sweep job: where it runs and what it records --------------------------------------


@contextmanager
def hydra_job(sweep: Path, overrides: list[str], launcher: str = "local_parallel",
              num: int = 0, mode: str = "MULTIRUN") -> Iterator[tuple[DictConfig, Path]]:
    """The job config and output dir of job `num` of a sweep into `sweep`, with Hydra's job
    context set as a launcher sets it (its .hydra/config.yaml written)."""
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        full = compose("config", return_hydra_config=True, overrides=[
            *overrides, f"hydra/launcher={launcher}", f"hydra.sweep.dir={sweep}",
            f"hydra.job.num={num}", f"hydra.mode={mode}"])
    HydraConfig.instance().set_config(full)
    cfg = copy.deepcopy(full)
    with read_write(cfg), open_dict(cfg):
        del cfg["hydra"]
    output_dir = sweep / str(num)
    (output_dir / ".hydra").mkdir(parents=True)
    OmegaConf.save(cfg, output_dir / ".hydra" / "config.yaml")
    try:
        yield cfg, output_dir
    finally:
        HydraConfig.instance().cfg = None


class FakeCuda:
    """torch.cuda as a machine with `count` GPUs shows it, recording the device choices."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch, count: int) -> None:
        self.devices: list[int] = []
        self.emptied = 0
        monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
        monkeypatch.setattr(torch.cuda, "device_count", lambda: count)
        monkeypatch.setattr(torch.cuda, "set_device", self.devices.append)
        monkeypatch.setattr(torch.cuda, "empty_cache", self._empty)

    def _empty(self) -> None:
        self.emptied += 1


def fake_training(monkeypatch: pytest.MonkeyPatch, sweep: Path, fail: bool = False
                  ) -> list[tuple[str, bool]]:
    """Replace training: record the device it was given and whether GPU 3's first slot was
    held meanwhile; raise when `fail`."""
    seen: list[tuple[str, bool]] = []

    def train(cfg: DictConfig, output_dir: Path) -> dict[str, Any]:
        lock = sweep / SLOTS_DIR / "gpu3-0.lock"
        seen.append((str(cfg.trainer.device), lock.exists() and not is_abandoned(lock)))
        if fail:
            raise RuntimeError("loss is NaN")
        return {"best": {}}

    monkeypatch.setattr(sweep_job, "train", train)
    return seen


def job_record(output_dir: Path) -> dict[str, Any]:
    return json.loads((output_dir / sweep_job.STATUS_FILE).read_text())


@pytest.mark.parametrize("launcher", ["basic", "local_parallel", "local_submitit"])
def test_a_local_sweep_job_trains_on_its_slots_gpu_and_records_it(launcher, tmp_path,
                                                                  monkeypatch, caplog):
    caplog.set_level(logging.INFO, logger="xtask_mt.engine.sweep_job")
    cuda = FakeCuda(monkeypatch, count=8)
    seen = fake_training(monkeypatch, tmp_path)
    with hydra_job(tmp_path, ["trainer.device=auto", "placement.jobs_per_gpu=2"], launcher,
                   num=6) as (cfg, output_dir):
        sweep_job.run_training_job(cfg, output_dir)
    assert cuda.devices == [3] and seen == [("cuda:3", True)]
    assert job_record(output_dir)["device"] == "cuda:3" and job_record(output_dir)["slot"] == 6
    saved = yaml.safe_load((output_dir / ".hydra" / "config.yaml").read_text())
    assert saved["trainer"]["device"] == "cuda:3"  # what W&B and a report read
    assert "placed on GPU 3 (slot 6 of 16, 2 jobs per GPU)" in caplog.messages
    assert is_abandoned(tmp_path / SLOTS_DIR / "gpu3-0.lock")  # released at the end
    assert cuda.emptied == 1


@pytest.mark.parametrize("launcher,mode,device", [
    ("slurm", "MULTIRUN", "auto"),            # a SLURM job has its own GPU
    ("local_parallel", "RUN", "auto"),        # a single run
    ("local_parallel", "MULTIRUN", "cuda:1"),  # a device chosen by the user
])
def test_jobs_outside_local_sweeps_keep_their_device(launcher, mode, device, tmp_path,
                                                     monkeypatch):
    cuda = FakeCuda(monkeypatch, count=8)
    seen = fake_training(monkeypatch, tmp_path)
    with hydra_job(tmp_path, [f"trainer.device={device}"], launcher, num=6,
                   mode=mode) as (cfg, output_dir):
        sweep_job.run_training_job(cfg, output_dir)
    assert cuda.devices == [] and seen == [(device, False)]
    assert not (tmp_path / SLOTS_DIR).exists()
    record = job_record(output_dir)
    assert record["device"] == ("cuda" if device == "auto" else device) and "slot" not in record


def test_a_failed_placed_job_frees_its_slot_and_records_where_it_ran(tmp_path, monkeypatch):
    FakeCuda(monkeypatch, count=8)
    fake_training(monkeypatch, tmp_path, fail=True)
    with hydra_job(tmp_path, ["placement.jobs_per_gpu=1"], num=3) as (cfg, output_dir), \
            pytest.raises(RuntimeError, match="loss is NaN"):
        sweep_job.run_training_job(cfg, output_dir)
    record = job_record(output_dir)
    assert (record["status"], record["device"], record["slot"]) == ("failed", "cuda:3", 3)
    assert is_abandoned(tmp_path / SLOTS_DIR / "gpu3-0.lock")


def test_a_gpu_the_machine_lacks_fails_the_job_with_the_reason(tmp_path, monkeypatch):
    FakeCuda(monkeypatch, count=2)
    seen = fake_training(monkeypatch, tmp_path)
    with hydra_job(tmp_path, ["placement.gpus=[1,3]"]) as (cfg, output_dir), \
            pytest.raises(ConfigError, match=r"names GPU\(s\) \[3\]"):
        sweep_job.run_training_job(cfg, output_dir)
    assert seen == []
    record = job_record(output_dir)
    assert record["status"] == "failed" and "placement.gpus=[1, 3]" in record["error"]


def test_a_cpu_multirun_job_records_its_device(tmp_path):
    """A real tiny training job of a local sweep on the CPU: not placed, device recorded."""
    with hydra_job(tmp_path, tiny_overrides(**{"trainer.device": "auto"}),
                   num=1) as (cfg, output_dir):
        if torch.cuda.is_available():
            pytest.skip("this machine has CUDA: the job would be placed on a GPU")
        sweep_job.run_training_job(cfg, output_dir)
    record = job_record(output_dir)
    assert (record["status"], record["device"]) == ("finished", "cpu") and "slot" not in record
    assert (output_dir / "metrics.json").is_file()
    assert not (tmp_path / SLOTS_DIR).exists()
    saved = yaml.safe_load((output_dir / ".hydra" / "config.yaml").read_text())
    assert saved["trainer"]["device"] == "auto"
