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
    # mlflow.set_tracking_uri() exports MLFLOW_TRACKING_URI; set-then-delete makes monkeypatch remove
    # whatever a test leaves there, so no test sees another's tracking store.
    for key in ("MLFLOW_TRACKING_URI", "MLFLOW_REGISTRY_URI", "PREFECT_API_URL"):
        monkeypatch.setenv(key, "unset")
        monkeypatch.delenv(key)
    # MLflow also keeps process-wide tracking/registry URIs that beat the environment (a client without
    # registry_uri uses the global one): forget what an earlier test set.
    import mlflow

    mlflow.set_tracking_uri(None)
    mlflow.set_registry_uri(None)
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


@pytest.fixture(scope="session")
def magnetic_tile() -> Path:
    """Magnetic tile: 877 real grey images of many sizes, a PNG mask beside each (MT_<Class>/Imgs/), 619 clean."""
    return shared_dir("magnetic-tile")


@pytest.fixture(scope="session")
def synthetic_dataset_factory(tmp_path_factory: pytest.TempPathFactory):  # type: ignore[no-untyped-def]
    """``make(images, seed, **generate_dataset_kwargs) -> Path``: a generated dataset, built once per argument set."""
    from steelqc.data.synth import generate_dataset

    built: dict[tuple, Path] = {}

    def make(images: int, seed: int = 0, **kwargs: object) -> Path:
        key = (images, seed, tuple(sorted(kwargs.items())))
        if key not in built:
            out = tmp_path_factory.mktemp(f"synth-{images}-{seed}") / "dataset"
            generate_dataset(out, images, seed, **kwargs)  # type: ignore[arg-type]
            built[key] = out
        return built[key]

    return make


@pytest.fixture(scope="session")
def synthetic_dataset(synthetic_dataset_factory) -> Path:  # type: ignore[no-untyped-def]
    """24 generated Severstal-format images (seed 0, contrast 1.5), every class present; treat as read-only."""
    return synthetic_dataset_factory(24, 0, contrast=1.5)


@pytest.fixture(scope="session")
def tiny_champion_db(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A SQLite MLflow registry whose champion v1 is an untrained small-CNN steelqc model, approved by ``qa-lead``.

    256 px patches at stride 256, t_pass 0.3 / t_fail 0.7; its monitoring reference set is the patches of the
    packaged (generated) demo strips. Built once (~15 s); copy the file before changing the registry
    (artefacts stay where they are and are only read).
    """
    import keras
    import mlflow
    import numpy as np

    from steelqc import promotion
    from steelqc.config import load_settings
    from steelqc.gate import gate
    from steelqc.model import build_model
    from steelqc.pyfunc import log_pyfunc_model
    from steelqc.registry import register_version, version_tags
    from steelqc.thresholds import Thresholds
    from steelqc.tracking import configure_tracking, ensure_experiment

    root = tmp_path_factory.mktemp("tiny-champion")
    settings = load_settings(
        overrides={
            "state_dir": str(root),
            "tracking.tracking_uri": f"sqlite:///{root / 'mlflow.db'}",
            "model.backbone": "small_cnn",
            "model.weights": "none",
            "model.input_size": 32,
            "patches.stride": 256,
        }
    )
    metrics = {"patch_recall": 0.96, "image_recall": 1.0, "patch_precision": 0.5, "patch_specificity": 0.8}
    thresholds = Thresholds(0.3, 0.7, 0.96, 0.9, None, 0.8, 25, 100, True, "tiny test model")
    configure_tracking(settings)
    try:
        keras.utils.set_random_seed(0)
        model = build_model(settings.model, settings.patches.size)
        with mlflow.start_run(experiment_id=ensure_experiment(settings, "tiny")):
            mlflow.log_metrics(metrics)
            info = log_pyfunc_model(model, thresholds, settings.patches, np.zeros((256, 1600), np.uint8))
            log_demo_reference(model, settings.patches.size)
        name = settings.tracking.registered_model
        version = str(
            register_version(info.model_uri, name, version_tags(metrics, thresholds, "tiny-data-hash")).version
        )
        promotion.record_gate(settings, version, gate(metrics, None, recall_target=0.95))
        promotion.approve_pending(settings, version, reviewer="qa-lead", comment="tiny test champion")
    finally:
        mlflow.set_tracking_uri(None)
        mlflow.set_registry_uri(None)
    return root / "mlflow.db"


@pytest.fixture
def moto_s3_endpoint(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):  # type: ignore[no-untyped-def]
    """moto's S3 server on 127.0.0.1 (threaded, in-process) with fake credentials; its URL. Stopped after the test."""
    import socket

    from moto.server import ThreadedMotoServer

    fake = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing", "AWS_DEFAULT_REGION": "us-east-1",
            "AWS_CONFIG_FILE": str(tmp_path / "aws-config"),
            "AWS_SHARED_CREDENTIALS_FILE": str(tmp_path / "aws-creds")}  # fmt: skip
    for key, value in fake.items():
        monkeypatch.setenv(key, value)
    for key in ("AWS_PROFILE", "AWS_SESSION_TOKEN", "AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_S3"):
        monkeypatch.delenv(key, raising=False)
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.stop()


