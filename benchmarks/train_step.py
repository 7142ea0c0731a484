"""Seconds per training step of any config, split into data, forward+loss, backward, optimiser,
with the step's FLOPs and how close it comes to the device's peak (MFU).

    python benchmarks/train_step.py --steps 5 encoder=resnet34 dataset.height=128 \
        dataset.width=256 weighting=uncertainty trainer.precision=bf16-mixed

Prints JSON: median s/step and images/s of the step, the median of each phase, images/s of
the data pipeline alone, and peak memory. The step is the training loop's own
(engine.step.train_step). Each phase is timed between device syncs, which keep a GPU from
running ahead of the host; the steady_* figures time --steady-steps more steps back to back
as the training loop runs them (one sync at the end), which is what a GPU sustains.

FLOPs (benchmarks/roofline.py) are counted over one extra, untimed step on a copy of the
eager model: flops_per_image_forward (forward and losses), flops_per_image_step (the whole
step), achieved_tflops = step FLOPs x batch / median step seconds, and on a GPU in the peak
table mfu = achieved / peak at the precision the step runs in (peak_tflops, peak_source);
--peak-tflops gives the peak where the table has none (a CPU). trainer.compile,
trainer.compile_mode and dataset.device_cache apply as in training.
"""

from __future__ import annotations

import contextlib
import itertools
import time
from collections.abc import Iterator

import torch
from common import emit, machine, median, parse, peak_memory_gb, sync, timed
from omegaconf import DictConfig
from roofline import compute_precision, count_step_flops, device_peak
from torch.utils.data import DataLoader

from xtask_mt.config.build import (
    build_dataset,
    build_loader,
    build_model,
    build_objective,
    build_optimizer,
    build_weighting,
    cache_on_device,
    resolve_device,
    seed_everything,
)
from xtask_mt.config.validate import validate_config
from xtask_mt.data.device_loader import DeviceLoader
from xtask_mt.engine.step import NonFiniteWatch, TrainingParts, train_step
from xtask_mt.runtime.host_memory import configure_host_memory
from xtask_mt.runtime.precision import (
    StepOptions,
    maybe_compile,
    precision_name,
    resolve_channels_last,
    to_channels_last,
    uses_cuda_graphs,
)
from xtask_mt.sample import to_device

# untimed steps by default: a compiled model compiles in the first, and CUDA graphs
# (compile_mode=reduce-overhead) are recorded in the second and replayed from the third
WARMUP_EAGER, WARMUP_COMPILED = 1, 3


def batches(loader: DataLoader | DeviceLoader) -> Iterator[dict[str, torch.Tensor]]:
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


def steady_seconds(parts: TrainingParts, stream: Iterator[dict[str, torch.Tensor]],
                   first_step: int, steps: int) -> float:
    """Seconds per step of `steps` steps run back to back as the training loop runs them on
    a GPU: batches moved asynchronously, non-finite losses watched on the device, one sync
    (and the non-finite check) at the end."""
    device = parts.options.device
    watch = NonFiniteWatch(device)
    sync(device)
    start = time.perf_counter()
    for i in range(first_step, first_step + steps):
        train_step(parts, to_device(next(stream), device), i, watch=watch)
    sync(device)
    seconds = time.perf_counter() - start
    watch.check()
    return seconds / steps


def flop_figures(cfg: DictConfig, parts: TrainingParts, batch: dict[str, torch.Tensor],
                 step_s: float, steady_s: float | None, peak_override: float
                 ) -> dict[str, object]:
    """FLOPs per image, achieved TFLOP/s and MFU of the step (see the module docstring)."""
    options = parts.options
    flops = count_step_flops(cfg, parts.model, options, batch)
    batch_size = int(batch["image"].shape[0])
    precision = compute_precision(options.precision, options.device)
    peak = device_peak(options.device, precision, peak_override)

    def tflops(seconds: float) -> float:
        return flops.step / seconds / 1e12

    def mfu(seconds: float) -> float | None:
        return None if peak.tflops is None else tflops(seconds) / peak.tflops

    steady = {} if steady_s is None else {"steady_achieved_tflops": tflops(steady_s),
                                          "steady_mfu": mfu(steady_s)}
    return {"flops_per_image_forward": flops.forward / batch_size,
            "flops_per_image_step": flops.step / batch_size,
            "achieved_tflops": tflops(step_s), "mfu": mfu(step_s),
            "peak_tflops": peak.tflops, "peak_source": peak.source,
            "mfu_precision": precision, **steady}


