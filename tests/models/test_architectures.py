"""Every model config builds on every dataset and gives predictions of the right shapes;
configs and checkpoints from before model.arch stand for the networks they were made with."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from helpers.config import compose_config
from omegaconf import OmegaConf

from xtask_mt.config.build import (
    LEGACY_MODEL_SETTINGS,
    build_model,
    upgrade_saved_config,
)
from xtask_mt.engine.checkpoint import CheckpointError, check_model_spec, model_spec
from xtask_mt.models import UNetTransferNet

DATASETS = [("synthetic", 7, []), ("cityscapes", 7, []), ("cityscapes", 19, []),
            ("nyuv2", 13, []), ("nyuv2", 13, ["model.tasks=[seg,depth,normal]",
                                             "model.transfer.edges=[[seg,depth],[depth,seg]]"])]
MODELS = [["model=xtask", "encoder=resnet18"], ["model=mtl", "encoder=resnet18"],
          ["model=stl_segmentation", "encoder=resnet18"], ["model=stl_depth", "encoder=resnet18"],
          ["model=mtan"], ["model=mtan", "model.transfer.enabled=true"], ["model=adamtnet"],
          ["model=deeplabv3plus", "encoder=resnet18", "model.transfer.enabled=true"]]


# single-task models keep their one task: the 3-task list is for the multi-task ones
COMBINATIONS = [(m, d) for m in MODELS for d in DATASETS if not (m[0].startswith("model=stl")
                                                                  and d[2])]


@pytest.mark.parametrize(("model", "dataset"), COMBINATIONS,
                         ids=[f"{' '.join(m)}-{d[0]}-{d[1]}-{len(d[2])}" for m, d in COMBINATIONS])
def test_every_model_predicts_every_task_at_input_size(model, dataset):
    name, classes, extra = dataset
    overrides = [f"dataset={name}", f"dataset.num_classes={classes}", "dataset.height=32",
                 "dataset.width=64", "dataset.batch_size=2", *model, *extra]
    cfg = compose_config(overrides)
    torch.manual_seed(0)
    net = build_model(cfg, classes).eval()
    with torch.no_grad():
        out = net(torch.randn(2, 3, 32, 64))
    channels = {"seg": classes, "depth": 1, "normal": 3}
    expected = {t: channels[t] for t in cfg.model.tasks}
    if cfg.model.transfer.enabled:
        expected |= {f"{s}_to_{t}": channels[t] for s, t in cfg.model.transfer.edges}
    assert {k: v.shape for k, v in out.items()} == {
        k: (2, c, 32, 64) for k, c in expected.items()}
    assert all(torch.isfinite(v).all() for v in out.values())


def test_a_config_saved_before_model_arch_builds_the_former_networks():
    cfg = compose_config(["encoder=resnet18"])
    saved = OmegaConf.to_container(cfg)
    for key in ("arch", "decoder_align_corners"):
        del saved["model"][key]
    del saved["model"]["transfer"]["arch"]
    old = upgrade_saved_config(OmegaConf.create(saved))
    assert old.model.arch == "resnet_unet"
    assert old.model.decoder_align_corners is False
    assert old.model.transfer.arch == "unet"
    net = build_model(old, 7)
    assert isinstance(net.seg_to_depth, UNetTransferNet)
    assert not net.decoders["seg"].align_corners


def test_a_checkpoint_from_before_model_arch_is_refused_by_the_new_defaults_naming_why():
    cfg = compose_config(["encoder=resnet18"])
    old_spec = {k: v for k, v in model_spec(cfg, 7).items()
                if k not in ("model.arch", "model.decoder_align_corners", "model.transfer.arch",
                             "model.decoder_bias")}
    with pytest.raises(CheckpointError, match="model.transfer.arch: checkpoint='unet'"):
        check_model_spec(Path("old.pt"), old_spec, model_spec(cfg, 7))
    legacy = compose_config(["encoder=resnet18", *(f"model.{k}={v}" for k, v in
                                                   LEGACY_MODEL_SETTINGS.items())])
    check_model_spec(Path("old.pt"), old_spec, model_spec(legacy, 7))


def test_adamtnet_checkpoints_record_the_input_size_their_weights_are_built_for():
    a = model_spec(compose_config(["model=adamtnet", "dataset.batch_size=8"]), 7)
    b = model_spec(compose_config(["model=adamtnet", "dataset.batch_size=4"]), 7)
    with pytest.raises(CheckpointError, match="input"):
        check_model_spec(Path("a.pt"), a, b)


def test_mtan_checkpoints_do_not_depend_on_the_unused_encoder_group():
    a = model_spec(compose_config(["model=mtan", "encoder=resnet18"]), 7)
    b = model_spec(compose_config(["model=mtan", "encoder=resnet50"]), 7)
    assert a == b and "encoder.depth" not in a


@pytest.mark.parametrize("model", ["mtan", "adamtnet"])
def test_other_architectures_train_resume_and_evaluate_to_the_same_figures(tmp_path, model):
    """One epoch, a resume to two, and evaluate.py's figures equal the last validation
    (for AdaMT-Net with a last batch of 1 of 3 images, which uses the first weight rows)."""
    from helpers.config import TINY

    from xtask_mt.engine.evaluate_run import EvalOptions, evaluate_run
    from xtask_mt.engine.trainer import train

    overrides = [*TINY, f"model={model}", "dataset.batch_size=2", "dataset.val_size=3"]
    train(compose_config(overrides), tmp_path)
    summary = train(compose_config([*overrides, "trainer.epochs=2"]), tmp_path)
    assert summary["epochs_run"] == [1, 2]
    (tmp_path / ".hydra").mkdir()
    OmegaConf.save(compose_config([*overrides, "trainer.epochs=2"]),
                   tmp_path / ".hydra" / "config.yaml")
    result = evaluate_run(tmp_path, checkpoint="last",
                          options=EvalOptions(device="cpu", progress_bar=False))
    for key in ("val/miou", "val/abs_err"):
        assert result["metrics"][key] == pytest.approx(summary["final"][key], rel=1e-5)
