"""Trials seeded by their number: processes sharing a study draw different points, and one
process's search is reproducible; every sampler of conf/hydra/sweeper/sampler runs so."""

from __future__ import annotations

from pathlib import Path

import optuna
import pytest
import yaml
from hydra.utils import instantiate

from xtask_mt.study.seeding import PerTrialSeededSampler

ROOT = Path(__file__).resolve().parents[2]
SAMPLERS = sorted((ROOT / "conf" / "hydra" / "sweeper" / "sampler").glob("*.yaml"))
SPACE = {"alpha": optuna.distributions.FloatDistribution(1e-5, 0.3, log=True),
         "gamma": optuna.distributions.FloatDistribution(1e-5, 0.3, log=True)}


def _seeded(config: dict, seed: int | None) -> PerTrialSeededSampler:
    return PerTrialSeededSampler(lambda s: instantiate({**config, "seed": s}), seed)


def _one_trial(storage: str, sampler: optuna.samplers.BaseSampler) -> dict:
    """What one process of a search draws for its next trial of the shared study."""
    study = optuna.create_study(storage=storage, study_name="s", sampler=sampler,
                                load_if_exists=True)
    trial = study.ask(SPACE)
    study.tell(trial, 1.0)
    return trial.params


def test_processes_sharing_a_study_draw_different_points(tmp_path: Path) -> None:
    tpe = {"_target_": "optuna.samplers.TPESampler"}
    shared = f"sqlite:///{tmp_path / 'shared.db'}"
    first, second = (_one_trial(shared, _seeded(tpe, 1234)) for _ in range(2))
    assert first != second
    # a sampler seeded once per process would draw the first point again
    plain = f"sqlite:///{tmp_path / 'plain.db'}"
    again = [_one_trial(plain, optuna.samplers.TPESampler(seed=1234)) for _ in range(2)]
    assert again[0] == again[1] == first
    # and a search alone in its study is the same search every time
    assert _one_trial(f"sqlite:///{tmp_path / 'again.db'}", _seeded(tpe, 1234)) == first


@pytest.mark.parametrize("path", SAMPLERS, ids=[p.stem for p in SAMPLERS])
def test_every_configured_sampler_searches_through_the_per_trial_seed(path: Path) -> None:
    config = yaml.safe_load(path.read_text())
    config.pop("seed")
    multi = "NSGAII" in config["_target_"]
    if "n_startup_trials" in config or multi:  # reach the model within a few trials
        config["n_startup_trials" if not multi else "population_size"] = 2
    directions = ["minimize", "minimize"] if multi else ["minimize"]

    def search() -> list[dict]:
        study = optuna.create_study(sampler=_seeded(config, 7), directions=directions)
        for _ in range(4):
            trial = study.ask(SPACE)
            x = trial.params["alpha"] - 0.1
            study.tell(trial, [x * x, trial.params["gamma"]] if multi else x * x)
        return [t.params for t in study.trials]

    first = search()
    assert len({tuple(p.values()) for p in first}) == 4  # four different points
    assert search() == first                              # the same seed, the same search