def main() -> None:
    args, cfg = parse(__doc__.splitlines()[0], steps=(int, 5, "timed steps"),
                      warmup=(int, -1, f"untimed steps first (-1: {WARMUP_EAGER}, or "
                                       f"{WARMUP_COMPILED} with trainer.compile=true)"),
                      steady_steps=(int, -1, "steps then timed back to back, without a sync "
                                             "between phases (-1: as many as --steps; 0: none)"),
                      data_batches=(int, 10, "batches timed for the data pipeline alone"),
                      peak_tflops=(float, 0.0, "the device's peak TFLOP/s at the step's "
                                               "precision (default: the GPU peak table)"))
    if args.steps < 1:
        raise SystemExit("train_step.py: --steps must be at least 1")
    validate_config(cfg)
    t = cfg.trainer
    seed_everything(int(t.seed))
    device = resolve_device(str(t.device))
    configure_host_memory(device, t)  # as the training job does
    options = StepOptions(device, precision_name(t.precision),
                          resolve_channels_last(t.channels_last, device))
    compiled, mode = bool(t.compile), str(t.get("compile_mode", "default"))
    warmup = args.warmup if args.warmup >= 0 else WARMUP_COMPILED if compiled else WARMUP_EAGER
    steady_steps = args.steady_steps if args.steady_steps >= 0 else args.steps
    dataset = build_dataset(cfg, "train")
    # dataset.device_cache=true: the split is held on the device and batched there
    (loader,) = cache_on_device(cfg, device, build_loader(cfg, dataset, train=True,
                                                           pin_memory=device.type == "cuda"))
    model = to_channels_last(build_model(cfg, dataset.num_classes).to(device),
                             options.channels_last)
    runner = maybe_compile(model, compiled, str(t.get("compile_backend", "inductor")), mode)
    weighting = build_weighting(cfg, model.tasks).to(device)
    parts = TrainingParts(runner, model, build_objective(cfg), weighting,
                          build_optimizer(cfg, model, weighting), options, options.grad_scaler(),
                          cuda_graphs=compiled and uses_cuda_graphs(mode, device))
    runner.train()
    weighting.train()
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)

    phases: dict[str, list[float]] = {"data": [], "forward_loss": [], "backward": [],
                                      "optimizer": [], "step": []}
    warmup_s = []
    timer = PhaseTimes(device)
    stream = batches(loader)
    for i in range(warmup + args.steps):
        start = time.perf_counter()
        batch, data_s = timed(lambda: to_device(next(stream), device), device)
        result = train_step(parts, batch, i, timer=timer)
        sync(device)
        if i < warmup:
            warmup_s.append(time.perf_counter() - start)
            continue
        timer.seconds.update(data=data_s, step=time.perf_counter() - start)
        for key in phases:
            phases[key].append(timer.seconds[key])
    final_loss = float(result.total.detach())  # before CUDA graphs may reuse its memory
    steady_s = steady_seconds(parts, stream, warmup + args.steps, steady_steps) \
        if steady_steps else None
    memory = peak_memory_gb(device)

    data_times = []
    for _ in range(args.data_batches):
        _, seconds = timed(lambda: to_device(next(stream), device), device)
        data_times.append(seconds)

    batch_size = int(cfg.dataset.batch_size)
    step_s = median(phases["step"])
    steady = {} if steady_s is None else {"steady_steps": steady_steps, "steady_step_s": steady_s,
                                          "steady_images_per_s": batch_size / steady_s}
    emit({
        "benchmark": "train_step",
        "overrides": args.overrides,
        "batch_size": batch_size,
        "parameters": sum(p.numel() for p in model.parameters()),
        "image_size": [int(cfg.dataset.height), int(cfg.dataset.width)],
        "precision": options.precision, "channels_last": options.channels_last,
        "compile": compiled, "compile_mode": mode if compiled else None,
        "device_cache": bool(cfg.dataset.get("device_cache", False)),
        "steps": args.steps, "warmup": warmup, "warmup_s_all": warmup_s,
        "step_s_median": step_s,
        "step_s_all": phases["step"],
        "images_per_s": batch_size / step_s,
        **steady,
        "phases_s_median": {k: median(v) for k, v in phases.items() if k != "step"},
        "data_pipeline_images_per_s": batch_size / median(data_times),
        "final_loss": final_loss,
        **flop_figures(cfg, parts, to_device(next(stream), device), step_s, steady_s,
                       args.peak_tflops),
        **memory,
        "machine": machine(device),
    })


if __name__ == "__main__":
    main()
