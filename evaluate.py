"""Evaluate a training run's checkpoint: `python evaluate.py run=<job output dir>`."""

import hydra
from omegaconf import DictConfig, OmegaConf

from xtask_mt.engine.eval_report import format_report
from xtask_mt.engine.evaluation import evaluate_run
from xtask_mt.entry import exit_on_user_error


@hydra.main(config_path="conf", config_name="evaluate", version_base="1.3")
@exit_on_user_error
def main(cfg: DictConfig) -> None:
    result = evaluate_run(
        OmegaConf.select(cfg, "run", default=None), ckpt=cfg.ckpt, checkpoint=cfg.checkpoint,
        split=cfg.split, overrides=list(cfg.overrides), device=cfg.device,
        progress_bar=cfg.progress_bar, panels=int(cfg.panels),
        save_predictions=bool(cfg.save_predictions), last_k=int(cfg.last_k),
        baselines=list(cfg.baselines),
        latency=OmegaConf.to_container(cfg.latency) if cfg.measure_latency else None)
    print(format_report(result))


if __name__ == "__main__":
    main()
