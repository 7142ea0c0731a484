"""Prepare a dataset's cache ahead of training (training also does it on first use).

    python prepare.py dataset=cityscapes dataset.root=/data/cityscapes dataset.num_classes=19
    python prepare.py experiment=nyuv2_paper dataset.root=/data/nyu

Takes the same overrides as train.py, checked the same way (exit 2 with one error line);
prepares the train and val splits at the configured resolution and class count, and prints
where each cache is.
"""

import sys
from pathlib import Path

from hydra import compose, initialize_config_dir

from xtask_mt.config.build import build_dataset
from xtask_mt.config.validate import validate_config
from xtask_mt.data.splits import BENCHMARK_SPLITS
from xtask_mt.errors import UserError

CONF_DIR = Path(__file__).resolve().parent / "conf"


def main(overrides: list[str]) -> int:
    if {"-h", "--help"} & set(overrides):
        print(__doc__)
        return 0
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        cfg = compose(config_name="config", overrides=overrides)
    if "cache" not in cfg.dataset:
        print(f"error: dataset={cfg.dataset.name} has no preparation step", file=sys.stderr)
        return 2
    cfg.dataset.cache = True
    try:
        validate_config(cfg)  # what train.py would refuse is not prepared either
        for split in BENCHMARK_SPLITS:
            dataset = build_dataset(cfg, split)
            print(f"{split}: {len(dataset)} frames prepared in {dataset.prepared.folder}")
    except UserError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
