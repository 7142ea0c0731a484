"""SSIM dissimilarity with 3x3 mean windows (computed in fp32)."""

from __future__ import annotations

import torch
import torch.nn.functional as F

C1 = 0.01**2
C2 = 0.03**2


def ssim_loss_map(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Per-pixel clamp((1 - SSIM) / 2, 0, 1) of two (N,C,H,W) maps, reflect-padded."""
    x = F.pad(x.float(), (1, 1, 1, 1), mode="reflect")
    y = F.pad(y.float(), (1, 1, 1, 1), mode="reflect")
    mu_x, mu_y = F.avg_pool2d(x, 3, 1), F.avg_pool2d(y, 3, 1)
    sigma_x = F.avg_pool2d(x * x, 3, 1) - mu_x**2
    sigma_y = F.avg_pool2d(y * y, 3, 1) - mu_y**2
    sigma_xy = F.avg_pool2d(x * y, 3, 1) - mu_x * mu_y
    numerator = (2 * mu_x * mu_y + C1) * (2 * sigma_xy + C2)
    denominator = (mu_x**2 + mu_y**2 + C1) * (sigma_x + sigma_y + C2)
    return torch.clamp((1 - numerator / denominator) / 2, 0.0, 1.0)
