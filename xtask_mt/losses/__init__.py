"""Loss terms of the cross-task consistency method and their composition into task losses."""

from xtask_mt.losses.composite import CrossTaskLoss, LossOutput
from xtask_mt.losses.depth import DEPTH_LOSSES, direct_depth_loss
from xtask_mt.losses.segmentation import segmentation_loss
from xtask_mt.losses.ssim import ssim_loss_map
from xtask_mt.losses.transfer import (
    TDEPTH_LOSSES,
    TSEG_LOSSES,
    transferred_depth_loss,
    transferred_seg_loss,
)

__all__ = [
    "DEPTH_LOSSES", "TDEPTH_LOSSES", "TSEG_LOSSES", "CrossTaskLoss", "LossOutput",
    "direct_depth_loss", "segmentation_loss", "ssim_loss_map", "transferred_depth_loss",
    "transferred_seg_loss",
]
