"""The task registry: `seg`, `depth` and `normal` are registered on import; see base.Task."""

from xtask_mt.tasks.base import (
    ConsistencyLoss,
    DirectLoss,
    Task,
    edge_name,
    get_task,
    higher_is_better,
    register_task,
    registered_tasks,
    unregister_task,
)
from xtask_mt.tasks.depth import Depth
from xtask_mt.tasks.normal import Normal
from xtask_mt.tasks.segmentation import Segmentation

register_task(Segmentation())
register_task(Depth())
register_task(Normal())

__all__ = ["ConsistencyLoss", "Depth", "DirectLoss", "Normal", "Segmentation", "Task", "edge_name",
           "get_task", "higher_is_better", "register_task", "registered_tasks",
           "unregister_task"]
