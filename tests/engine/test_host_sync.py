"""The training step leaves the device alone: no host synchronisation inside it, the
non-finite check deferred to every trainer.sync_every steps and still as strict, and the
compiled step equal to the eager one."""

from __future__ import annotations

import copy
import os
import sys
from collections import Counter
from pathlib import Path

import pytest
import torch
from helpers.config import TINY, compose_config
from torch.utils.data import default_collate

import xtask_mt
from xtask_mt.config.build import (
    build_dataset,
    build_model,
    build_objective,
    build_optimizer,
    build_weighting,
)
from xtask_mt.config.validate import validate_config
from xtask_mt.engine.checkpoint import load_checkpoint
from xtask_mt.engine.loops import EpochSettings, train_one_epoch
from xtask_mt.engine.step import NonFiniteLossError, NonFiniteWatch, TrainingParts, train_step
from xtask_mt.engine.trainer import resolve_sync_every, train
from xtask_mt.errors import ConfigError
from xtask_mt.losses import TaskObjective
from xtask_mt.runtime.precision import StepOptions, maybe_compile

CPU = torch.device("cpu")
PROJECT = str(Path(xtask_mt.__file__).parent)
# what makes the host wait for the device when the tensor lives on a GPU
SYNCING = ("item", "tolist", "cpu", "numpy", "__bool__", "__float__", "__int__", "__index__")


def _parts(overrides: list[str]) -> tuple[TrainingParts, dict[str, torch.Tensor]]:
    cfg = compose_config(TINY + overrides)
    torch.manual_seed(0)
    dataset = build_dataset(cfg, "train")
    batch = default_collate([dataset[i] for i in range(2)])
    model = build_model(cfg, dataset.num_classes)
    weighting = build_weighting(cfg, model.tasks)
    parts = TrainingParts(model, model, build_objective(cfg), weighting,
                          build_optimizer(cfg, model, weighting), StepOptions(CPU))
    parts.runner.train()
    return parts, batch


@pytest.fixture
def sync_calls(monkeypatch) -> Counter:
    """Counts the synchronising tensor calls made from the project's own code."""
    calls: Counter = Counter()

    def counting(name: str):
        original = getattr(torch.Tensor, name)

        def wrapper(self, *args, **kwargs):
            caller = sys._getframe(1).f_code.co_filename
            if caller.startswith(PROJECT):
                calls[f"{name} in {Path(caller).name}"] += 1
            return original(self, *args, **kwargs)

        return wrapper

    for name in SYNCING:
        monkeypatch.setattr(torch.Tensor, name, counting(name))
    return calls


@pytest.mark.parametrize("weighting", ["fixed", "uncertainty"])
def test_a_step_with_a_watch_makes_no_host_sync(sync_calls, weighting):
    parts, batch = _parts([f"weighting={weighting}"])
    watch = NonFiniteWatch(CPU)
    for step in range(2):
        result = train_step(parts, batch, step, watch=watch)
    assert result.applied
    assert not sync_calls, dict(sync_calls)


def test_the_sync_counter_sees_the_immediate_check(sync_calls):
    """Without a watch the step looks at its loss at once: the counter must see that."""
    parts, batch = _parts([])
    train_step(parts, batch, 0)
    assert sum(sync_calls.values()) >= 1


def test_the_watch_names_the_first_non_finite_step_and_its_terms():
    parts, batch = _parts([])
    watch = NonFiniteWatch(CPU)
    objective = parts.objective

    def poisoned_at(bad: set[int], step: int):
        def compute(out, batch):
            result = objective(out, batch)
            if step in bad:
                result.terms["depth"] = result.terms["depth"] * float("inf")
                result.tasks["depth"] = result.terms["depth"]
            return result
        return compute

    for step in range(5):
        parts.objective = poisoned_at({3, 4}, step)
        train_step(parts, batch, step, watch=watch)
        if step < 3:
            watch.check()  # nothing wrong yet
    with pytest.raises(NonFiniteLossError, match=r"step 3: depth = inf\b"):
        watch.check()


def _poison_training_calls(monkeypatch, first_bad: int) -> dict[str, int]:
    """Training forward passes number first_bad (0-based) and later get a NaN depth loss."""
    original = TaskObjective.__call__
    calls = {"n": 0}

    def poisoned(self, out, batch):
        result = original(self, out, batch)
        if out["seg"].requires_grad:  # a training step, not validation
            if calls["n"] >= first_bad:
                result.terms["depth"] = result.terms["depth"] * float("nan")
                result.tasks["depth"] = result.terms["depth"]
            calls["n"] += 1
        return result

    monkeypatch.setattr(TaskObjective, "__call__", poisoned)
    return calls


def test_a_deferred_non_finite_step_stops_with_its_number_and_the_last_good_checkpoint(
        tmp_path, monkeypatch):
    """4 steps an epoch; the check every 3 steps. Epoch 1 (steps 0-3) is good; step 5 is
    NaN, seen at the look after step 6, before anything of epoch 2 is saved."""
    cfg = compose_config(TINY + ["trainer.epochs=2", "dataset.train_size=8",
                                 "dataset.batch_size=2", "trainer.sync_every=3"])
    calls = _poison_training_calls(monkeypatch, first_bad=5)
    with pytest.raises(NonFiniteLossError, match=r"step 5: depth = nan"):
        train(cfg, tmp_path)
    assert calls["n"] == 7  # found at the look after epoch 2's third step (step 6)
    kept = load_checkpoint(tmp_path / "checkpoints" / "last.pt")
    assert kept["epoch"] == 1
    assert all(torch.isfinite(v).all() for v in kept["model"].values() if v.is_floating_point())


