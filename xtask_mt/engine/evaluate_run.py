"""Evaluate a finished run's checkpoint on a chosen split and write `eval/` beside it.

`eval/metrics.json` (the latest) and `eval/metrics_<split>.json` (kept per split) hold the
metrics, per-class IoU, the protocol notes and, on request, the mean of the last k validated
epochs, Delta_m against single-task runs and the latency; `eval/panels/` and
`eval/per_class_iou_<split>.png` show what the model sees.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from omegaconf import DictConfig, OmegaConf
from torch import nn

from xtask_mt.config.build import (
    USES_ENCODER_GROUP,
    build_dataset,
    build_loader,
    build_metrics,
    build_model,
    build_objective,
    dataset_splits,
    encoder_library,
    resolve_device,
    upgrade_saved_config,
    without_pretrained_weights,
)
from xtask_mt.data.splits import SELECTION_SPLIT, TRAIN
from xtask_mt.engine.checkpoint import (
    CheckpointError,
    check_model_spec,
    load_checkpoint,
    model_spec,
    write_json_atomic,
)
from xtask_mt.engine.energy import edge_means, energy_map, spearman
from xtask_mt.engine.latency import measure_latency
from xtask_mt.engine.loops import evaluate
from xtask_mt.errors import UserError
from xtask_mt.losses import TaskObjective
from xtask_mt.metrics import MetricCollection
from xtask_mt.metrics.segmentation import none_for_nan, segmentation_iou
from xtask_mt.reports import delta_m
from xtask_mt.reports.stats import last_k_mean as mean_of_last_epochs
from xtask_mt.runtime.host_memory import configure_host_memory
from xtask_mt.runtime.precision import StepOptions
from xtask_mt.sample import denormalise_image
from xtask_mt.tasks import get_task
from xtask_mt.tracking.wandb_eval import log_evaluation, tracked_run_id
from xtask_mt.tracking.wandb_run import ACCEPTED_MODES as WANDB_MODES
from xtask_mt.viz.panels import PanelRow, iou_bar_chart, sample_panel

log = logging.getLogger(__name__)
WANDB_CHOICES = ("auto", "none")  # evaluate.py's `wandb` (not `logger`: train.py's group)


class EvaluationError(UserError):
    """An evaluation request that cannot be served: missing run files, bad split or option."""


def load_run_config(run_dir: Path, overrides: Sequence[str] = ()) -> DictConfig:
    """The config saved by Hydra in `run_dir/.hydra/config.yaml`, with dotlist overrides."""
    path = Path(run_dir) / ".hydra" / "config.yaml"
    if not path.is_file():
        raise EvaluationError(f"{path} not found: `run` must be the output dir of a "
                                "train.py job (it holds .hydra/ and checkpoints/)")
    return _with_overrides(OmegaConf.load(path), overrides)


def _with_overrides(cfg: DictConfig, overrides: Sequence[str]) -> DictConfig:
    cfg = upgrade_saved_config(cfg)
    if overrides:
        cfg = OmegaConf.merge(cfg, OmegaConf.from_dotlist(list(overrides)))
    return cfg


def _trunk_name(cfg: DictConfig) -> str:
    """The encoder (resnet<depth>, or the timm model's name) or, for other architectures,
    model.arch."""
    arch = str(cfg.model.get("arch", "resnet_unet"))
    if arch not in USES_ENCODER_GROUP:
        return arch
    return str(cfg.encoder.name) if encoder_library(cfg.encoder) == "timm" \
        else f"resnet{cfg.encoder.depth}"


def protocol_notes(dataset: str, splits: Sequence[str], split: str,
                   chosen_on_val: bool) -> list[str]:
    """What the reader must know about where the reported figures come from;
    `chosen_on_val`: the checkpoint is train.py's best.pt, picked on the val split."""
    if split == "train":
        return ["reported on the training split: this measures fit, not generalisation"]
    if split != SELECTION_SPLIT or not chosen_on_val:
        return []
    if "test" in splits:
        return [f"the {split} split also chose this checkpoint (trainer.monitor), so these "
                "figures are optimistic; split=test reports a held-out split"]
    return [f"dataset {dataset} has only {'/'.join(splits)} splits and no separate test split: "
            f"the reported {split} split also chose this checkpoint, so the figures are "
            "optimistic; last_k=<k> adds the mean of the last k epochs, which picks no epoch"]


def last_k_mean(run_dir: Path, k: int) -> dict[str, Any]:
    """Mean of each validation metric over the last `k` validated epochs of a run."""
    path = Path(run_dir) / "metrics.json"
    if not path.is_file():
        raise EvaluationError(f"{path} not found: last_k needs the run's metrics.json")
    history = json.loads(path.read_text()).get("history")
    if not history:
        raise EvaluationError(f"{path} has no per-epoch 'history' (written by newer train.py): "
                              "last_k cannot be computed for this run; retrain or set last_k=0")
    if k < 1 or k > len(history):
        raise EvaluationError(f"last_k={k} but {path} holds {len(history)} validated epochs; "
                              f"choose 1..{len(history)}")
    return {"k": k, "epochs": [int(h["epoch"]) for h in history[-k:]], "split": SELECTION_SPLIT,
            "metrics": mean_of_last_epochs(history, k)}


@dataclass
class _Collected:
    """Outputs of one pass: the figures (metrics and mean loss terms), the accumulator they
    came from, the first samples for panels, all predictions as maps (by output key) and,
    with the consistency energy, each image's energy and each task's per-image error."""

    metrics: MetricCollection
    figures: dict[str, float] = field(default_factory=dict)
    samples: list[dict[str, Any]] = field(default_factory=list)
    predictions: dict[str, list[np.ndarray]] = field(default_factory=dict)
    energy: list[float] = field(default_factory=list)
    errors: dict[str, list[float]] = field(default_factory=dict)


@dataclass(frozen=True)
class _Wanted:
    """What a pass keeps besides the metrics: `samples` panels (value maps in `unit`), all
    predictions, and the energy when given its edge normalisers."""

    samples: int = 0
    predictions: bool = False
    unit: str = ""
    normalisers: dict[str, float] | None = None


def _as_maps(model: nn.Module, out: dict[str, torch.Tensor]) -> dict[str, np.ndarray]:
    """Each output drawn as its task draws it: (N, H, W) class ids (int16) or values; an
    edge's output as its target task's."""
    owners = {task: task for task in model.tasks}
    owners.update({edge.name: edge.target for edge in model.edges})
    return {key: get_task(owners[key]).prediction_map(value) for key, value in out.items()}


def _panel_rows(model: nn.Module, batch: dict[str, torch.Tensor], maps: dict[str, np.ndarray],
                i: int, unit: str) -> list[PanelRow]:
    """Sample `i` of a batch as one panel row per task of the model."""
    rows = []
    for task in model.tasks:
        spec = get_task(task)
        truth, valid = (x[i] for x in spec.truth_map(batch))
        keys = [task] + [edge.name for edge in model.edges if edge.target == task]
        predictions = {("direct" if key == task else key): maps[key][i] if key in maps else None
                       for key in keys}
        rows.append(PanelRow(task, spec.draw, truth, valid, predictions,
                                    unit if spec.draw == "map" else ""))
    return rows


def predict(model: nn.Module, loader: Any, objective: TaskObjective, metrics: MetricCollection,
            options: StepOptions, wanted: _Wanted, progress_bar: bool = True) -> _Collected:
    """One evaluation pass (the training loop's own), keeping what panels and files need."""
    collected = _Collected(metrics)

    def keep(batch: dict[str, torch.Tensor], out: dict[str, torch.Tensor]) -> None:
        energy = None
        if wanted.normalisers is not None:
            energy = energy_map(model, out, wanted.normalisers)
            collected.energy += energy.mean(dim=(1, 2)).tolist()
            for task in model.tasks:
                collected.errors.setdefault(task, []).extend(
                    get_task(task).image_errors(out[task], batch).tolist())
        if not wanted.predictions and len(collected.samples) >= wanted.samples:
            return
        maps = _as_maps(model, out)
        if wanted.predictions:
            for key, value in maps.items():
                collected.predictions.setdefault(key, []).append(value)
        for i in range(batch["image"].shape[0]):
            if len(collected.samples) >= wanted.samples:
                break
            rows = _panel_rows(model, batch, maps, i, wanted.unit)
            if energy is not None:
                heat = energy[i].float().cpu().numpy()
                rows.append(PanelRow("consistency energy", "heat", heat, np.ones_like(
                    heat, dtype=bool)))
            collected.samples.append({"image": denormalise_image(batch["image"][i]),
                                      "rows": rows})

    collected.figures = evaluate(model, loader, objective, metrics, options,
                                 description="evaluate", progress_bar=progress_bar,
                                 on_batch=keep)
    return collected


def _explain_missing(run: Path, ckpt_path: Path) -> None:
    """Say why a run has no such checkpoint when its trainer.keep_checkpoints is the cause:
    a search trial keeps none, a sweep job only best.pt's weights."""
    config = run / ".hydra" / "config.yaml"
    if not config.is_file():
        return
    policy = str(OmegaConf.select(OmegaConf.load(config), "trainer.keep_checkpoints",
                                  default="all"))
    if policy == "none":
        raise EvaluationError(
            f"{ckpt_path} does not exist: this job ran with trainer.keep_checkpoints=none (a "
            "search trial's default) and kept no checkpoint once it finished; train it again "
            "with its overrides (.hydra/overrides.yaml) and trainer.keep_checkpoints=all")
    if ckpt_path.name == "last.pt" and policy in ("best_weights", "auto"):
        raise EvaluationError(
            f"{ckpt_path} does not exist: a job with trainer.keep_checkpoints={policy} (in a "
            "sweep: best_weights) removes last.pt when it finishes; evaluate checkpoint=best")


def _resolve(run: str | Path | None, ckpt: str | Path | None, checkpoint: str,
             overrides: Sequence[str]) -> tuple[Path, Path, dict[str, Any], DictConfig]:
    """(run dir, checkpoint path, checkpoint payload, config) from `run` and/or `ckpt`."""
    if run is None and ckpt is None:
        raise EvaluationError("give run=<train.py output dir> and/or ckpt=<checkpoint file>")
    if checkpoint not in ("best", "last"):
        raise EvaluationError(f"checkpoint={checkpoint!r}: use best or last (or ckpt=<file>)")
    ckpt_path = Path(ckpt) if ckpt is not None else Path(run) / "checkpoints" / f"{checkpoint}.pt"
    if ckpt is None and not ckpt_path.exists():
        _explain_missing(Path(run), ckpt_path)
    payload = load_checkpoint(ckpt_path)
    if run is not None:
        return Path(run), ckpt_path, payload, load_run_config(Path(run), overrides)
    if not isinstance(payload.get("config"), dict):
        raise CheckpointError(f"{ckpt_path} holds no config; pass run=<its train.py output dir>")
    run_dir = ckpt_path.parent.parent if ckpt_path.parent.name == "checkpoints" \
        else ckpt_path.parent
    return run_dir, ckpt_path, payload, _with_overrides(OmegaConf.create(payload["config"]),
                                                        overrides)


@dataclass(frozen=True)
class EvalOptions:
    """Where evaluate_run runs and what it adds to the metrics: `panels` sample figures, all
    predictions, the mean of the last k epochs, Delta_m against `baselines`, `latency`
    ({"warmup": n, "iters": n}) when given, and the consistency energy with its correlation
    to each task's per-image error. `wandb`: auto logs to W&B when training did (an eval
    run linked to the training run, in `wandb_mode`, None = as training), none never."""

    device: str = "auto"
    progress_bar: bool = True
    panels: int = 4
    save_predictions: bool = False
    last_k: int = 0
    baselines: Sequence[str | Path] = ()
    latency: dict[str, int] | None = None
    energy: bool = False
    wandb: str = "auto"
    wandb_mode: str | None = None


def _energy_normalisers(cfg: DictConfig, model: nn.Module, options: StepOptions,
                        progress_bar: bool) -> dict[str, float]:
    """Each edge's mean disagreement over the training split, seen without augmentation."""
    if not model.edges:
        raise EvaluationError("energy=true needs transfer nets: this model has no "
                              "model.transfer.edges")
    plain = OmegaConf.merge(cfg, {"dataset": {"augment": {"enabled": False}}}) \
        if "augment" in cfg.dataset else cfg
    loader = build_loader(plain, build_dataset(plain, TRAIN), train=False)
    return edge_means(model, loader, options, progress_bar)


def _energy_result(path: Path, collected: _Collected,
                   normalisers: dict[str, float]) -> dict[str, Any]:
    """Spearman correlation of per-image energy with each task's per-image error; the
    per-image values go to `path`."""
    energy = np.asarray(collected.energy)
    write_json_atomic(path, {"energy": collected.energy, "errors": collected.errors})
    return {"normalisers": normalisers, "mean": float(energy.mean()), "images": len(energy),
            "spearman": {task: spearman(energy, np.asarray(errors))
                         for task, errors in collected.errors.items()}, "file": str(path)}


def evaluate_run(run: str | Path | None = None, ckpt: str | Path | None = None,
                 checkpoint: str = "best", split: str = "val", overrides: Sequence[str] = (),
                 options: EvalOptions | None = None) -> dict[str, Any]:
    """Rebuild the run's model, load its checkpoint (weights_only), evaluate `split`, draw the
    figures and write `<run>/eval/metrics.json`. Returns what the file holds."""
    o = options or EvalOptions()
    run_dir, ckpt_path, payload, cfg = _resolve(run, ckpt, checkpoint, overrides)
    splits = dataset_splits(cfg)
    if split not in splits:
        raise EvaluationError(f"split={split!r}: dataset {cfg.dataset.name} has only the "
                         f"{', '.join(splits)} splits (Cityscapes and NYUv2 ship no test split)")
    # read what the options need first, so a bad option fails before the evaluation pass
    _check_logging(o)
    last = last_k_mean(run_dir, int(o.last_k)) if o.last_k else None
    baseline_runs = _read_baselines(split, o.baselines)
    dev = resolve_device(o.device)
    configure_host_memory(dev, cfg.trainer)  # as training does: no page faults per batch
    dataset = build_dataset(cfg, split)
    loader = build_loader(cfg, dataset, train=False)
    num_classes = dataset.num_classes
    model = build_model(without_pretrained_weights(cfg), num_classes)  # the checkpoint's weights
    check_model_spec(ckpt_path, payload.get("model_spec", {}), model_spec(cfg, num_classes))
    model.load_state_dict(payload["model"])
    model.to(dev)

    options = StepOptions(dev)
    normalisers = _energy_normalisers(cfg, model, options, o.progress_bar) if o.energy \
        else None
    collected = predict(model, loader, build_objective(cfg),
                        build_metrics(cfg, num_classes, dev), options,
                        _Wanted(o.panels, o.save_predictions, getattr(dataset, "depth_unit", ""),
                                normalisers), progress_bar=o.progress_bar)
    class_names = list(getattr(dataset, "class_names", [str(i) for i in range(num_classes)]))
    out_dir = run_dir / "eval"
    out_dir.mkdir(parents=True, exist_ok=True)
    result: dict[str, Any] = {
        "checkpoint": str(ckpt_path), "epoch": payload.get("epoch"), "split": split,
        "selection_split": SELECTION_SPLIT, "dataset": str(cfg.dataset.name),
        "model": str(cfg.model.get("name", "?")), "encoder": _trunk_name(cfg),
        "tasks": list(model.tasks),
        "num_images": len(dataset), "depth_unit": getattr(dataset, "depth_unit", ""),
        "notes": protocol_notes(str(cfg.dataset.name), splits, split,
                                chosen_on_val=ckpt_path.name == "best.pt"),
        "metrics": {f"{split}/{k}": v for k, v in collected.figures.items()},
    }
    per_class = segmentation_iou(collected.metrics)
    if per_class is not None:
        result["class_names"] = class_names  # metrics.json sorts keys; this keeps the order
        result["per_class_iou"] = dict(zip(class_names, none_for_nan(per_class), strict=True))
    result["figures"] = _draw(out_dir, split, collected.samples, class_names, result)
    if o.save_predictions:
        path = out_dir / f"predictions_{split}.npz"
        np.savez_compressed(path, **{k: np.concatenate(v) for k, v in
                                     collected.predictions.items()})
        result["predictions"] = str(path)
    if last is not None:
        result["last_k"] = last
    if normalisers is not None:
        result["energy"] = _energy_result(out_dir / f"energy_{split}.json", collected,
                                          normalisers)
    if baseline_runs:
        own = {k.split("/", 1)[1]: v for k, v in result["metrics"].items()}
        compared = delta_m.headline_metrics(model.tasks)
        value, per_metric = delta_m.delta_m(own, delta_m.merge_baselines(baseline_runs, compared),
                                            compared)
        result["delta_m"] = {"value": value, "per_metric": per_metric,
                             "baselines": list(baseline_runs),
                             "convention": delta_m.SIGN_CONVENTION}
    if o.latency:
        result["latency"] = {"device": str(dev), **measure_latency(
            model, int(cfg.dataset.height), int(cfg.dataset.width),
            int(cfg.dataset.batch_size), dev, int(o.latency.get("warmup", 10)),
            int(o.latency.get("iters", 50)))}
    _write_results(out_dir, split, result)  # before W&B, which may wait minutes
    train_run_id = tracked_run_id(cfg, payload) if o.wandb == "auto" else None
    if train_run_id is not None:
        tracked = log_evaluation(result, cfg, train_run_id, run_dir, out_dir, o.wandb_mode)
        if tracked is not None:
            result["wandb"] = tracked
            _write_results(out_dir, split, result)
    log.info("evaluated %s on split %s; results in %s", ckpt_path, split, out_dir)
    return result


def _write_results(out_dir: Path, split: str, result: dict[str, Any]) -> None:
    """metrics_<split>.json (kept when another split runs) and metrics.json (the latest)."""
    write_json_atomic(out_dir / f"metrics_{split}.json", result)
    write_json_atomic(out_dir / "metrics.json", result)


def _draw(out_dir: Path, split: str, samples: list[dict[str, Any]],
          class_names: list[str], result: dict[str, Any]) -> list[str]:
    figures = []
    for i, s in enumerate(samples):
        path = sample_panel(
            out_dir / "panels" / f"{split}_{i:03d}.png", s["image"], s["rows"], class_names,
            title=f"{result['model']} / {result['dataset']} {split} #{i} "
                  f"(epoch {result['epoch']})")
        figures.append(str(path))
    if "per_class_iou" in result:
        path = iou_bar_chart(
            out_dir / f"per_class_iou_{split}.png", class_names,
            [result["per_class_iou"][name] for name in class_names],
            title=f"per-class IoU, {result['model']} on {result['dataset']} {split}")
        figures.append(str(path))
    return figures


def _check_logging(o: EvalOptions) -> None:
    if o.wandb not in WANDB_CHOICES:
        raise EvaluationError(f"wandb={o.wandb!r}: use auto (W&B when training used it) "
                              "or none")
    if o.wandb_mode not in (None, *WANDB_MODES):
        raise EvaluationError(f"wandb_mode={o.wandb_mode!r}: use null (as training), "
                              f"{', '.join(WANDB_MODES)}")


def _read_baselines(split: str,
                    baselines: Sequence[str | Path]) -> dict[str, dict[str, float]]:
    """Metrics of each single-task run's `eval/metrics.json`, which must cover `split`."""
    runs = {}
    for baseline in baselines:
        base_split, values = delta_m.read_eval_metrics(Path(baseline), split)
        if base_split != split:
            raise delta_m.DeltaMError(
                f"baseline {baseline} was evaluated on split {base_split}, this run on {split}; "
                f"run python evaluate.py run={baseline} split={split}")
        runs[str(baseline)] = values
    return runs
