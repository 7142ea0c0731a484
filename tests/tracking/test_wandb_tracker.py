"""The W&B tracker in offline mode, read back from the files W&B wrote (no network)."""

from __future__ import annotations

import logging

import pytest
import torch
from helpers.config import compose_config
from helpers.sweep_settings import tiny_overrides
from helpers.wandb_files import offline_runs
from omegaconf import OmegaConf

from xtask_mt.engine import trainer as training
from xtask_mt.tracking import Tracker, build_tracker


@pytest.fixture(autouse=True)
def one_thread():
    """Tiny models train several times faster on one thread when the CPU is shared."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture
def offline(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")


def wandb_cfg(**changes: object):
    return compose_config(tiny_overrides(**{"logger": "wandb", "logger.mode": "offline",
                                            **changes}))


def test_training_run_is_logged_and_resumable(tmp_path, offline) -> None:
    cfg = wandb_cfg(logger__samples=1, logger__group="unit", logger__tags="[a,b]")
    training.train(cfg, tmp_path / "job")

    (run,) = offline_runs(tmp_path / "job")
    assert run.exit_code == 0
    assert run.name == "job" and run.group == "unit" and run.job_type == "train"
    logged = {k: v for k, v in run.config.items() if k != "_wandb"}
    assert logged == OmegaConf.to_container(cfg, resolve=True)
    rows = [r for r in run.history if "val/miou" in r]
    assert len(rows) == 1 and rows[0]["epoch"] == 1
    for key in ("train/loss_seg", "train/loss_seg_to_depth", "train/task_depth", "train/weight_seg",
                "train/lr", "val/abs_err"):
        assert key in rows[0], key
    (images,) = [r for r in run.history if "samples/seg_0/_type" in r]
    assert images["epoch"] == 1 and images["samples/depth_0/_type"] == "image-file"
    masks = {k.split("/")[3] for k in images if k.startswith("samples/seg_0/masks/")}
    assert masks == {"direct", "depth_to_seg", "ground_truth"}
    (files,) = (tmp_path / "job" / "wandb").glob("offline-run-*/files")
    assert (files / images["samples/seg_0/path"]).is_file()
    assert (files / images["samples/seg_0/masks/ground_truth/path"]).is_file()
    assert run.summary["val/miou"] == rows[0]["val/miou"]
    assert run.summary["best/val/miou"] == rows[0]["val/miou"]

    ckpt = torch.load(tmp_path / "job" / "checkpoints" / "last.pt", weights_only=True)
    assert ckpt["wandb_run_id"] == run.run_id

    tracker = build_tracker(cfg, tmp_path / "resumed", resume_id=ckpt["wandb_run_id"])
    tracker.log({"val/miou": 0.5}, step=2)
    tracker.finish(0)
    (resumed,) = offline_runs(tmp_path / "resumed")
    assert resumed.run_id == run.run_id
    assert [r["epoch"] for r in resumed.history if "val/miou" in r] == [2]


def test_resumed_job_continues_the_same_run(tmp_path, offline) -> None:
    """trainer.resume=auto hands the checkpoint's run id to W&B: one run, continued."""
    training.train(wandb_cfg(trainer__epochs=1), tmp_path / "job")
    training.train(wandb_cfg(trainer__epochs=2), tmp_path / "job")
    first, second = offline_runs(tmp_path / "job")
    assert second.run_id == first.run_id
    assert [r["epoch"] for r in second.history if "val/miou" in r] == [2]


def test_failing_training_marks_the_run_failed(tmp_path, offline, monkeypatch) -> None:
    def broken_epoch(*args, **kwargs):
        raise RuntimeError("boom")

    monkeypatch.setattr(training, "train_one_epoch", broken_epoch)
    with pytest.raises(RuntimeError, match="boom"):
        training.train(wandb_cfg(), tmp_path)
    (run,) = offline_runs(tmp_path)
    assert run.exit_code not in (0, None)


def test_wandb_that_cannot_start_never_stops_training(tmp_path, offline, monkeypatch,
                                                       caplog) -> None:
    import wandb

    def unreachable(*args, **kwargs):
        raise TimeoutError("no answer from W&B")

    monkeypatch.setattr(wandb, "init", unreachable)
    with caplog.at_level(logging.WARNING):
        tracker = build_tracker(wandb_cfg(), tmp_path)
    assert type(tracker) is Tracker
    assert "W&B could not start (TimeoutError" in caplog.text


def test_disabled_mode_and_bad_mode(tmp_path, monkeypatch) -> None:
    monkeypatch.delenv("WANDB_MODE", raising=False)
    assert type(build_tracker(wandb_cfg(logger__mode="disabled"), tmp_path)) is Tracker
    with pytest.raises(ValueError, match="logger.mode or WANDB_MODE"):
        build_tracker(wandb_cfg(logger__mode="ofline"), tmp_path)
    assert not (tmp_path / "wandb").exists()


