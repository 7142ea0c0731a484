"""README's evaluate.py command that changes the saved config, run as documented."""

from __future__ import annotations

import json
import re
import shlex
import subprocess
import sys

from helpers.config import ROOT, TINY


def test_the_documented_overrides_form_reaches_the_saved_config(tmp_path):
    run = tmp_path / "run"
    trained = subprocess.run([sys.executable, "train.py", *TINY, "model.decoder_width=16",
                              f"hydra.run.dir={run}"], cwd=ROOT, capture_output=True,
                             text=True, timeout=300)
    assert trained.returncode == 0, trained.stderr[-2000:]
    readme = (ROOT / "README.md").read_text()
    documented = re.search(r"python evaluate.py run=\.\.\. ('overrides=\[[^\]]*\]')", readme)
    assert documented, "README no longer shows the overrides form"
    (argument,) = shlex.split(documented.group(1))  # what the shell hands to evaluate.py
    argument = argument.replace("dataset.root=/data/cs", "dataset.val_size=3")
    result = subprocess.run([sys.executable, "evaluate.py", f"run={run}", argument,
                             "progress_bar=false"], cwd=ROOT, capture_output=True, text=True,
                            timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    report = json.loads((run / "eval" / "metrics_val.json").read_text())
    assert report["num_images"] == 3  # the override reached the config (the run had 4)


def test_the_documented_wandb_none_option_is_accepted(tmp_path):
    """README's `python evaluate.py run=... wandb=none`; `logger=` would clash with train.py's
    logger config group, which Hydra refuses."""
    readme = (ROOT / "README.md").read_text()
    assert "python evaluate.py run=... wandb=none" in readme
    shown = subprocess.run([sys.executable, "evaluate.py", f"run={tmp_path}", "wandb=none",
                            "wandb_mode=offline", "--cfg", "job"], cwd=ROOT,
                           capture_output=True, text=True, timeout=120)
    assert shown.returncode == 0, shown.stderr[-2000:]
    assert "wandb: none" in shown.stdout and "wandb_mode: offline" in shown.stdout
