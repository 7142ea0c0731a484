"""One colour scale for value maps: panels and W&B previews draw depth alike, with a bar."""

from __future__ import annotations

import numpy as np

from xtask_mt.tracking.previews import _task_preview
from xtask_mt.viz import panels
from xtask_mt.viz.colours import DEPTH_CMAP, colour_bar, colour_values


def test_low_values_are_bright_and_the_bar_runs_from_low_to_high() -> None:
    rgb = colour_values(np.array([[1.0, 5.0, 9.0]]), lo=1.0, hi=9.0, valid=np.array(
        [[True, True, False]]))
    assert rgb[0, 0].sum() > rgb[0, 1].sum()  # near = bright
    assert (rgb[0, 2] == 0).all()  # invalid: black
    bar = colour_bar(height=10, width=3)
    assert bar.shape == (10, 3, 3)
    assert (bar[0, 0] == rgb[0, 0]).all()
    assert (bar[-1, 0] == colour_values(np.array([[9.0]]), 1.0, 9.0)[0, 0]).all()


def test_panels_and_previews_share_the_scale_and_previews_carry_its_range() -> None:
    import torch

    assert panels.DEPTH_CMAP == DEPTH_CMAP
    depth = torch.tensor([[[[2.0, 4.0], [6.0, 8.0]]]])
    batch = {"depth": depth, "depth_mask": torch.ones_like(depth, dtype=torch.bool)}
    preview = _task_preview("depth", {"depth": depth}, batch, (), 0, void_id=7)
    assert preview.scale == (2.0, 8.0)
    truth = preview.layers["ground_truth"]
    assert (truth[0, 0] == colour_values(np.array([[2.0]]), 2.0, 8.0)[0, 0]).all()
