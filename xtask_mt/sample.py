"""The sample contract shared by all datasets, the model loop and the metrics.

A sample is a dict of tensors:
- ``image``: (3, H, W) float32, normalised with ImageNet mean/std;
- ``seg``: (H, W) int64 class ids, ``IGNORE_INDEX`` where unlabelled;
- ``depth``: (1, H, W) float32 depth target in the dataset's own unit (0 where invalid);
- ``depth_mask``: (1, H, W) bool, True where ``depth`` is valid;
- ``normal`` (datasets that have surface normals, when the task is on): (3, H, W) float32
  unit vectors in the camera frame (x right, y up, z towards the camera), zeros where invalid.
"""

from __future__ import annotations

import numpy as np
import torch

IGNORE_INDEX = -1
IMAGENET_MEAN = np.array([0.485, 0.456, 0.406], dtype=np.float32)
IMAGENET_STD = np.array([0.229, 0.224, 0.225], dtype=np.float32)


def normalise_image(image: np.ndarray) -> np.ndarray:
    """HxWx3 float image in [0, 1] -> ImageNet-normalised 3xHxW float32."""
    return ((image.astype(np.float32) - IMAGENET_MEAN) / IMAGENET_STD).transpose(2, 0, 1)


def denormalise_image(image: torch.Tensor) -> np.ndarray:
    """(3, H, W) normalised tensor -> HxWx3 float image in [0, 1] for display."""
    arr = image.detach().float().cpu().numpy().transpose(1, 2, 0)
    return np.clip(arr * IMAGENET_STD + IMAGENET_MEAN, 0.0, 1.0)


def make_sample(image: np.ndarray, seg: np.ndarray, depth: np.ndarray,
                depth_mask: np.ndarray | None = None,
                normal: np.ndarray | None = None) -> dict[str, torch.Tensor]:
    """Build the sample dict from HxWx3 image in [0, 1], HxW labels, HxW depth and, if given,
    HxWx3 normals.

    Without an explicit mask, depth pixels <= 0 count as invalid.
    """
    if depth_mask is None:
        depth_mask = depth > 0
    depth = np.where(depth_mask, depth, 0.0).astype(np.float32)
    extra = {} if normal is None else {"normal": torch.from_numpy(
        np.ascontiguousarray(normal.transpose(2, 0, 1), dtype=np.float32))}
    return {**extra,
        "image": torch.from_numpy(np.ascontiguousarray(normalise_image(image))),
        "seg": torch.from_numpy(np.ascontiguousarray(seg, dtype=np.int64)),
        "depth": torch.from_numpy(np.ascontiguousarray(depth[None])),
        "depth_mask": torch.from_numpy(np.ascontiguousarray(depth_mask[None], dtype=bool)),
    }


def to_device(batch: dict[str, torch.Tensor], device: torch.device) -> dict[str, torch.Tensor]:
    """A batch's tensors on `device` (asynchronously to a GPU, from pinned memory)."""
    non_blocking = device.type == "cuda"
    return {k: v.to(device, non_blocking=non_blocking) for k, v in batch.items()}


def valid_normals(normal: torch.Tensor) -> torch.Tensor:
    """(N, H, W) mask of the pixels whose (N, 3, H, W) ground-truth normal is non-zero."""
    return normal.abs().amax(dim=1) > 0


def unit_vectors(vectors: torch.Tensor, eps: float = 1e-6) -> torch.Tensor:
    """(N, 3, H, W) vectors scaled to unit length (zero vectors stay zero). Written out
    because torch's norm over the channel axis is some 50x slower on CPU than this sum."""
    length = (vectors * vectors).sum(dim=1, keepdim=True).sqrt()
    return vectors / length.clamp(min=eps)
