"""Loss terms (direct and consistency, per kind of target) and their composition into task
losses."""

from xtask_mt.losses.composition import ConsistencyTerm, LossOutput, TaskObjective
from xtask_mt.losses.depth import DEPTH_LOSSES, direct_depth_loss, transferred_depth_loss
from xtask_mt.losses.segmentation import segmentation_loss, transferred_seg_loss
from xtask_mt.losses.ssim import ssim_loss_map

__all__ = ["DEPTH_LOSSES", "ConsistencyTerm", "LossOutput", "TaskObjective",
           "direct_depth_loss", "segmentation_loss", "ssim_loss_map", "transferred_depth_loss",
           "transferred_seg_loss"]
