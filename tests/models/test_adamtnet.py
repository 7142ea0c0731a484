"""AdaMT-Net: parameter counts of the reference, head shapes, the batch/resolution rule, and the
decoders reading the encoder only through its feature list."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from xtask_mt.models.adamtnet import AdaMTDecoder, AdaMTEncoder, build_adamtnet

HEADS = {"seg": 7, "depth": 1}
BATCH, HEIGHT, WIDTH = 8, 16, 32  # forward tests: small, the 49M-parameter build is 128x256


def _count(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def _attention_count(decoders: dict[str, AdaMTDecoder]) -> int:
    return sum(p.numel() for d in decoders.values() for name, p in d.named_parameters()
               if name.endswith("attention"))


@pytest.fixture(scope="module")
def model() -> tuple[AdaMTEncoder, dict[str, AdaMTDecoder]]:
    torch.manual_seed(0)
    encoder, decoders = build_adamtnet(HEADS, BATCH, HEIGHT, WIDTH)
    encoder.eval()
    for decoder in decoders.values():
        decoder.eval()
    return encoder, decoders


@pytest.fixture(scope="module")
def outputs(model) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    """Each head's output for a full batch of 8 and for its first 3 images alone."""
    encoder, decoders = model
    image = torch.randn(BATCH, 3, HEIGHT, WIDTH, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        full, partial = encoder(image), encoder(image[:3])
        return ({task: d(full) for task, d in decoders.items()},
                {task: d(partial) for task, d in decoders.items()})


def test_cityscapes_build_has_the_reference_49_136_064_parameters():
    encoder, decoders = build_adamtnet(HEADS, 8, 128, 256)
    assert _count(encoder) == 6_705_472
    assert _attention_count(decoders) == 2 * 8 * (256 * 16 * 32 + 128 * 32 * 64 + 64 * 64 * 128
                                                  + 32 * 128 * 256) == 31_457_280
    assert _count(encoder) + sum(_count(d) for d in decoders.values()) == 49_136_064


@pytest.mark.parametrize(("heads", "batch_size", "height", "width", "expected"), [
    ({"seg": 13, "depth": 1}, 6, 288, 384, 97_305_408),
    ({"seg": 13, "depth": 1}, 4, 288, 384, 70_763_328),  # reference NYUv2, 2 tasks
    ({"seg": 13, "depth": 1, "normal": 1}, 4, 288, 384, 102_791_872),  # reference, 3 tasks
])
def test_other_configurations_count_as_the_reference_builds_them(heads, batch_size, height,
                                                                  width, expected):
    with torch.device("meta"):  # counting needs no memory
        encoder, decoders = build_adamtnet(heads, batch_size, height, width)
    assert _count(encoder) + sum(_count(d) for d in decoders.values()) == expected


def test_encoder_lists_four_skips_then_the_bottleneck(model):
    encoder, _ = model
    with torch.no_grad():
        features = encoder(torch.randn(2, 3, HEIGHT, WIDTH))
    assert encoder.channels == (64, 128, 256, 512, 1024)
    assert [tuple(f.shape) for f in features] == [
        (2, c, HEIGHT // 2**i, WIDTH // 2**i) for i, c in enumerate(encoder.channels)]
    assert encoder.last_shared_parameters() == [encoder.bottleneck.weight]
    assert encoder.bottleneck.weight.shape == (1024, 64 + 128 + 256 + 512, 1, 1)


def test_each_head_predicts_its_channels_at_input_resolution(outputs):
    full, partial = outputs
    for task, channels in HEADS.items():
        assert full[task].shape == (BATCH, channels, HEIGHT, WIDTH)
        assert partial[task].shape == (3, channels, HEIGHT, WIDTH)


def test_a_smaller_batch_uses_the_first_rows_of_the_attention_weights(outputs):
    """In eval mode an image's output depends only on its attention row: a batch of 3 gives
    what the first 3 images of the full batch got, and not what the last 3 rows would give."""
    full, partial = outputs
    for task in HEADS:
        torch.testing.assert_close(partial[task], full[task][:3])
        assert not torch.allclose(partial[task], full[task][-3:])


def test_attention_weights_are_per_sample_and_pixel_and_uniform_in_unit_interval(model):
    _, decoders = model
    weights = [block.attention for block in decoders["seg"].blocks]
    assert [tuple(w.shape) for w in weights] == [
        (BATCH, 256, HEIGHT // 8, WIDTH // 8), (BATCH, 128, HEIGHT // 4, WIDTH // 4),
        (BATCH, 64, HEIGHT // 2, WIDTH // 2), (BATCH, 32, HEIGHT, WIDTH)]
    values = torch.cat([w.detach().flatten() for w in weights])
    assert values.min() >= 0 and values.max() < 1
    assert abs(values.mean().item() - 0.5) < 0.01
    assert decoders["seg"].head.bias is None


def test_a_batch_larger_than_built_for_is_refused(model):
    encoder, decoders = model
    with torch.no_grad():
        features = encoder(torch.randn(BATCH + 1, 3, HEIGHT, WIDTH))
        with pytest.raises(ValueError, match=r"at most 8 images .* set dataset\.batch_size=9"):
            decoders["seg"](features)


def test_another_resolution_is_refused(model):
    encoder, decoders = model
    with torch.no_grad():
        features = encoder(torch.randn(1, 3, 2 * HEIGHT, WIDTH))
        with pytest.raises(ValueError, match=r"built for 16x32 .* dataset\.height=32"):
            decoders["depth"](features)
        with pytest.raises(ValueError, match="multiples of 16"):
            encoder(torch.randn(1, 3, HEIGHT + 8, WIDTH))


def test_a_resolution_the_encoder_cannot_halve_four_times_is_refused_at_build():
    with pytest.raises(ValueError, match=r"dataset\.height and dataset\.width .* multiples of 16"):
        AdaMTDecoder((64, 128, 256, 512, 1024), 1, batch_size=2, height=120, width=256)


def test_decoders_read_the_encoder_only_through_the_feature_list(model):
    encoder, decoders = model
    features = encoder(torch.randn(2, 3, HEIGHT, WIDTH))
    encoder_params = list(encoder.parameters())
    for decoder in decoders.values():
        clones = [f.detach().clone().requires_grad_() for f in features]
        grads = torch.autograd.grad(decoder(clones).sum(), [*clones, *encoder_params],
                                    allow_unused=True)
        assert all(g is not None and g.abs().sum() > 0 for g in grads[:len(clones)])
        assert all(g is None for g in grads[len(clones):])
        # the control: through the features themselves the encoder does get a gradient
        direct = torch.autograd.grad(decoder(features).sum(), encoder.bottleneck.weight,
                                     retain_graph=True)[0]
        assert direct.abs().sum() > 0


def test_state_dict_holds_every_tensor_once(model):
    encoder, decoders = model
    combined = nn.ModuleDict({"encoder": encoder, "decoders": nn.ModuleDict(decoders)})
    state = combined.state_dict()
    pointers = [t.data_ptr() for t in state.values()]
    assert len(pointers) == len(set(pointers))
    prefixes = ("encoder.", *(f"decoders.{task}." for task in HEADS))
    assert all(key.startswith(prefixes) for key in state)
    assert {name for name, _ in combined.named_parameters()} <= set(state)
