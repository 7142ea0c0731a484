"""Datasets that yield the sample dict every part of the project agrees on (xtask_mt.sample)."""

from xtask_mt.data.synthetic import SyntheticScenes

__all__ = ["SyntheticScenes"]
