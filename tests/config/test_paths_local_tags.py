"""The paths config, the optional git-ignored local config, top-level tags and the printed
config tree (README, "Paths, local settings, tags")."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest
from helpers.config import CONF_DIR, ROOT, TINY, compose_config
from hydra import compose, initialize_config_dir

from xtask_mt.config.tree import TREE_FILE, config_tree
from xtask_mt.config.validate import validate_config
from xtask_mt.engine.trainer import train
from xtask_mt.errors import ConfigError


def _hydra(conf_dir: Path, overrides: list[str]):
    with initialize_config_dir(config_dir=str(conf_dir), version_base="1.3"):
        return compose(config_name="config", overrides=overrides, return_hydra_config=True)


def test_defaults_keep_data_and_outputs_where_they_were():
    cfg = _hydra(CONF_DIR, ["dataset=cityscapes"])
    assert Path(cfg.dataset.root) == Path("data/cityscapes")
    assert Path(compose_config(["dataset=nyuv2"]).dataset.root) == Path("data/nyu")
    assert Path(cfg.hydra.run.dir).parts[0] == "outputs"
    assert Path(cfg.hydra.sweep.dir).parts[0] == "multirun"


def test_data_dir_and_log_dir_move_dataset_roots_and_run_dirs():
    cfg = _hydra(CONF_DIR, ["dataset=cityscapes", "paths.data_dir=/datasets",
                            "paths.log_dir=/scratch/me"])
    assert cfg.dataset.root == "/datasets/cityscapes"
    assert cfg.hydra.run.dir.startswith("/scratch/me/outputs/")
    assert cfg.hydra.sweep.dir.startswith("/scratch/me/multirun/")
    assert _hydra(CONF_DIR, ["debug=fdr", "paths.log_dir=/l"]).hydra.run.dir.startswith(
        "/l/debug/")


def test_local_config_is_optional_git_ignored_and_merged_when_present(tmp_path):
    ignored = subprocess.run(["git", "check-ignore", "-q", "conf/local/default.yaml"], cwd=ROOT)
    assert ignored.returncode == 0
    conf = tmp_path / "conf"
    shutil.copytree(CONF_DIR, conf)
    (conf / "local" / "default.yaml").unlink(missing_ok=True)  # this machine's own, if any
    assert _hydra(conf, []).paths.data_dir == "./data"
    shutil.copy(conf / "local" / "default.yaml.example", conf / "local" / "default.yaml")
    cfg = _hydra(conf, ["dataset=nyuv2"])
    assert cfg.dataset.root == "/datasets/nyu" and cfg.dataset.num_workers == 8
    assert _hydra(conf, ["dataset.num_workers=2"]).dataset.num_workers == 2  # command line wins


def test_tags_are_a_top_level_list_of_strings():
    assert list(compose_config(["tags=[baseline,cityscapes]"]).tags) == ["baseline", "cityscapes"]
    with pytest.raises(ConfigError, match="tags"):
        validate_config(compose_config(["tags=[2024]"]))


def test_config_tree_has_a_branch_per_group_with_resolved_values():
    tree = config_tree(compose_config(["dataset=cityscapes", "paths.data_dir=/d"]))
    lines = tree.splitlines()
    assert lines[0] == "config" and "├── dataset" in lines and "└── extras" in lines
    assert "│   root: /d/cityscapes" in lines and "├── tags: []" in lines


def test_training_keeps_the_tree_unless_print_config_is_off(tmp_path):
    train(compose_config(TINY + ["dataset.train_size=4"]), tmp_path / "on")
    assert "├── trainer" in (tmp_path / "on" / TREE_FILE).read_text()
    train(compose_config(TINY + ["dataset.train_size=4", "extras.print_config=false"]),
          tmp_path / "off")
    assert not (tmp_path / "off" / TREE_FILE).exists()
