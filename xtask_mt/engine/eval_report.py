"""The readable text report of an evaluation result (what `evaluate.py` prints)."""

from __future__ import annotations

from typing import Any

# (metric name, label, shown in percent)
_SEG_ROWS = (("miou", "mIoU (%)"), ("pixacc", "pixel accuracy (%)"))
_DEPTH_ROWS = (("abs_err", "abs error", False), ("abs_rel", "abs rel error", False),
               ("rmse", "RMSE", False), ("delta1", "delta < 1.25 (%)", True),
               ("delta2", "delta < 1.25^2 (%)", True), ("delta3", "delta < 1.25^3 (%)", True))
_CONSISTENCY_ROWS = (("consistency_depth_abs", "|transferred - direct| depth", False),
                     ("consistency_seg_agree", "transferred = direct seg (%)", True))
_WIDTH = 34


def _value(v: float | None, percent: bool) -> str:
    if v is None:
        return f"{'n/a':>10}"
    return f"{100 * v:10.2f}" if percent else f"{v:10.4f}"


def format_report(result: dict[str, Any]) -> str:
    """Sectioned table: run, notes, segmentation (standard and legacy), per-class IoU, depth,
    consistency, and the optional last-k mean, Delta_m and latency."""
    split = result["split"]
    m = {k.split("/", 1)[1]: v for k, v in result["metrics"].items()}
    lines = [f"checkpoint  {result['checkpoint']} (epoch {result['epoch']})",
             f"evaluated   {result['model']} ({result['encoder']}) on {result['dataset']} "
             f"split {split}, {result['num_images']} images"]
    lines += [f"note        {n}" for n in result.get("notes", [])]
    if "miou" in m:
        lines += ["", f"{'segmentation':<{_WIDTH}}{'standard':>10}  {'legacy per-image':>16}"]
        for key, label in _SEG_ROWS:
            lines.append(f"  {label:<{_WIDTH - 2}}{_value(m[key], True)}  "
                         f"{_value(m.get(key + '_legacy'), True):>16}")
        lines.append("  (standard: one confusion matrix over the split; legacy: mean of "
                     "per-image figures)")
    if result.get("per_class_iou"):
        lines += ["", "per-class IoU (%)"]
        iou = result["per_class_iou"]
        lines += [f"  {name:<{_WIDTH - 2}}{_value(iou[name], True)}"
                  for name in result.get("class_names", iou)]
    if "abs_err" in m:
        unit = f" ({result['depth_unit']})" if result.get("depth_unit") else ""
        lines += ["", f"depth{unit}"]
        lines += [f"  {label:<{_WIDTH - 2}}{_value(m.get(key), pct)}"
                  for key, label, pct in _DEPTH_ROWS]
    if any(key in m for key, _, _ in _CONSISTENCY_ROWS):
        lines += ["", "cross-task consistency (transferred vs direct)"]
        lines += [f"  {label:<{_WIDTH - 2}}{_value(m.get(key), pct)}"
                  for key, label, pct in _CONSISTENCY_ROWS if key in m]
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
