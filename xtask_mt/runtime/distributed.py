"""Multi-process training with torch.distributed (DDP), launched by torchrun.

Every helper is a no-op in a single process, so the loops call them unconditionally.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import timedelta

import torch
import torch.distributed as dist
from torch import nn

from xtask_mt.errors import ConfigError

STRATEGIES = ("none", "ddp")


@dataclass(frozen=True)
class DistributedContext:
    """Where this process sits: its rank among `world_size` and its device."""

    rank: int = 0
    world_size: int = 1
    device: torch.device = torch.device("cpu")

    @property
    def enabled(self) -> bool:
        return self.world_size > 1 or dist.is_initialized()

    @property
    def is_main(self) -> bool:
        """Rank 0 alone logs, tracks and writes checkpoints and metrics."""
        return self.rank == 0


def init_distributed(strategy: str, device: torch.device) -> DistributedContext:
    """Join the process group torchrun set up (env RANK, WORLD_SIZE, MASTER_ADDR, ...).

    CUDA uses NCCL with one GPU per process (LOCAL_RANK); CPU uses gloo.
    """
    launched = int(os.environ.get("WORLD_SIZE", "1")) > 1
    if strategy not in STRATEGIES:
        raise ConfigError(f"trainer.strategy={strategy!r} is not one of {list(STRATEGIES)}")
    if strategy == "none":
        if launched:
            raise ConfigError("this process was started by torchrun (WORLD_SIZE="
                             f"{os.environ['WORLD_SIZE']}) but trainer.strategy=none, so every "
                             "process would train alone; add trainer.strategy=ddp")
        return DistributedContext(device=device)
    if "RANK" not in os.environ:
        raise ConfigError("trainer.strategy=ddp needs the environment torchrun sets up; launch "
                         "with `torchrun --nproc_per_node=N train.py trainer.strategy=ddp ...`")
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    if device.type == "cuda":
        device = torch.device("cuda", local_rank)
        torch.cuda.set_device(device)
    if not dist.is_initialized():
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo",
                                timeout=timedelta(minutes=30))
    return DistributedContext(rank=dist.get_rank(), world_size=dist.get_world_size(),
                              device=device)


def shutdown_distributed(wait_for_all: bool) -> None:
    """Leave the process group. After a normal finish every rank waits for the others first:
    rank 0 may still be writing files, and a rank that tears its connections down while a
    peer still uses them can abort at exit. After an error it leaves at once (the others
    would never reach the barrier)."""
    if dist.is_initialized():
        if wait_for_all:
            dist.barrier()
        dist.destroy_process_group()


def all_reduce_sum_(tensors: Iterable[torch.Tensor]) -> None:
    """Sum each tensor in place over all processes (metric sums, confusion matrices)."""
    if not dist.is_initialized():
        return
    for t in tensors:
        dist.all_reduce(t, op=dist.ReduceOp.SUM)


def is_distributed() -> bool:
    """True inside a DDP job (a process group is set up)."""
    return dist.is_initialized()


def any_process(flag: bool) -> bool:
    """True if `flag` is true on any process, so all ranks take the same branch together."""
    if not dist.is_initialized():
        return flag
    device = torch.device("cuda", torch.cuda.current_device()) if dist.get_backend() == "nccl" \
        else torch.device("cpu")
    value = torch.tensor([1.0 if flag else 0.0], device=device)
    dist.all_reduce(value, op=dist.ReduceOp.MAX)
    return bool(value.item())


def average_gradients_(parameters: Iterable[nn.Parameter]) -> None:
    """Average the gradients of parameters DDP does not manage (the task weighting's), so
    every process takes the same optimiser step and the weights stay identical."""
    if not dist.is_initialized():
        return
    world = dist.get_world_size()
    for p in parameters:
        if p.grad is not None:
            dist.all_reduce(p.grad, op=dist.ReduceOp.SUM)
            p.grad.div_(world)


class _AllReduceSum(torch.autograd.Function):
    """Sum over processes whose backward sums the gradients the same way."""

    @staticmethod
    def forward(ctx: object, tensor: torch.Tensor) -> torch.Tensor:
        total = tensor.clone()
        dist.all_reduce(total, op=dist.ReduceOp.SUM)
        return total

    @staticmethod
    def backward(ctx: object, grad: torch.Tensor) -> torch.Tensor:
        total = grad.clone()
        dist.all_reduce(total, op=dist.ReduceOp.SUM)
        return total


class GlobalBatchNorm2d(nn.BatchNorm2d):
    """BatchNorm whose training statistics are taken over the batches of all processes.

    torch's SyncBatchNorm runs on GPUs only; this one uses differentiable all-reduces, so it
    also works with gloo on CPU and makes N processes with batch B compute what one process
    with batch N*B computes. Running statistics are updated from the global batch.
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not (self.training and dist.is_initialized() and dist.get_world_size() > 1):
            return super().forward(x)
        dims = (0, 2, 3)
        xf = x.float()
        local = torch.cat([xf.sum(dims), xf.new_tensor([xf.numel() / xf.shape[1]])])
        total = _AllReduceSum.apply(local)
        count = total[-1]
        mean = total[:-1] / count
        centred = xf - mean.view(1, -1, 1, 1)
        var = _AllReduceSum.apply((centred * centred).sum(dims)) / count
        if self.track_running_stats:
            with torch.no_grad():
                self.num_batches_tracked.add_(1)
                momentum = (self.momentum if self.momentum is not None
                            else 1.0 / float(self.num_batches_tracked))
                unbiased = var * count / (count - 1).clamp(min=1)
                self.running_mean.lerp_(mean.to(self.running_mean.dtype), momentum)
                self.running_var.lerp_(unbiased.to(self.running_var.dtype), momentum)
        out = centred * torch.rsqrt(var + self.eps).view(1, -1, 1, 1)
        if self.affine:
            out = out * self.weight.view(1, -1, 1, 1) + self.bias.view(1, -1, 1, 1)
        return out.to(x.dtype)


class GlobalBatchNormAct2d(GlobalBatchNorm2d):
    """GlobalBatchNorm2d then the dropout and activation of the timm BatchNormAct2d it
    replaces (timm fuses them into its BatchNorm layer); the same state-dict keys."""

    def __init__(self, source: nn.BatchNorm2d) -> None:
        super().__init__(source.num_features, source.eps, source.momentum, source.affine,
                         source.track_running_stats)
        self.drop, self.act = source.drop, source.act

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self.drop(super().forward(x)))


