"""Datasets that yield the sample dict every part of the project agrees on (see sample.py)."""

from xtask_mt.data.sample import IGNORE_INDEX, make_sample
from xtask_mt.data.synthetic import SyntheticScenes

__all__ = ["IGNORE_INDEX", "SyntheticScenes", "make_sample"]
