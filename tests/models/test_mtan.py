"""SegNet-MTAN as a shared trunk + per-task attention heads: sizes, shapes, what is shared."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

from xtask_mt.models.mtan import MTANHead, MTANTrunk, build_mtan

TWO_TASKS = {"seg": 7, "depth": 1}
THREE_TASKS = {"seg": 13, "depth": 1, "normal": 3}

# The reference counts (lorenmt/mtan, akarimoon/xtask_mt model/mtan/segnets.py) include a
# 3-element `logsigma` in every configuration and, in the 2-task net, an unused attention
# mask pair built for a third task (encoder 64->64->64: 8,576, decoder 128->64->64: 12,672).
REFERENCE_LOGSIGMA = 3
REFERENCE_UNUSED_TWO_TASK_ATTENTION = 8_576 + 12_672
SEGNET = 24_943_296
SHARED_ATTENTION_BLOCKS = 10_220_160
ATTENTION_MASKS_PER_TASK = 2_984_576


def _prediction_layer(out_channels: int) -> int:
    return 64 * 64 * 9 + 64 + 64 * out_channels + out_channels


def _count(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def _as_model(trunk: MTANTrunk, heads: dict[str, MTANHead]) -> nn.ModuleDict:
    """Trunk and heads laid out as CrossTaskModel lays out its encoder and decoders."""
    return nn.ModuleDict({"encoder": trunk, "decoders": nn.ModuleDict(heads)})


def _is_segnet(name: str) -> bool:
    return not name.startswith(("encoder_att_blocks.", "decoder_att_blocks."))


@pytest.fixture(scope="module")
def two_tasks() -> tuple[MTANTrunk, dict[str, MTANHead]]:
    torch.manual_seed(0)
    return build_mtan(TWO_TASKS)


@pytest.fixture(scope="module")
def three_tasks() -> tuple[MTANTrunk, dict[str, MTANHead]]:
    torch.manual_seed(0)
    return build_mtan(THREE_TASKS)


@pytest.mark.parametrize(("heads", "reference", "expected"), [
    ({"seg": 7, "depth": 1}, 41_228_235, 41_206_984),
    ({"seg": 19, "depth": 1}, 41_229_015, 41_207_764),
    ({"seg": 13, "depth": 1}, 41_228_625, 41_207_374),
    (THREE_TASKS, 44_229_076, 44_229_073),
])
def test_parameter_count_is_the_reference_one_less_logsigma_and_unused_layers(
        heads, reference, expected):
    trunk, built = build_mtan(heads)
    total = _count(trunk) + sum(_count(head) for head in built.values())
    unused = REFERENCE_UNUSED_TWO_TASK_ATTENTION if len(heads) == 2 else 0
    assert total == expected
    assert total + REFERENCE_LOGSIGMA + unused == reference
    assert total == (SEGNET + SHARED_ATTENTION_BLOCKS + len(heads) * ATTENTION_MASKS_PER_TASK
                     + sum(_prediction_layer(c) for c in heads.values()))


def test_trunk_holds_the_segnet_and_the_shared_attention_blocks_once(three_tasks):
    trunk, heads = three_tasks
    segnet = sum(p.numel() for n, p in trunk.named_parameters() if _is_segnet(n))
    assert segnet == SEGNET
    assert _count(trunk) - segnet == SHARED_ATTENTION_BLOCKS
    for task, head in heads.items():
        assert _count(head) == ATTENTION_MASKS_PER_TASK + _prediction_layer(THREE_TASKS[task])


def test_model_has_no_task_uncertainty_parameter(three_tasks):
    model = _as_model(*three_tasks)
    assert not [n for n, _ in model.named_parameters() if "sigma" in n]


@pytest.mark.parametrize("size", [(64, 128), (96, 128)])
@pytest.mark.parametrize("spec", [TWO_TASKS, THREE_TASKS], ids=["two_tasks", "three_tasks"])
def test_every_head_predicts_its_channels_at_the_input_resolution(spec, size, two_tasks,
                                                                  three_tasks):
    trunk, heads = two_tasks if spec is TWO_TASKS else three_tasks
    _as_model(trunk, heads).eval()
    with torch.no_grad():
        features = trunk(torch.randn(1, 3, *size))
        shapes = {task: tuple(head(features).shape) for task, head in heads.items()}
    assert shapes == {task: (1, channels, *size) for task, channels in spec.items()}


def test_trunk_features_have_the_declared_channels_and_resolutions(two_tasks):
    trunk, _ = two_tasks
    trunk.eval()
    with torch.no_grad():
        features = trunk(torch.randn(1, 3, 64, 128))
    assert tuple(f.shape[1] for f in features) == trunk.channels
    encoder_scale = [1, 1, 2, 2, 4, 4, 8, 8, 16, 16]
    decoder_scale = [16, 16, 8, 8, 4, 4, 2, 2, 1, 1]
    assert [tuple(f.shape[2:]) for f in features] == [
        (64 // s, 128 // s) for s in encoder_scale + decoder_scale]
    assert trunk.channels[9] == 512 and trunk.channels[19] == 64


def test_input_size_not_divisible_by_32_is_refused(two_tasks):
    trunk, _ = two_tasks
    with pytest.raises(ValueError, match="divisible by 32"):
        trunk(torch.randn(1, 3, 48, 64))


def test_shared_attention_blocks_appear_once_in_the_state_dict(two_tasks):
    trunk, heads = two_tasks
    model = _as_model(trunk, heads)
    state = model.state_dict()
    assert len(state) == len(trunk.state_dict()) + sum(len(h.state_dict()) for h in heads.values())
    head_modules = {key.split(".")[2] for key in state if key.startswith("decoders.")}
    assert head_modules == {"encoder_att", "decoder_att", "prediction"}
    assert any(key.startswith("encoder.encoder_att_blocks.") for key in state)
    assert any(key.startswith("encoder.decoder_att_blocks.") for key in state)
    storages = [t.untyped_storage().data_ptr() for t in state.values()]
    assert len(set(storages)) == len(storages)
    trunk_ids = {id(p) for p in trunk.parameters()}
    assert all(id(p) not in trunk_ids for head in heads.values() for p in head.parameters())
    assert _count(model) == _count(trunk) + sum(_count(h) for h in heads.values())


def test_heads_read_the_shared_segnet_only_through_the_feature_list():
    torch.manual_seed(0)
    # left in training mode: at initialisation, eval-mode batch norm lets the gradient shrink
    # at every stage until it underflows to 0 at the first encoder features
    trunk, heads = build_mtan(TWO_TASKS)
    segnet = [p for n, p in trunk.named_parameters() if _is_segnet(n)]
    features = trunk(torch.randn(2, 3, 32, 64))
    aliases = [f.detach().requires_grad_() for f in features]
    heads["depth"](aliases).square().mean().backward()
    assert all(p.grad is None for p in segnet)
    assert all(a.grad is not None and a.grad.abs().sum() > 0 for a in aliases)
    assert all(p.grad is not None for p in trunk.decoder_att_blocks.parameters())

    # the chain rule through the listed features gives the head's whole SegNet gradient
    torch.autograd.backward(features, [a.grad for a in aliases], retain_graph=True)
    through_features = [p.grad.clone() for p in segnet]
    trunk.zero_grad(set_to_none=True)
    heads["depth"](features).square().mean().backward()
    for via_features, direct in zip(through_features, (p.grad for p in segnet), strict=True):
        torch.testing.assert_close(via_features, direct)


def test_last_shared_parameters_is_the_weight_of_the_last_segnet_conv(two_tasks):
    trunk, _ = two_tasks
    (weight,) = trunk.last_shared_parameters()
    assert any(weight is p for p in trunk.parameters())
    last_conv = [m for n, m in trunk.named_modules()
                 if isinstance(m, nn.Conv2d) and _is_segnet(n + ".")][-1]
    assert weight is last_conv.weight
    assert weight.shape == (64, 64, 3, 3)


def test_weights_are_initialised_as_in_the_reference(two_tasks):
    model = _as_model(*two_tasks)
    convs = [m for m in model.modules() if isinstance(m, nn.Conv2d)]
    norms = [m for m in model.modules() if isinstance(m, nn.BatchNorm2d)]
    assert all(bool((c.bias == 0).all()) for c in convs)
    assert all(bool((n.weight == 1).all() and (n.bias == 0).all()) for n in norms)
    big = model["encoder"].encoder_first[4][0].weight  # 512 -> 512, 3x3
    xavier_std = (2 / (9 * 512 + 9 * 512)) ** 0.5
    assert abs(float(big.detach().std()) / xavier_std - 1) < 0.02


def test_a_deep_copy_keeps_each_head_on_the_copied_trunk(two_tasks):
    copied = copy.deepcopy(_as_model(*two_tasks))
    assert all(head._trunk[0] is copied["encoder"] for head in copied["decoders"].values())


def test_building_without_heads_is_refused():
    with pytest.raises(ValueError, match="at least one"):
        build_mtan({})
