"""Batches made on the device from a DeviceSplit: each frame's augmentation view (a
data.transforms.View, drawn on the host) applied to the whole batch at once, then the sample
contract of xtask_mt.sample, batched.

A view becomes per-sample source rows and columns: nearest-neighbour indices (the mapping of
transforms.resize_nearest) for every map but the image, and for the image the two taps and
the weight of cv2's INTER_LINEAR (pixel centres aligned, clamped at the crop's edges). A
mirrored sample reads its columns backwards. So each map is one gather (the image four), and
the values are those the CPU path (TrainAugmentation per frame) gives, the image up to
cv2's fixed-point rounding.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

from xtask_mt.data.device_split import DeviceSplit
from xtask_mt.data.transforms import TrainAugmentation, View, nearest_indices
from xtask_mt.sample import IMAGENET_MEAN, IMAGENET_STD

Maps = dict[str, torch.Tensor]


def linear_taps(size: int, out: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """For each of `out` pixels resampled from `size` bilinearly as cv2 does: the lower and
    upper source index and the upper one's weight."""
    position = (np.arange(out) + 0.5) * (size / out) - 0.5
    position = np.clip(position, 0.0, size - 1)
    low = np.floor(position).astype(np.int64)
    return low, np.minimum(low + 1, size - 1), (position - low).astype(np.float32)


def upload(array: np.ndarray, device: torch.device) -> torch.Tensor:
    """`array` on `device`; to a GPU from pinned memory, asynchronously, so the host does not
    wait for the work already queued there (the previous training step)."""
    tensor = torch.from_numpy(np.ascontiguousarray(array))
    if device.type == "cuda":
        return tensor.pin_memory().to(device, non_blocking=True)
    return tensor.to(device)


@dataclass
class AxisTaps:
    """Source indices along one axis for every sample of a batch, each (B, out): `nearest`,
    and the bilinear `low`/`high` taps with the weight `frac` of `high`."""

    nearest: torch.Tensor
    low: torch.Tensor
    high: torch.Tensor
    frac: torch.Tensor

    @classmethod
    def of(cls, crops: Sequence[tuple[int, int]], out: int, mirrored: Sequence[bool],
           device: torch.device) -> AxisTaps:
        """`crops`: each sample's (offset, length) along the axis, resampled to `out`;
        `mirrored` samples read the axis backwards."""
        indices, weights = [], []
        for (offset, length), backwards in zip(crops, mirrored, strict=True):
            low, high, frac = linear_taps(length, out)
            taps = np.stack([nearest_indices(length, out), low, high]) + offset
            indices.append(taps[:, ::-1] if backwards else taps)
            weights.append(frac[::-1] if backwards else frac)
        index = upload(np.stack(indices, axis=1), device)
        return cls(index[0], index[1], index[2], upload(np.stack(weights), device))


def _pixels(samples: torch.Tensor, rows: torch.Tensor, cols: torch.Tensor,
            size: tuple[int, int]) -> torch.Tensor:
    """(B, H, W) flat indices of pixels (rows (B, H), columns (B, W)) of frames `samples`
    (B,) among the N frames of `size`."""
    height, width = size
    return (samples[:, None, None] * height + rows[:, :, None]) * width + cols[:, None, :]


def _gather(maps: torch.Tensor, pixels: torch.Tensor) -> torch.Tensor:
    """(B, H, W[, k]) of `maps` (N, h, w[, k]) at the flat `pixels` (B, H, W): one
    index_select over the pixels, far faster than indexing three axes at once."""
    rest = maps.shape[3:]
    chosen = maps.reshape(-1, *rest).index_select(0, pixels.view(-1))
    return chosen.view(*pixels.shape, *rest)


def _bilinear(images: torch.Tensor, samples: torch.Tensor, rows: AxisTaps,
              cols: AxisTaps) -> torch.Tensor:
    """(B, H, W, 3) images resampled bilinearly, in their own dtype (uint8 rounded to the
    nearest level, as cv2 returns it)."""
    size = (images.shape[1], images.shape[2])

    def tap(r: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
        return _gather(images, _pixels(samples, r, c, size)).float()

    fx, fy = cols.frac[:, None, :, None], rows.frac[:, :, None, None]
    upper = torch.lerp(tap(rows.low, cols.low), tap(rows.low, cols.high), fx)
    lower = torch.lerp(tap(rows.high, cols.low), tap(rows.high, cols.high), fx)
    value = torch.lerp(upper, lower, fy)
    if images.dtype == torch.uint8:
        return value.round_().clamp_(0, 255).to(torch.uint8)
    return value.to(images.dtype)


def _where(flags: Sequence[bool], device: torch.device) -> torch.Tensor | None:
    """Positions of the true `flags`, or None when there are none."""
    chosen = [i for i, flag in enumerate(flags) if flag]
    return upload(np.asarray(chosen, dtype=np.int64), device) if chosen else None


def apply_views(split: DeviceSplit, samples: torch.Tensor, views: Sequence[View],
                augmentation: TrainAugmentation) -> Maps:
    """The (B, H, W[, k]) maps of frames `samples` seen through their `views`: resized crop,
    then each field's zoom rule (zoomed samples), then mirrored with each field's flip rule
    (flipped samples), as TrainAugmentation does frame by frame."""
    height, width = split.size
    device = split.device
    rows = AxisTaps.of([(v.top, v.height) for v in views], height, [False] * len(views), device)
    cols = AxisTaps.of([(v.left, v.width) for v in views], width,
                       [v.flipped for v in views], device)
    nearest = _pixels(samples, rows.nearest, cols.nearest, split.size)
    maps = {k: _gather(v, nearest) for k, v in split.fields.items() if k != "image"}
    maps["image"] = _bilinear(split.fields["image"], samples, rows, cols)
    zoomed = _where([v.scale != 1.0 for v in views], device)
    flipped = _where([v.flipped for v in views], device)
    scales = upload(np.asarray([v.scale for v in views], dtype=np.float32), device)
    for key, value in maps.items():
        rule = augmentation.rule(key)
        if rule.zoom is not None and zoomed is not None:
            scale = scales[zoomed].view(-1, *[1] * (value.dim() - 1))
            value[zoomed] = rule.zoom(value[zoomed], scale).to(value.dtype)
        if rule.flip_values is not None and flipped is not None:
            value[flipped] = rule.flip_values(value[flipped]).to(value.dtype)
    return maps


def to_sample(maps: Maps) -> Maps:
    """Channel-last batched maps -> the batch the DataLoader gives (make_sample per frame,
    stacked): normalised (B, 3, H, W) image, int64 labels, masked (B, 1, H, W) depth."""
    image = maps["image"]
    image = image.float() / 255.0 if image.dtype == torch.uint8 else image.float()
    mean, std = (upload(a, image.device) for a in (IMAGENET_MEAN, IMAGENET_STD))
    mask = maps["depth_mask"]
    sample = {"image": ((image - mean) / std).permute(0, 3, 1, 2).contiguous(),
              "seg": maps["seg"].long(),
              "depth": torch.where(mask, maps["depth"], 0.0).float()[:, None],
              "depth_mask": mask[:, None]}
    if "normal" in maps:
        sample["normal"] = maps["normal"].float().permute(0, 3, 1, 2).contiguous()
    return sample
