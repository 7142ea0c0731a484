"""Shared fixtures; W&B never reaches the network in tests."""

from __future__ import annotations

import os

import pytest
from helpers.config import TINY, compose_config
from omegaconf import DictConfig

os.environ.setdefault("WANDB_MODE", "disabled")


@pytest.fixture
def tiny_cfg() -> DictConfig:
    return compose_config(TINY)
