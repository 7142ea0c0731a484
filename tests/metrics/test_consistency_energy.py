"""The seed's consistency energy: per edge the mean over the pixels of its target task's
energy term, and their mean; worked by hand on a 2x2 image."""

from __future__ import annotations

import math

import pytest
import torch
from helpers.config import compose_config

from xtask_mt.config.build import build_metrics
from xtask_mt.config.validate import validation_metric_names
from xtask_mt.metrics import ConsistencyEnergy
from xtask_mt.reports.evaluation import format_report
from xtask_mt.tasks import get_task
from xtask_mt.tracking.wandb_run import summary_values


def _two_by_two() -> dict[str, torch.Tensor]:
    """Seg: the transferred logits differ from the direct ones at pixel (0, 0) only, (ln 3, 0)
    against (0, 0); depth: |transferred - direct| is 1, 0, 0, 2."""
    direct_seg = torch.zeros(1, 2, 2, 2)
    transferred_seg = direct_seg.clone()
    transferred_seg[0, 0, 0, 0] = math.log(3.0)
    return {"seg": direct_seg, "depth_to_seg": transferred_seg,
            "depth": torch.tensor([[[[0.0, 1.0], [2.0, 3.0]]]]),
            "seg_to_depth": torch.tensor([[[[1.0, 1.0], [2.0, 1.0]]]])}


# KL((1/2, 1/2) || (3/4, 1/4)) = 1/2 ln(2/3) + 1/2 ln 2 = 1/2 ln(4/3), at 1 pixel of 4
SEG_ENERGY = 0.5 * math.log(4 / 3) / 4
DEPTH_ENERGY = (1 + 0 + 0 + 2) / 4


def _energy() -> ConsistencyEnergy:
    return ConsistencyEnergy({name: (target, get_task(target).energy_term)
                              for name, target in (("seg_to_depth", "depth"),
                                                   ("depth_to_seg", "seg"))})


def test_the_energy_of_a_2x2_image_by_hand():
    energy = _energy()
    energy.update(_two_by_two())
    result = energy.compute()
    assert result["energy_depth_to_seg"] == pytest.approx(SEG_ENERGY)
    assert result["energy_seg_to_depth"] == pytest.approx(DEPTH_ENERGY)
    # the seed's definition: 0.5 x seg term + 0.5 x depth term
    assert result["consistency_energy"] == pytest.approx(0.5 * SEG_ENERGY + 0.5 * DEPTH_ENERGY)


def test_batches_add_up_and_edges_a_model_does_not_output_are_left_out():
    energy = _energy()
    out = _two_by_two()
    energy.update(out)
    same = {**out, "seg_to_depth": out["depth"]}  # a second image, depth agreeing exactly
    energy.update(same)
    result = energy.compute()
    assert result["energy_seg_to_depth"] == pytest.approx(DEPTH_ENERGY / 2)
    assert result["energy_depth_to_seg"] == pytest.approx(SEG_ENERGY)
    direct_only = _energy()
    direct_only.update({"seg": out["seg"], "depth": out["depth"]})
    assert direct_only.compute() == {}


def test_over_any_edge_set_the_energy_is_the_mean_of_the_per_edge_figures():
    cfg = compose_config(["dataset=nyuv2", "model.tasks=[seg,depth,normal]",
                          "model.transfer.edges=[[seg,depth],[depth,seg],[depth,normal]]"])
    metrics = build_metrics(cfg, 2, "cpu")
    torch.manual_seed(0)
    out = {**_two_by_two(), "normal": torch.randn(1, 3, 2, 2),
           "depth_to_normal": torch.randn(1, 3, 2, 2)}
    batch = {"seg": torch.zeros(1, 2, 2, dtype=torch.long), "depth": torch.ones(1, 1, 2, 2),
             "depth_mask": torch.ones(1, 1, 2, 2, dtype=torch.bool),
             "normal": torch.nn.functional.normalize(torch.randn(1, 3, 2, 2), dim=1)}
    metrics.update(out, batch)
    result = metrics.compute()
    cosine = torch.nn.functional.cosine_similarity(out["depth_to_normal"].double(),
                                                   out["normal"].double(), dim=1)
    normal_energy = float((1 - cosine).mean())
    assert result["energy_depth_to_normal"] == pytest.approx(normal_energy)
    edges = [result[f"energy_{e}"] for e in ("seg_to_depth", "depth_to_seg", "depth_to_normal")]
    assert result["consistency_energy"] == pytest.approx(sum(edges) / 3)
    assert {f"val/{k}" for k in result if "energy" in k} <= validation_metric_names(cfg)


def test_the_energy_reaches_the_wandb_summary_and_the_evaluation_report():
    history = [{"epoch": 1, "val/consistency_energy": 0.3},
               {"epoch": 2, "val/consistency_energy": 0.2}]
    assert summary_values(history, {}, 0)["min/val/consistency_energy"] == 0.2
    report = format_report({"split": "val", "checkpoint": "best.pt", "epoch": 2,
                            "model": "xtask", "encoder": "resnet34", "dataset": "synthetic",
                            "num_images": 4, "tasks": ["seg", "depth"],
                            "metrics": {"val/miou": 0.5, "val/energy_seg_to_depth": 0.25,
                                        "val/energy_depth_to_seg": 0.125,
                                        "val/consistency_energy": 0.1875}})
    assert "seg->depth" in report and "0.2500" in report
    assert "mean over the edges" in report and "0.1875" in report
