"""The composed config as a plain-text tree (extras.print_config): what a job really runs
with, every interpolation resolved, printed at its start and kept as config_tree.txt."""

from __future__ import annotations

from omegaconf import DictConfig, OmegaConf

TREE_FILE = "config_tree.txt"


def config_tree(cfg: DictConfig) -> str:
    """One branch per top-level key (config group or setting), in composition order, each
    group's resolved values as YAML under it."""
    resolved = OmegaConf.to_container(cfg, resolve=True)
    lines = ["config"]
    for i, (key, value) in enumerate(resolved.items()):
        last = i == len(resolved) - 1
        branch, stem = ("└── ", "    ") if last else ("├── ", "│   ")
        if isinstance(value, dict | list) and value:
            lines.append(f"{branch}{key}")
            body = OmegaConf.to_yaml(OmegaConf.create(value)).rstrip("\n")
            lines += [f"{stem}{line}" for line in body.splitlines()]
        else:
            lines.append(branch + OmegaConf.to_yaml({key: value}).rstrip("\n"))
    return "\n".join(lines) + "\n"
