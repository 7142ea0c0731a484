"""The search space of an Optuna search, written in Hydra's sweep syntax
(`hydra.sweeper.params` and sweeps on the command line), and its check against a study that
already holds trials: Optuna refuses to sample a parameter with another kind of distribution
than the study's earlier trials, and it does so only after a trial was created."""

from __future__ import annotations

from typing import Any

from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.core.override_parser.types import IntervalSweep, Override, Transformer
from optuna import Study
from optuna.distributions import (
    BaseDistribution,
    CategoricalDistribution,
    FloatDistribution,
    IntDistribution,
    check_distribution_compatibility,
)

from xtask_mt.errors import ConfigError

Space = dict[str, BaseDistribution]


def _choices(override: Override) -> CategoricalDistribution:
    values = list(override.sweep_iterator(transformer=Transformer.encode))
    for value in values:
        if not isinstance(value, (str, int, float, bool, type(None))):
            raise ConfigError(f"{override.input_line}: a search choice must be a str, int, "
                              f"float, bool or null, not {type(value).__name__}")
    return CategoricalDistribution(values)


def _range(override: Override) -> BaseDistribution:
    """range(start, stop, step) as Hydra means it: stop excluded, every step a value."""
    sweep = override.value()
    if sweep.shuffle:
        return _choices(override)
    values = list(override.sweep_iterator())
    if not values:
        raise ConfigError(f"{override.input_line}: the range holds no value")
    if all(isinstance(v, int) for v in (sweep.start, sweep.stop, sweep.step)):
        return IntDistribution(int(values[0]), int(values[-1]), step=int(sweep.step))
    return FloatDistribution(float(values[0]), float(values[-1]), step=float(sweep.step))


def _interval(override: Override) -> BaseDistribution:
    """Hydra reads an interval's bounds as floats: an integer search is a range(...)."""
    sweep: IntervalSweep = override.value()
    log = "log" in sweep.tags
    if sweep.start >= sweep.end or (log and sweep.start <= 0):
        bound = "0 < low < high" if log else "low < high"
        raise ConfigError(f"{override.input_line}: an interval needs {bound}")
    return FloatDistribution(float(sweep.start), float(sweep.end), log=log)


def _distribution(override: Override) -> BaseDistribution:
    if override.is_choice_sweep():
        return _choices(override)
    if override.is_range_sweep():
        return _range(override)
    if override.is_interval_sweep():
        return _interval(override)
    raise ConfigError(f"{override.input_line}: not a search space Optuna can sample "
                      "(use choice(...), range(...) or interval(...), tag(log, ...))")


def parse_search_space(arguments: list[str]) -> tuple[Space, dict[str, str]]:
    """The distributions of the swept keys, and the plain `key=value` overrides that every
    trial gets as they are (a later argument for one key wins, as on Hydra's command line)."""
    space: Space = {}
    fixed: dict[str, str] = {}
    for override in OverridesParser.create().parse_overrides(arguments):
        key = override.get_key_element()
        space.pop(key, None)
        fixed.pop(key, None)
        if override.is_sweep_override():
            space[key] = _distribution(override)
        else:
            fixed[key] = override.get_value_element_as_str()
    return space, fixed


def describe(distribution: BaseDistribution) -> str:
    """A distribution as the sweep syntax would write it."""
    if isinstance(distribution, CategoricalDistribution):
        return f"choice({', '.join(map(str, distribution.choices))})"
    low, high = distribution.low, distribution.high  # type: ignore[attr-defined]
    text = f"interval({low}, {high})"
    if getattr(distribution, "step", None) not in (None, 1):
        text = f"range({low}, {high}, step {distribution.step})"  # type: ignore[attr-defined]
    return f"tag(log, {text})" if getattr(distribution, "log", False) else text


def check_against_study(space: Space, study: Study) -> None:
    """Refuse a parameter whose distribution is of another kind than the one the study's
    earlier trials sampled (e.g. a linear interval where the study has a log one): Optuna
    would raise at the first trial and leave it RUNNING in the study for good."""
    seen: dict[str, BaseDistribution] = {}
    for trial in study.get_trials(deepcopy=False):
        for name, distribution in trial.distributions.items():
            seen.setdefault(name, distribution)
    for name, wanted in space.items():
        if name not in seen:
            continue
        try:
            check_distribution_compatibility(seen[name], wanted)
        except ValueError as exc:
            raise ConfigError(
                f"search space: {name}={describe(wanted)} cannot continue study "
                f"{study.study_name!r}, whose trials sampled {name} as {describe(seen[name])} "
                f"({exc}); search it as the study did, or start another study "
                "(hydra.sweeper.study_name or another hydra.sweep.dir)") from None


def trial_overrides(params: dict[str, Any], fixed: dict[str, str]) -> tuple[str, ...]:
    """The command-line overrides of one trial: its sampled values, then the fixed ones."""
    return tuple(f"{name}={value}" for name, value in {**params, **fixed}.items())
