"""timm backbones as the trunk (encoder=timm): heads built from the backbone's feature_info,
every head's output for 2 and 3 tasks, training steps under every weighting, bf16,
channels-last and KD4MTL, a save and resume, pretrained weights from timm's cache or a file,
the offline refusal, and the refusals of what cannot work."""

from __future__ import annotations

import copy
import os
import subprocess
import sys

import pytest
import timm
import torch
from helpers.config import ROOT, TINY, compose_config
from omegaconf import OmegaConf
from torch.utils.data import default_collate

from xtask_mt.config.build import (
    build_dataset,
    build_model,
    build_objective,
    build_optimizer,
    build_weighting,
)
from xtask_mt.config.validate import validate_config
from xtask_mt.engine.distillation import Distillation
from xtask_mt.engine.loops import EpochSettings, train_one_epoch
from xtask_mt.engine.step import TrainingParts
from xtask_mt.engine.trainer import train
from xtask_mt.errors import ConfigError
from xtask_mt.losses.distillation import FeatureDistillation
from xtask_mt.models.timm_encoder import TimmEncoder, TimmEncoderError, TimmWeightsError
from xtask_mt.runtime.precision import StepOptions, maybe_compile, to_channels_last

CPU = torch.device("cpu")
BASE = [o for o in TINY if not o.startswith("encoder=")] + ["encoder=timm"]
# a Swin cut down to one block per stage: NHWC features, and a model of one input size
SWIN = ["encoder.name=swin_tiny_patch4_window7_224", "encoder.img_size=[32,64]",
        "encoder.model_kwargs={embed_dim:24,depths:[1,1,1,1],num_heads:[1,1,1,1],"
        "window_size:4}"]
BACKBONES = {  # five families: ConvNeXt, MobileNetV3, RegNet, ResNet-D, Swin
    "convnext_atto": ["encoder.name=convnext_atto"],
    "mobilenetv3_small_100": ["encoder.name=mobilenetv3_small_100"],
    "regnetx_002": ["encoder.name=regnetx_002"],
    "resnet18d": ["encoder.name=resnet18d"],
    "swin": SWIN,
}
THREE_TASKS = ["model.tasks=[seg,depth,normal]",
               "model.transfer.edges=[[seg,depth],[depth,seg],[depth,normal]]"]
# every weighting but `config` (a user's own class, see its tests); a loss-based, a
# gradient-based and the feature-gradient one (mgda_ub) in the quick suite
WEIGHTINGS = [w if w in ("uncertainty", "pcgrad", "mgda_ub") else
              pytest.param(w, marks=pytest.mark.slow)
              for w in sorted(p.stem for p in (ROOT / "conf" / "weighting").glob("*.yaml"))
              if w != "config"]


def _cfg(backbone: str, *extra: str):
    return compose_config([*BASE, *BACKBONES[backbone], *extra])


def _timm_features(cfg) -> torch.nn.Module:
    """timm's own features_only network for the config's backbone."""
    e = cfg.encoder
    kwargs = OmegaConf.to_container(e.model_kwargs) if e.model_kwargs else {}
    if e.img_size is not None:
        kwargs["img_size"] = tuple(e.img_size)
    return timm.create_model(e.name, features_only=True, **kwargs)


@pytest.mark.parametrize("backbone", BACKBONES)
def test_decoders_are_built_for_the_channels_and_strides_of_the_feature_info(backbone):
    cfg = _cfg(backbone)
    info = _timm_features(cfg).feature_info
    model = build_model(cfg, 7)
    assert model.encoder.channels == tuple(info.channels())
    assert model.encoder.strides == tuple(info.reduction())
    for decoder in model.decoders.values():
        deepest_first = list(reversed(info.channels()))
        first_convs = [block[0] for block in decoder.blocks]
        width = first_convs[0].out_channels
        assert [c.in_channels for c in first_convs] == [
            deepest_first[0], *(width + c for c in deepest_first[1:])]
        # the upsamplings take the deepest map back to the input size
        assert torch.prod(torch.tensor(decoder.scales)).item() == max(info.reduction())


