"""Shared fixtures: every test runs with its own state folder, never writing to $HOME."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

PROJECT_ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = PROJECT_ROOT.parent / "shared" / "data"


@pytest.fixture(autouse=True)
def isolated_state(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Point the state folder and library homes at a temp dir; clear ecosystem variables a user may have set."""
    state = tmp_path_factory.mktemp("state")
    monkeypatch.setenv("STEELQC_STATE_DIR", str(state))
    for key, sub in {"PREFECT_HOME": "prefect", "KERAS_HOME": "keras", "MPLCONFIGDIR": "matplotlib"}.items():
        monkeypatch.setenv(key, str(state / sub))
    for key in list(os.environ):
        if key.startswith("STEELQC_") and key != "STEELQC_STATE_DIR":
            monkeypatch.delenv(key)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.delenv("PREFECT_API_URL", raising=False)
    return state


def shared_dir(name: str) -> Path:
    """A folder under ../shared/data, or skip the test with the reason (absent on a user's machine)."""
    path = SHARED_DATA / name
    if not path.exists():
        pytest.skip(f"{path} is absent (../shared is only on developer and CI machines)")
    return path


@pytest.fixture
def severstal_sample() -> Path:
    """10 real Severstal images (PNG data under .jpg names), image-level labels only."""
    return shared_dir("severstal-sample")


@pytest.fixture
def neu_det() -> Path:
    """NEU-DET: 1,200 real 200×200 images with Pascal VOC boxes."""
    return shared_dir("neu-det")
