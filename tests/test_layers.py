"""The package's layers: each package imports only from the layers below it, so there is no
import circle and no leaf (data, models, losses, ...) knows another."""

from __future__ import annotations

import ast
from pathlib import Path

from helpers.config import ROOT

LAYERS = {
    "errors": 0, "sample": 0, "locks": 0,
    "data": 1, "models": 1, "losses": 1, "metrics": 1, "weighting": 1, "runtime": 1, "viz": 1,
    "study": 1,
    "tasks": 2,
    "config": 3, "tracking": 3, "reports": 3,
    "engine": 4,
    "cli": 5,
}


def _imports(path: Path) -> set[str]:
    """The xtask_mt packages a module imports (module level and inside functions)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        names = [node.module] if isinstance(node, ast.ImportFrom) and node.module else \
            [a.name for a in node.names] if isinstance(node, ast.Import) else []
        found |= {n.split(".")[1] for n in names if n.startswith("xtask_mt.")}
    return found


def test_every_package_imports_only_from_lower_layers():
    package = ROOT / "xtask_mt"
    seen = set()
    wrong = []
    for path in sorted(package.rglob("*.py")):
        parts = path.relative_to(package).with_suffix("").parts
        own = parts[0]
        if own == "__init__":
            continue
        seen.add(own)
        wrong += [f"{path.relative_to(ROOT)} imports xtask_mt.{other}"
                  for other in _imports(path) - {own} if LAYERS[other] >= LAYERS[own]]
    assert seen == set(LAYERS), "a package without a layer: add it to LAYERS and README"
    assert not wrong, "\n".join(wrong)
