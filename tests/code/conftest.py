"""Fixtures of the app and QA-command tests: a private copy of the tiny champion's registry."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path

import mlflow
import pytest

from steelqc.config import Settings, load_settings
from steelqc.tracking import configure_tracking


@pytest.fixture
def registry(tiny_champion_db: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Settings]:
    """This test's own copy of the registry with the tiny champion v1, as the app's and the CLI's settings see it."""
    db = tmp_path / "mlflow.db"
    shutil.copy(tiny_champion_db, db)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{db}")
    settings = load_settings()
    configure_tracking(settings)  # MLflow's registry store resolves logged models through the global URI
    yield settings
    mlflow.set_tracking_uri(None)  # process-global: do not leak this registry to other tests
    mlflow.set_registry_uri(None)
