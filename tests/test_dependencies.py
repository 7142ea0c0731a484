"""What README's setup installs is consistent: `pip check` finds no conflict that involves
xtask-mt or a package it requires (a conflict between two unrelated packages of the machine
is not the project's)."""

from __future__ import annotations

import re
import subprocess
import sys
from importlib.metadata import requires


def _name(requirement: str) -> str:
    return re.split(r"[\s\[<>=!~;]", requirement, maxsplit=1)[0].lower().replace("_", "-")


def test_pip_check_finds_no_conflict_in_the_projects_requirements() -> None:
    ours = {"xtask-mt"} | {_name(r) for r in requires("xtask-mt") or []}
    done = subprocess.run([sys.executable, "-m", "pip", "check"], capture_output=True,
                          text=True, timeout=300)
    problems = [line for line in done.stdout.splitlines()
                if _name(line) in ours or any(f" {name} " in f" {line.lower()} "
                                               for name in ours if len(name) > 3)]
    assert not problems, "\n".join(problems)
