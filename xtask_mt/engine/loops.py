"""One training epoch and one evaluation pass; they know no dataset and no config."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable

import torch
from torch import nn
from tqdm.auto import tqdm

from xtask_mt.engine.distributed import all_reduce_sum_, average_gradients_
from xtask_mt.engine.precision import StepOptions
from xtask_mt.losses import CrossTaskLoss
from xtask_mt.metrics import MultiTaskMetrics
from xtask_mt.weighting import TaskWeighting


class NonFiniteLossError(RuntimeError):
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


def _check_finite(total: torch.Tensor, terms: dict[str, torch.Tensor], step: int) -> None:
    if torch.isfinite(total):
        return
    bad = [k for k, v in terms.items() if not torch.isfinite(v)] or ["total (task weighting)"]
    raise NonFiniteLossError(
        f"non-finite loss at training step {step}: {', '.join(bad)} = "
        f"{', '.join(str(float(terms.get(k, total))) for k in bad)}. Lower optimizer.lr or "
        "check the data; the last good checkpoint is kept.")


def train_one_epoch(model: nn.Module, loader: Iterable, criterion: CrossTaskLoss,
                    weighting: TaskWeighting, optimizer: torch.optim.Optimizer,
                    device: torch.device, first_step: int = 0, description: str = "train",
                    progress_bar: bool = True, options: StepOptions | None = None,
                    scaler: torch.amp.GradScaler | None = None) -> dict[str, float]:
    """Train for one pass over `loader` with one backward pass per step.

    `model` may be wrapped (DDP, torch.compile). The forward pass runs under the autocast of
    `options`; losses are computed outside it in fp32. `scaler` scales fp16 losses.
    Returns mean loss terms (`loss_*`), task losses (`task_*`) and the total.
    """
    options = options or StepOptions(device)
    model.train()
    weighting.train()
    averages = _Averages()
    bar = tqdm(loader, desc=description, leave=False, disable=not progress_bar,
               dynamic_ncols=True)
    for i, batch in enumerate(bar):
        batch = to_device(batch, device)
        optimizer.zero_grad(set_to_none=True)
        with options.autocast():
            out = model(options.image(batch["image"]))
        losses = criterion(out, batch)
        total = weighting.combine(losses.tasks)
        _check_finite(total, losses.terms, first_step + i)
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
    return averages.result()


@torch.no_grad()
def evaluate(model: nn.Module, loader: Iterable, criterion: CrossTaskLoss, num_classes: int,
             device: torch.device, description: str = "val",
             progress_bar: bool = True, options: StepOptions | None = None) -> dict[str, float]:
    """Metrics over the whole loader plus the mean loss terms (`loss_*`).

    Under DDP each process sees its shard of the set; the metric sums (confusion matrix,
    error sums, pixel counts) are added over processes before the figures are computed.
    """
    options = options or StepOptions(device)
    model.eval()
    metrics = MultiTaskMetrics(num_classes, device=device)
    averages = _Averages()
    for batch in tqdm(loader, desc=description, leave=False, disable=not progress_bar,
                      dynamic_ncols=True):
        batch = to_device(batch, device)
        with options.autocast():
            out = model(options.image(batch["image"]))
        metrics.update(out, batch)
        averages.add({f"loss_{k}": v for k, v in criterion(out, batch).terms.items()})
    all_reduce_sum_(metrics.state_tensors())
    return {**metrics.compute(), **averages.result()}
