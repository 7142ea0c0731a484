"""One training epoch and one evaluation pass; they know no dataset and no config."""

from __future__ import annotations

import logging
import math
from collections import defaultdict
from collections.abc import Callable, Iterable
from dataclasses import dataclass

import torch
from torch import nn
from tqdm.auto import tqdm

from xtask_mt.engine.distributed import all_reduce_sum_, any_process, average_gradients_
from xtask_mt.engine.precision import StepOptions
from xtask_mt.errors import UserError
from xtask_mt.losses import CrossTaskLoss
from xtask_mt.metrics import MultiTaskMetrics
from xtask_mt.weighting import TaskWeighting

log = logging.getLogger(__name__)


class NonFiniteLossError(UserError):
    """A loss became NaN or inf; training stops rather than continue silently."""


def to_device(batch: dict[str, torch.Tensor], device: torch.device) -> dict[str, torch.Tensor]:
    non_blocking = device.type == "cuda"
    return {k: v.to(device, non_blocking=non_blocking) for k, v in batch.items()}


class _Averages:
    """Running means of scalar tensors, synchronised with the host only once at the end."""

    def __init__(self) -> None:
        self.sums: dict[str, torch.Tensor] = {}
        self.counts: dict[str, int] = defaultdict(int)

    def add(self, values: dict[str, torch.Tensor]) -> None:
        for k, v in values.items():
            v = v.detach().float()
            self.sums[k] = self.sums[k] + v if k in self.sums else v
            self.counts[k] += 1

    def result(self) -> dict[str, float]:
        """Means over all batches of all processes (each process's sums and counts added)."""
        keys = sorted(self.sums)
        if not keys:
            return {}
        sums = torch.stack([self.sums[k] for k in keys]).double()
        counts = torch.tensor([self.counts[k] for k in keys], dtype=torch.float64,
                              device=sums.device)
        all_reduce_sum_([sums, counts])
        return {k: float(s / c) for k, s, c in zip(keys, sums, counts, strict=True)}


def raise_non_finite(total: torch.Tensor, terms: dict[str, torch.Tensor], step: int) -> None:
    """Raise NonFiniteLossError naming the step and the non-finite loss terms."""
    values = {k: float(v.detach()) for k, v in terms.items()}
    bad = [k for k, v in values.items() if not math.isfinite(v)]
    described = ", ".join(f"{k} = {values[k]}" for k in bad) or "total (task weighting)"
    raise NonFiniteLossError(
        f"non-finite loss at training step {step}: {described}. Lower optimizer.lr or check the "
        "data; the last good checkpoint is kept.")


@dataclass
class EpochResult:
    """What one (possibly partial) training epoch did."""

    stats: dict[str, float]
    steps_done: int  # steps of this epoch completed so far, skipped ones included
    skipped_nonfinite: int = 0
    stopped: bool = False


def train_one_epoch(model: nn.Module, loader: Iterable, criterion: CrossTaskLoss,
                    weighting: TaskWeighting, optimizer: torch.optim.Optimizer,
                    device: torch.device, first_step: int = 0, description: str = "train",
                    progress_bar: bool = True, skip_steps: int = 0,
                    skip_nonfinite: bool = False,
                    stop_requested: Callable[[], bool] = lambda: False,
                    options: StepOptions | None = None,
                    scaler: torch.amp.GradScaler | None = None) -> EpochResult:
    """Train for one pass over `loader` with one backward pass per step.

    `model` may be wrapped (DDP, torch.compile). The forward pass runs under the autocast of
    `options`; losses are computed outside it in fp32. `scaler` scales fp16 losses.
    `skip_steps` batches are drawn but not trained on (resuming inside an epoch). A
    non-finite loss raises NonFiniteLossError, or with `skip_nonfinite` skips the batch.
    `stop_requested` is polled after every step; when it turns true (on any process) the
    epoch ends early. Stats: mean loss terms (`loss_*`), task losses (`task_*`), total.
    """
    options = options or StepOptions(device)
    model.train()
    weighting.train()
    averages = _Averages()
    skipped = 0
    steps_done = 0
    bar = tqdm(loader, desc=description, leave=False, disable=not progress_bar,
               dynamic_ncols=True)
    for i, batch in enumerate(bar):
        steps_done = i + 1
        if i < skip_steps:
            continue
        batch = to_device(batch, device)
        optimizer.zero_grad(set_to_none=True)
        with options.autocast():
            out = model(options.image(batch["image"]))
        losses = criterion(out, batch)
        total = weighting.combine(losses.tasks)
        if any_process(not torch.isfinite(total)):
            if not skip_nonfinite:
                raise_non_finite(total, losses.terms, first_step + i)
            skipped += 1
            log.warning("skipping batch at step %d: non-finite loss", first_step + i)
            optimizer.zero_grad(set_to_none=True)
        else:
            if scaler is None:
                total.backward()
                average_gradients_(weighting.parameters())
                optimizer.step()
            else:
                scaler.scale(total).backward()
                average_gradients_(weighting.parameters())
                scaler.step(optimizer)
                scaler.update()
            weighting.after_step()
            averages.add({**{f"loss_{k}": v for k, v in losses.terms.items()},
                          **{f"task_{k}": v for k, v in losses.tasks.items()}, "total": total})
            if progress_bar:
                bar.set_postfix(loss=f"{float(total.detach()):.4f}", refresh=False)
        if any_process(stop_requested()):
            return EpochResult(averages.result(), steps_done, skipped, stopped=True)
    return EpochResult(averages.result(), steps_done, skipped)


@torch.no_grad()
def evaluate(model: nn.Module, loader: Iterable, criterion: CrossTaskLoss, num_classes: int,
             device: torch.device, description: str = "val",
             progress_bar: bool = True, options: StepOptions | None = None,
             metrics: MultiTaskMetrics | None = None,
             on_batch: Callable[[dict[str, torch.Tensor], dict[str, torch.Tensor]], None]
             | None = None) -> dict[str, float]:
    """Metrics over the whole loader plus the mean loss terms (`loss_*`).

    Pass `metrics` to read more from the accumulator afterwards (per-class IoU), and
    `on_batch(batch, outputs)` to keep predictions or samples as they pass.
    Under DDP each process sees its shard of the set; the metric sums (confusion matrix,
    error sums, pixel counts) are added over processes before the figures are computed.
    """
    options = options or StepOptions(device)
    model.eval()
    metrics = metrics if metrics is not None else MultiTaskMetrics(num_classes, device=device)
    averages = _Averages()
    for batch in tqdm(loader, desc=description, leave=False, disable=not progress_bar,
                      dynamic_ncols=True):
        batch = to_device(batch, device)
        with options.autocast():
            out = model(options.image(batch["image"]))
        metrics.update(out, batch)
        averages.add({f"loss_{k}": v for k, v in criterion(out, batch).terms.items()})
        if on_batch is not None:
            on_batch(batch, out)
    all_reduce_sum_(metrics.state_tensors())
    return {**metrics.compute(), **averages.result()}