def test_a_non_finite_step_is_caught_at_the_epoch_end_and_before_a_stop_is_saved(
        monkeypatch):
    cfg = compose_config(TINY + ["dataset.train_size=8", "dataset.batch_size=2"])
    loader = torch.utils.data.DataLoader(build_dataset(cfg, "train"), batch_size=2)
    calls = _poison_training_calls(monkeypatch, first_bad=1)
    parts, _ = _parts([])
    with pytest.raises(NonFiniteLossError, match=r"step 1: depth"):  # no look before the end
        train_one_epoch(parts, loader, EpochSettings(progress_bar=False, sync_every=100))
    assert calls["n"] == 4
    calls["n"] = 0
    parts, _ = _parts([])
    with pytest.raises(NonFiniteLossError, match=r"step 1: depth"):  # no partial epoch kept
        train_one_epoch(parts, loader, EpochSettings(
            progress_bar=False, sync_every=100, stop_requested=lambda: calls["n"] >= 2))
    assert calls["n"] == 2


def test_skip_nonfinite_still_skips_each_bad_step_with_a_deferred_sync(tmp_path, monkeypatch):
    cfg = compose_config(TINY + ["dataset.train_size=8", "dataset.batch_size=2",
                                 "trainer.sync_every=3", "trainer.skip_nonfinite=true"])
    _poison_training_calls(monkeypatch, first_bad=2)
    summary = train(cfg, tmp_path)
    assert summary["skipped_nonfinite"] == 2  # steps 2 and 3 of 4
    assert all(torch.isfinite(torch.tensor(v)) for v in summary["final"].values())


def test_sync_every_auto_and_its_validation():
    assert resolve_sync_every("auto", CPU) == 1
    assert resolve_sync_every("auto", torch.device("cuda")) == 50
    assert resolve_sync_every(7, CPU) == 7
    for bad in ("0", "often"):
        with pytest.raises(ConfigError, match="trainer.sync_every"):
            validate_config(compose_config(TINY + [f"trainer.sync_every={bad}"]))


LARGER = ["dataset.height=64", "dataset.width=128"]


def _relative_difference(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> float:
    """||a - b|| / ||b|| over all tensors together."""
    num = sum(float((a[k].double() - b[k].double()).norm() ** 2) for k in b)
    return (num / sum(float(v.double().norm() ** 2) for v in b.values())) ** 0.5


def _two_steps(parts: TrainingParts, batch: dict[str, torch.Tensor]):
    totals = [train_step(parts, batch, step, watch=NonFiniteWatch(CPU)).losses
              for step in range(2)]
    return ([{k: float(v.detach()) for k, v in losses.terms.items()} for losses in totals],
            {n: p.detach().clone() for n, p in _parameters(parts)})


def _parameters(parts: TrainingParts) -> list[tuple[str, torch.nn.Parameter]]:
    return [*parts.model.named_parameters(), *parts.weighting.named_parameters()]


INDUCTOR = pytest.param("inductor", marks=pytest.mark.skipif(
    os.environ.get("XTASK_MT_TEST_INDUCTOR") != "1",
    reason="inductor generates C++ for 2-4 minutes on 2 cores; XTASK_MT_TEST_INDUCTOR=1 runs it"))


@pytest.mark.slow
@pytest.mark.parametrize("backend", ["aot_eager", INDUCTOR])
def test_the_compiled_step_gives_the_eager_losses_and_parameters(backend):
    """Two whole steps (forward, losses, uncertainty weighting, backward, SGD) through
    torch.compile give the eager step's losses and parameters (rel 1e-4), and updates as
    close to an fp64 run's as the eager updates are. SGD, not Adam: Adam's first steps
    move a parameter by about lr x sign(gradient), so a gradient near zero turns a rounding
    difference into a whole step. aot_eager checks graph capture and autograd through
    torch.compile; inductor also its generated kernels."""
    eager, batch = _parts(["weighting=uncertainty", "optimizer=sgd", *LARGER])
    initial = {n: p.detach().clone() for n, p in _parameters(eager)}
    compiled = copy.deepcopy(eager)  # model, weighting and optimizer copied together
    compiled.runner = maybe_compile(compiled.model, True, backend=backend)
    reference = copy.deepcopy(eager)
    reference.model.double()
    reference.weighting.double()
    eager_losses, eager_params = _two_steps(eager, batch)
    compiled_losses, compiled_params = _two_steps(compiled, batch)
    _, reference_params = _two_steps(
        reference, {k: v.double() if v.is_floating_point() else v for k, v in batch.items()})
    for got, want in zip(compiled_losses, eager_losses, strict=True):
        assert got == pytest.approx(want, rel=1e-4)
    assert eager_params.keys() == compiled_params.keys()
    assert _relative_difference(compiled_params, eager_params) < 1e-4

    def update_error(params: dict[str, torch.Tensor]) -> float:
        return _relative_difference({n: params[n] - initial[n] for n in initial},
                                    {n: reference_params[n] - initial[n] for n in initial})

    assert update_error(compiled_params) < 3 * update_error(eager_params) + 1e-6
    assert sum(not torch.equal(eager_params[n], initial[n]) for n in initial) > len(initial) / 2
