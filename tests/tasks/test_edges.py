"""Transfer edges between any of the three tasks: every edge set validates, builds and
composes its task losses as (1 - sum w) * direct + sum w * consistency."""

from __future__ import annotations

import itertools

import pytest
import torch
from helpers.config import TINY, compose_config

from xtask_mt.config.build import build_model, build_objective
from xtask_mt.config.validate import validate_config

TASKS = ("seg", "depth", "normal")
PAIRS = [(s, t) for s, t in itertools.permutations(TASKS, 2)]
CHANNELS = {"seg": 7, "depth": 1, "normal": 3}


def _edge_sets():
    return [list(c) for n in range(len(PAIRS) + 1) for c in itertools.combinations(PAIRS, n)]


def _outputs(edges: list[tuple[str, str]], gen: torch.Generator) -> dict[str, torch.Tensor]:
    out = {t: torch.randn(2, CHANNELS[t], 8, 8, generator=gen) for t in TASKS}
    out["normal"] = torch.nn.functional.normalize(out["normal"], dim=1)
    out.update({f"{s}_to_{t}": torch.randn(2, CHANNELS[t], 8, 8, generator=gen)
                for s, t in edges})
    return out


def _batch(gen: torch.Generator) -> dict[str, torch.Tensor]:
    normal = torch.nn.functional.normalize(torch.randn(2, 3, 8, 8, generator=gen), dim=1)
    return {"seg": torch.randint(-1, 7, (2, 8, 8), generator=gen),
            "depth": torch.rand(2, 1, 8, 8, generator=gen) + 0.1,
            "depth_mask": torch.rand(2, 1, 8, 8, generator=gen) > 0.2, "normal": normal}


def test_every_edge_set_of_three_tasks_composes():
    gen = torch.Generator().manual_seed(0)
    weights = {f"{s}_to_{t}": 0.01 * (i + 1) for i, (s, t) in enumerate(PAIRS)}
    sets = _edge_sets()
    assert len(sets) == 64
    for edges in sets:
        text = "[" + ",".join(f"[{s},{t}]" for s, t in edges) + "]"
        cfg = compose_config([f"model.tasks=[{','.join(TASKS)}]",
                              f"model.transfer.edges={text}",
                              *(f"loss.consistency.{k}={v}" for k, v in weights.items()
                                if k not in ("seg_to_depth", "depth_to_seg")),
                              f"loss.alpha={weights['seg_to_depth']}",
                              f"loss.gamma={weights['depth_to_seg']}"])
        validate_config(cfg)
        loss = build_objective(cfg)(_outputs(edges, gen), _batch(gen))
        for task in TASKS:
            own = [f"{s}_to_{t}" for s, t in edges if s == task]
            expected = (1 - sum(weights[e] for e in own)) * loss.terms[task]
            for e in own:
                expected = expected + weights[e] * loss.terms[e]
            torch.testing.assert_close(loss.tasks[task], expected, msg=f"{edges} {task}")
        assert set(loss.terms) == set(TASKS) | {f"{s}_to_{t}" for s, t in edges}


def test_a_model_with_all_six_edges_predicts_every_task_and_edge():
    text = "[" + ",".join(f"[{s},{t}]" for s, t in PAIRS) + "]"
    cfg = compose_config(TINY + [f"model.tasks=[{','.join(TASKS)}]",
                                 f"model.transfer.edges={text}"])
    validate_config(cfg)
    model = build_model(cfg, 7).eval()
    with torch.no_grad():
        out = model(torch.randn(1, 3, 32, 64))
    for s, t in PAIRS:
        assert out[f"{s}_to_{t}"].shape == (1, CHANNELS[t], 32, 64)
    norms = out["normal"].norm(dim=1)
    torch.testing.assert_close(norms, torch.ones_like(norms))  # unit vectors per pixel


@pytest.mark.parametrize("edges", ["[[depth,normal],[normal,depth]]"])
def test_edges_into_normal_need_the_normal_task(edges):
    from xtask_mt.errors import ConfigError

    with pytest.raises(ConfigError, match="model.transfer.edges"):
        validate_config(compose_config([f"model.transfer.edges={edges}"]))
