"""The Optuna search behind `hparams_search=...` (run by the sweeper plugin
hydra_plugins/xtask_mt_sweeper/optuna_search.py): ask-and-tell on today's Optuna, with the
study's failure budget, trials seeded by their number, and one line for every way a search
cannot start or has to stop.

Each batch asks the study for `n_jobs` trials, runs them through the launcher and tells the
study each trial's value(s), or FAIL with the job's error kept in its job.json. A trial is
never left RUNNING: a search stopped by a signal tells its open trials FAIL (user attribute
`interrupted`), and nothing is asked before the search space was checked against the study.
"""

from __future__ import annotations

import logging
import math
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import optuna
from hydra.core.utils import JobReturn, JobStatus
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf
from optuna.trial import Trial, TrialState

from xtask_mt.errors import UserError
from xtask_mt.study.budget import FailureBudget
from xtask_mt.study.job_returns import describe, job_dir, log_if_bug
from xtask_mt.study.seeding import PerTrialSeededSampler
from xtask_mt.study.space import check_against_study, parse_search_space, trial_overrides
from xtask_mt.study.storage import open_study, shown_url

log = logging.getLogger(__name__)
_LISTED = 3  # failed trials named in a line; the rest are counted
_INTERRUPTED = "interrupted"  # user attribute of a trial told FAIL because the search stopped


def _directions(direction: Any) -> list[str]:
    values = list(direction) if isinstance(direction, Sequence) and not isinstance(
        direction, str) else [direction]
    names = [str(getattr(d, "name", d)).lower() for d in values]
    wrong = [n for n in names if n not in ("maximize", "minimize")]
    if wrong:
        raise UserError(f"hydra.sweeper.direction: {', '.join(wrong)} is neither maximize "
                        "nor minimize")
    return names


def _values(job: JobReturn, objectives: int) -> list[float]:
    """The value(s) a finished job returned, as the study needs them; a ValueError when they
    cannot be told (not numbers, NaN, or another count than the objectives)."""
    returned = job.return_value
    values = list(returned) if isinstance(returned, (list, tuple)) else [returned]
    try:
        numbers = [float(v) for v in values]
    except (TypeError, ValueError):
        raise ValueError(f"the job returned {returned!r}, not {objectives} number(s)") from None
    if len(numbers) != objectives or any(math.isnan(v) for v in numbers):
        raise ValueError(f"the job returned {returned!r}; the study needs {objectives} "
                         "number(s) without NaN")
    return numbers


