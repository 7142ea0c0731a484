"""FAMO, Fast Adaptive Multitask Optimization (Liu, Liang, Stone and Liu, NeurIPS 2023): weigh
the log-losses by a softmax over task logits, and learn the logits so that every task's loss
falls at the same rate, at the cost of one extra forward pass per step (no task gradients).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch

from xtask_mt.weighting.base import StepContext, TaskWeighting, mean_over_processes


class FAMOWeighting(TaskWeighting):
    """The network's loss is sum_i z_i log(L_i - m_i + eps) / c with z = softmax(logits),
    m_i a lower bound of L_i (0 here) and c = sum_i z_i / (L_i - m_i + eps), so the task
    gradients are combined with weights z_i / (c (L_i - m_i + eps)) that sum to 1.

    After each update the losses on the same batch are recomputed; their log-decrease d
    drives an Adam step (rate `logit_lr`, L2 `weight_decay`) on the logits along
    -J_softmax^T d, raising the weight of the tasks whose loss fell least. The shared
    gradient's norm is clipped at `max_norm` (0: no clipping). Under DDP the losses behind
    the weights and d are averaged over the processes, so every process holds the same logits.
    """

    def __init__(self, tasks: Sequence[str], logit_lr: float = 0.025,
                 weight_decay: float = 0.01, max_norm: float = 1.0, eps: float = 1e-8,
                 betas: tuple[float, float] = (0.9, 0.999)) -> None:
        super().__init__(tasks)
        for name, value in (("logit_lr", logit_lr), ("eps", eps)):
            if not value > 0:
                raise ValueError(f"{name} must be a number > 0, got {value}")
        for name, value in (("weight_decay", weight_decay), ("max_norm", max_norm)):
            if not value >= 0:
                raise ValueError(f"{name} must be a number >= 0, got {value}")
        if not all(0 <= b < 1 for b in betas):
            raise ValueError(f"betas must lie in [0, 1), got {list(betas)}")
        self.logit_lr, self.weight_decay = float(logit_lr), float(weight_decay)
        self.max_norm, self.eps, self.betas = float(max_norm), float(eps), tuple(betas)
        k = len(self.tasks)
        # buffers, not parameters: the model's optimiser must not touch them
        self.register_buffer("logits", torch.zeros(k))
        self.register_buffer("adam_mean", torch.zeros(k))
        self.register_buffer("adam_square", torch.zeros(k))
        self.register_buffer("adam_steps", torch.tensor(0))
        self.register_buffer("weights", torch.full((k,), 1.0 / k))
        self.register_buffer("losses_before", torch.zeros(k))

    def _log_gap(self, losses: torch.Tensor) -> torch.Tensor:
        return (losses.clamp(min=0) + self.eps).log()

    def combine(self, losses: Mapping[str, torch.Tensor]) -> torch.Tensor:
        stacked = self.stack(losses)
        with torch.no_grad():
            now = mean_over_processes(stacked.detach())
            z = torch.softmax(self.logits, 0)
            gap = now.clamp(min=0) + self.eps
            self.weights.copy_(z / gap / (z / gap).sum())
            self.losses_before.copy_(now)
        return (self.weights * stacked).sum()

    def backward(self, losses: Mapping[str, torch.Tensor], ctx: StepContext) -> torch.Tensor:
        total = super().backward(losses, ctx)
        if self.max_norm > 0:
            scale = float(ctx.scaler.get_scale()) if ctx.scaler is not None else 1.0
            shared = [p for p in ctx.shared_parameters if p.grad is not None]
            torch.nn.utils.clip_grad_norm_(shared, self.max_norm * scale)
        return total

    @torch.no_grad()
    def after_step(self, ctx: StepContext) -> None:
        if ctx.losses_after_step is None:
            raise RuntimeError("FAMO needs the losses after the update (StepContext."
                               "losses_after_step)")
        after = mean_over_processes(self.stack(ctx.losses_after_step()))
        decrease = self._log_gap(self.losses_before) - self._log_gap(after)
        if not torch.isfinite(decrease).all():
            return  # a skipped or overflowed step teaches the logits nothing
        z = torch.softmax(self.logits, 0)
        grad = z * (decrease - (z * decrease).sum()) + self.weight_decay * self.logits
        self._adam_step(grad)

    def _adam_step(self, grad: torch.Tensor) -> None:
        beta1, beta2 = self.betas
        self.adam_steps += 1
        t = int(self.adam_steps)
        self.adam_mean.mul_(beta1).add_(grad, alpha=1 - beta1)
        self.adam_square.mul_(beta2).addcmul_(grad, grad, value=1 - beta2)
        mean = self.adam_mean / (1 - beta1**t)
        square = self.adam_square / (1 - beta2**t)
        self.logits.sub_(self.logit_lr * mean / (square.sqrt() + 1e-8))

    def task_weights(self) -> dict[str, float]:
        """The weights of the last step's task gradients (they sum to 1)."""
        return dict(zip(self.tasks, self.weights.tolist(), strict=True))
