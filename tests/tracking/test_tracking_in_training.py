"""What the trainer hands a tracker, and when: an epoch is sent only once its checkpoints are
written, and a sample preview that cannot be drawn never stops training."""

from __future__ import annotations

import logging
from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np
import pytest
import torch
from helpers.config import compose_config
from helpers.sweep_settings import tiny_overrides

from xtask_mt.engine import trainer as training
from xtask_mt.tracking import Tracker
from xtask_mt.tracking.previews import sample_previews


class _Recording(Tracker):
    """Records each call as (what, step) in a list shared with the patched checkpoint save."""

    sample_count = 1

    def __init__(self, events: list[tuple[str, int]]) -> None:
        self.events = events
        self.best_epoch: int | None = None

    def log(self, values: dict[str, float], step: int) -> None:
        self.events.append(("log", step))

    def log_samples(self, samples: dict[str, Any], step: int) -> None:
        self.events.append(("samples", step))

    def log_class_iou(self, class_names: Sequence[str], iou: Sequence[float], step: int
                      ) -> None:
        self.events.append(("table", step))

    def summarise(self, history: Sequence[dict[str, Any]], best: dict[str, float],
                  best_epoch: int) -> None:
        self.events.append(("summary", history[-1]["epoch"]))
        self.best_epoch = best_epoch


@pytest.fixture(autouse=True)
def one_thread() -> Iterator[None]:
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture
def events(monkeypatch: pytest.MonkeyPatch) -> list[tuple[str, int]]:
    """The tracker's calls and checkpoint writes of a training job, in order."""
    recorded: list[tuple[str, int]] = []
    real_save = training.save

    def save(run: training.Run, names: tuple[str, ...]) -> None:
        real_save(run, names)
        recorded.append(("save", run.progress.epoch))

    monkeypatch.setattr(training, "save", save)
    monkeypatch.setattr(training, "build_tracker", lambda *a, **k: _Recording(recorded))
    return recorded


def test_a_resumed_job_starts_from_the_saved_summary(tmp_path, monkeypatch) -> None:
    """A job resumed with no epoch left to train still knows the best epoch (for the summary
    and the checkpoint artifact's metadata), instead of starting at 0."""
    cfg = compose_config(tiny_overrides(trainer__keep_checkpoints="all"))
    training.train(cfg, tmp_path)
    trackers: list[_Recording] = []
    monkeypatch.setattr(training, "build_tracker",
                        lambda *a, **k: trackers.append(_Recording([])) or trackers[-1])
    training.train(cfg, tmp_path)
    (tracker,) = trackers
    assert tracker.best_epoch == 1 and tracker.events == [("summary", 1)]


def test_an_epoch_is_tracked_only_after_its_checkpoints_are_written(tmp_path, events) -> None:
    training.train(compose_config(tiny_overrides(trainer__epochs=2)), tmp_path)
    for epoch in (1, 2):
        saved = events.index(("save", epoch))
        tracked = [i for i, (what, step) in enumerate(events) if step == epoch and what != "save"]
        assert sorted({events[i][0] for i in tracked}) == ["log", "samples", "summary", "table"]
        assert min(tracked) > saved, events


def test_previews_that_cannot_be_drawn_only_warn(tmp_path, events, monkeypatch,
                                                 caplog) -> None:
    def broken(*args: Any, **kwargs: Any) -> list:
        raise IndexError("a colour out of the table")

    monkeypatch.setattr(training, "validation_previews", broken)
    with caplog.at_level(logging.WARNING):
        training.train(compose_config(tiny_overrides()), tmp_path)
    assert "no validation sample images for epoch 1 (IndexError" in caplog.text
    assert ("log", 1) in events and ("samples", 1) not in events


def test_a_nan_depth_prediction_previews_black() -> None:
    """A diverged model's NaN depth used to index the colour table with a garbage integer."""
    from xtask_mt.config.build import build_model

    cfg = compose_config(tiny_overrides())
    model = build_model(cfg, 7).eval()
    batch = {"image": torch.zeros(1, 3, 32, 32), "seg": torch.zeros(1, 32, 32, dtype=torch.long),
             "depth": torch.ones(1, 1, 32, 32), "depth_mask": torch.ones(1, 1, 32, 32,
                                                                         dtype=torch.bool)}
    with torch.no_grad():
        outputs = model(batch["image"])
    outputs = {k: torch.full_like(v, float("nan")) if "depth" in k.split("_")[-1] else v
               for k, v in outputs.items()}
    (preview,) = sample_previews(batch, outputs, model, 7, count=1)
    direct = preview.tasks["depth"].layers["direct"]
    assert direct.shape == (32, 32, 3) and not np.any(direct)
