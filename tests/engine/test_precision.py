"""Speed options (precision, channels_last, compile) build, train, and keep the gradients."""

from __future__ import annotations

import copy
import json

import pytest
import torch
from helpers.config import TINY, compose_config
from torch.utils.data import default_collate

from xtask_mt.config.build import (
    build_dataset,
    build_model,
    build_objective,
    build_optimizer,
    build_weighting,
)
from xtask_mt.engine.loops import EpochSettings, train_one_epoch
from xtask_mt.engine.step import TrainingParts
from xtask_mt.engine.trainer import train
from xtask_mt.errors import ConfigError
from xtask_mt.runtime.precision import StepOptions, maybe_compile, to_channels_last

CPU = torch.device("cpu")


def _setup(overrides: list[str] | None = None):
    cfg = compose_config(TINY + ["weighting=uncertainty", *(overrides or [])])
    torch.manual_seed(0)
    dataset = build_dataset(cfg, "train")
    batch = default_collate([dataset[i] for i in range(2)])
    model = build_model(cfg, dataset.num_classes)
    return cfg, batch, model


def _gradients(model, batch, criterion, options: StepOptions) -> dict[str, torch.Tensor]:
    model.train()
    model.zero_grad(set_to_none=True)
    with options.autocast():
        out = model(options.image(batch["image"]))
    losses = criterion(out, batch)
    sum(losses.tasks.values()).backward()
    return {n: p.grad.detach().clone() for n, p in model.named_parameters()}


