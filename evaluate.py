"""Evaluate a training run's checkpoint: `python evaluate.py run=<job output dir>`."""

import hydra
from omegaconf import DictConfig

from xtask_mt.engine.evaluation import evaluate_run, format_table


@hydra.main(config_path="conf", config_name="evaluate", version_base="1.3")
def main(cfg: DictConfig) -> None:
    result = evaluate_run(cfg.run, checkpoint=cfg.checkpoint, overrides=list(cfg.overrides),
                          device=cfg.device, progress_bar=cfg.progress_bar)
    print(f"{result['checkpoint']} (epoch {result['epoch']}, split {result['split']})")
    print(format_table(result["metrics"]))


if __name__ == "__main__":
    main()
