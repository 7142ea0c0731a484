"""The failure budget over a study: a count, or a share of its finished trials."""

from __future__ import annotations

import pytest

from xtask_mt.errors import ConfigError
from xtask_mt.study.budget import FailureBudget


def test_a_count_is_spent_at_that_many_failures() -> None:
    budget = FailureBudget.from_config(3)
    assert [budget.spent(failed, 10) for failed in (0, 2, 3, 4)] == [False, False, True, True]
    assert FailureBudget.from_config(3.0) == budget


def test_a_share_is_judged_once_enough_trials_finished() -> None:
    budget = FailureBudget.from_config(0.25)
    assert not budget.spent(1, 1)   # one early failure: 4 trials are needed to judge 25%
    assert not budget.spent(3, 3)
    assert budget.spent(2, 4)       # 50% of 4 > 25%
    assert not budget.spent(2, 8)   # exactly 25%
    assert budget.spent(3, 8)


def test_no_budget_never_stops() -> None:
    assert not FailureBudget.from_config(None).spent(100, 100)


@pytest.mark.parametrize("value", [0, -1, 1.5, "3", True])
def test_a_value_that_is_neither_a_count_nor_a_share_is_refused(value: object) -> None:
    with pytest.raises(ConfigError, match="hydra.sweeper.max_failures"):
        FailureBudget.from_config(value)
