"""The Optuna sweeper of `hparams_search=...`, as Hydra finds it; the search itself is
xtask_mt/study/search.py. Hydra imports every module of hydra_plugins when any command
starts, so this one imports Optuna (about 0.2 s) only when a search runs."""

from __future__ import annotations

from typing import Any

from hydra.core.plugins import Plugins
from hydra.plugins.sweeper import Sweeper
from hydra.types import HydraContext, TaskFunction
from omegaconf import DictConfig


class OptunaSearchSweeper(Sweeper):
    """Hydra sweeper running an Optuna study with ask-and-tell (settings: see
    conf/hydra/sweeper/optuna_search.yaml)."""

    def __init__(self, **settings: Any) -> None:
        self.settings = settings
        self.config: DictConfig | None = None
        self.launcher: Any = None

    def setup(self, *, hydra_context: HydraContext, task_function: TaskFunction,
              config: DictConfig) -> None:
        self.config = config
        self.launcher = Plugins.instance().instantiate_launcher(
            config=config, hydra_context=hydra_context, task_function=task_function)

    def sweep(self, arguments: list[str]) -> None:
        from xtask_mt.study.search import OptunaSearch  # Optuna loads with the first search

        assert self.config is not None
        OptunaSearch(self.config, self.launcher, **self.settings).run(arguments)
