"""sweeps/architectures.yaml covers every sharing scheme, hard sharing and MTAN, and each of
its jobs composes into a config that passes validation and names a registered architecture."""

from __future__ import annotations

from test_sweeps_compose import compose_sweep

from xtask_mt.config.build import ARCHITECTURES
from xtask_mt.config.validate import validate_config
from xtask_mt.models.schemes import SHARING_SCHEMES


def test_the_architecture_sweep_crosses_every_scheme_with_a_few_weightings():
    params = compose_sweep("architectures", hydra=True).hydra.sweeper.params
    models, weightings = str(params.model).split(","), str(params.weighting).split(",")
    assert set(models) == {*SHARING_SCHEMES, "mtl", "mtan"}
    assert 2 <= len(weightings) <= 4 and "fixed" in weightings
    assert any(w in ("pcgrad", "cagrad", "mgda", "nash_mtl") for w in weightings)
    # each model with the last weighting (every value alone: test_sweeps_compose.py)
    for model in models:
        cfg = compose_sweep("architectures", [f"model={model}", f"weighting={weightings[-1]}"])
        validate_config(cfg)
        assert cfg.model.name == model and cfg.weighting.name == weightings[-1]
        assert cfg.model.arch in ARCHITECTURES and cfg.dataset.name == "synthetic"
