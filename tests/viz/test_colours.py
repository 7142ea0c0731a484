"""One colour scale for value maps: panels and W&B previews draw depth alike, with a bar."""

from __future__ import annotations

import numpy as np

from xtask_mt.tracking.previews import _task_preview
from xtask_mt.viz import panels
from xtask_mt.viz.colours import colour_bar, colour_values


def test_low_values_are_bright_and_the_bar_runs_from_low_to_high() -> None:
    rgb = colour_values(np.array([[1.0, 5.0, 9.0]]), lo=1.0, hi=9.0, valid=np.array(
        [[True, True, False]]))
    assert rgb[0, 0].sum() > rgb[0, 1].sum()  # near = bright
    assert (rgb[0, 2] == 0).all()  # invalid: black
    bar = colour_bar(height=10, width=3)
    assert bar.shape == (10, 3, 3)
    assert (bar[0, 0] == rgb[0, 0]).all()
    assert (bar[-1, 0] == colour_values(np.array([[9.0]]), 1.0, 9.0)[0, 0]).all()


def test_previews_carry_their_range() -> None:
    import torch

    depth = torch.tensor([[[[2.0, 4.0], [6.0, 8.0]]]])
    batch = {"depth": depth, "depth_mask": torch.ones_like(depth, dtype=torch.bool)}
    preview = _task_preview("depth", {"depth": depth}, batch, (), 0, void_id=7)
    assert preview.scale == (2.0, 8.0)
    truth = preview.layers["ground_truth"]
    assert (truth[0, 0] == colour_values(np.array([[2.0]]), 2.0, 8.0)[0, 0]).all()


def test_panels_draw_depth_in_the_colours_of_the_wandb_preview() -> None:
    """The same ground truth and prediction (with a wild pixel beyond the ground truth's
    range, and a NaN) come out in the same colours in a panel and in a W&B preview."""
    import matplotlib.pyplot as plt
    import torch

    truth = torch.tensor([[[[2.0, 4.0, 5.0], [6.0, 8.0, 3.0]]]])
    pred = torch.tensor([[[[1.0, 3.0, 7.0], [9.0, float("nan"), 40.0]]]])
    valid = torch.tensor([[[[True, True, True], [True, True, False]]]])
    batch = {"depth": truth, "depth_mask": valid}
    preview = _task_preview("depth", {"depth": pred}, batch, (), 0, void_id=7)
    row = panels.PanelRow("depth", "map", truth[0, 0].numpy(), valid[0, 0].numpy(),
                          {"direct": pred[0, 0].numpy()})
    fig, axes = plt.subplots(1, 3)
    panels._map_row(fig, axes, row)
    drawn = {"ground_truth": axes[0].get_images()[0], "direct": axes[1].get_images()[0]}
    for name, image in drawn.items():
        rgb = (image.to_rgba(image.get_array())[..., :3] * 255).round()
        wandb_rgb = preview.layers[name].astype(float)
        assert np.abs(rgb - wandb_rgb).max() <= 3, name  # one step of the 256-colour table
    plt.close(fig)


def test_non_finite_values_are_black_not_an_error() -> None:
    rgb = colour_values(np.array([[np.nan, np.inf, -np.inf, 2.0]]), lo=1.0, hi=3.0)
    assert (rgb[0, :3] == 0).all() and rgb[0, 3].any()