@pytest.fixture
def prefect_server(isolated_state: Path, monkeypatch: pytest.MonkeyPatch):  # type: ignore[no-untyped-def]
    """``prefect server start`` on 127.0.0.1 with its own home; this process and its children use it. Stopped after."""
    import sys

    from prefect.logging.handlers import APILogWorker
    from prefect.settings import PREFECT_API_URL, temporary_settings

    from servers import free_port, start, stop, wait_until_up

    port = free_port()
    url = f"http://127.0.0.1:{port}/api"
    log = isolated_state / "prefect-server.log"
    env = {**os.environ, "PREFECT_HOME": str(isolated_state / "prefect-server"), "HOME": str(isolated_state)}
    env.pop("PREFECT_API_URL", None)
    server = start(
        [sys.executable, "-m", "prefect", "server", "start", "--host", "127.0.0.1", "--port", str(port)], log, env
    )
    try:
        wait_until_up(f"{url}/health", server, log)
        monkeypatch.setenv("PREFECT_API_URL", url)  # inherited by subprocesses (CLI, Dask workers)
        with temporary_settings(updates={PREFECT_API_URL: url}):  # this process read its settings at import
            yield url
            APILogWorker.drain_all(timeout=30)  # send buffered run logs while the server is still up
    finally:
        stop(server)


@pytest.fixture(scope="session")
def learnable_dataset(synthetic_dataset_factory) -> Path:  # type: ignore[no-untyped-def]
    """48 high-contrast generated strips a tiny model learns in a few epochs (see tests/flows/tiny.py)."""
    return synthetic_dataset_factory(48, seed=0, contrast=3.0)


def log_demo_reference(model: object, patch_size: int) -> None:
    """Log a monitoring reference set built from the packaged demo strips to the active run, as training does."""
    import tempfile

    import mlflow
    import numpy as np

    from steelqc.app.images import PACKAGED_DEMO_DIR
    from steelqc.data.images import read_image
    from steelqc.monitoring import MONITORING_ARTIFACT_DIR, build_reference, save_reference
    from steelqc.patches import extract_patches

    patches = np.concatenate(
        [extract_patches(read_image(path), patch_size, patch_size, "reflect")[0]
         for path in sorted(PACKAGED_DEMO_DIR.glob("*.png"))]
    )  # fmt: skip
    reference, reducer = build_reference(model, patches, n_components=4)  # type: ignore[arg-type]
    with tempfile.TemporaryDirectory() as tmp:
        mlflow.log_artifacts(str(save_reference(reference, reducer, tmp)), MONITORING_ARTIFACT_DIR)
