"""Process environment defaults: telemetry off, library state kept under the project's state folder.

Applied on import of :mod:`steelqc` with ``os.environ.setdefault`` so a user's explicit choice always wins.
"""

from __future__ import annotations

import os
from pathlib import Path

TELEMETRY_OFF = {
    "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
    "MLFLOW_DISABLE_TELEMETRY": "true",
    "DO_NOT_TRACK": "1",
    "GX_ANALYTICS_ENABLED": "false",
    "NO_ALBUMENTATIONS_UPDATE": "1",
    "TF_CPP_MIN_LOG_LEVEL": "2",
    "STREAMLIT_BROWSER_GATHER_USAGE_STATS": "false",
}

# Prefect's ephemeral API server gets 20 s to start by default; a busy 2-core machine needs more.
# MLflow's per-download progress bars would interleave with steelqc's own console output.
OTHER_DEFAULTS = {
    "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS": "180",
    "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR": "false",
}


def default_state_dir() -> Path:
    """The folder holding all embedded-default state: ``$STEELQC_STATE_DIR`` or ``./.steelqc``."""
    return Path(os.environ.get("STEELQC_STATE_DIR", ".steelqc")).resolve()


def apply_default_environment(state_dir: Path | None = None) -> None:
    """Turn telemetry off and point library home folders (Prefect, Keras, matplotlib) into the state dir."""
    for key, value in {**TELEMETRY_OFF, **OTHER_DEFAULTS}.items():
        os.environ.setdefault(key, value)
    state = state_dir or default_state_dir()
    homes = {
        "PREFECT_HOME": state / "prefect",
        "KERAS_HOME": state / "keras",
        "MPLCONFIGDIR": state / "matplotlib",
    }
    for key, path in homes.items():
        os.environ.setdefault(key, str(path))


def prepare_prefect_home() -> None:
    """Create ``$PREFECT_HOME`` with its parents before Prefect is imported.

    Prefect creates it on import without parents, and warns when the state dir is new (a first run).
    """
    try:
        Path(os.environ["PREFECT_HOME"]).mkdir(parents=True, exist_ok=True)
    except (KeyError, OSError):  # a read-only state dir is reported, with its path, by the job that writes there
        pass
