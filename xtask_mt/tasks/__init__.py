"""The task registry: `seg` and `depth` are registered on import; see base.Task."""

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
from xtask_mt.tasks.segmentation import Segmentation

register_task(Segmentation())
register_task(Depth())

__all__ = ["ConsistencyLoss", "Depth", "DirectLoss", "Segmentation", "Task", "edge_name",
           "get_task", "higher_is_better", "register_task", "registered_tasks",
           "unregister_task"]
