"""Seconds per training step of any config, split into data, forward+loss, backward, optimiser.

    python benchmarks/train_step.py --steps 5 encoder=resnet34 dataset.height=128 \
        dataset.width=256 weighting=uncertainty trainer.precision=bf16-mixed

Prints JSON: median s/step and images/s of the step, the median of each phase, images/s of
the data pipeline alone, and peak memory. The step is the training loop's own
(engine.step.train_step).
"""

from __future__ import annotations

import contextlib
import itertools
import time
from collections.abc import Iterator

import torch
from common import emit, machine, median, parse, peak_memory_gb, sync, timed

from xtask_mt.config.build import (
    build_dataset,
    build_loader,
    build_model,
    build_objective,
    build_optimizer,
    build_weighting,
    resolve_device,
    seed_everything,
)
from xtask_mt.engine.step import TrainingParts, train_step
from xtask_mt.runtime.host_memory import configure_host_memory
from xtask_mt.runtime.precision import (
    StepOptions,
    maybe_compile,
    precision_name,
    to_channels_last,
)
from xtask_mt.sample import to_device


def batches(loader):
    """Endless batches, starting a new pass over the loader when one ends."""
    for epoch in itertools.count():
        loader.sampler.set_epoch(epoch)
        yield from loader


class PhaseTimes:
    """Seconds of each phase of the last step, for train_step's `timer`."""

    def __init__(self, device: torch.device) -> None:
        self.device = device
        self.seconds: dict[str, float] = {}

    @contextlib.contextmanager
    def __call__(self, phase: str) -> Iterator[None]:
        sync(self.device)
        start = time.perf_counter()
        yield
        sync(self.device)
        self.seconds[phase] = time.perf_counter() - start


def main() -> None:
    args, cfg = parse(__doc__.splitlines()[0], steps=(int, 5, "timed steps"),
                      warmup=(int, 1, "untimed steps first (compile, allocator)"),
                      data_batches=(int, 10, "batches timed for the data pipeline alone"))
    t = cfg.trainer
    seed_everything(int(t.seed))
    device = resolve_device(str(t.device))
    configure_host_memory(device, t)  # as the training job does
    options = StepOptions(device, precision_name(t.precision), bool(t.channels_last))
    dataset = build_dataset(cfg, "train")
    loader = build_loader(cfg, dataset, train=True, pin_memory=device.type == "cuda")
    model = to_channels_last(build_model(cfg, dataset.num_classes).to(device),
                             options.channels_last)
    runner = maybe_compile(model, bool(t.compile), str(t.get("compile_backend", "inductor")))
    weighting = build_weighting(cfg, model.tasks).to(device)
    parts = TrainingParts(runner, model, build_objective(cfg), weighting,
                          build_optimizer(cfg, model, weighting), options, options.grad_scaler())
    runner.train()
    weighting.train()
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)

    phases: dict[str, list[float]] = {"data": [], "forward_loss": [], "backward": [],
                                      "optimizer": [], "step": []}
    timer = PhaseTimes(device)
    stream = batches(loader)
    for i in range(args.warmup + args.steps):
        start = time.perf_counter()
        batch, data_s = timed(lambda: to_device(next(stream), device), device)
        result = train_step(parts, batch, i, timer=timer)
        sync(device)
        if i >= args.warmup:
            timer.seconds.update(data=data_s, step=time.perf_counter() - start)
            for key in phases:
                phases[key].append(timer.seconds[key])
    memory = peak_memory_gb(device)

    data_times = []
    for _ in range(args.data_batches):
        _, seconds = timed(lambda: to_device(next(stream), device), device)
        data_times.append(seconds)

    batch_size = int(cfg.dataset.batch_size)
    step_s = median(phases["step"])
    emit({
        "benchmark": "train_step",
        "overrides": args.overrides,
        "batch_size": batch_size,
        "image_size": [int(cfg.dataset.height), int(cfg.dataset.width)],
        "precision": options.precision, "channels_last": options.channels_last,
        "compile": bool(t.compile), "steps": args.steps, "warmup": args.warmup,
        "step_s_median": step_s,
        "step_s_all": phases["step"],
        "images_per_s": batch_size / step_s,
        "phases_s_median": {k: median(v) for k, v in phases.items() if k != "step"},
        "data_pipeline_images_per_s": batch_size / median(data_times),
        "final_loss": float(result.total.detach()),
        **memory,
        "machine": machine(device),
    })


if __name__ == "__main__":
    main()
