"""The choices made from the CPU at hand: the memory format and the bf16 warning."""

from __future__ import annotations

import logging

import pytest
import torch
from helpers.config import TINY, compose_config

from xtask_mt.config.validate import validate_config
from xtask_mt.engine.trainer import train
from xtask_mt.errors import ConfigError
from xtask_mt.runtime import cpu_features, precision
from xtask_mt.runtime.cpu_features import has_avx512, native_bf16, parse_flags
from xtask_mt.runtime.precision import bf16_warning, resolve_channels_last

CPU, CUDA = torch.device("cpu"), torch.device("cuda")
ZEN3 = "processor\t: 0\nmodel name\t: AMD EPYC 7B13\nflags\t\t: fpu sse2 avx avx2 fma\n"
ZEN4 = ("processor\t: 0\nmodel name\t: AMD EPYC 9B14\nflags\t\t: avx2 avx512f avx512bw "
        "avx512_bf16\n\nprocessor\t: 1\nflags\t\t: other\n")
GRAVITON3 = "processor\t: 0\nFeatures\t: fp asimd sve bf16 i8mm\n"


def test_flags_are_read_from_the_first_processor_of_either_kind_of_cpuinfo():
    assert parse_flags(ZEN4) == {"avx2", "avx512f", "avx512bw", "avx512_bf16"}
    assert "bf16" in parse_flags(GRAVITON3)
    assert parse_flags("nothing here") == frozenset()


@pytest.mark.parametrize(("cpuinfo", "avx512", "bf16"), [
    (ZEN3, False, False), (ZEN4, True, True), (GRAVITON3, False, True)])
def test_avx512_and_native_bf16_from_the_flags(cpuinfo, avx512, bf16):
    flags = parse_flags(cpuinfo)
    assert has_avx512(flags) is avx512
    assert native_bf16(flags) is bf16


def test_unknown_flags_say_unknown_for_bf16():
    assert native_bf16(frozenset()) is None


def _on_cpu(monkeypatch, cpuinfo: str) -> None:
    """Pretend to run on the CPU that `cpuinfo` describes."""
    monkeypatch.setattr(cpu_features, "cpu_flags", lambda: parse_flags(cpuinfo))
    monkeypatch.setattr(precision, "cpu_name", lambda: "Test CPU")


@pytest.mark.parametrize(("cpuinfo", "expected"), [(ZEN3, False), (ZEN4, True)])
def test_channels_last_auto_follows_avx512_on_a_cpu_and_is_on_for_a_gpu(
        monkeypatch, cpuinfo, expected):
    _on_cpu(monkeypatch, cpuinfo)
    assert resolve_channels_last("auto", CPU) is expected
    assert resolve_channels_last("auto", CUDA) is True
    assert resolve_channels_last(False, CUDA) is False and resolve_channels_last(True, CPU)


def test_a_bad_channels_last_value_is_refused():
    with pytest.raises(ConfigError, match="trainer.channels_last"):
        validate_config(compose_config(TINY + ["trainer.channels_last=sometimes"]))
    with pytest.raises(ConfigError, match="must be true, false or auto"):
        resolve_channels_last("sometimes", CPU)


def test_bf16_on_a_cpu_without_it_warns_naming_the_missing_flags(monkeypatch):
    _on_cpu(monkeypatch, ZEN3)
    warning = bf16_warning("bf16-mixed", CPU)
    assert warning is not None and "Test CPU" in warning and "avx512_bf16" in warning
    assert "trainer.precision=32" in warning
    assert bf16_warning("32", CPU) is None and bf16_warning("bf16-mixed", CUDA) is None
    _on_cpu(monkeypatch, ZEN4)
    assert bf16_warning("bf16-mixed", CPU) is None


def test_the_training_log_carries_the_bf16_warning_and_the_chosen_format(
        monkeypatch, tmp_path, caplog):
    _on_cpu(monkeypatch, ZEN3)
    with caplog.at_level(logging.INFO, logger="xtask_mt"):
        train(compose_config(TINY + ["trainer.precision=bf16-mixed",
                                     "dataset.train_size=4", "dataset.val_size=4"]), tmp_path)
    assert any("without native bf16" in r.message for r in caplog.records
               if r.levelno == logging.WARNING)
    started = next(r.getMessage() for r in caplog.records if "training on" in r.getMessage())
    assert "channels-last" not in started  # AVX2 only: NCHW
