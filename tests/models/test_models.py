"""Model shapes for every encoder depth and class count, transfer-net options, weights."""

from __future__ import annotations

import pytest
import torch
from helpers.config import compose_config

from xtask_mt.config.build import build_model
from xtask_mt.models import ResNetEncoder, TaskTransferNet
from xtask_mt.models.encoder import EncoderWeightsError
from xtask_mt.models.layers import ConcatConv2d


@pytest.mark.parametrize("depth", [18, 34, 50, 101, 152])
@pytest.mark.parametrize("num_classes", [7, 19])
def test_output_shapes(depth, num_classes):
    torch.manual_seed(0)
    model = build_model(compose_config([f"encoder=resnet{depth}"]), num_classes).eval()
    with torch.no_grad():
        out = model(torch.randn(1, 3, 32, 64))
    assert out["seg"].shape == (1, num_classes, 32, 64)
    assert out["depth"].shape == (1, 1, 32, 64)
    assert out["seg_to_depth"].shape == (1, 1, 32, 64)
    assert out["depth_to_seg"].shape == (1, num_classes, 32, 64)


def test_encoder_channels_follow_block_type():
    assert ResNetEncoder(18).channels == (64, 64, 128, 256, 512)
    assert ResNetEncoder(50).channels == (64, 256, 512, 1024, 2048)


@pytest.mark.parametrize("batch_norm", [False, True])
@pytest.mark.parametrize("wider", [False, True])
def test_transfer_net_options(batch_norm, wider):
    net = TaskTransferNet(7, 1, batch_norm=batch_norm, wider=wider)
    has_bn = any(isinstance(m, torch.nn.BatchNorm2d) for m in net.modules())
    assert has_bn == batch_norm
    first_conv = net.down[0][0]
    assert first_conv.out_channels == (128 if wider else 64)
    assert net(torch.randn(2, 7, 16, 24)).shape == (2, 1, 16, 24)


def test_seg_to_depth_net_sees_log_probabilities():
    """Shifting all seg logits by a constant leaves log-softmax, so the transferred depth,
    unchanged; the depth->seg net sees the depth map as it is."""
    torch.manual_seed(0)
    model = build_model(compose_config(["encoder=resnet18"]), 5).eval()
    seg_to_depth, depth_to_seg = model.edges
    seg = torch.randn(1, 5, 16, 16)
    torch.testing.assert_close(seg_to_depth.prepare(seg), torch.log_softmax(seg, 1))
    with torch.no_grad():
        a = model.seg_to_depth(seg_to_depth.prepare(seg))
        b = model.seg_to_depth(seg_to_depth.prepare(seg + 3.0))
    assert torch.allclose(a, b, atol=1e-5)
    depth = torch.rand(1, 1, 16, 16)
    assert depth_to_seg.prepare(depth) is depth


def test_local_weights_file_is_loaded(tmp_path):
    reference = ResNetEncoder(18)
    from torchvision.models import resnet18

    net = resnet18(weights=None)
    path = tmp_path / "resnet18.pth"
    torch.save(net.state_dict(), path)
    enc = ResNetEncoder(18, pretrained=True, weights_path=str(path))
    assert torch.equal(enc.stem[0].weight, net.conv1.weight)
    assert not torch.equal(enc.stem[0].weight, reference.stem[0].weight)


def test_missing_or_wrong_weights_file_is_a_clear_error(tmp_path):
    with pytest.raises(EncoderWeightsError, match="does not exist"):
        ResNetEncoder(34, pretrained=True, weights_path=str(tmp_path / "nope.pth"))
    from torchvision.models import resnet18

    path = tmp_path / "r18.pth"
    torch.save(resnet18(weights=None).state_dict(), path)
    with pytest.raises(EncoderWeightsError, match="not a resnet34 state dict"):
        ResNetEncoder(34, pretrained=True, weights_path=str(path))


def test_unreachable_pretrained_weights_fail_clearly(monkeypatch, tmp_path):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))  # empty cache

    def no_network(*args, **kwargs):
        raise OSError("network unreachable")

    monkeypatch.setattr("torch.hub.load_state_dict_from_url", no_network)
    with pytest.raises(EncoderWeightsError, match="encoder.weights_path"):
        ResNetEncoder(18, pretrained=True)


def test_concat_conv_equals_conv_of_concatenation():
    torch.manual_seed(0)
    fused = ConcatConv2d(5, 4, 3, padding=1)
    plain = torch.nn.Conv2d(5, 4, 3, padding=1)
    plain.load_state_dict(fused.state_dict())  # same parameters, same keys
    a = torch.randn(2, 3, 6, 7, requires_grad=True)
    b = torch.randn(2, 2, 6, 7, requires_grad=True)
    a2, b2 = a.detach().clone().requires_grad_(), b.detach().clone().requires_grad_()
    out, ref = fused(a, b), plain(torch.cat([a2, b2], dim=1))
    assert torch.allclose(out, ref, atol=1e-5)
    grad = torch.randn_like(out)
    out.backward(grad)
    ref.backward(grad)
    for x, y in ((a.grad, a2.grad), (b.grad, b2.grad), (fused.weight.grad, plain.weight.grad),
                 (fused.bias.grad, plain.bias.grad)):
        assert torch.allclose(x, y, atol=1e-5)
    with pytest.raises(ValueError, match="expects 5"):
        fused(a, a)
