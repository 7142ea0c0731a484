"""evaluate.py's results in W&B, for a run that training tracked there.

Each evaluation is a new run with job_type "eval" in the training run's group, linked to it
by `train_run_id` in its config (which also holds the training config, so eval runs sort and
plot by the swept keys). A finished training run is not resumed: its history stays one
point per epoch, several evaluations (splits, checkpoints) do not overwrite each other, it
works offline (an offline resume would only be merged at sync), and it cannot clash with a
job still training. Nothing here may fail the evaluation: errors become one warning.
"""

from __future__ import annotations

import logging
from numbers import Real
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from xtask_mt.tracking.wandb_run import (
    iou_table,
    open_run,
    read_run_record,
    resolve_mode,
    wandb_settings,
)

log = logging.getLogger(__name__)


def tracked_run_id(cfg: DictConfig, payload: dict[str, Any]) -> str | None:
    """The W&B run id of the training job, when its config had logger=wandb and its
    checkpoint kept the id; else None (nothing to link to)."""
    if OmegaConf.select(cfg, "logger.name") != "wandb":
        return None
    return payload.get("wandb_run_id") or None


def _plain_config(cfg: DictConfig) -> dict[str, Any]:
    """The training config as a dict, resolved where it resolves outside its Hydra job."""
    try:
        return OmegaConf.to_container(cfg, resolve=True)
    except Exception:  # e.g. a ${hydra:...} of the training job
        return OmegaConf.to_container(cfg, resolve=False)


def evaluation_values(result: dict[str, Any]) -> dict[str, Any]:
    """Scalars of an evaluate_run result under `eval/`: `eval/<split>/<metric>`, Delta_m,
    latency, the consistency energy's correlations and the last-k means."""
    split = result["split"]
    values: dict[str, Any] = {f"eval/{k}": v for k, v in result["metrics"].items()}
    values["eval/epoch"] = result.get("epoch")
    if "delta_m" in result:
        values[f"eval/{split}/delta_m"] = result["delta_m"]["value"]
    for mode, figures in (result.get("latency") or {}).items():  # direct, with_transfer
        if isinstance(figures, dict):
            values.update({f"eval/{split}/latency/{mode}/{k}": v for k, v in figures.items()
                           if isinstance(v, Real)})
    if "energy" in result:
        values[f"eval/{split}/energy_mean"] = result["energy"]["mean"]
        values.update({f"eval/{split}/energy_spearman/{task}": rho
                       for task, rho in result["energy"]["spearman"].items()})
    if "last_k" in result:
        k = result["last_k"]["k"]
        values.update({f"eval/last_{k}/{key}": v
                       for key, v in result["last_k"]["metrics"].items()})
    return values


def _media(result: dict[str, Any]) -> dict[str, Any]:
    """The per-class IoU table and chart and the sample panels as W&B media."""
    import wandb

    split = result["split"]
    media: dict[str, Any] = {}
    if "per_class_iou" in result:
        names = result["class_names"]
        media[f"eval/{split}/per_class_iou"] = iou_table(
            names, [result["per_class_iou"][n] for n in names])
    figures = [Path(f) for f in result.get("figures", [])]
    panels = [wandb.Image(str(f), caption=f.stem) for f in figures if f.parent.name == "panels"]
    if panels:
        media[f"eval/{split}/panels"] = panels
    for chart in (f for f in figures if f.name.startswith("per_class_iou_")):
        media[f"eval/{split}/per_class_iou_chart"] = wandb.Image(str(chart))
    return media


def log_evaluation(result: dict[str, Any], cfg: DictConfig, train_run_id: str, job_dir: Path,
                   out_dir: Path, mode: str | None = None) -> dict[str, str] | None:
    """Log `result` as an eval run linked to training run `train_run_id` of `job_dir`; W&B
    files go under `out_dir`. `mode`: None = the mode training used (WANDB_MODE wins).
    Returns {"run_id", "train_run_id", "mode"}, or None when nothing was logged."""
    record = read_run_record(job_dir)
    lg = cfg.logger
    try:
        mode = resolve_mode(mode or record.get("mode") or str(lg.get("mode", "online")))
        if mode == "disabled":
            return None
        import wandb

        config = _plain_config(cfg)
        name = f"{record.get('name') or Path(job_dir).name} eval {result['split']}"

        def init(mode: str) -> Any:
            config["logger"]["mode"] = mode
            return wandb.init(
                project=record.get("project") or lg.get("project"),
                entity=record.get("entity", lg.get("entity")),
                group=record.get("group") or lg.get("group"), job_type="eval", name=name,
                tags=list(dict.fromkeys([*record.get("tags", []), "eval"])),
                config={**config, "train_run_id": train_run_id, "evaluation": {
                    k: result.get(k) for k in ("checkpoint", "epoch", "split", "notes")}},
                dir=str(out_dir), mode=mode, reinit="finish_previous",
                settings=wandb_settings(lg))

        out_dir.mkdir(parents=True, exist_ok=True)
        run, mode = open_run(mode, init)
        try:
            run.log({**evaluation_values(result), **_media(result)})
        finally:
            run.finish()
    except Exception as exc:  # W&B must never fail an evaluation
        log.warning("W&B logging of the evaluation failed (%s: %s); the results are in %s",
                    type(exc).__name__, exc, out_dir)
        return None
    log.info("W&B eval run %s (%s, %s) linked to training run %s", run.id, name, mode,
             train_run_id)
    return {"run_id": run.id, "train_run_id": train_run_id, "mode": mode}
