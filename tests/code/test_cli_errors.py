"""One table from error type to exit code, read without importing the libraries the errors come from."""

from __future__ import annotations

import subprocess
import sys

import pytest

from steelqc.cli._app import EXIT_CODES, exit_code, run_guarded
from steelqc.config import ConfigError
from steelqc.data.errors import MissingImageError
from steelqc.promotion import ChampionChangedError


def test_every_table_entry_names_a_real_exception_class() -> None:
    import importlib

    for path in EXIT_CODES:
        module, _, name = path.rpartition(".")
        cls = getattr(importlib.import_module(module), name)
        assert issubclass(cls, BaseException), path
        assert f"{cls.__module__}.{cls.__qualname__}" == path, "errors are matched by the module defining them"


def test_the_most_specific_class_decides() -> None:
    assert exit_code(ChampionChangedError("raced")) == 1  # a PromotionError, though also a RuntimeError
    assert exit_code(MissingImageError("gone", file="a.png")) == 2
    assert exit_code(ConfigError("bad field")) == 2
    assert exit_code(FileNotFoundError("x")) == 2
    from steelqc.model import WeightsUnavailableError  # defined in steelqc.lite0

    assert exit_code(WeightsUnavailableError("no weights")) == 2
    assert exit_code(RuntimeError("a bug")) is None


def test_unknown_errors_propagate_with_their_traceback() -> None:
    def broken() -> None:
        raise KeyError("a bug, not bad input")

    with pytest.raises(KeyError):
        run_guarded(broken)


def test_the_cli_starts_without_mlflow_or_tensorflow() -> None:
    probe = "import sys, steelqc.cli; print(sorted(m for m in ('mlflow', 'tensorflow', 'keras') if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"
