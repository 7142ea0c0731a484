"""Which way is better for each metric name, so best values and sort orders agree."""

from __future__ import annotations

_HIGHER_IS_BETTER = ("miou", "pixacc", "delta", "consistency_seg_agree")


def higher_is_better(name: str) -> bool:
    """True for accuracy-like metrics (mIoU, pixel accuracy, deltas, agreement), False for
    errors and losses. `name` may carry a prefix such as `val/` or `best/`."""
    return name.rsplit("/", 1)[-1].startswith(_HIGHER_IS_BETTER)
