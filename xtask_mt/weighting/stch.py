"""STCH, Smooth Tchebycheff scalarisation (Lin et al., ICML 2024): a smooth maximum of the
task losses relative to a reference point, so the task that lags most gets most of the
update; it works on the loss values alone (no task gradients)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch

from xtask_mt.weighting.base import TaskWeighting, linearised_total, mean_over_processes


class STCHWeighting(TaskWeighting):
    """For the first `warmup_epochs` epochs the total is sum_i log L_i, and the last of them
    gives the reference (nadir) point z: its mean task losses. From then on the total is
    K mu log sum_i exp(log(L_i / z_i) / mu), whose gradient weighs grad L_i by
    K softmax(log(L / z) / mu)_i / L_i: small mu follows the worst task, large mu tends to the
    sum of log-losses.

    The losses are averaged over the processes under DDP (and z comes from the epoch's mean
    losses over all of them), so every process weighs the tasks alike. The logged weights
    are each task loss's gradient factor.
    """

    def __init__(self, tasks: Sequence[str], mu: float = 1.0, warmup_epochs: int = 5,
                 eps: float = 1e-20) -> None:
        super().__init__(tasks)
        if not mu > 0:
            raise ValueError(f"mu must be a number > 0, got {mu}")
        if not (isinstance(warmup_epochs, int) and warmup_epochs >= 1):
            raise ValueError(f"warmup_epochs must be an integer >= 1 (the reference point "
                             f"is the last warm-up epoch's mean losses), got {warmup_epochs}")
        if not eps > 0:
            raise ValueError(f"eps must be a number > 0, got {eps}")
        self.mu, self.warmup_epochs, self.eps = float(mu), warmup_epochs, float(eps)
        k = len(self.tasks)
        self.register_buffer("nadir", torch.ones(k))
        self.register_buffer("epochs_seen", torch.tensor(0))
        self.register_buffer("weights", torch.ones(k))

    def combine(self, losses: Mapping[str, torch.Tensor]) -> torch.Tensor:
        stacked = self.stack(losses)
        with torch.no_grad():  # both stages on the device: no host sync to pick one
            k = len(self.tasks)
            means = mean_over_processes(stacked.detach()).clamp(min=0) + self.eps
            ratios = (means / self.nadir).log() / self.mu
            warm = self.epochs_seen < self.warmup_epochs
            value = torch.where(warm, means.log().sum(),
                                k * self.mu * torch.logsumexp(ratios, 0))
            self.weights.copy_(torch.where(warm, 1 / means, k * torch.softmax(ratios, 0) / means))
        return linearised_total(value, self.weights.clone(), stacked)

    @torch.no_grad()
    def epoch_end(self, mean_losses: Mapping[str, float]) -> None:
        self.epochs_seen += 1
        if int(self.epochs_seen) == self.warmup_epochs:
            self.nadir.copy_(torch.tensor([float(mean_losses[t]) for t in self.tasks]
                                          ).clamp(min=self.eps))

    def task_weights(self) -> dict[str, float]:
        return dict(zip(self.tasks, self.weights.tolist(), strict=True))
