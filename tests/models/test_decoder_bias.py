"""The decoders' biases: the method's network (biases in the 3x3 convs before BN, none in
the 1x1 output conv) by default, the former placement (`model.decoder_bias=head`) for runs
made before it; a checkpoint that does not record the setting stands for the former one."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from helpers.config import TINY, compose_config
from omegaconf import OmegaConf

from xtask_mt.config.build import build_model, upgrade_saved_config
from xtask_mt.engine.checkpoint import (
    CheckpointError,
    check_model_spec,
    load_checkpoint,
    model_spec,
    save_checkpoint,
)
from xtask_mt.models import UNetDecoder


def _parameters(overrides: list[str]) -> int:
    net = build_model(compose_config(["encoder=resnet34", *overrides]), 7)
    return sum(p.numel() for p in net.parameters())


def test_the_paper_model_has_the_methods_exact_parameter_count():
    """ResNet-34, 7 classes, both transfer nets: the original network's 31,553,344; the
    former placement has 5 x 3 x 128 conv biases per decoder fewer and the two heads' 7 + 1
    biases more, 3,832 fewer in all."""
    assert _parameters([]) == 31_553_344
    assert _parameters(["model.decoder_bias=head"]) == 31_553_344 - 3_832


def test_seed_biases_sit_in_the_3x3_convs_and_not_in_the_head():
    seed = UNetDecoder((64, 64, 128, 256, 512), 7, width=16)
    head = UNetDecoder((64, 64, 128, 256, 512), 7, width=16, bias="head")
    assert seed.head.bias is None and head.head.bias is not None
    convs = [m for m in seed.blocks.modules() if isinstance(m, torch.nn.Conv2d)]
    assert len(convs) == 15 and all(c.bias is not None for c in convs)
    assert all(m.bias is None for m in head.blocks.modules() if isinstance(m, torch.nn.Conv2d))
    with pytest.raises(ValueError, match="decoder bias 'both'"):
        UNetDecoder((64, 64, 128, 256, 512), 7, bias="both")


def test_a_config_saved_before_decoder_bias_builds_the_former_decoders():
    saved = OmegaConf.to_container(compose_config(["encoder=resnet18"]))
    del saved["model"]["decoder_bias"]
    old = upgrade_saved_config(OmegaConf.create(saved))
    assert old.model.decoder_bias == "head"
    assert build_model(old, 7).decoders["seg"].head.bias is not None


def test_a_checkpoint_without_decoder_bias_is_refused_by_the_new_default_naming_it():
    cfg = compose_config(["encoder=resnet18"])
    old_spec = {k: v for k, v in model_spec(cfg, 7).items() if k != "model.decoder_bias"}
    with pytest.raises(CheckpointError, match="model.decoder_bias: checkpoint='head'"):
        check_model_spec(Path("old.pt"), old_spec, model_spec(cfg, 7))
    legacy = compose_config(["encoder=resnet18", "model.decoder_bias=head"])
    check_model_spec(Path("old.pt"), old_spec, model_spec(legacy, 7))


def _as_written_before_decoder_bias(run: Path) -> None:
    """Remove model.decoder_bias from the run's saved config and checkpoints, as a run
    made before the setting existed left them."""
    config = OmegaConf.load(run / ".hydra" / "config.yaml")
    del config.model["decoder_bias"]
    OmegaConf.save(config, run / ".hydra" / "config.yaml")
    for path in (run / "checkpoints").glob("*.pt"):
        payload = load_checkpoint(path)
        del payload["config"]["model"]["decoder_bias"]
        del payload["model_spec"]["model.decoder_bias"]
        save_checkpoint(path, payload)


def test_an_old_checkpoint_evaluates_to_its_recorded_figures_and_resumes(tmp_path):
    from xtask_mt.engine.evaluate_run import EvalOptions, evaluate_run
    from xtask_mt.engine.trainer import train

    old = [*TINY, "model.decoder_bias=head"]
    summary = train(compose_config(old), tmp_path)
    (tmp_path / ".hydra").mkdir()
    OmegaConf.save(compose_config(old), tmp_path / ".hydra" / "config.yaml")
    _as_written_before_decoder_bias(tmp_path)
    result = evaluate_run(tmp_path, checkpoint="last",
                          options=EvalOptions(device="cpu", progress_bar=False))
    for key in ("val/miou", "val/pixacc", "val/abs_err"):
        assert result["metrics"][key] == pytest.approx(summary["final"][key], rel=1e-5)
    with pytest.raises(CheckpointError, match="model.decoder_bias"):
        train(compose_config([*TINY, "trainer.epochs=2"]), tmp_path)
    resumed = train(compose_config([*old, "trainer.epochs=2"]), tmp_path)
    assert resumed["epochs_run"] == [1, 2]
    assert resumed["history"][0] == summary["history"][0]
