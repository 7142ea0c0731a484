"""method=kd4mtl end to end: teachers from this project's single-task runs, refusals of
teachers that cannot teach, and the adaptors saved and resumed with the run."""

from __future__ import annotations

import json

import pytest
import torch
from helpers.config import TINY, compose_config

from xtask_mt.config.validate import validate_config
from xtask_mt.engine.checkpoint import load_checkpoint
from xtask_mt.engine.distillation import TeacherError, build_distillation, load_teacher
from xtask_mt.engine.trainer import train
from xtask_mt.errors import ConfigError


@pytest.fixture(scope="module")
def teachers(tmp_path_factory):
    runs = {}
    for model in ("stl_segmentation", "stl_depth"):
        out = tmp_path_factory.mktemp(model)
        train(compose_config(TINY + [f"model={model}"]), out)
        runs[model] = out
    return runs


def _kd(teachers, *extra: str) -> list[str]:
    entries = ",".join(str(teachers[m]) for m in ("stl_segmentation", "stl_depth"))
    return TINY + ["model=mtl", "method=kd4mtl", f"kd.teachers=[{entries}]", *extra]


def test_kd4mtl_trains_with_a_distillation_loss_per_task_and_resumes_its_adaptors(
        teachers, tmp_path):
    train(compose_config(_kd(teachers)), tmp_path)
    first = load_checkpoint(tmp_path / "checkpoints" / "last.pt")
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    for task in ("seg", "depth"):
        assert metrics["train"][f"loss_kd_{task}"] > 0
    assert set(first["distillation"]) == {"adaptors.seg.0.weight", "adaptors.depth.0.weight"}
    assert len(first["optimizer"]["param_groups"]) == 2
    assert first["optimizer"]["param_groups"][1]["lr"] == pytest.approx(0.1)
    train(compose_config(_kd(teachers, "trainer.epochs=2")), tmp_path)
    second = load_checkpoint(tmp_path / "checkpoints" / "last.pt")
    assert second["epoch"] == 2
    assert not torch.equal(first["distillation"]["adaptors.seg.0.weight"],
                           second["distillation"]["adaptors.seg.0.weight"])


def test_teachers_are_frozen_trunks_in_eval_mode(teachers):
    cfg = compose_config(_kd(teachers))
    student = torch.nn.Module()
    student.channels = (64, 64, 128, 256, 512)
    kd = build_distillation(cfg, student, ("seg", "depth"), 7, torch.device("cpu"))
    assert set(kd.teachers) == {"seg", "depth"}
    for trunk in kd.teachers.values():
        assert not trunk.training
        assert not any(p.requires_grad for p in trunk.parameters())
    saved = load_checkpoint(teachers["stl_depth"] / "checkpoints" / "best.pt")["model"]
    torch.testing.assert_close(kd.teachers["depth"].state_dict()["layer4.1.conv2.weight"],
                               saved["encoder.layer4.1.conv2.weight"])


def test_a_teacher_that_cannot_teach_is_refused_in_one_line(teachers, tmp_path):
    with pytest.raises(TeacherError, match="does not exist"):
        load_teacher(str(tmp_path / "missing"), 7, "resnet_unet")
    with pytest.raises(TeacherError, match="segments 7 classes, this model 19"):
        load_teacher(str(teachers["stl_segmentation"]), 19, "resnet_unet")
    with pytest.raises(TeacherError, match="model.arch=resnet_unet run, this model is "
                                            "model.arch=mtan"):
        load_teacher(str(teachers["stl_segmentation"]), 7, "mtan")
    multi = tmp_path / "mtl"
    train(compose_config(TINY + ["model=mtl"]), multi)
    with pytest.raises(TeacherError, match=r"trained on tasks \['seg', 'depth'\]"):
        load_teacher(str(multi), 7, "resnet_unet")
    student = torch.nn.Module()
    student.channels = (64, 64, 128, 256, 512)
    twice = compose_config(TINY + ["model=mtl", "method=kd4mtl",
                                   f"kd.teachers=[{teachers['stl_depth']},"
                                   f"{teachers['stl_depth']}]"])
    with pytest.raises(TeacherError, match="two teachers for 'depth'"):
        build_distillation(twice, student, ("seg", "depth"), 7, torch.device("cpu"))
    with pytest.raises(TeacherError, match="does not learn"):
        build_distillation(twice, student, ("seg",), 7, torch.device("cpu"))


def test_kd4mtl_settings_are_validated_before_any_work():
    cfg = compose_config(TINY + ["method=kd4mtl", "kd.weight=-1", "trainer.compile=true"])
    with pytest.raises(ConfigError) as error:
        validate_config(cfg)
    message = str(error.value)
    assert "kd.teachers" in message and "kd.weight=-1" in message
    assert "trainer.compile=true cannot be combined with method=kd4mtl" in message
