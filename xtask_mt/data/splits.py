"""Split names: Cityscapes and NYUv2 ship train and val (no labelled test split); training
picks its best checkpoint on val."""

TRAIN, VAL, TEST = "train", "val", "test"
BENCHMARK_SPLITS = (TRAIN, VAL)
SELECTION_SPLIT = VAL
