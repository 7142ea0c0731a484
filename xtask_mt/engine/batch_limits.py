"""How many batches an epoch trains on and a validation runs (trainer.limit_train_batches,
trainer.limit_val_batches, trainer.overfit_batches), for the debug runs (debug=fdr|limit|
overfit) that go through the whole job in a fraction of its time."""

from __future__ import annotations

from omegaconf import DictConfig


def limited_batches(limit: int | float, available: int) -> int:
    """The batches a limit leaves of `available`: an int is a count, a float a fraction
    (at least one batch of a non-empty loader); 1.0, the default, is all of them."""
    if isinstance(limit, float):
        return min(available, max(1, int(available * limit)))
    return min(available, int(limit))


def train_batches(trainer: DictConfig, available: int) -> int:
    """Batches per training epoch: overfit_batches when set, else limit_train_batches."""
    overfit = int(trainer.get("overfit_batches", 0))
    return limited_batches(overfit or trainer.get("limit_train_batches", 1.0), available)


def val_batches(trainer: DictConfig, available: int) -> int:
    """Batches per validation: overfit_batches when set (validation then runs on the same
    training batches), else limit_val_batches."""
    overfit = int(trainer.get("overfit_batches", 0))
    return limited_batches(overfit or trainer.get("limit_val_batches", 1.0), available)
