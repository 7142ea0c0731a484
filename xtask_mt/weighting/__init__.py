"""Task weighting strategies behind one interface (see base.TaskWeighting)."""

from xtask_mt.weighting.base import TaskWeighting
from xtask_mt.weighting.fixed import FixedWeighting
from xtask_mt.weighting.gradnorm import GradNormWeighting
from xtask_mt.weighting.uncertainty import UncertaintyWeighting

__all__ = ["FixedWeighting", "GradNormWeighting", "TaskWeighting", "UncertaintyWeighting"]
