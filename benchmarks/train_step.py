"""Seconds per training step of any config, split into data, forward+loss, backward, optimiser.

    python benchmarks/train_step.py --steps 5 encoder=resnet34 dataset.height=128 \
        dataset.width=256 weighting=uncertainty trainer.precision=bf16-mixed

Prints JSON: median s/step and images/s of the step, the median of each phase, images/s of
the data pipeline alone, and peak memory. The step is the one train_one_epoch runs.
"""

from __future__ import annotations

import itertools
import time

import torch
from common import emit, machine, median, parse, peak_memory_gb, sync, timed

from xtask_mt.engine.host_memory import configure_host_memory
from xtask_mt.engine.loops import to_device
from xtask_mt.engine.precision import StepOptions, maybe_compile, precision_name, to_channels_last
from xtask_mt.factory import (
    build_criterion,
    build_dataset,
    build_loader,
    build_model,
    build_optimizer,
    build_weighting,
    resolve_device,
    seed_everything,
)


def batches(loader):
    """Endless batches, starting a new pass over the loader when one ends."""
    for epoch in itertools.count():
        loader.sampler.set_epoch(epoch)
        yield from loader


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
    criterion = build_criterion(cfg)
    weighting = build_weighting(cfg, model).to(device)
    optimizer = build_optimizer(cfg, model, weighting)
    scaler = options.grad_scaler()
    model.train()
    weighting.train()
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)

    phases: dict[str, list[float]] = {"data": [], "forward_loss": [], "backward": [],
                                      "optimizer": [], "step": []}
    stream = batches(loader)
    for i in range(args.warmup + args.steps):
        start = time.perf_counter()
        batch, data_s = timed(lambda: to_device(next(stream), device), device)
        optimizer.zero_grad(set_to_none=True)

        def forward(batch=batch):
            with options.autocast():
                out = runner(options.image(batch["image"]))
            return weighting.combine(criterion(out, batch).tasks)

        total, forward_s = timed(forward, device)
        scaled = scaler.scale(total) if scaler else total
        _, backward_s = timed(scaled.backward, device)

        def step():
            if scaler:
                scaler.step(optimizer)
                scaler.update()
            else:
                optimizer.step()
            weighting.after_step()

        _, optimizer_s = timed(step, device)
        sync(device)
        if i >= args.warmup:
            for key, value in zip(phases, (data_s, forward_s, backward_s, optimizer_s,
                                           time.perf_counter() - start), strict=True):
                phases[key].append(value)
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
        "final_loss": float(total.detach()),
        **memory,
        "machine": machine(device),
    })


if __name__ == "__main__":
    main()
