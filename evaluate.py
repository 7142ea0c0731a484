"""Evaluate a training run's checkpoint: `python evaluate.py run=<job output dir>`."""

import hydra
from omegaconf import DictConfig, OmegaConf

from xtask_mt.cli import exit_on_user_error
from xtask_mt.engine.evaluate_run import EvalOptions, evaluate_run
from xtask_mt.reports.evaluation import format_report


@hydra.main(config_path="conf", config_name="evaluate", version_base="1.3")
@exit_on_user_error
def main(cfg: DictConfig) -> None:
    result = evaluate_run(
        OmegaConf.select(cfg, "run", default=None), ckpt=cfg.ckpt, checkpoint=cfg.checkpoint,
        split=cfg.split, overrides=list(cfg.overrides), options=EvalOptions(
            device=cfg.device, progress_bar=cfg.progress_bar, panels=int(cfg.panels),
            save_predictions=bool(cfg.save_predictions), last_k=int(cfg.last_k),
            baselines=list(cfg.baselines),
            latency=OmegaConf.to_container(cfg.latency) if cfg.measure_latency else None,
            energy=bool(cfg.energy), wandb=str(cfg.wandb),
            wandb_mode=OmegaConf.select(cfg, "wandb_mode", default=None)))
    print(format_report(result))


if __name__ == "__main__":
    main()
