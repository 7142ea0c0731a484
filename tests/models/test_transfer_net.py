"""The method's TaskTransferNet: exact parameter counts, skip wiring, upsampling; and the
U-Net kept as model.transfer.arch=unet."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from helpers.config import compose_config

from xtask_mt.config.build import build_model
from xtask_mt.models import TaskTransferNet, UNetTransferNet


def _count(module: torch.nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


@pytest.mark.parametrize(("classes", "batch_norm", "wider", "seg_to_depth", "depth_to_seg"), [
    (7, False, False, 1_885_568, 1_882_496),
    (7, True, False, 1_888_384, 1_885_312),
    (7, False, True, 7_531_264, 7_525_120),
    (13, False, False, 1_889_024, 1_882_880),
    (19, False, False, 1_892_480, 1_883_264),
])
def test_parameter_counts_match_the_method_network(classes, batch_norm, wider, seg_to_depth,
                                                   depth_to_seg):
    assert _count(TaskTransferNet(classes, 1, batch_norm, wider)) == seg_to_depth
    assert _count(TaskTransferNet(1, classes, batch_norm, wider)) == depth_to_seg


def test_the_model_builds_the_method_network_for_both_edges_by_default():
    model = build_model(compose_config(["encoder=resnet18"]), 7)
    assert isinstance(model.seg_to_depth, TaskTransferNet)
    assert _count(model.seg_to_depth) == 1_885_568
    assert _count(model.depth_to_seg) == 1_882_496


def test_unet_arch_keeps_the_former_network():
    model = build_model(compose_config(["encoder=resnet18", "model.transfer.arch=unet"]), 7)
    assert isinstance(model.seg_to_depth, UNetTransferNet)
    assert _count(model.seg_to_depth) == 3_655_425  # what the project built before


def test_up_blocks_read_the_pooled_down_outputs_and_upsample_before_their_convolutions():
    """Up block 2 gets 256 channels at 1/4 of the input (up block 1's 128 + pooled down
    block 2's 128) and gives 64 at 1/2; up block 3 gets 128 at 1/2 and gives 64 at full
    size; up block 1 reads the bottom (256 channels at 1/8) alone."""
    net = TaskTransferNet(7, 1).eval()
    seen: dict[str, tuple] = {}

    def record(name):
        def hook(_module, inputs, output):
            seen[name] = ([tuple(x.shape[1:]) for x in inputs], tuple(output.shape[1:]))
        return hook

    for i, block in enumerate(net.up):
        block.register_forward_hook(record(f"up{i + 1}"))
    for i, block in enumerate(net.down):
        block.register_forward_hook(record(f"down{i + 1}"))
    with torch.no_grad():
        net(torch.randn(1, 7, 64, 128))
    assert seen["up1"] == ([(256, 8, 16)], (128, 16, 32))
    assert seen["up2"] == ([(128, 16, 32), (128, 16, 32)], (64, 32, 64))
    assert sum(shape[0] for shape in seen["up2"][0]) == 256
    assert seen["up3"] == ([(64, 32, 64), (64, 32, 64)], (64, 64, 128))


def test_skips_are_the_pooled_down_outputs():
    """Feeding up block 3 pooled down block 1 by hand reproduces the network's output."""
    torch.manual_seed(0)
    net = TaskTransferNet(1, 7).eval()
    x = torch.randn(1, 1, 32, 32)
    with torch.no_grad():
        d1 = F.max_pool2d(net.down[0](x), 2)
        d2 = F.max_pool2d(net.down[1](d1), 2)
        d3 = F.max_pool2d(net.down[2](d2), 2)
        u = net.up[2](net.up[1](net.up[0](d3), d2), d1)
        torch.testing.assert_close(net.head(u), net(x))


def test_upsampling_aligns_corners():
    """With align_corners=True the corner pixels of an upsampled map equal the input's."""
    net = TaskTransferNet(1, 1).eval()
    block = net.up[0]
    captured = {}
    block.convs.register_forward_pre_hook(lambda _m, args: captured.setdefault("x", args[0]))
    x = torch.randn(1, 256, 4, 4)
    with torch.no_grad():
        block(x)
    up = captured["x"]
    assert up.shape[-2:] == (8, 8)
    torch.testing.assert_close(up[..., 0, 0], x[..., 0, 0])
    torch.testing.assert_close(up[..., -1, -1], x[..., -1, -1])


def test_final_conv_has_no_bias_and_conv_biases_start_at_zero():
    net = TaskTransferNet(7, 1, batch_norm=True)
    assert net.head.bias is None
    biases = [m.bias for m in net.modules()
              if isinstance(m, torch.nn.Conv2d) and m.bias is not None]
    assert biases and all(torch.count_nonzero(b) == 0 for b in biases)


def test_decoder_upsampling_follows_decoder_align_corners():
    torch.manual_seed(0)
    new = build_model(compose_config(["encoder=resnet18"]), 7).eval()
    old = build_model(compose_config(["encoder=resnet18", "model.decoder_align_corners=false"]),
                      7).eval()
    old.load_state_dict(new.state_dict())
    image = torch.randn(1, 3, 32, 64)
    with torch.no_grad():
        a, b = new(image, with_transfer=False), old(image, with_transfer=False)
    assert all(d.align_corners for d in new.decoders.values())
    assert not any(d.align_corners for d in old.decoders.values())
    assert not torch.allclose(a["depth"], b["depth"])
