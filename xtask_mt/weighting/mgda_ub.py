"""MGDA-UB (Sener and Koltun, NeurIPS 2018): MGDA's min-norm task weights computed from the
gradients at the encoder's outputs instead of at its parameters, an upper bound that costs
K backward passes through the decoders only, plus the usual one through the whole network.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch
import torch.distributed as dist

from xtask_mt.weighting.base import StepContext, TaskWeighting


def _gram(grads: list[list[torch.Tensor]]) -> torch.Tensor:
    """(K, K) inner products of the task gradients, each a list of tensors (one per
    feature), accumulated in float64 without stacking them into one matrix."""
    k = len(grads)
    gram = torch.zeros(k, k, dtype=torch.float64, device=grads[0][0].device)
    for a in range(k):
        for b in range(a, k):
            dot = sum(torch.sum(x.float() * y.float(), dtype=torch.float64)
                      for x, y in zip(grads[a], grads[b], strict=True))
            gram[a, b] = gram[b, a] = dot
    return gram


class MGDAUBWeighting(TaskWeighting):
    """The task weights a (a >= 0, sum 1) minimise |sum_i a_i g_i| where g_i is the gradient
    of task i's loss at the encoder's output features (all scales, as the decoders see them).
    The encoder is trained on sum_i a_i L_i, the heads and transfer nets on their own losses.

    Under DDP the Gram matrix of the g_i is summed over the processes, so every process uses
    the same weights. It cannot run under torch.compile: the features it reads live inside
    the compiled graph.
    """

    needs_features = True
    supports_compile = False

    def __init__(self, tasks: Sequence[str], epsilon: float = 1e-3, max_iters: int = 100
                 ) -> None:
        super().__init__(tasks)
        from torchjd.aggregation import MGDAWeighting  # imported here: only this needs it

        self.solver = MGDAWeighting(epsilon=epsilon, max_iters=max_iters)
        self.register_buffer("weights", torch.full((len(self.tasks),), 1.0 / len(self.tasks)))

    def combine(self, losses: Mapping[str, torch.Tensor]) -> torch.Tensor:
        """The plain sum: what the heads are trained on, and what is logged."""
        return self.stack(losses).sum()

    def solve(self, gram: torch.Tensor) -> torch.Tensor:
        """(K, K) Gram matrix of the task gradients -> the min-norm weights (K,)."""
        return self.solver(gram)

    def backward(self, losses: Mapping[str, torch.Tensor], ctx: StepContext) -> torch.Tensor:
        if not ctx.features:
            raise RuntimeError("MGDA-UB needs the encoder's output features "
                               "(StepContext.features)")
        features = [f for f in ctx.features if f.requires_grad]
        grads = [[g if g is not None else torch.zeros_like(f) for g, f in zip(
            torch.autograd.grad(ctx.scale(losses[t].float()), features, retain_graph=True,
                                allow_unused=True), features, strict=True)]
                 for t in self.tasks]
        scale = float(ctx.scaler.get_scale()) if ctx.scaler is not None else 1.0
        gram = _gram(grads) / scale**2
        if dist.is_initialized():
            dist.all_reduce(gram)
        if torch.isfinite(gram).all():
            self.weights.copy_(self.solve(gram.float()))
            for j, feature in enumerate(features):
                combined = sum(float(a) * row[j] for a, row in zip(self.weights, grads,
                                                                      strict=True))
                feature.register_hook(lambda _grad, c=combined: c)
        # else: overflow; the plain sum's gradients let the scaler (or the check) skip it
        return super().backward(losses, ctx)

    def task_weights(self) -> dict[str, float]:
        return dict(zip(self.tasks, self.weights.tolist(), strict=True))
