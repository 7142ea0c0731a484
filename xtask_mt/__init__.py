"""xtask-mt: cross-task consistency learning for multi-task dense prediction."""

__version__ = "0.1.0"