def _timm_batchnorm_act() -> type | None:
    """timm's BatchNorm + activation layer class when timm is loaded (a timm backbone is)."""
    timm = sys.modules.get("timm")
    return timm.layers.BatchNormAct2d if timm is not None else None


def convert_batchnorm(module: nn.Module, device: torch.device) -> nn.Module:
    """Swap BatchNorm2d layers for global-batch ones: torch's SyncBatchNorm on CUDA,
    GlobalBatchNorm2d elsewhere. State-dict keys stay the same, so checkpoints load into
    the plain model. timm's BatchNormAct2d keeps its activation (timm's own converter on
    CUDA: torch's would drop it)."""
    if device.type == "cuda":
        fused = _timm_batchnorm_act()
        if fused is not None and any(type(m) is fused for m in module.modules()):
            from timm.layers import convert_sync_batchnorm

            return convert_sync_batchnorm(module)
        return nn.SyncBatchNorm.convert_sync_batchnorm(module)
    return _swap_batchnorm(module, _timm_batchnorm_act())


def _swap_batchnorm(module: nn.Module, fused: type | None) -> nn.Module:
    if type(module) is nn.BatchNorm2d or (fused is not None and type(module) is fused):
        swapped = GlobalBatchNorm2d(module.num_features, module.eps, module.momentum,
                                    module.affine, module.track_running_stats) \
            if type(module) is nn.BatchNorm2d else GlobalBatchNormAct2d(module)
        swapped.load_state_dict(module.state_dict())
        swapped.to(next(iter(module.state_dict().values())).device)
        swapped.train(module.training)
        return swapped
    for name, child in module.named_children():
        setattr(module, name, _swap_batchnorm(child, fused))
    return module


def wrap_ddp(model: nn.Module, ctx: DistributedContext) -> nn.Module:
    """DistributedDataParallel around `model` (averages its gradients during backward)."""
    if not ctx.enabled:
        return model
    ids = [ctx.device.index] if ctx.device.type == "cuda" else None
    return nn.parallel.DistributedDataParallel(model, device_ids=ids)

