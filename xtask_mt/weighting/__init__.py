"""Task weighting methods behind one interface (see base.TaskWeighting)."""

from xtask_mt.weighting.base import (
    StepContext,
    TaskWeighting,
    encoder_features,
    mean_over_processes,
)
from xtask_mt.weighting.fixed import FixedWeighting
from xtask_mt.weighting.gradnorm import GradNormWeighting
from xtask_mt.weighting.uncertainty import UncertaintyWeighting

__all__ = ["FixedWeighting", "GradNormWeighting", "StepContext", "TaskWeighting",
           "UncertaintyWeighting", "encoder_features", "mean_over_processes"]