class OptunaSearch:
    """One search: the sweeper's settings, the Hydra config and its launcher."""

    def __init__(self, config: DictConfig, launcher: Any, sampler: DictConfig, direction: Any,
                 storage: str | None, study_name: str | None, n_trials: int, n_jobs: int,
                 max_failures: int | float | None, params: DictConfig | None) -> None:
        self.config = config
        self.launcher = launcher
        self.sampler_config = sampler
        self.direction = direction
        self.storage = storage
        self.study_name = study_name
        self.n_trials = int(n_trials)
        self.n_jobs = int(n_jobs)
        self.max_failures = max_failures
        self.params = params
        self.job_idx = 0

    def run(self, arguments: list[str]) -> None:
        """Search; a user error ends the command with one line, exit 2."""
        try:
            self._search(arguments)
        except UserError as exc:
            print(f"error: {exc}", file=sys.stderr)
            sys.exit(2)

    # the search

    def _sampler(self) -> PerTrialSeededSampler:
        config = OmegaConf.to_container(self.sampler_config, resolve=True)
        assert isinstance(config, dict)
        seed = config.pop("seed", None)

        def build(trial_seed: int | None) -> optuna.samplers.BaseSampler:
            return instantiate({**config, "seed": trial_seed})

        return PerTrialSeededSampler(build, seed)

    def _check_settings(self) -> FailureBudget:
        for key, value in (("n_trials", self.n_trials), ("n_jobs", self.n_jobs)):
            if value < 1:
                raise UserError(f"invalid config value hydra.sweeper.{key}={value}: expected "
                                "an integer >= 1")
        return FailureBudget.from_config(self.max_failures)

    def _search(self, arguments: list[str]) -> None:
        budget = self._check_settings()
        params = [f"{k}={v}" for k, v in (self.params or {}).items()]
        space, fixed = parse_search_space([*params, *arguments])
        directions = _directions(self.direction)
        study = open_study(self.storage, self.study_name, directions, self._sampler())
        check_against_study(space, study)
        log.info("study %r in %s: %d trials in batches of %d, sampler %s, directions %s",
                 study.study_name, shown_url(self.storage) if self.storage else "memory",
                 self.n_trials, self.n_jobs, study.sampler, directions)
        self._stop_if_spent(study, budget)
        asked = 0
        while asked < self.n_trials:
            batch = min(self.n_jobs, self.n_trials - asked)
            self._run_batch(study, space, fixed, batch, len(directions))
            asked += batch
            self._stop_if_spent(study, budget)
        self._finish(study, asked)

    def _run_batch(self, study: optuna.Study, space: dict, fixed: dict[str, str],
                   batch: int, objectives: int) -> None:
        trials: list[Trial] = []
        told: set[int] = set()
        try:
            for _ in range(batch):
                trial = study.ask(space)
                trials.append(trial)
            overrides = [trial_overrides(t.params, fixed) for t in trials]
            returns = self.launcher.launch(overrides, initial_job_idx=self.job_idx)
            self.job_idx += len(returns)
            for trial, job in zip(trials, returns, strict=True):
                self._tell(study, trial, job, objectives)
                told.add(trial.number)
        finally:
            for trial in trials:  # stopped by a signal or an error of the sweep itself
                if trial.number not in told:
                    trial.set_user_attr(_INTERRUPTED, True)
                    study.tell(trial, state=TrialState.FAIL)

    def _tell(self, study: optuna.Study, trial: Trial, job: JobReturn,
              objectives: int) -> None:
        trial.set_user_attr("job_dir", job_dir(job))
        if job.status == JobStatus.FAILED:
            log_if_bug(job)
            trial.set_user_attr("error", describe(job))
            log.warning("trial %d failed: %s", trial.number, describe(job))
            study.tell(trial, state=TrialState.FAIL)
            return
        try:
            values = _values(job, objectives)
        except ValueError as exc:
            trial.set_user_attr("error", f"{job_dir(job)}: {exc}")
            log.warning("trial %d failed: %s", trial.number, exc)
            study.tell(trial, state=TrialState.FAIL)
            return
        study.tell(trial, values=values)

    # the end of a search

    def _failed(self, study: optuna.Study) -> list[optuna.trial.FrozenTrial]:
        return [t for t in study.get_trials(deepcopy=False, states=(TrialState.FAIL,))
                if not t.user_attrs.get(_INTERRUPTED)]

    def _listed(self, trials: list[optuna.trial.FrozenTrial]) -> str:
        named = [f"trial {t.number} ({t.user_attrs.get('error', 'no error recorded')})"
                 for t in trials[:_LISTED]]
        more = f" and {len(trials) - _LISTED} more" if len(trials) > _LISTED else ""
        return "; ".join(named) + more

    def _stop_if_spent(self, study: optuna.Study, budget: FailureBudget) -> None:
        failed = self._failed(study)
        finished = len(study.get_trials(deepcopy=False,
                                        states=(TrialState.COMPLETE, TrialState.FAIL)))
        if not budget.spent(len(failed), finished):
            return
        self._save_results(study)
        print(f"error: the failure budget of study {study.study_name!r} is spent "
              f"({budget.describe()}): {len(failed)} of its {finished} finished trials failed: "
              f"{self._listed(failed)}. Each trial's job.json holds its error; the completed "
              "trials stay in the study. Fix the cause, or raise hydra.sweeper.max_failures, "
              "and run the same command again", file=sys.stderr)
        sys.exit(1)

    def _finish(self, study: optuna.Study, asked: int) -> None:
        if not self._save_results(study):
            print(f"error: no trial of study {study.study_name!r} completed: the {asked} "
                  "trials of this run failed (recorded as FAIL in the study); each trial's "
                  f"job.json under {self.config.hydra.sweep.dir} holds its error",
                  file=sys.stderr)
            sys.exit(1)

    def _save_results(self, study: optuna.Study) -> bool:
        """optimization_results.yaml in the sweep dir: the best trial, or the Pareto front of
        a multi-objective study; False when the study has no completed trial."""
        if not study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)):
            return False
        if len(study.directions) == 1:
            best = study.best_trial
            results: dict[str, Any] = {"name": "optuna", "best_params": best.params,
                                       "best_value": best.value}
            log.info("best trial %d: %s = %s", best.number, best.params, best.value)
        else:
            front = [{"params": t.params, "values": t.values} for t in study.best_trials]
            results = {"name": "optuna", "solutions": front}
            log.info("Pareto front: %d trials", len(front))
        sweep_dir = Path(self.config.hydra.sweep.dir)
        sweep_dir.mkdir(parents=True, exist_ok=True)
        OmegaConf.save(OmegaConf.create(results), sweep_dir / "optimization_results.yaml")
        return True