@pytest.mark.parametrize("tasks", [2, 3])
@pytest.mark.parametrize("backbone", BACKBONES)
def test_every_head_predicts_at_input_size(backbone, tasks):
    cfg = _cfg(backbone, *(THREE_TASKS if tasks == 3 else []))
    torch.manual_seed(0)
    model = build_model(cfg, 7).eval()
    with torch.no_grad():
        features = model.encoder(torch.randn(2, 3, 32, 64))
        out = model(torch.randn(2, 3, 32, 64))
    # NCHW maps whatever layout timm returns (Swin's are NHWC)
    assert [f.shape[1:] for f in features] == [
        (c, 32 // s, 64 // s) for c, s in zip(model.encoder.channels, model.encoder.strides,
                                              strict=True)]
    assert model.encoder.nhwc == (backbone == "swin")
    channels = {"seg": 7, "depth": 1, "normal": 3}
    expected = {t: channels[t] for t in cfg.model.tasks}
    expected |= {f"{s}_to_{t}": channels[t] for s, t in cfg.model.transfer.edges}
    assert {k: tuple(v.shape) for k, v in out.items()} == {
        k: (2, c, 32, 64) for k, c in expected.items()}
    assert all(torch.isfinite(v).all() for v in out.values())


def _parts(cfg, precision: str = "32", channels_last: bool = False):
    """(parts, batch, model) of one training step of `cfg` on two synthetic samples."""
    torch.manual_seed(0)
    dataset = build_dataset(cfg, "train")
    batch = default_collate([dataset[i] for i in range(2)])
    model = to_channels_last(build_model(cfg, dataset.num_classes), channels_last)
    weighting = build_weighting(cfg, model.tasks)
    options = StepOptions(CPU, precision, channels_last)
    parts = TrainingParts(model, model, build_objective(cfg), weighting,
                          build_optimizer(cfg, model, weighting), options)
    return parts, batch, model


def _step_changes_the_trunk(parts, batch, model) -> dict[str, float]:
    """One step; the trunk's first layer and its deepest stage must both have moved."""
    first = next(model.encoder.parameters())
    deepest = model.encoder.last_shared_parameters()
    before = [p.detach().clone() for p in (first, *deepest)]
    stats = train_one_epoch(parts, [batch], EpochSettings(progress_bar=False)).stats
    assert torch.isfinite(torch.tensor(stats["total"]))
    assert not torch.equal(first, before[0])
    assert any(not torch.equal(p, b) for p, b in zip(deepest, before[1:], strict=True))
    return stats


@pytest.mark.parametrize("weighting", WEIGHTINGS)
def test_every_weighting_trains_a_timm_trunk(weighting):
    """On the NHWC Swin: the gradient methods take each task's gradient at its trunk's
    parameters or, for mgda_ub, at its NCHW feature maps."""
    _step_changes_the_trunk(*_parts(_cfg("swin", f"weighting={weighting}")))


@pytest.mark.parametrize("backbone", ["swin", "regnetx_002"])
@pytest.mark.parametrize("precision", ["32", "bf16-mixed"])
def test_channels_last_and_bf16_train_a_step(backbone, precision):
    parts, batch, model = _parts(_cfg(backbone, "weighting=uncertainty"), precision,
                                 channels_last=True)
    with parts.options.autocast():
        out = model(parts.options.image(batch["image"]))
    assert out["seg"].dtype == (torch.bfloat16 if precision == "bf16-mixed" else torch.float32)
    _step_changes_the_trunk(parts, batch, model)


def test_kd4mtl_aligns_the_features_of_a_timm_trunk():
    """Distillation reads the trunk's features (the NHWC Swin's, as NCHW maps) and trains
    the adaptors from its channels to the teachers'."""
    parts, batch, model = _parts(_cfg("swin", "model=mtl"))
    teachers = {task: copy.deepcopy(model.encoder).eval().requires_grad_(False)
                for task in ("seg", "depth")}
    for teacher in teachers.values():  # teachers that differ from the student
        torch.nn.init.normal_(teacher.last_shared_parameters()[0])
    loss = FeatureDistillation(model.encoder.channels,
                               {t: tr.channels for t, tr in teachers.items()}, [-1, 1], 1.0)
    parts.distillation = Distillation(teachers, loss)
    parts.optimizer.add_param_group({"params": list(loss.parameters()), "lr": 0.1})
    adaptor = loss.adaptors["seg"][0].weight.detach().clone()
    stats = _step_changes_the_trunk(parts, batch, model)
    assert stats["loss_kd_seg"] > 0 and stats["loss_kd_depth"] > 0
    assert loss.adaptors["seg"][0].weight.shape[:2] == (model.encoder.channels[-1],) * 2
    assert not torch.equal(loss.adaptors["seg"][0].weight, adaptor)


