"""One training epoch and one evaluation pass; they know no dataset, task and config."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Iterable
from dataclasses import dataclass

import torch
from torch import nn
from tqdm.auto import tqdm

from xtask_mt.engine.step import NonFiniteWatch, TrainingParts, train_step
from xtask_mt.losses import TaskObjective
from xtask_mt.metrics import MetricCollection
from xtask_mt.runtime.distributed import all_reduce_sum_, any_process, is_distributed
from xtask_mt.runtime.precision import StepOptions
from xtask_mt.sample import to_device


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

    def state(self) -> dict[str, dict[str, float]]:
        """The sums and counts of all processes together (added in float64), as plain
        numbers for a checkpoint and for result() (every process must call it)."""
        keys = sorted(self.sums)
        if not keys:
            return {"sums": {}, "counts": {}}
        sums = torch.stack([self.sums[k] for k in keys]).double()
        counts = torch.tensor([self.counts[k] for k in keys], dtype=torch.float64,
                              device=sums.device)
        all_reduce_sum_([sums, counts])
        return {"sums": dict(zip(keys, sums.tolist(), strict=True)),
                "counts": dict(zip(keys, counts.tolist(), strict=True))}

    def restore(self, state: dict[str, dict[str, float]], device: torch.device) -> None:
        """Continue from `state` (see state()); give it to one process only."""
        for k, v in state.get("sums", {}).items():
            self.sums[k] = torch.tensor(v, dtype=torch.float32, device=device)
            self.counts[k] = int(state["counts"][k])

    def result(self) -> dict[str, float]:
        """Means over all batches of all processes (each process's sums and counts added)."""
        return _means(self.state())


def _means(state: dict[str, dict[str, float]]) -> dict[str, float]:
    """The means of an _Averages.state()."""
    return {k: s / state["counts"][k] for k, s in state["sums"].items()}


@dataclass
class EpochSettings:
    """How an epoch runs: `first_step` numbers its steps globally; `skip_steps` batches are
    drawn but not trained on (resuming inside an epoch); `stop_requested` is polled after
    every step (under DDP every `sync_every` steps), and when it turns true (on any
    process) the epoch ends early. `resumed` holds the running sums of the skipped steps
    (EpochResult.partial of the stopped run), given to one process only, so the epoch's
    means cover all of its steps. `max_steps` ends the epoch after that many batches
    (trainer.limit_train_batches). `sync_every`: the host looks at the steps' results (the
    non-finite check, the progress bar's loss) every this many steps and at the epoch's end,
    so the steps between need not wait for the device (trainer.sync_every)."""

    description: str = "train"
    first_step: int = 0
    skip_steps: int = 0
    skip_nonfinite: bool = False
    progress_bar: bool = True
    stop_requested: Callable[[], bool] = lambda: False
    resumed: dict[str, dict[str, float]] | None = None
    max_steps: int | None = None
    sync_every: int = 1


@dataclass
class EpochResult:
    """What one (possibly partial) training epoch did."""

    stats: dict[str, float]
    steps_done: int  # steps of this epoch completed so far, skipped ones included
    skipped_nonfinite: int = 0
    stopped: bool = False
    partial: dict[str, dict[str, float]] | None = None  # running sums, when stopped early


def train_one_epoch(parts: TrainingParts, loader: Iterable,
                    settings: EpochSettings | None = None) -> EpochResult:
    """Train for one pass over `loader`, one train_step per batch.

    Stats: mean loss terms (`loss_*`), task losses (`task_*`) and total over applied steps,
    and with gradient diagnostics on, the mean of each `grad_*` figure over the steps that
    took them.
    """
    s = settings or EpochSettings()
    parts.runner.train()
    parts.weighting.train()
    averages = _Averages()
    if s.resumed:
        averages.restore(s.resumed, parts.options.device)
    total = len(loader) if s.max_steps is None else min(len(loader), s.max_steps)
    if s.skip_steps and s.skip_steps >= total:  # stopped after the epoch's last step
        return EpochResult(averages.result(), s.skip_steps)
    skipped = steps_done = 0
    # one look every step (sync_every=1) is the immediate check inside train_step
    watch = NonFiniteWatch(parts.options.device) if s.sync_every > 1 else None
    # the bar is closed before any error line is printed
    with tqdm(loader, desc=s.description, total=total, leave=False,
              disable=not s.progress_bar, dynamic_ncols=True) as bar:
        for i, batch in enumerate(bar):
            steps_done = i + 1
            if i < s.skip_steps:
                continue
            result = train_step(parts, to_device(batch, parts.options.device),
                                s.first_step + i, skip_nonfinite=s.skip_nonfinite, watch=watch)
            if result.applied:
                averages.add({**{f"loss_{k}": v for k, v in result.losses.terms.items()},
                              **{f"task_{k}": v for k, v in result.losses.tasks.items()},
                              "total": result.total})
                if result.grad_stats is not None:
                    averages.add({f"grad_{k}": v for k, v in result.grad_stats.items()})
            else:
                skipped += 1
            # the epoch's last step is a look too: under DDP a stop then comes before the
            # epoch's validation and checkpoints
            looks = steps_done % s.sync_every == 0 or steps_done == total
            if looks:
                if watch is not None:
                    watch.check()
                if s.progress_bar and result.applied:
                    bar.set_postfix(loss=f"{float(result.total.detach()):.4f}", refresh=False)
            # polling the flag is free in one process; under DDP it is a collective
            if (looks or not is_distributed()) and any_process(s.stop_requested()):
                if watch is not None:
                    watch.check()  # a stopped epoch is saved: never one with a bad step
                partial = averages.state()
                return EpochResult(_means(partial), steps_done, skipped, stopped=True,
                                   partial=partial)
            if steps_done == total:
                break
    if watch is not None:
        watch.check()
    return EpochResult(averages.result(), steps_done, skipped)


@torch.no_grad()
def evaluate(model: nn.Module, loader: Iterable, objective: TaskObjective,
             metrics: MetricCollection, options: StepOptions, description: str = "val",
             progress_bar: bool = True,
             on_batch: Callable[[dict[str, torch.Tensor], dict[str, torch.Tensor]], None]
             | None = None, max_batches: int | None = None) -> dict[str, float]:
    """Metrics over the whole loader (its first `max_batches` batches when given) plus the
    mean loss terms (`loss_*`).

    `metrics` is a fresh accumulator, which may be read further afterwards (per-class IoU);
    `on_batch(batch, outputs)` sees each batch, e.g. to keep predictions or samples.
    Under DDP each process sees its shard of the set; the metric sums (confusion matrix,
    error sums, pixel counts) are added over processes before the figures are computed.
    """
    model.eval()
    averages = _Averages()
    total = len(loader) if max_batches is None else min(len(loader), max_batches)
    with tqdm(loader, desc=description, total=total, leave=False, disable=not progress_bar,
              dynamic_ncols=True) as bar:
        for i, batch in enumerate(bar):
            batch = to_device(batch, options.device)
            with options.autocast():
                out = model(options.image(batch["image"]))
            metrics.update(out, batch)
            averages.add({f"loss_{k}": v for k, v in objective(out, batch).terms.items()})
            if on_batch is not None:
                on_batch(batch, out)
            if i + 1 == total:
                break
    all_reduce_sum_(metrics.state_tensors())
    return {**metrics.compute(), **averages.result()}
