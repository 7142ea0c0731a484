"""What a W&B run is named, grouped and tagged by, read from the running Hydra job.

In a sweep the run name is built from the keys the sweep varies only, e.g.
`alpha=0.01,gamma=0.1`, so runs read apart in the W&B table; fixed overrides (entity, tags,
epochs, ...) stay in the run config under `overrides`. A key is varied when it is a sweep
(comma list, range(), choice(), interval()) in `hydra.sweeper.params` or on the sweep's
command line, which Hydra's basic sweeper keeps in `<sweep dir>/multirun.yaml` (written
before any job starts, so it holds for every launcher). The Optuna sweeper writes no
multirun.yaml and hands each trial its sampled and fixed values alike, so in an Optuna search
only the `hydra.sweeper.params` keys are named; its names end in `#<job number>` so that
trials never share one.

A single run (and a `wandb agent` run, which is one) is named after its experiment and its
overrides, e.g. `nyuv2_paper alpha=0.01,gamma=0.1`; with neither, the caller names it.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

MAX_GROUP = 128  # W&B's limit on group names
MAX_TAG = 64     # W&B's limit on a tag
TAGGED_CHOICES = ("experiment", "hparams_search", "seed_table")  # config groups that tag a run
UNNAMED_KEYS = ("experiment", "logger", "paths", "tags")  # say where a run goes, not what it is


@dataclass(frozen=True)
class JobContext:
    """`name`: short name (None: let the caller choose); `group`: default group; `tags`
    from the config groups chosen; `overrides`: all of the job's command-line overrides."""

    name: str | None = None
    group: str | None = None
    tags: tuple[str, ...] = ()
    overrides: tuple[str, ...] = ()


def job_context() -> JobContext:
    """The context of the running Hydra job; empty outside Hydra (tests, library use)."""
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    if not HydraConfig.initialized():
        return JobContext()
    hc = HydraConfig.get()
    choices = dict(hc.runtime.choices)
    overrides = tuple(str(o) for o in hc.overrides.task)
    multirun = hc.mode == RunMode.MULTIRUN
    tags = context_tags(choices, str(hc.job.config_name) if multirun else None)
    if not multirun:
        experiment = choices.get("experiment")
        return JobContext(single_run_name(experiment, overrides), experiment, tags, overrides)
    sweep_dir = Path(hc.sweep.dir)
    varied = swept_keys(hc.sweeper.get("params") or {}, sweep_command_line(sweep_dir))
    optuna = "optuna" in str(hc.sweeper.get("_target_", "")).lower()
    name = short_name(overrides, varied, hc.job.num, numbered=optuna) or f"job{hc.job.num}"
    return JobContext(name, group_from_path(sweep_dir), tags, overrides)


def context_tags(choices: Mapping[str, Any], sweep_config: str | None = None
                 ) -> tuple[str, ...]:
    """`sweep:<preset>` for a sweep started from a preset (`-cn alpha_gamma`), then
    `<group>:<choice>` for the experiment, hparams_search and seed_table chosen."""
    tags = [f"sweep:{sweep_config}"] if sweep_config and sweep_config != "config" else []
    tags += [f"{group}:{choices[group]}" for group in TAGGED_CHOICES if choices.get(group)]
    return tuple(tag[:MAX_TAG] for tag in tags)


def group_from_path(sweep_dir: Path) -> str:
    """The sweep dir relative to the working directory when inside it, else as given."""
    try:
        text = str(sweep_dir.resolve().relative_to(Path.cwd().resolve()))
    except ValueError:
        text = str(sweep_dir)
    return text[-MAX_GROUP:]


def sweep_command_line(sweep_dir: Path) -> list[str]:
    """The sweep's own command-line overrides (sweeps unexpanded) from multirun.yaml;
    [] when the sweeper wrote none (e.g. Optuna, whose space is in hydra.sweeper.params)."""
    from omegaconf import OmegaConf

    path = sweep_dir / "multirun.yaml"
    if not path.is_file():
        return []
    try:
        return [str(o) for o in OmegaConf.load(path).hydra.overrides.task]
    except Exception as exc:  # a name is not worth failing a job for
        log.warning("cannot read the sweep's overrides from %s (%s); run names fall back to "
                    "the job number", path, exc)
        return []


def _parsed(overrides: Iterable[str]) -> list[Any]:
    """Hydra's parse of each override; one that does not parse is left out."""
    from hydra.core.override_parser.overrides_parser import OverridesParser

    parser = OverridesParser.create()
    parsed = []
    for text in overrides:
        try:
            parsed.append(parser.parse_override(text))
        except Exception:  # not a sweep we can name; the others still are
            continue
    return parsed


def swept_keys(params: Mapping[str, Any], command_line: Sequence[str]) -> list[str]:
    """Keys given as sweeps in `hydra.sweeper.params` or on the command line, in order."""
    texts = [f"{k}={v}" for k, v in params.items()] + list(command_line)
    keys = [o.key_or_group for o in _parsed(texts) if o.is_sweep_override()]
    return list(dict.fromkeys(keys))


def _short_value(text: str) -> str:
    """A long float (as Optuna samples them) to 4 significant digits; integers (seeds) and
    everything else unchanged."""
    if len(text) <= 8 or text.lstrip("+-").isdigit():
        return text
    try:
        return f"{float(text):.4g}"
    except ValueError:
        return text


def _lossy(short: str, text: str) -> bool:
    """Whether `short` (from _short_value) stands for another number than `text`."""
    return short != text and float(short) != float(text)


def short_name(overrides: Sequence[str], varied: Sequence[str], job_num: int | None = None,
               numbered: bool = False) -> str:
    """`key=value,...` of the `varied` keys in this job's `overrides`, each key shortened to
    its last component (`loss.alpha` -> `alpha`, `loss/tdepth` -> `tdepth`) unless two
    varied keys would then read the same; "" when no varied key is among the overrides.
    `#<job_num>` is appended when a float was cut (two jobs could then read the same) or
    when `numbered` (Optuna trials, whose varied keys may not all be known)."""
    values = {o.key_or_group: o.get_value_element_as_str() for o in _parsed(overrides)}
    keys = [k for k in varied if k in values]
    last = {k: k.replace("/", ".").rsplit(".", 1)[-1] for k in keys}
    clashes = {v for v in last.values() if list(last.values()).count(v) > 1}
    short = {k: _short_value(values[k]) for k in keys}
    name = ",".join(f"{k if last[k] in clashes else last[k]}={short[k]}" for k in keys)
    if name and job_num is not None and (numbered or any(_lossy(short[k], values[k])
                                                         for k in keys)):
        name += f"#{job_num}"
    return name


def single_run_name(experiment: str | None, overrides: Sequence[str]) -> str | None:
    """A single run's name: its experiment, then its overrides as in a sweep name (those of
    UNNAMED_KEYS left out), so runs of one experiment read apart; None when it has neither
    (the caller then uses the output dir's name)."""
    keys = [o.key_or_group for o in _parsed(overrides) if not o.is_delete()
            and o.key_or_group.replace("/", ".").split(".")[0] not in UNNAMED_KEYS]
    parts = [experiment or "", short_name(overrides, list(dict.fromkeys(keys)))]
    return " ".join(p for p in parts if p) or None