class _BrokenRun:
    """A run whose logging breaks mid-training (e.g. W&B's service died)."""

    id, dir = "broken1", None

    def __init__(self) -> None:
        self.summary: dict = {}
        self.exit_codes: list[int] = []

    def define_metric(self, *args, **kwargs) -> None:
        pass

    def log(self, values: dict, step: int | None = None) -> None:
        raise ConnectionError("service gone")

    def finish(self, exit_code: int = 0) -> None:
        self.exit_codes.append(exit_code)


def test_wandb_failing_mid_run_warns_once(caplog) -> None:
    from xtask_mt.tracking.wandb_run import WandbTracker

    run = _BrokenRun()
    tracker = WandbTracker(run, samples=0)
    with caplog.at_level(logging.WARNING):
        for epoch in (1, 2, 3):
            tracker.log({"val/miou": 0.1 * epoch}, step=epoch)
    assert caplog.text.count("W&B log failed (ConnectionError") == 1
    tracker.finish(1)
    assert run.exit_codes == [1]


def test_a_sweep_waits_for_an_unreachable_wandb_only_once(tmp_path, monkeypatch,
                                                           caplog) -> None:
    """Online W&B that does not answer (an API key, no network): the first job falls back to
    offline after its wait and leaves a marker in the sweep dir; later jobs go offline at
    once instead of each waiting init_timeout."""
    import wandb

    from xtask_mt.tracking import wandb_run

    monkeypatch.setattr(wandb, "login", lambda **kwargs: True)  # credentials are set up
    monkeypatch.setenv("WANDB_SILENT", "true")
    monkeypatch.delenv("WANDB_MODE", raising=False)
    sweep = tmp_path / "sweep"
    sweep.mkdir()
    monkeypatch.setattr(wandb_run, "_unreachable_marker", lambda: sweep / ".wandb_unreachable")
    asked, real_init = [], wandb.init

    def no_network(*args, mode, **kwargs):
        asked.append(mode)
        if mode == "online":
            raise TimeoutError("no answer from W&B within init_timeout")
        return real_init(*args, mode=mode, **kwargs)

    monkeypatch.setattr(wandb, "init", no_network)
    cfg = wandb_cfg(logger__mode="online")
    with caplog.at_level(logging.WARNING):
        for job in ("0", "1"):
            tracker = build_tracker(cfg, sweep / job)
            assert type(tracker) is not Tracker  # logging offline, not lost
            tracker.finish(0)
    assert asked == ["online", "offline", "offline"]
    assert "earlier job of this sweep could not reach W&B" in caplog.text
    assert [len(offline_runs(sweep / job)) for job in ("0", "1")] == [1, 1]


class _MediaBreaks(_BrokenRun):
    """A run that takes scalars but fails on images and tables (e.g. a media upload error)."""

    def __init__(self) -> None:
        super().__init__()
        self.logged: list[dict] = []

    def log(self, values: dict, step: int | None = None) -> None:
        if any(k.startswith("samples/") or k.startswith("val/per_class") for k in values):
            raise OSError("media upload failed")
        self.logged.append(values)


def test_failed_media_logging_does_not_stop_scalars_or_summary(caplog) -> None:
    from xtask_mt.tracking.wandb_run import WandbTracker

    run = _MediaBreaks()
    tracker = WandbTracker(run, samples=0)
    with caplog.at_level(logging.WARNING):
        for epoch in (1, 2):
            tracker.log_class_iou(["a", "b"], [0.5, float("nan")], step=epoch)
            tracker.log({"val/miou": 0.1 * epoch}, step=epoch)
            tracker.summarise([{"epoch": epoch, "val/miou": 0.1 * epoch}],
                              {"val/miou": 0.1 * epoch}, epoch)
    assert caplog.text.count("W&B table logging failed (OSError") == 1
    assert [v["epoch"] for v in run.logged] == [1, 2]
    assert run.summary["best/epoch"] == 2


def test_a_failing_summary_or_job_context_never_escapes(tmp_path, offline, monkeypatch,
                                                          caplog) -> None:
    from xtask_mt.tracking import wandb_run

    def broken(*args, **kwargs):
        raise KeyError("hydra")

    monkeypatch.setattr(wandb_run, "job_context", broken)
    monkeypatch.setattr(wandb_run, "summary_values", broken)
    with caplog.at_level(logging.WARNING):
        tracker = build_tracker(wandb_cfg(logger__samples=0), tmp_path)
        tracker.summarise([{"epoch": 1, "val/miou": 0.5}], {"val/miou": 0.5}, 1)
        tracker.finish(0)
    assert type(tracker) is not Tracker  # the run started, named after the output dir
    assert "could not be read from the Hydra job (KeyError" in caplog.text
    assert "W&B summary failed (KeyError" in caplog.text
    assert offline_runs(tmp_path)[0].name == tmp_path.name


def test_bad_tags_are_cut_to_what_wandb_takes() -> None:
    from xtask_mt.tracking.wandb_run import _user_tags

    assert _user_tags("mine") == ["mine"]
    assert _user_tags(["", "x" * 70, "ok"]) == ["x" * 64, "ok"]
    assert _user_tags(None) == []
