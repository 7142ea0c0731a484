"""Gradient diagnostics: norms, cosines and the Gram condition number by hand, and in the
training history when trainer.grad_stats_every is set (and absent when it is not)."""

from __future__ import annotations

import math

import pytest
import torch
from helpers.config import TINY, compose_config

from xtask_mt.engine.step import gradient_stats
from xtask_mt.engine.trainer import train


def test_figures_by_hand():
    stats = gradient_stats(("a", "b"), torch.tensor([[3.0, 4.0], [4.0, -3.0]]))
    assert stats["norm_a"].item() == pytest.approx(5.0)
    assert stats["cos_a_b"].item() == pytest.approx(0.0, abs=1e-12)
    assert stats["gram_cond"].item() == pytest.approx(1.0)
    stats = gradient_stats(("a", "b"), torch.tensor([[1.0, 0.0], [1.0, 1.0]]))
    assert stats["cos_a_b"].item() == pytest.approx(1 / math.sqrt(2))
    # Gram [[1, 1], [1, 2]]: eigenvalues (3 +- sqrt 5) / 2
    expected = (3 + math.sqrt(5)) / (3 - math.sqrt(5))
    assert stats["gram_cond"].item() == pytest.approx(expected)


def test_the_history_holds_them_only_when_asked(tmp_path):
    on = train(compose_config(TINY + ["trainer.grad_stats_every=1"]), tmp_path / "on")
    epoch = on["history"][0]
    assert epoch["train/grad_norm_seg"] > 0 and epoch["train/grad_norm_depth"] > 0
    assert -1 <= epoch["train/grad_cos_seg_depth"] <= 1
    assert epoch["train/grad_gram_cond"] >= 1
    off = train(compose_config(TINY), tmp_path / "off")
    assert not any(k.startswith("train/grad_") for k in off["history"][0])


def test_a_gradient_method_s_own_task_gradients_are_reused(tmp_path, monkeypatch):
    """With pcgrad the diagnostics take the method's task gradients instead of K more
    backward passes; on the first step (same weights, same batch) they equal those a
    loss-based method measures itself."""
    from xtask_mt.engine import step as step_module

    one_step = TINY + ["trainer.grad_stats_every=1", "dataset.train_size=4"]
    measured = train(compose_config(one_step), tmp_path / "fixed")["history"][0]
    calls = {"n": 0}
    original = step_module.task_jacobian

    def counted(*args, **kwargs):
        calls["n"] += 1
        return original(*args, **kwargs)

    monkeypatch.setattr(step_module, "task_jacobian", counted)
    reused = train(compose_config(one_step + ["weighting=pcgrad"]),
                   tmp_path / "pcgrad")["history"][0]
    assert calls["n"] == 0
    for key in ("train/grad_norm_seg", "train/grad_norm_depth", "train/grad_cos_seg_depth",
                "train/grad_gram_cond"):
        assert reused[key] == pytest.approx(measured[key], rel=1e-4), key
