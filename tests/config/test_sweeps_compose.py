"""Every ready sweep in sweeps/ composes into valid training configs, value by value."""

from __future__ import annotations

import itertools
from pathlib import Path

import pytest
import yaml
from helpers.config import CONF_DIR, ROOT, compose_config
from hydra import compose, initialize_config_dir
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.types import RunMode
from omegaconf import DictConfig, ListConfig, OmegaConf

SWEEPS = ROOT / "sweeps"
HYDRA_SWEEPS = sorted(p.stem for p in SWEEPS.glob("*.yaml"))
WANDB_SPECS = sorted((SWEEPS / "wandb_agent").glob("*.yaml"))


def compose_sweep(name: str, overrides: list[str] = (), hydra: bool = False) -> DictConfig:
    """What `python train.py -cd sweeps -cn <name> <overrides>` composes."""
    with initialize_config_dir(config_dir=str(SWEEPS), version_base="1.3"):
        return compose(config_name=name, return_hydra_config=hydra,
                       overrides=[f"hydra.searchpath=[file://{CONF_DIR}]", *overrides])


def sweep_values(key: str, spec: str) -> list[tuple[str, object]]:
    """(override text, value) of each value of one Hydra sweep parameter: `a,b,c`,
    `choice(...)` (as Hydra parses them) or the ends of Optuna's `tag(log, interval(lo, hi))`."""
    if spec.startswith("tag(") or spec.startswith("interval("):
        lo, hi = spec[spec.index("interval(") + 9:].rstrip(")").split(",")
        return [(v.strip(), float(v)) for v in (lo, hi)]
    override = OverridesParser.create().parse_override(f"{key}={spec}")
    return list(zip(override.sweep_string_iterator(), override.sweep_iterator(), strict=True))


def fixed_settings(name: str) -> list[str]:
    """The settings a sweep file fixes besides its sweep (e.g. the tasks an edge sweep needs),
    as overrides."""
    spec = yaml.safe_load((SWEEPS / f"{name}.yaml").read_text())
    found = []

    def walk(node: object, prefix: str) -> None:
        if isinstance(node, dict):
            for k, v in node.items():
                walk(v, f"{prefix}{k}.")
        else:
            text = yaml.safe_dump(node, default_flow_style=True).strip().removesuffix("...")
            found.append(f"{prefix[:-1]}={text.strip()}")

    for key, value in spec.items():
        if key not in ("defaults", "hydra"):
            walk(value, f"{key}.")
    for entry in spec.get("defaults", []):  # e.g. `override /dataset: cityscapes`
        if isinstance(entry, dict):
            found += [f"{k.removeprefix('override ').lstrip('/')}={v}" for k, v in entry.items()
                      if k.startswith("override ")]
    return found


def test_sweeps_exist() -> None:
    assert {"alpha_gamma", "loss_functions", "weighting", "optuna_alpha_gamma"} <= set(
        HYDRA_SWEEPS)
    assert WANDB_SPECS


@pytest.mark.parametrize("name", HYDRA_SWEEPS)
def test_hydra_sweep_composes_for_every_value(name: str) -> None:
    hydra_cfg = compose_sweep(name, hydra=True).hydra
    assert hydra_cfg.mode == RunMode.MULTIRUN
    assert f"/{name}/" in hydra_cfg.sweep.dir
    params = {k: sweep_values(k, str(v)) for k, v in hydra_cfg.sweeper.params.items()}
    assert params
    for key, values in params.items():
        for text, value in values:
            node = compose_sweep(name, [f"{key}={text}"])
            for part in key.replace("/", ".").split("."):
                node = node[part]
            got = node.name if isinstance(node, DictConfig) else node
            got = OmegaConf.to_container(got) if isinstance(got, ListConfig) else got
            assert got == value or str(got) == str(value), (key, got, value)
    # a sweep changes only what it sweeps and the settings it names, no training setting
    assert compose_sweep(name) == compose_config(fixed_settings(name))


def test_optuna_search_follows_the_monitor() -> None:
    cfg = compose_sweep("optuna_alpha_gamma", hydra=True)
    sweeper = cfg.hydra.sweeper
    assert "optuna" in sweeper._target_.lower() and sweeper.direction == "maximize"
    assert cfg.trainer.monitor == "val/miou"
    flipped = compose_sweep("optuna_alpha_gamma", ["trainer.monitor=val/abs_err",
                                                   "trainer.monitor_mode=min"], hydra=True)
    assert flipped.hydra.sweeper.direction == "minimize"
    for key in ("loss.alpha", "loss.gamma"):
        assert sweeper.params[key].startswith("tag(log, interval(")
    # the same search from the main config
    main = compose_config(["hparams_search=optuna"])
    assert main.loss == cfg.loss


@pytest.mark.parametrize("launcher", ["local_parallel", "slurm", "submitit_local", "joblib",
                                      "local_submitit"])
def test_launchers_compose(launcher: str) -> None:
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        cfg = compose("config", overrides=[f"hydra/launcher={launcher}"],
                      return_hydra_config=True)
    target = cfg.hydra.launcher._target_
    assert ("joblib" if launcher in ("local_parallel", "joblib") else "submitit") in target.lower()
    if launcher == "slurm":
        assert "SlurmLauncher" in target and cfg.hydra.launcher.gpus_per_node == 1
    if launcher == "local_submitit":  # a real job outlives the plugin's 60-minute default
        assert "LocalLauncher" in target and cfg.hydra.launcher.timeout_min >= 24 * 60
        assert cfg.hydra.launcher.cpus_per_task >= 1


@pytest.mark.parametrize("spec_path", WANDB_SPECS, ids=lambda p: p.name)
def test_wandb_sweep_spec_drives_train_py(spec_path: Path) -> None:
    spec = yaml.safe_load(spec_path.read_text())
    assert (ROOT / spec["program"]).is_file()
    command = spec["command"]
    assert "${args_no_hyphens}" in command and "${program}" in command
    fixed = [c for c in command[command.index("${args_no_hyphens}") + 1:]]
    assert spec["metric"]["name"] == "best/" + compose_config().trainer.monitor
    choices = {}
    for key, param in spec["parameters"].items():
        if "values" in param:
            choices[key] = [str(v) for v in param["values"]]
        else:
            choices[key] = [str(param["min"]), str(param["max"])]
    for combo in itertools.product(*choices.values()):
        # what the agent runs: python train.py key=value ... plus the command's fixed args
        args = [f"{k}={v}" for k, v in zip(choices, combo, strict=True)] + fixed
        cfg = compose_config(args)
        assert cfg.logger.name == "wandb"