@pytest.mark.slow
@pytest.mark.parametrize("backbone", BACKBONES)
def test_training_saves_and_resumes(tmp_path, backbone):
    """One epoch, then a resume to the second from its checkpoint: the checkpoint names
    the backbone, and a checkpoint of another backbone is refused."""
    run = ["dataset.train_size=2", "dataset.batch_size=2", "dataset.val_size=2"]
    first = train(_cfg(backbone, *run), tmp_path)
    saved = torch.load(tmp_path / "checkpoints" / "last.pt", weights_only=True)
    assert saved["model_spec"]["encoder.name"] == _cfg(backbone).encoder.name
    second = train(_cfg(backbone, *run, "trainer.epochs=2"), tmp_path)
    assert second["epochs_run"] == [1, 2]
    assert first["history"] == second["history"][:1]  # epoch 1 was not run again
    resumed = torch.load(tmp_path / "checkpoints" / "last.pt", weights_only=True)
    assert any(not torch.equal(v, saved["model"][k]) for k, v in resumed["model"].items())
    other = "resnet18d" if backbone != "resnet18d" else "convnext_atto"
    with pytest.raises(Exception, match="encoder.name"):
        train(_cfg(other, *run, "trainer.epochs=3"), tmp_path)


@pytest.mark.slow
def test_compiled_timm_model_matches_eager():
    """torch.compile of the whole model with a timm trunk (aot_eager: graph capture and
    autograd without C++ code generation, which takes minutes on 2 cores): its gradients
    are as close to an fp64 reference as eager fp32's (fp32 rounding differs with the order
    of operations, and the BatchNorms over the 1x2 deepest maps amplify it)."""
    parts, batch, model = _parts(_cfg("convnext_atto"))

    def gradients(net, batch):
        net.zero_grad(set_to_none=True)
        sum(parts.objective(net(batch["image"]), batch).tasks.values()).backward()
        return {n.removeprefix("_orig_mod."): p.grad.clone().double()
                for n, p in net.named_parameters()}

    def distance(a, b):
        return (sum(float((a[k] - b[k]).norm() ** 2) for k in b)
                / sum(float(b[k].norm() ** 2) for k in b)) ** 0.5

    double = {k: v.double() if v.is_floating_point() else v for k, v in batch.items()}
    reference = gradients(copy.deepcopy(model).double(), double)
    eager = gradients(model, batch)
    compiled = gradients(maybe_compile(copy.deepcopy(model), True, backend="aot_eager"), batch)
    assert compiled.keys() == eager.keys()
    assert distance(compiled, reference) < 3 * distance(eager, reference) + 1e-6


# --- pretrained weights -------------------------------------------------------------------


@pytest.fixture
def empty_caches(tmp_path, monkeypatch):
    """Empty Hugging Face and torch.hub caches, and no network: any connection fails."""
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hf"))
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))

    def no_network(*args, **kwargs):
        raise OSError("network is unreachable")

    monkeypatch.setattr("socket.create_connection", no_network)
    return tmp_path


def test_offline_without_cached_weights_stops_before_any_work_with_one_line(empty_caches):
    cfg = compose_config([*BASE, "encoder.name=convnext_atto", "encoder.pretrained=true"])
    with pytest.raises(ConfigError) as refused:
        validate_config(cfg)
    message = str(refused.value)
    assert "\n" not in message
    assert "convnext_atto" in message and "network is unreachable" in message
    assert "encoder.weights_path" in message and "encoder.pretrained=false" in message


def test_pretrained_weights_come_from_timm_cache_without_network(empty_caches):
    """The Hugging Face cache's layout, as timm's download leaves it."""
    from safetensors.torch import save_file

    reference = timm.create_model("convnext_atto")
    repo = empty_caches / "hf" / "models--timm--convnext_atto.d2_in1k"
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text("0" * 40)
    (repo / "snapshots" / ("0" * 40)).mkdir(parents=True)
    save_file(reference.state_dict(), repo / "snapshots" / ("0" * 40) / "model.safetensors")
    validate_config(compose_config([*BASE, "encoder.name=convnext_atto",
                                    "encoder.pretrained=true"]))
    encoder = TimmEncoder("convnext_atto", pretrained=True)
    torch.testing.assert_close(encoder.net.stem_0.weight, reference.stem[0].weight)
    torch.testing.assert_close(encoder.net.stages_3.blocks[-1].mlp.fc2.weight,
                               reference.stages[3].blocks[-1].mlp.fc2.weight)


