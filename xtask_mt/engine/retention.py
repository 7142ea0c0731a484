"""What a job keeps of its checkpoints (`trainer.keep_checkpoints`), so that a sweep fits on
disk: a ResNet-34 job's best.pt and last.pt with Adam state are about 380 MB each.

- all: best.pt and last.pt, both with optimiser, scheduler and weighting state;
- best_weights: the same while the job runs (an interrupted job resumes from last.pt); when it
  finishes, best.pt is cut down to the model's weights, config and model spec (what
  evaluate.py and KD4MTL teachers read) and last.pt is removed;
- none: last.pt while the job runs, nothing once it finishes (search trials);
- auto (default): all in a single run, best_weights in a multirun.
"""

from __future__ import annotations

from pathlib import Path

from xtask_mt.engine.checkpoint import load_checkpoint, save_checkpoint

BEST, LAST = "best.pt", "last.pt"
WEIGHTS_ONLY = ("model", "config", "model_spec", "epoch", "wandb_run_id")


def resolve_keep_policy(setting: str) -> str:
    """`setting`, with auto resolved by the Hydra run mode of this job."""
    if setting != "auto":
        return setting
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    multirun = HydraConfig.initialized() and HydraConfig.get().mode == RunMode.MULTIRUN
    return "best_weights" if multirun else "all"


def checkpoints_to_write(policy: str, is_best: bool) -> tuple[str, ...]:
    """The files an epoch writes; last.pt, which says where training stands, last."""
    return (BEST, LAST) if is_best and policy != "none" else (LAST,)


def prune_finished(checkpoint_dir: Path, policy: str) -> list[str]:
    """Apply `policy` to a finished job's checkpoints; returns what it did, for the log."""
    done = []
    best, last = checkpoint_dir / BEST, checkpoint_dir / LAST
    if policy == "best_weights" and best.is_file():
        payload = load_checkpoint(best)
        if "optimizer" in payload:
            slim = {key: payload[key] for key in WEIGHTS_ONLY if key in payload}
            save_checkpoint(best, {**slim, "kept": "best_weights"})
            done.append(f"cut {best} down to the model's weights")
    if policy in ("best_weights", "none") and last.is_file():
        last.unlink()
        done.append(f"removed {last}")
    if policy == "none" and best.is_file():
        best.unlink()
        done.append(f"removed {best}")
    if policy == "none" and checkpoint_dir.is_dir() and not any(checkpoint_dir.iterdir()):
        checkpoint_dir.rmdir()
    return done
