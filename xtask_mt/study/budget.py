"""The failure budget of a search (`hydra.sweeper.max_failures`), counted over the whole
study: a count of failed trials, or a share of the study's finished trials, after which the
search stops instead of spending the rest of its trials on a setting that keeps failing."""

from __future__ import annotations

import math
from dataclasses import dataclass

from xtask_mt.errors import ConfigError


@dataclass(frozen=True)
class FailureBudget:
    """None: no budget; an int k >= 1: stop once k trials failed; a float f in (0, 1):
    stop once more than f of the finished trials failed, judged from 1/f finished trials on
    (so that one early failure does not end a search)."""

    limit: int | float | None

    @classmethod
    def from_config(cls, value: object) -> FailureBudget:
        if value is None:
            return cls(None)
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"invalid config value hydra.sweeper.max_failures={value!r}: "
                              "expected null, a count >= 1 or a fraction in (0, 1)")
        if isinstance(value, int) or float(value).is_integer():
            if value < 1:
                raise ConfigError(f"invalid config value hydra.sweeper.max_failures={value}: "
                                  "a count of failed trials must be >= 1 (null: no budget)")
            return cls(int(value))
        if not 0 < value < 1:
            raise ConfigError(f"invalid config value hydra.sweeper.max_failures={value}: a "
                              "share of the finished trials must be in (0, 1)")
        return cls(float(value))

    def spent(self, failed: int, finished: int) -> bool:
        if self.limit is None:
            return False
        if isinstance(self.limit, int):
            return failed >= self.limit
        return finished >= math.ceil(1 / self.limit) and failed > self.limit * finished

    def describe(self) -> str:
        if isinstance(self.limit, float):
            return f"hydra.sweeper.max_failures={self.limit}: more than {self.limit:.0%} failed"
        return f"hydra.sweeper.max_failures={self.limit}"
