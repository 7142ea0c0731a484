"""Shared by the benchmark scripts: config composition from Hydra-style overrides, timing."""

from __future__ import annotations

import argparse
import json
import platform
import resource
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from hydra import compose, initialize_config_dir
from omegaconf import DictConfig

ROOT = Path(__file__).resolve().parents[1]


def parse(description: str, argv: list[str] | None = None,
          **extra: tuple[type, Any, str]) -> tuple[argparse.Namespace, DictConfig]:
    """Options `--name value` from `extra` (type, default, help), `--threads` (applied here),
    plus Hydra overrides (`key=value`, `group=option`) composed onto conf/config.yaml."""
    parser = argparse.ArgumentParser(description=description)
    extra = {**extra, "threads": (int, 0, "torch CPU threads (0: torch's default)")}
    for name, (kind, default, text) in extra.items():
        parser.add_argument(f"--{name.replace('_', '-')}", type=kind, default=default,
                            help=text)
    parser.add_argument("overrides", nargs="*", help="Hydra overrides, e.g. encoder=resnet18")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        cfg = compose(config_name="config", overrides=list(args.overrides))
    return args, cfg


def sync(device: torch.device) -> None:
    """Wait for queued GPU work so wall-clock times cover it."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed(fn: Callable[[], Any], device: torch.device) -> tuple[Any, float]:
    sync(device)
    start = time.perf_counter()
    result = fn()
    sync(device)
    return result, time.perf_counter() - start


def median(values: list[float]) -> float:
    return statistics.median(values) if values else float("nan")


def peak_memory_gb(device: torch.device) -> dict[str, float]:
    """Peak resident memory of this process (CPU) and peak allocated GPU memory."""
    figures = {"peak_rss_gb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20}
    if device.type == "cuda":
        figures["peak_cuda_allocated_gb"] = torch.cuda.max_memory_allocated(device) / 2**30
    return figures


def machine(device: torch.device) -> dict[str, Any]:
    info = {"torch": torch.__version__, "device": str(device), "threads": torch.get_num_threads(),
            "cpu": platform.processor() or platform.machine()}
    if device.type == "cuda":
        info["gpu"] = torch.cuda.get_device_name(device)
    return info


def emit(result: dict[str, Any]) -> None:
    """The figures as one JSON document on stdout."""
    json.dump(result, sys.stdout, indent=2, sort_keys=True, default=str)
    sys.stdout.write("\n")
