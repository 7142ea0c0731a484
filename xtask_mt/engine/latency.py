"""Inference latency of a model on the current device, with and without the transfer nets.

The transfer nets are only needed to train the consistency terms; at test time the direct
heads answer alone, so both costs are worth knowing.
"""

from __future__ import annotations

import statistics
import time

import torch

from xtask_mt.models import CrossTaskModel


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


@torch.inference_mode()
def _median_seconds(model: CrossTaskModel, images: torch.Tensor, with_transfer: bool,
                    warmup: int, iters: int) -> float:
    """Median wall time of one forward pass after `warmup` untimed passes."""
    for _ in range(warmup):
        model(images, with_transfer=with_transfer)
    _sync(images.device)
    times = []
    for _ in range(iters):
        start = time.perf_counter()
        model(images, with_transfer=with_transfer)
        _sync(images.device)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def measure_latency(model: CrossTaskModel, height: int, width: int, batch_size: int,
                    device: torch.device, warmup: int = 10,
                    iters: int = 50) -> dict[str, dict[str, float]]:
    """ms per image at batch 1 and images/s at `batch_size`, for the direct heads only and,
    when the model has them, with the transfer nets. Medians over `iters` timed passes."""
    if warmup < 0 or iters < 1 or batch_size < 1:
        raise ValueError(f"latency needs warmup >= 0, iters >= 1 and batch_size >= 1, got "
                         f"{warmup}, {iters}, {batch_size}")
    model.eval()
    modes = {"direct": False, **({"with_transfer": True} if model.edges else {})}
    result: dict[str, dict[str, float]] = {}
    for mode, with_transfer in modes.items():
        one = torch.randn(1, 3, height, width, device=device)
        batch = torch.randn(batch_size, 3, height, width, device=device)
        single = _median_seconds(model, one, with_transfer, warmup, iters)
        batched = _median_seconds(model, batch, with_transfer, warmup, iters)
        result[mode] = {"ms_per_image_batch1": 1000.0 * single,
                        "images_per_s_batch": batch_size / batched,
                        "batch_size": float(batch_size)}
    return result
