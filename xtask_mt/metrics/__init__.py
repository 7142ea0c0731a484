"""Per-task metric accumulators (sums over an evaluation set, turned into figures at the end)
and the collection that runs one per task."""

from xtask_mt.metrics.collection import MetricCollection, TaskMetrics
from xtask_mt.metrics.consistency_energy import ENERGY_KEY, ConsistencyEnergy
from xtask_mt.metrics.depth import DELTA_THRESHOLDS, DepthMetrics
from xtask_mt.metrics.segmentation import SegmentationMetrics, class_map
from xtask_mt.metrics.sums import NamedSums

__all__ = ["DELTA_THRESHOLDS", "ENERGY_KEY", "ConsistencyEnergy", "DepthMetrics",
           "MetricCollection", "NamedSums", "SegmentationMetrics", "TaskMetrics", "class_map"]
