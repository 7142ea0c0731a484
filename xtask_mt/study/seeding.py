"""A sampler seeded per trial: trial n draws from seed + n.

Every process of a search builds its sampler from the same `sampler.seed`, so processes
that share one study (two machines on one PostgreSQL study, or the same command run again on
a sqlite study) would each draw the same points. Trial numbers are unique within a study, so
seeding each trial by its number spreads them, and one process's search stays reproducible.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from optuna import Study
from optuna.distributions import BaseDistribution
from optuna.samplers import BaseSampler, QMCSampler
from optuna.trial import FrozenTrial, TrialState

SamplerFactory = Callable[[int | None], BaseSampler]


class PerTrialSeededSampler(BaseSampler):
    """Builds the configured sampler for each trial from `seed + trial.number` (any seed
    when `seed` is None) and hands it every call about that trial."""

    def __init__(self, factory: SamplerFactory, seed: int | None) -> None:
        self.factory = factory
        self.seed = seed
        self._per_trial: dict[int, BaseSampler] = {}
        self._fixed = factory(seed)  # for calls that name no trial

    def __str__(self) -> str:
        return type(self._fixed).__name__

    def _for(self, trial: FrozenTrial) -> BaseSampler:
        if trial.number not in self._per_trial:
            # a QMC sampler already takes the trial number's point of its sequence
            per_trial = self.seed is not None and not isinstance(self._fixed, QMCSampler)
            seed = (self.seed + trial.number) % 2**32 if per_trial else self.seed
            self._per_trial[trial.number] = self.factory(seed)
        return self._per_trial[trial.number]

    def before_trial(self, study: Study, trial: FrozenTrial) -> None:
        self._for(trial).before_trial(study, trial)

    def infer_relative_search_space(self, study: Study,
                                    trial: FrozenTrial) -> dict[str, BaseDistribution]:
        return self._for(trial).infer_relative_search_space(study, trial)

    def sample_relative(self, study: Study, trial: FrozenTrial,
                        search_space: dict[str, BaseDistribution]) -> dict[str, Any]:
        return self._for(trial).sample_relative(study, trial, search_space)

    def sample_independent(self, study: Study, trial: FrozenTrial, param_name: str,
                           param_distribution: BaseDistribution) -> Any:
        return self._for(trial).sample_independent(study, trial, param_name,
                                                    param_distribution)

    def after_trial(self, study: Study, trial: FrozenTrial, state: TrialState,
                    values: Any) -> None:
        self._for(trial).after_trial(study, trial, state, values)
        self._per_trial.pop(trial.number, None)

    def reseed_rng(self) -> None:
        self._fixed.reseed_rng()
