"""Loss terms (direct and consistency, per kind of target) and their composition into task
losses."""

from xtask_mt.losses.composition import (
    CONSISTENCY_TARGETS,
    ConsistencyTerm,
    LossOutput,
    TaskObjective,
    against_ground_truth,
)
from xtask_mt.losses.depth import DEPTH_LOSSES, direct_depth_loss, transferred_depth_loss
from xtask_mt.losses.segmentation import (
    SMOOTHING_RULES,
    segmentation_loss,
    transferred_seg_loss,
)
from xtask_mt.losses.ssim import ssim_loss_map

__all__ = ["CONSISTENCY_TARGETS", "DEPTH_LOSSES", "SMOOTHING_RULES", "ConsistencyTerm",
           "LossOutput", "TaskObjective", "against_ground_truth", "direct_depth_loss",
           "segmentation_loss", "ssim_loss_map", "transferred_depth_loss",
           "transferred_seg_loss"]