def test_weights_path_is_loaded_and_a_file_of_another_model_refused(empty_caches):
    reference = timm.create_model("regnetx_002")
    path = empty_caches / "regnetx_002.pth"
    torch.save({"state_dict": reference.state_dict()}, path)
    encoder = TimmEncoder("regnetx_002", weights_path=str(path))
    torch.testing.assert_close(encoder.net.stem.conv.weight, reference.stem.conv.weight)
    with pytest.raises(TimmWeightsError, match="do not fit timm's resnet18d"):
        TimmEncoder("resnet18d", weights_path=str(path))
    with pytest.raises(TimmWeightsError, match="does not exist"):
        TimmEncoder("regnetx_002", weights_path=str(empty_caches / "nope.pth"))


@pytest.mark.slow
def test_train_py_offline_without_weights_exits_with_one_line(tmp_path):
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_HOME": str(tmp_path / "hf"),
           "TORCH_HOME": str(tmp_path / "torch"), "OMP_NUM_THREADS": "1",
           "PYTHONPATH": str(ROOT), "WANDB_MODE": "disabled"}
    run_dir = tmp_path / "run"
    proc = subprocess.run([sys.executable, "train.py", *BASE, "encoder.name=convnext_atto",
                           "encoder.pretrained=true", f"hydra.run.dir={run_dir}"],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2, proc.stderr[-2000:]
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "HF_HUB_OFFLINE" in errors[0], proc.stderr[-2000:]
    assert not (run_dir / "checkpoints").exists()


# --- refusals -----------------------------------------------------------------------------


def test_a_backbone_of_one_input_size_is_refused_until_built_for_the_images():
    fixed = [*BASE, "encoder.name=swin_tiny_patch4_window7_224"]
    with pytest.raises(TimmEncoderError, match=r"encoder.img_size=\[H,W\]"):
        build_model(compose_config(fixed), 7)
    with pytest.raises(ConfigError, match=r"encoder.img_size=\[64, 64\].*\[32, 64\]"):
        validate_config(compose_config([*fixed, "encoder.img_size=[64,64]"]))


@pytest.mark.parametrize("model", ["mtan", "adamtnet", "deeplabv3plus", "cross_stitch"])
def test_architectures_with_their_own_trunk_refuse_a_timm_encoder(model):
    with pytest.raises(ConfigError, match=f"model.arch={model} does not take a timm trunk"):
        validate_config(compose_config([*BASE, f"model={model}",
                                        "encoder.name=convnext_atto"]))


def test_unknown_names_and_too_deep_strides_are_refused_clearly():
    with pytest.raises(ConfigError, match="not a timm model.*convnext_atto"):
        validate_config(compose_config([*BASE, "encoder.name=convnext_att"]))
    # EfficientViT-M0's deepest map is at stride 64
    with pytest.raises(ConfigError, match="downsamples 64x.*multiples of 64"):
        build_model(compose_config([*BASE, "encoder.name=efficientvit_m0",
                                    "encoder.img_size=[32,64]"]), 7)


def test_batchnorm_with_activation_keeps_its_activation_under_global_batchnorm():
    """timm fuses BN and activation (BatchNormAct2d); the DDP swap keeps both."""
    from xtask_mt.runtime.distributed import GlobalBatchNormAct2d, convert_batchnorm

    encoder = TimmEncoder("regnetx_002").eval()
    image = torch.randn(1, 3, 32, 32)
    with torch.no_grad():
        expected = encoder(image)
        swapped = convert_batchnorm(copy.deepcopy(encoder), CPU)
        got = swapped(image)
    assert any(isinstance(m, GlobalBatchNormAct2d) for m in swapped.modules())
    for a, b in zip(got, expected, strict=True):
        torch.testing.assert_close(a, b)
    assert swapped.state_dict().keys() == encoder.state_dict().keys()


def test_checkpoint_spec_names_the_backbone_and_keeps_resnet_specs_unchanged():
    from xtask_mt.engine.checkpoint import model_spec

    spec = model_spec(_cfg("swin"), 7)
    assert spec["encoder.name"] == "swin_tiny_patch4_window7_224"
    assert spec["encoder.img_size"] == [32, 64]
    assert spec["encoder.model_kwargs"]["depths"] == [1, 1, 1, 1]
    resnet = model_spec(compose_config(TINY), 7)
    assert resnet["encoder.depth"] == 18 and not any(
        k.startswith("encoder.") and k != "encoder.depth" for k in resnet)

