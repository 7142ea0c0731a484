"""The readable text report of an evaluation result (what `evaluate.py` prints)."""

from __future__ import annotations

from typing import Any

from xtask_mt.metrics import ENERGY_KEY
from xtask_mt.tasks import get_task

_WIDTH = 44


def _value(v: float | None, percent: bool) -> str:
    if v is None:
        return f"{'n/a':>10}"
    return f"{100 * v:10.2f}" if percent else f"{v:10.4f}"


def format_report(result: dict[str, Any]) -> str:
    """Sectioned table: run, notes, a section per task (as the task registry labels its
    metrics; per-class IoU after segmentation), consistency per edge, and the optional
    last-k mean, Delta_m and latency."""
    split = result["split"]
    m = {k.split("/", 1)[1]: v for k, v in result["metrics"].items()}
    lines = [f"checkpoint  {result['checkpoint']} (epoch {result['epoch']})",
             f"evaluated   {result['model']} ({result['encoder']}) on {result['dataset']} "
             f"split {split}, {result['num_images']} images"]
    lines += [f"note        {n}" for n in result.get("notes", [])]
    tasks = [get_task(name) for name in result.get("tasks", ("seg", "depth"))]
    for task in tasks:
        rows = [(key, label, pct) for key, label, pct in task.report_rows if key in m]
        if not rows:
            continue
        unit = f" ({result['depth_unit']})" if task.in_dataset_unit and result.get(
            "depth_unit") else ""
        lines += ["", f"{task.title}{unit}"]
        lines += [f"  {label:<{_WIDTH - 2}}{_value(m[key], pct)}" for key, label, pct in rows]
        if task.report_note:
            lines.append(f"  ({task.report_note})")
    if result.get("per_class_iou"):
        lines += ["", "per-class IoU (%)"]
        iou = result["per_class_iou"]
        lines += [f"  {name:<{_WIDTH - 2}}{_value(iou[name], True)}"
                  for name in result.get("class_names", iou)]
    consistency = [(key, get_task(key.rsplit("_to_", 1)[-1])) for key in m
                   if key.startswith("consistency_") and "_to_" in key]
    if consistency:
        lines += ["", "cross-task consistency (transferred vs direct)"]
        for key, target in consistency:
            label, pct = target.consistency_label
            edge = key.removeprefix("consistency_").replace("_to_", "->")
            lines.append(f"  {edge + ': ' + label:<{_WIDTH - 2}}{_value(m[key], pct)}")
    if ENERGY_KEY in m:
        lines += ["", "the seed's consistency energy (transferred vs direct, no ground truth)"]
        lines += [f"  {key.removeprefix('energy_').replace('_to_', '->'):<{_WIDTH - 2}}"
                  f"{_value(m[key], False)}" for key in m if key.startswith("energy_")]
        lines.append(f"  {'mean over the edges':<{_WIDTH - 2}}{_value(m[ENERGY_KEY], False)}")
    if "energy" in result:
        e = result["energy"]
        lines += ["", f"consistency energy over {e['images']} images (mean {e['mean']:.3f}): "
                      "Spearman correlation with each task's per-image error"]
        lines += [f"  {task:<{_WIDTH - 2}}{rho:+10.3f}" for task, rho in e["spearman"].items()]
    if "last_k" in result:
        lk = result["last_k"]
        lines += ["", f"mean of the last {lk['k']} validated epochs {lk['epochs']} "
                      f"({lk['split']} split, from the training history)"]
        lines += [f"  {key:<{_WIDTH - 2}}{_value(v, False)}"
                  for key, v in lk["metrics"].items() if "/loss_" not in key]
    if "delta_m" in result:
        d = result["delta_m"]
        lines += ["", f"Delta_m vs single-task runs: {d['value']:+.2f} %   ({d['convention']})"]
        lines += [f"  {key:<{_WIDTH - 2}}{v:+10.2f}" for key, v in d["per_metric"].items()]
    if "latency" in result:
        lat = result["latency"]
        lines += ["", f"latency on {lat['device']} (median)"]
        for mode in ("direct", "with_transfer"):
            if mode in lat:
                x = lat[mode]
                lines.append(f"  {mode:<{_WIDTH - 2}}{x['ms_per_image_batch1']:8.2f} ms/image "
                             f"(batch 1)  {x['images_per_s_batch']:8.1f} images/s "
                             f"(batch {int(x['batch_size'])})")
    if result.get("figures"):
        lines += ["", f"figures     {len(result['figures'])} PNGs under "
                      f"{result['figures'][0].rsplit('/eval/', 1)[0]}/eval/"]
    return "\n".join(lines)
