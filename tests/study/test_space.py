"""The search space from Hydra's sweep syntax, and its check against an existing study."""

from __future__ import annotations

import optuna
import pytest
from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution

from xtask_mt.errors import ConfigError
from xtask_mt.study.space import check_against_study, parse_search_space, trial_overrides


def test_each_sweep_kind_becomes_its_distribution_and_plain_values_stay_fixed() -> None:
    space, fixed = parse_search_space([
        "loss.alpha=tag(log, interval(1e-5, 0.3))", "loss.gamma=interval(0.0, 0.5)",
        "trainer.epochs=range(1, 10, 3)", "optimizer.lr=range(0.1, 0.35, 0.1)",
        "weighting=choice(fixed, uncertainty)", "dataset.batch_size=range(2, 9)",
        "seed=7"])
    assert space["loss.alpha"] == FloatDistribution(1e-5, 0.3, log=True)
    assert space["loss.gamma"] == FloatDistribution(0.0, 0.5)
    # Hydra's range leaves out its stop: 1, 4, 7
    assert space["trainer.epochs"] == IntDistribution(1, 7, step=3)
    assert space["optimizer.lr"].low == pytest.approx(0.1)
    assert space["optimizer.lr"].high == pytest.approx(0.3)
    assert space["weighting"] == CategoricalDistribution(["fixed", "uncertainty"])
    assert space["dataset.batch_size"] == IntDistribution(2, 8)  # an interval is of floats
    assert fixed == {"seed": "7"}


def test_a_later_argument_for_a_key_replaces_the_earlier_one() -> None:
    space, fixed = parse_search_space(["loss.alpha=interval(0.1, 0.2)", "loss.alpha=0.05"])
    assert space == {} and fixed == {"loss.alpha": "0.05"}
    assert trial_overrides({"loss.gamma": 0.5}, fixed) == ("loss.gamma=0.5", "loss.alpha=0.05")


@pytest.mark.parametrize("argument", ["loss.alpha=interval(0.3, 0.1)",
                                      "loss.alpha=tag(log, interval(0.0, 0.3))"])
def test_an_empty_or_unloggable_interval_is_refused(argument: str) -> None:
    with pytest.raises(ConfigError, match="an interval needs"):
        parse_search_space([argument])


def _study_with_a_log_alpha() -> optuna.Study:
    study = optuna.create_study(study_name="alpha_gamma", direction="maximize")
    study.add_trial(optuna.trial.create_trial(
        params={"loss.alpha": 0.01}, value=0.5,
        distributions={"loss.alpha": FloatDistribution(1e-5, 0.3, log=True)}))
    return study


def test_another_kind_of_distribution_for_a_studied_parameter_is_refused() -> None:
    study = _study_with_a_log_alpha()
    space, _ = parse_search_space(["loss.alpha=interval(0.0, 0.3)"])
    with pytest.raises(ConfigError) as refused:
        check_against_study(space, study)
    text = str(refused.value)
    assert "loss.alpha=interval(0.0, 0.3)" in text and "tag(log, interval(1e-05, 0.3))" in text
    assert "hydra.sweeper.study_name" in text
    # the same kind over another range, and a parameter the study never saw, continue it
    wider, _ = parse_search_space(["loss.alpha=tag(log, interval(1e-6, 0.5))",
                                   "loss.gamma=interval(0.0, 0.3)"])
    check_against_study(wider, study)
