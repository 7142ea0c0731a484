"""Every sweep command README gives runs, shrunk: tiny settings, the first two values of the
first swept key and the first value of the others (two Optuna trials), in a temporary sweep
dir. The seed-table sweeps run row by row in test_seed_table_sweeps.py; the SLURM launcher,
which needs a cluster, is composed only."""

from __future__ import annotations

import json
import math
import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from helpers.config import ROOT
from helpers.sweep_settings import tiny_overrides
from hydra.core.override_parser.overrides_parser import OverridesParser

pytestmark = pytest.mark.slow

_INLINE = re.compile(r"`(python train\.py [^`]+)`")
_PARSER = OverridesParser.create()


def readme_sweep_commands() -> list[str]:
    """`python train.py` commands of README (code blocks and inline) that start a sweep."""
    found: list[str] = []
    for line in (ROOT / "README.md").read_text().splitlines():
        stripped = line.strip()
        if stripped.startswith("python train.py "):
            candidates = [stripped.split(" # ")[0].split("  #")[0].strip()]
        else:
            candidates = _INLINE.findall(line)
        for command in candidates:
            words = command.split()
            if ("-m" in words or "-cd" in words or any(w.startswith("hparams_search=")
                                                       for w in words)) \
                    and command not in found:
                found.append(command)
    return found


def _swept(words: list[str]) -> dict[str, list[str]]:
    """Swept keys and their values: the sweep config's params, then the command line's."""
    params: dict[str, list[str]] = {}
    if "-cn" in words:
        config = yaml.safe_load((ROOT / "sweeps" / f"{words[words.index('-cn') + 1]}.yaml")
                                .read_text())
        for key, value in ((config.get("hydra") or {}).get("sweeper") or {}).get(
                "params", {}).items():
            override = _PARSER.parse_override(f"{key}={value}")
            if override.is_sweep_override():  # an Optuna distribution is not
                params[key] = list(override.sweep_string_iterator())
    for word in words:
        if "=" in word and not word.startswith(("hydra", "-")):
            override = _PARSER.parse_override(word)
            if override.is_sweep_override():
                params[override.key_or_group] = list(override.sweep_string_iterator())
    return params


def shrunk(command: str, sweep_dir: Path) -> tuple[list[str], int]:
    """The command's train.py arguments, shrunk, and how many jobs they start."""
    words = shlex.split(command.replace("$(hostname)", "host"))[2:]
    swept = _swept(words)
    keep = [w for w in words if not w.startswith("hydra.sweep.dir=")
            and not (("=" in w) and _PARSER.parse_override(w).key_or_group in swept)]
    shrink = {key: values[:2] if i == 0 else values[:1]
              for i, (key, values) in enumerate(swept.items())}
    extra = [f"{key}=choice({','.join(values)})" for key, values in shrink.items()]
    optuna = "optuna" in command or "hparams_search" in command
    if optuna:
        extra.append("hydra.sweeper.n_trials=2")
    if "hydra/launcher=local_submitit" in words or "hydra/launcher=submitit_local" in words:
        extra.append("hydra.launcher.cpus_per_task=1")
    jobs = 2 if optuna else math.prod(len(v) for v in shrink.values())
    return [*keep, *tiny_overrides(), *extra, f"hydra.sweep.dir={sweep_dir}"], jobs


def _run(args: list[str]) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "WANDB_MODE": "offline",
           "WANDB_SILENT": "true", "HYDRA_FULL_ERROR": "1", "OMP_NUM_THREADS": "1"}
    return subprocess.run([sys.executable, "train.py", *args], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=900)


def _statuses(sweep: Path) -> list[str]:
    return [json.loads(p.read_text())["status"] for p in sorted(sweep.rglob("job.json"))]


COMMANDS = readme_sweep_commands()


def test_readme_has_the_sweep_commands_this_test_expects() -> None:
    text = " ".join(COMMANDS)
    for name in ("alpha_gamma", "loss_functions", "weighting", "transfer_edges",
                 "optuna_alpha_gamma", "optuna_pareto", "seed_table_cityscapes",
                 "local_parallel", "local_submitit", "slurm", "postgresql"):
        assert name in text, f"README no longer shows a sweep command with {name}"


@pytest.mark.parametrize("command", COMMANDS, ids=[c[16:70] for c in COMMANDS])
def test_readme_sweep_command_runs_shrunk(command: str, tmp_path: Path) -> None:
    sweep = tmp_path / "sweep"
    if "seed_table_" in command:
        pytest.skip("every row of the seed-table sweeps runs in test_seed_table_sweeps.py")
    if "-cn bench_" in command:
        pytest.skip("every row of the benchmark sweeps runs in test_bench_sweeps.py")
    if "consistency_study" in command or "seed_ablation" in command:
        pytest.skip("every job of the seed's studies runs in test_seed_study_sweeps.py")
    args, jobs = shrunk(command, sweep)
    if "hydra/launcher=slurm" in command:  # no cluster here: the config must compose
        done = _run([*(a for a in args if "choice(" not in a), "--cfg", "hydra"])
        assert done.returncode == 0, done.stderr[-3000:]
        assert "SlurmLauncher" in done.stdout and "partition: gpu" in done.stdout
        return
    if "postgresql://" in command:
        from helpers.postgres import postgres_server

        with postgres_server() as url:
            create = next(line for line in (ROOT / "README.md").read_text().splitlines()
                          if line.startswith("optuna create-study"))
            words = shlex.split(create.replace("postgresql://user:password@host/db", url))
            made = subprocess.run([str(Path(sys.executable).parent / words[0]), *words[1:]],
                                  capture_output=True, text=True, timeout=120)
            assert made.returncode == 0, made.stderr[-3000:]
            done = _run([a.replace("postgresql://user:password@host/db", url) for a in args])
    else:
        done = _run(args)
    assert done.returncode == 0, done.stderr[-3000:]
    assert _statuses(sweep) == ["finished"] * jobs, done.stderr[-3000:]
    if "local_submitit" in command:  # each job uses the launcher's CPUs, not every core
        for log in sweep.glob("*/train.log"):
            assert "cpus_per_task=1: 1 torch threads" in log.read_text()
