"""The sharing schemes built from the `encoder` group's ResNet: model.arch -> builder.

Every builder takes (task -> output channels, a backbone factory, a decoder factory, the
input's height and width, then the keys of `model.sharing`) and returns the trunk and a
head per task.
"""

from __future__ import annotations

from xtask_mt.models.cgc import build_cgc
from xtask_mt.models.cross_stitch import build_cross_stitch
from xtask_mt.models.dselect_k import build_dselect_k
from xtask_mt.models.ltb import build_ltb
from xtask_mt.models.mmoe import build_mmoe
from xtask_mt.models.ple import build_ple

SHARING_SCHEMES = {"cross_stitch": build_cross_stitch, "mmoe": build_mmoe, "cgc": build_cgc,
                   "ple": build_ple, "dselect_k": build_dselect_k, "ltb": build_ltb}

# schemes whose gates are linear layers over the flattened input: built for one input size
INPUT_SIZED = ("mmoe", "cgc", "ple", "dselect_k")