def _relative_error(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> float:
    num = sum(float((a[k].float() - b[k].float()).norm() ** 2) for k in a)
    den = sum(float(b[k].float().norm() ** 2) for k in b)
    return (num / den) ** 0.5


def _as_double(batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {k: v.double() if v.is_floating_point() else v for k, v in batch.items()}


def test_channels_last_fp32_gradients_equal_plain_fp32():
    """fp32 itself differs from an fp64 reference by rounding; channels-last must stay
    within the same rounding error, i.e. compute the same gradients. At 64x128: at TINY's
    32x64 the deepest map is 1x2, its align_corners upsampling copies rows exactly, and the
    batch norms after it are so ill-conditioned that any change of summation order (which
    channels-last is) shows as a 1e-2 difference."""
    cfg, batch, model = _setup(["dataset.height=64", "dataset.width=128"])
    criterion = build_objective(cfg)
    reference = _gradients(copy.deepcopy(model).double(), _as_double(batch), criterion,
                           StepOptions(CPU))
    plain = _gradients(model, batch, criterion, StepOptions(CPU))
    nhwc_model = to_channels_last(copy.deepcopy(model), True)
    conv = nhwc_model.encoder.stem[0].weight
    assert conv.is_contiguous(memory_format=torch.channels_last)
    nhwc = _gradients(nhwc_model, batch, criterion, StepOptions(CPU, channels_last=True))
    assert set(nhwc) == set(plain)
    plain_error = _relative_error(plain, reference)
    assert plain_error < 1e-2
    # fp32's own error at this size spreads with the network's parameterisation (1.7e-4 with
    # the decoders' pre-BN biases, 8.7e-4 without, measured); channels-last must stay within
    # that rounding scale, not within a multiple of whichever side of it plain fp32 landed on
    assert _relative_error(nhwc, reference) < max(3 * plain_error, 1.5e-3)


def test_bf16_losses_match_fp32_losses():
    cfg, batch, model = _setup()
    criterion = build_objective(cfg)
    model.eval()
    with torch.no_grad():
        full = criterion(model(batch["image"]), batch).terms
        with StepOptions(CPU, "bf16-mixed").autocast():
            out = model(batch["image"])
        assert out["depth"].dtype == torch.bfloat16
        half = criterion(out, batch).terms
    assert all(v.dtype == torch.float32 for v in half.values())  # losses stay in fp32
    for k in full:
        assert torch.allclose(half[k], full[k], rtol=0.05, atol=1e-3), k


@pytest.mark.parametrize(("precision", "channels_last"),
                         [("32", False), ("32", True), ("bf16-mixed", False),
                          ("bf16-mixed", True)])
def test_step_options_train_a_step(precision: str, channels_last: bool):
    cfg, batch, model = _setup()
    options = StepOptions(CPU, precision, channels_last)
    model = to_channels_last(model, channels_last)
    weighting = build_weighting(cfg, model.tasks)
    optimizer = build_optimizer(cfg, model, weighting)
    before = copy.deepcopy(model.state_dict())
    with options.autocast():
        dtype = model(options.image(batch["image"]))["seg"].dtype
    assert dtype == (torch.bfloat16 if precision == "bf16-mixed" else torch.float32)
    parts = TrainingParts(model, model, build_objective(cfg), weighting, optimizer, options)
    stats = train_one_epoch(parts, [batch], EpochSettings(progress_bar=False)).stats
    assert torch.isfinite(torch.tensor(stats["total"]))
    changed = [k for k, v in model.state_dict().items() if not torch.equal(v, before[k])]
    assert "encoder.stem.0.weight" in changed
    assert float(weighting.log_vars.detach().abs().sum()) > 0  # the weighting was stepped too


def test_bad_precision_gives_clear_errors():
    with pytest.raises(ConfigError, match="trainer.precision='64' is not one of"):
        StepOptions(CPU, "64")
    with pytest.raises(ConfigError, match="16-mixed needs a CUDA device"):
        StepOptions(CPU, "16-mixed")


@pytest.mark.skipif(not torch.cuda.is_available(), reason="fp16 autocast with a GradScaler "
                    "needs a CUDA device")
@pytest.mark.parametrize("method", ["uncertainty", "pcgrad", "nash_mtl", "famo", "mgda_ub"])
def test_fp16_trains_a_step_with_grad_scaler_on_cuda(method):
    cuda = torch.device("cuda")
    cfg, batch, model = _setup(["trainer.device=cuda", f"weighting={method}"])
    batch = {k: v.to(cuda) for k, v in batch.items()}
    model = model.to(cuda)
    weighting = build_weighting(cfg, model.tasks).to(cuda)
    optimizer = build_optimizer(cfg, model, weighting)
    options = StepOptions(cuda, "16-mixed", channels_last=True)
    scaler = options.grad_scaler()
    assert scaler is not None
    model = to_channels_last(model, True)
    parts = TrainingParts(model, model, build_objective(cfg), weighting, optimizer, options,
                          scaler)
    stats = train_one_epoch(parts, [batch], EpochSettings(progress_bar=False)).stats
    assert torch.isfinite(torch.tensor(stats["total"]))


def test_training_run_with_bf16_and_channels_last(tmp_path):
    cfg = compose_config(TINY + ["trainer.precision=bf16-mixed", "trainer.channels_last=true",
                                 "dataset.train_size=4", "weighting=uncertainty"])
    summary = train(cfg, tmp_path)
    saved = json.loads((tmp_path / "metrics.json").read_text())
    assert saved["final"]["val/miou"] == summary["final"]["val/miou"]
    assert 0.0 <= saved["final"]["val/miou"] <= 1.0
    assert len(saved["history"]) == 1
    assert (tmp_path / "checkpoints" / "last.pt").is_file()


def test_fp16_with_gradnorm_is_refused_before_training(tmp_path):
    cfg = compose_config(TINY + ["trainer.precision=16-mixed", "weighting=gradnorm"])
    with pytest.raises(ConfigError, match="cannot be combined with weighting=gradnorm"):
        train(cfg, tmp_path)


@pytest.mark.slow
def test_compiled_model_trains_a_step_and_matches_eager():
    """Graph capture and autograd of the whole model through torch.compile. The aot_eager
    backend skips C++ code generation (minutes on 2 CPU cores); trainer.compile_backend
    picks inductor, the default, in real runs."""
    cfg, batch, model = _setup()
    criterion = build_objective(cfg)
    reference = _gradients(copy.deepcopy(model).double(), _as_double(batch), criterion,
                           StepOptions(CPU))
    eager = _gradients(model, batch, criterion, StepOptions(CPU))
    compiled_copy = copy.deepcopy(model)
    compiled = maybe_compile(compiled_copy, True, backend="aot_eager")
    assert compiled is not compiled_copy
    grads = _gradients(compiled, batch, criterion, StepOptions(CPU))
    grads = {k.removeprefix("_orig_mod."): v for k, v in grads.items()}
    # the compiled module shares the original's parameters, so checkpoints keep their keys
    assert set(dict(compiled_copy.named_parameters())) == set(grads) == set(eager)
    assert _relative_error(grads, reference) < 3 * _relative_error(eager, reference) + 1e-6


@pytest.mark.slow
@pytest.mark.parametrize("method", ["pcgrad", "famo"])
def test_weighting_methods_train_with_a_compiled_model(tmp_path, method):
    """Gradient methods take their task gradients through the compiled graph, FAMO runs its
    extra forward pass through it; the weighting itself is not compiled."""
    eager = train(compose_config(TINY + [f"weighting={method}"]), tmp_path / "eager")
    compiled = train(compose_config(TINY + [f"weighting={method}", "trainer.compile=true",
                                            "trainer.compile_backend=aot_eager"]),
                     tmp_path / "compiled")
    for key in ("task_seg", "task_depth"):
        assert compiled["train"][key] == pytest.approx(eager["train"][key], rel=1e-3)
    assert compiled["final"]["val/abs_err"] == pytest.approx(eager["final"]["val/abs_err"],
                                                             rel=1e-3)
