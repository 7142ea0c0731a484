"""Train the cross-task consistency model. `python train.py --help` lists the options."""

import hydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig

from xtask_mt.cli import exit_on_user_error
from xtask_mt.engine.search import search_result
from xtask_mt.engine.sweep_job import run_training_job


@hydra.main(config_path="conf", config_name="config", version_base="1.3")
@exit_on_user_error
def main(cfg: DictConfig) -> float | list[float]:
    return search_result(cfg, run_training_job(cfg, HydraConfig.get().runtime.output_dir))


if __name__ == "__main__":
    main()
