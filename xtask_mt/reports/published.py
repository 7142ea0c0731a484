"""The published figures the benchmark tables print beside ours, in the papers' units.

Units: mIoU, pixel accuracy and the within-angle shares in %; depth errors in the dataset's
unit (NYUv2 metres; Cityscapes disparity / 256, its relative error in %); normal angles in
degrees. A row either has every metric of its setting or only its published Delta.

Sources:
- MTAN protocol (SegNet-MTAN, last-10-epoch mean over 3 seeds): Navon et al., "Multi-Task
  Learning as a Bargaining Game" (Nash-MTL), ICML 2022, Table 2 (NYUv2) and Table 3
  (Cityscapes), for the single-task base and the LS, UW, DWA, PCGrad, CAGrad, IMTL-G and
  Nash-MTL rows; Liu et al., "FAMO: Fast Adaptive Multitask Optimization", NeurIPS 2023, for
  FAMO; Senushkin et al., "Independent Component Alignment for Multi-Task Learning"
  (Aligned-MTL), CVPR 2023, for Aligned-MTL. Delta_m there: lower is better.
- LibMTL protocol (DeepLabV3+ on a dilated ResNet-50, epoch best on val, 3 seeds): Lin et al.,
  "Dual-Balancing for Multi-Task Learning" (DB-MTL), 2023, Table 1 (NYUv2) and Table 2
  (Cityscapes). Delta_p there: higher is better.
"""

from __future__ import annotations

from dataclasses import dataclass

NYUV2_METRICS = ("miou", "pixacc", "abs_err", "abs_rel", "normal_mean", "normal_median",
                 "normal_within_11", "normal_within_22", "normal_within_30")
CITYSCAPES_METRICS = ("miou", "pixacc", "abs_err", "abs_rel")
SETTING_METRICS = {"nyuv2": NYUV2_METRICS, "cityscapes": CITYSCAPES_METRICS}
SETTING_TASKS = {"nyuv2": ("seg", "depth", "normal"), "cityscapes": ("seg", "depth")}

# our metric (a share in [0, 1] where the papers print %) -> the papers' unit, per setting
_PERCENT = {"miou", "pixacc", "normal_within_11", "normal_within_22", "normal_within_30"}


def paper_units(setting: str, metric: str, value: float) -> float:
    """One of our validation figures in the unit the papers print it."""
    if metric in _PERCENT or (setting == "cityscapes" and metric == "abs_rel"):
        return 100.0 * value
    return value


@dataclass(frozen=True)
class PublishedRow:
    """One method's published row: its metrics (None where the source gives only the
    Delta) and its Delta as published."""

    method: str  # our row name (a weighting name), or the paper's where we have none
    label: str   # as the paper names it
    delta: float
    source: str
    values: tuple[float, ...] | None = None


_NASH = "Nash-MTL, ICML 2022"
_FAMO = "FAMO, NeurIPS 2023"
_ALIGNED = "Aligned-MTL, CVPR 2023"
_DBMTL = "DB-MTL, 2023"

STL_BASE: dict[tuple[str, str], tuple[tuple[float, ...], str]] = {
    ("mtan", "nyuv2"): ((38.30, 63.76, 0.6754, 0.2780, 25.01, 19.21, 30.14, 57.20, 69.15),
                        f"{_NASH}, Table 2"),
    ("mtan", "cityscapes"): ((74.01, 93.16, 0.0125, 27.77), f"{_NASH}, Table 3"),
    ("libmtl", "nyuv2"): ((53.50, 75.39, 0.3926, 0.1605, 21.99, 15.16, 39.04, 65.00, 75.16),
                          f"{_DBMTL}, Table 1"),
    ("libmtl", "cityscapes"): ((69.06, 91.54, 0.01282, 43.53), f"{_DBMTL}, Table 2"),
}
"""(protocol, setting) -> (the single-task figures every paper of the protocol compares
with, in SETTING_METRICS order; source)"""

PUBLISHED_ROWS: dict[tuple[str, str], tuple[PublishedRow, ...]] = {
    ("mtan", "nyuv2"): (
        PublishedRow("fixed", "LS", 5.59, f"{_NASH}, Table 2",
                     (39.29, 65.33, 0.5493, 0.2263, 28.15, 23.96, 22.09, 47.50, 61.08)),
        PublishedRow("uncertainty", "UW", 4.05, f"{_NASH}, Table 2",
                     (36.87, 63.17, 0.5446, 0.2260, 27.04, 22.61, 23.54, 49.05, 63.65)),
        PublishedRow("dwa", "DWA", 3.57, f"{_NASH}, Table 2"),
        PublishedRow("pcgrad", "PCGrad", 3.97, f"{_NASH}, Table 2"),
        PublishedRow("cagrad", "CAGrad", 0.20, f"{_NASH}, Table 2"),
        PublishedRow("imtl_g", "IMTL-G", -0.76, f"{_NASH}, Table 2"),
        PublishedRow("nash_mtl", "Nash-MTL", -4.04, f"{_NASH}, Table 2",
                     (40.13, 65.93, 0.5261, 0.2171, 25.26, 20.08, 28.40, 55.47, 68.15)),
        PublishedRow("famo", "FAMO", -4.10, _FAMO),
        PublishedRow("aligned_mtl", "Aligned-MTL", -4.93, _ALIGNED),
    ),
    ("mtan", "cityscapes"): (
        PublishedRow("fixed", "LS", 22.60, f"{_NASH}, Table 3", (75.18, 93.49, 0.0155, 46.77)),
        PublishedRow("uncertainty", "UW", 5.89, f"{_NASH}, Table 3",
                     (72.02, 92.85, 0.0140, 30.13)),
        PublishedRow("nash_mtl", "Nash-MTL", 6.82, f"{_NASH}, Table 3",
                     (75.41, 93.66, 0.0129, 35.02)),
        PublishedRow("famo", "FAMO", 8.13, _FAMO),
        PublishedRow("aligned_mtl", "Aligned-MTL", 5.27, _ALIGNED),
    ),
    ("libmtl", "nyuv2"): (
        PublishedRow("fixed", "EW", -1.78, f"{_DBMTL}, Table 1"),
        PublishedRow("uncertainty", "UW", -1.52, f"{_DBMTL}, Table 1"),
        PublishedRow("dwa", "DWA", -1.71, f"{_DBMTL}, Table 1"),
        PublishedRow("pcgrad", "PCGrad", -1.57, f"{_DBMTL}, Table 1"),
        PublishedRow("cagrad", "CAGrad", -0.27, f"{_DBMTL}, Table 1"),
        PublishedRow("nash_mtl", "Nash-MTL", -1.01, f"{_DBMTL}, Table 1"),
        PublishedRow("aligned_mtl", "Aligned-MTL", -0.98, f"{_DBMTL}, Table 1"),
        PublishedRow("db_mtl", "DB-MTL", 1.15, f"{_DBMTL}, Table 1",
                     (53.92, 75.60, 0.3768, 0.1557, 21.97, 15.37, 38.43, 64.81, 75.24)),
    ),
    ("libmtl", "cityscapes"): (
        PublishedRow("fixed", "EW", -2.05, f"{_DBMTL}, Table 2"),
        PublishedRow("cagrad", "CAGrad", -0.87, f"{_DBMTL}, Table 2"),
        PublishedRow("nash_mtl", "Nash-MTL", -1.11, f"{_DBMTL}, Table 2"),
        PublishedRow("db_mtl", "DB-MTL", 0.20, f"{_DBMTL}, Table 2"),
    ),
}
"""(protocol, setting) -> the published rows, in the papers' order"""
