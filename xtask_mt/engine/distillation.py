"""KD4MTL in training: frozen single-task teachers loaded from this project's own runs, and
the per-task adaptors that align the trained model's shared features with theirs.

The teachers are runs made with `model=stl_segmentation` / `model=stl_depth` (or any
single-task model): `kd.teachers` lists their run dirs (their checkpoints/best.pt is used) or
checkpoint files. Only a teacher's trunk is kept, in eval mode (its batch-norm statistics are
its own), without gradients.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from omegaconf import DictConfig, OmegaConf
from torch import nn

from xtask_mt.config.build import build_model, upgrade_saved_config, without_pretrained_weights
from xtask_mt.engine.checkpoint import check_model_spec, load_checkpoint, model_spec
from xtask_mt.errors import UserError
from xtask_mt.losses import LossOutput
from xtask_mt.losses.distillation import FeatureDistillation
from xtask_mt.runtime.precision import StepOptions


class TeacherError(UserError):
    """A kd.teachers entry that cannot serve as a teacher of this model."""


def teacher_checkpoint(entry: str) -> Path:
    """The checkpoint a kd.teachers entry names: a file, or a run dir's checkpoints/best.pt."""
    path = Path(entry).expanduser()
    if path.is_dir():
        path = path / "checkpoints" / "best.pt"
    if not path.is_file():
        raise TeacherError(f"kd.teachers entry {entry}: {path} does not exist; give the output "
                           "dir of a finished single-task run (model=stl_segmentation or "
                           "model=stl_depth) or its checkpoint file")
    return path


def load_teacher(entry: str, num_classes: int, arch: str) -> tuple[str, nn.Module]:
    """(task, frozen trunk) of the single-task run `entry`, which must have been trained on
    `num_classes` classes with the architecture `arch` (so that aligned features match)."""
    path = teacher_checkpoint(entry)
    payload = load_checkpoint(path)
    if not payload.get("config"):
        raise TeacherError(f"kd.teachers entry {entry}: {path} holds no config to rebuild its "
                           "model from; use a checkpoint written by train.py")
    cfg = upgrade_saved_config(OmegaConf.create(payload["config"]))
    tasks = list(cfg.model.tasks)
    if len(tasks) != 1:
        raise TeacherError(f"kd.teachers entry {entry} was trained on tasks {tasks}; a teacher "
                           "is a single-task run (model=stl_segmentation or model=stl_depth)")
    if str(cfg.model.arch) != arch:
        raise TeacherError(f"kd.teachers entry {entry} is a model.arch={cfg.model.arch} run, "
                           f"this model is model.arch={arch}; train the teacher with the same "
                           f"architecture (e.g. model=stl_segmentation model.arch={arch})")
    saved_classes = payload.get("model_spec", {}).get("num_classes", num_classes)
    if tasks == ["seg"] and saved_classes != num_classes:
        raise TeacherError(f"kd.teachers entry {entry} segments {saved_classes} classes, this "
                           f"model {num_classes}; train the teacher on the same dataset")
    teacher = build_model(without_pretrained_weights(cfg), saved_classes)  # the checkpoint's
    check_model_spec(path, payload.get("model_spec", {}), model_spec(cfg, saved_classes))
    teacher.load_state_dict(payload["model"])
    trunk = teacher.encoder.eval()
    trunk.requires_grad_(False)
    return tasks[0], trunk


@dataclass
class Distillation:
    """What a training step needs for KD4MTL: the teachers' trunks and the adaptors."""

    teachers: dict[str, nn.Module]
    loss: FeatureDistillation

    def __call__(self, losses: LossOutput, features: Sequence[torch.Tensor],
                 image: torch.Tensor, options: StepOptions) -> LossOutput:
        """`losses` with each task's distillation loss added (see FeatureDistillation)."""
        with torch.no_grad(), options.autocast():
            taught = {task: trunk(image) for task, trunk in self.teachers.items()}
        return self.loss.add_to(losses, self.loss.distances(features, taught))


def build_distillation(cfg: DictConfig, trunk: nn.Module, tasks: Sequence[str],
                       num_classes: int, device: torch.device) -> Distillation | None:
    """The job's Distillation when `method=kd4mtl`, else None."""
    if cfg.get("method", {}).get("name", "none") != "kd4mtl":
        return None
    kd = cfg.kd
    teachers: dict[str, nn.Module] = {}
    for entry in kd.teachers:
        task, teacher = load_teacher(str(entry), num_classes, str(cfg.model.arch))
        if task not in tasks:
            raise TeacherError(f"kd.teachers entry {entry} teaches {task!r}, which this model "
                               f"does not learn (model.tasks={list(tasks)})")
        if task in teachers:
            raise TeacherError(f"kd.teachers has two teachers for {task!r}; give one per task")
        teachers[task] = teacher.to(device)
    student = tuple(trunk.channels)
    for level in kd.levels:
        if not -len(student) <= int(level) < len(student):
            raise TeacherError(f"kd.levels has {level}, but the model's trunk gives "
                               f"{len(student)} feature maps (levels -{len(student)}.."
                               f"{len(student) - 1})")
    theirs = {task: tuple(t.channels) for task, t in teachers.items()}
    for task, channels in theirs.items():
        for level in kd.levels:
            if not -len(channels) <= int(level) < len(channels):
                raise TeacherError(f"kd.levels has {level}, but the {task} teacher's trunk "
                                   f"gives {len(channels)} feature maps")
    loss = FeatureDistillation(student, theirs, list(kd.levels), float(kd.weight))
    return Distillation(teachers, loss.to(device))
