"""Hydra plugins of xtask-mt (found by Hydra's plugin scan of the hydra_plugins package)."""
