"""DeepLabV3+: the dilated trunk's output stride, every head's output for 2 and 3 tasks (with
and without the consistency edges), parameter counts against torchvision's own DeepLabV3,
ImageNet weights, and single-task networks side by side."""

from __future__ import annotations

import pytest
import torch
from helpers.config import compose_config
from torch import nn
from torchvision.models import resnet18
from torchvision.models.segmentation import deeplabv3_resnet50

from xtask_mt.config.build import build_model
from xtask_mt.config.validate import validate_config
from xtask_mt.errors import ConfigError
from xtask_mt.models.deeplab import DeepLabV3PlusHead, DilatedResNetTrunk
from xtask_mt.models.encoder import EncoderWeightsError


def _count(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


@pytest.mark.parametrize(("depth", "stride"), [(18, 8), (18, 16), (50, 8), (50, 16)])
def test_the_trunk_keeps_the_deepest_map_at_the_output_stride(depth, stride):
    trunk = DilatedResNetTrunk(depth, stride).eval()
    with torch.no_grad():
        low, high = trunk(torch.randn(1, 3, 64, 96))
    expansion = 4 if depth == 50 else 1
    assert low.shape == (1, 64 * expansion, 16, 24)  # layer1: the low-level skip at 1/4
    assert high.shape == (1, 512 * expansion, 64 // stride, 96 // stride)
    assert trunk.channels == (low.shape[1], high.shape[1])


THREE_TASKS = ["model.tasks=[seg,depth,normal]",
               "model.transfer.edges=[[seg,depth],[depth,seg],[depth,normal]]"]


@pytest.mark.parametrize("extra", [[], ["model.transfer.enabled=true"], THREE_TASKS,
                                   [*THREE_TASKS, "model.transfer.enabled=true"]],
                         ids=["2 tasks", "2 tasks + edges", "3 tasks", "3 tasks + edges"])
def test_every_head_predicts_its_task_at_the_input_size(extra):
    cfg = compose_config(["model=deeplabv3plus", "encoder=resnet18", "dataset=nyuv2",
                          "model.output_stride=16", *extra])
    net = build_model(cfg, 13).eval()
    with torch.no_grad():
        out = net(torch.randn(2, 3, 64, 96))
    channels = {"seg": 13, "depth": 1, "normal": 3}
    expected = {t: channels[t] for t in cfg.model.tasks}
    if cfg.model.transfer.enabled:
        expected |= {f"{s}_to_{t}": channels[t] for s, t in cfg.model.transfer.edges}
    assert {k: tuple(v.shape) for k, v in out.items()} == {
        k: (2, c, 64, 96) for k, c in expected.items()}
    assert all(isinstance(net.decoders[t], DeepLabV3PlusHead) for t in cfg.model.tasks)


def test_parameter_counts_match_torchvisions_deeplabv3_and_the_head_formula():
    cfg = compose_config(["model=deeplabv3plus", "encoder=resnet50", "dataset=nyuv2",
                          "model.tasks=[seg,depth,normal]"])
    net = build_model(cfg, 13)
    reference = deeplabv3_resnet50(weights=None, weights_backbone=None, num_classes=13,
                                   aux_loss=False)
    assert _count(net.encoder) == _count(reference.backbone) == 23_508_032
    aspp = _count(reference.classifier[0])  # torchvision's ASPP, 2048 -> 256 channels
    # low-level 1x1 projection 256 -> 48 + BN, two 3x3 convs (304 -> 256, 256 -> 256) + BN,
    # 1x1 classifier with bias
    fuse = 256 * 48 + 2 * 48 + 304 * 256 * 9 + 2 * 256 + 256 * 256 * 9 + 2 * 256
    for task, out in (("seg", 13), ("depth", 1), ("normal", 3)):
        assert _count(net.decoders[task]) == aspp + fuse + 256 * out + out
    assert _count(net) == _count(reference.backbone) + 3 * (aspp + fuse) + 256 * 17 + 17


def test_imagenet_weights_load_into_the_dilated_trunk_from_a_local_file(tmp_path):
    source = resnet18(weights=None)
    path = tmp_path / "resnet18.pth"
    torch.save(source.state_dict(), path)
    trunk = DilatedResNetTrunk(18, 8, weights_path=str(path))
    assert torch.equal(trunk.layer4[1].conv2.weight, source.layer4[1].conv2.weight)
    assert trunk.layer4[1].conv2.dilation == (4, 4)  # dilated, same weights


def test_offline_without_a_cache_pretrained_weights_fail_with_one_actionable_line(
        monkeypatch, tmp_path):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))  # empty cache

    def no_network(*args, **kwargs):
        raise OSError("network unreachable")

    monkeypatch.setattr("torch.hub.load_state_dict_from_url", no_network)
    cfg = compose_config(["model=deeplabv3plus", "encoder=resnet50", "encoder.pretrained=true"])
    with pytest.raises(EncoderWeightsError, match="encoder.weights_path") as caught:
        build_model(cfg, 7)
    assert "\n" not in str(caught.value)


def test_an_output_stride_other_than_8_or_16_and_a_batch_of_one_are_refused():
    cfg = compose_config(["model=deeplabv3plus", "model.output_stride=32",
                          "dataset.batch_size=1"])
    with pytest.raises(ConfigError, match=r"model.output_stride=32.*dataset.batch_size=1"):
        validate_config(cfg)


def test_separate_trunks_give_each_task_network_only_its_own_gradient():
    cfg = compose_config(["model=deeplabv3plus", "encoder=resnet18", "dataset=nyuv2",
                          "+model.separate_trunks=true"])
    torch.manual_seed(0)
    net = build_model(cfg, 13)
    image = torch.randn(2, 3, 32, 64)
    out = net(image, with_transfer=False)
    out["depth"].abs().mean().backward()
    seg_trunk = net.encoder.trunks["seg"]
    assert all(p.grad is None for p in seg_trunk.parameters())
    assert all(p.grad is None for p in net.decoders["seg"].parameters())
    assert any(p.grad is not None and p.grad.abs().sum() > 0
               for p in net.encoder.trunks["depth"].parameters())
    assert _count(net.encoder) == 2 * _count(DilatedResNetTrunk(18, 8))
