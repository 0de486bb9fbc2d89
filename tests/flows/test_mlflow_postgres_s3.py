"""The production tracking setup on this machine: ``mlflow server`` with a PostgreSQL backend store, the
basic-auth app configured by ``infra/mlflow-auth.ini``, and S3 artefacts on moto's S3 server.

A steelqc model logged and registered through ``steelqc.pyfunc`` and ``steelqc.registry`` loads back by
``models:/<name>@champion``
and decides like the in-memory model, with artefacts proxied through the server and written directly to S3.
The test starts its own PostgreSQL cluster (``initdb``/``pg_ctl`` on a free 127.0.0.1 port), moto and MLflow,
and stops all three at the end.
"""

from __future__ import annotations

import configparser
import glob
import os
import pwd
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import boto3
import keras
import mlflow
import numpy as np
import psycopg2
import pytest
import requests

from steelqc.config import Settings, load_settings
from steelqc.inference import Inspector
from steelqc.model import build_model
from steelqc.pyfunc import load_inspector, log_pyfunc_model
from steelqc.registry import register_version, version_tags
from steelqc.thresholds import Thresholds
from steelqc.tracking import configure_tracking, ensure_experiment

from servers import free_port, start, stop, wait_until_up

pytestmark = pytest.mark.slow

PROJECT_ROOT = Path(__file__).resolve().parents[2]
AUTH_INI = PROJECT_ROOT / "infra" / "mlflow-auth.ini"
INIT_DATABASES = PROJECT_ROOT / "infra" / "postgres" / "init-databases.sh"
BUCKET = "steelqc-mlflow"
AWS_KEYS = {
    "AWS_ACCESS_KEY_ID": "moto-test-key",
    "AWS_SECRET_ACCESS_KEY": "moto-test-secret",
    "AWS_DEFAULT_REGION": "us-east-1",
}
ADMIN = ("steelqc-admin", "admin-password-for-tests")  # MLflow wants at least 12 characters
MLFLOW_DB = ("mlflow", "mlflow-db-password")
PREFECT_DB = ("prefect", "prefect-db-password")


def _initdb() -> Path | None:
    """``initdb`` on PATH, else Debian's versioned location (the package does not put it on PATH)."""
    found = shutil.which("initdb") or next(
        iter(sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"), reverse=True)), None
    )
    return Path(found) if found else None


@dataclass(frozen=True)
class Postgres:
    port: int
    superuser: str
    password: str
    bin_dir: Path

    def connect(self, dbname: str = "postgres", user: str | None = None, password: str | None = None):  # type: ignore[no-untyped-def]
        return psycopg2.connect(
            host="127.0.0.1",
            port=self.port,
            dbname=dbname,
            user=user or self.superuser,
            password=password or self.password,
        )


@pytest.fixture(scope="module")
def postgres() -> Iterator[Postgres]:
    """A throwaway PostgreSQL cluster on 127.0.0.1 with password auth; run as ``postgres`` when we are root."""
    initdb = _initdb()
    if initdb is None:
        pytest.skip("initdb not found: install PostgreSQL (apt-get install -y postgresql) to run this test")
    run_as: list[str] = []
    owner = None
    if os.geteuid() == 0:  # initdb refuses to run as root
        runuser = shutil.which("runuser")
        try:
            owner = pwd.getpwnam("postgres")
        except KeyError:
            owner = None
        if runuser is None or owner is None:
            pytest.skip("running as root needs runuser and the 'postgres' user (Debian's postgresql package)")
        run_as = [runuser, "-u", "postgres", "--"]
    root = Path(tempfile.mkdtemp(prefix="steelqc-pg-"))
    superuser, password, port = "steelqc_superuser", "superuser-password", free_port()
    pwfile = root / "pwfile"
    pwfile.write_text(password + "\n")
    if owner is not None:
        for path in (root, pwfile):
            os.chown(path, owner.pw_uid, owner.pw_gid)
    data = root / "data"
    bin_dir = initdb.parent
    try:
        subprocess.run(
            [*run_as, str(initdb), "-D", str(data), "-U", superuser, f"--pwfile={pwfile}", "--auth=scram-sha-256",
             "-E", "UTF8", "--no-locale"],
            check=True, capture_output=True,
        )  # fmt: skip
        started = subprocess.run(
            [*run_as, str(bin_dir / "pg_ctl"), "-D", str(data), "-l", str(root / "server.log"), "-w", "-t", "60",
             "-o", f"-h 127.0.0.1 -p {port} -k {root}", "start"],
            capture_output=True,
        )  # fmt: skip
        if started.returncode != 0:
            raise RuntimeError(f"PostgreSQL did not start:\n{(root / 'server.log').read_text()[-2000:]}")
        yield Postgres(port, superuser, password, bin_dir)
    finally:
        subprocess.run(
            [*run_as, str(bin_dir / "pg_ctl"), "-D", str(data), "-m", "fast", "-w", "stop"], capture_output=True
        )
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture(scope="module")
def moto_s3(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """moto's S3 server on 127.0.0.1 holding the artefact bucket; yields its endpoint URL."""
    workdir = tmp_path_factory.mktemp("moto")
    port = free_port()
    env = {**os.environ, **AWS_KEYS, "HOME": str(workdir)}
    log = workdir / "moto.log"
    process = start([sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)], log, env, workdir)
    endpoint = f"http://127.0.0.1:{port}"
    try:
        wait_until_up(endpoint, process, log)
        boto3.client("s3", endpoint_url=endpoint, **_boto_keys()).create_bucket(Bucket=BUCKET)
        yield endpoint
    finally:
        stop(process)


def _boto_keys() -> dict[str, str]:
    return {
        "aws_access_key_id": AWS_KEYS["AWS_ACCESS_KEY_ID"],
        "aws_secret_access_key": AWS_KEYS["AWS_SECRET_ACCESS_KEY"],
        "region_name": AWS_KEYS["AWS_DEFAULT_REGION"],
    }


@pytest.fixture(scope="module")
def mlflow_server(postgres: Postgres, moto_s3: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """``mlflow server`` on PostgreSQL with proxied S3 artefacts and basic auth, configured as in the stack:
    databases and users from ``infra/postgres/init-databases.sh``, the password through ``PGPASSWORD``."""
    user, password = MLFLOW_DB
    subprocess.run(
        ["sh", str(INIT_DATABASES)],
        env={
            **os.environ,
            "PATH": f"{postgres.bin_dir}{os.pathsep}{os.environ['PATH']}",
            "PGHOST": "127.0.0.1",
            "PGPORT": str(postgres.port),
            "PGPASSWORD": postgres.password,
            "POSTGRES_USER": postgres.superuser,
            "MLFLOW_DB_USER": user,
            "MLFLOW_DB_PASSWORD": password,
            "PREFECT_DB_USER": PREFECT_DB[0],
            "PREFECT_DB_PASSWORD": PREFECT_DB[1],
        },
        check=True,
        capture_output=True,
    )

    workdir = tmp_path_factory.mktemp("mlflow-server")
    auth = configparser.ConfigParser()
    auth.read(AUTH_INI)
    auth["mlflow"]["database_uri"] = f"sqlite:///{workdir / 'basic_auth.db'}"  # the ini's path is the container's
    auth_ini = workdir / "auth.ini"
    with auth_ini.open("w") as handle:
        auth.write(handle)

    port = free_port()
    env = {key: value for key, value in os.environ.items() if not key.startswith("MLFLOW_TRACKING_")}
    env.update(
        AWS_KEYS,
        HOME=str(workdir),
        MLFLOW_SERVER_ENABLE_JOB_EXECUTION="false",
        PGPASSWORD=password,
        MLFLOW_S3_ENDPOINT_URL=moto_s3,
        MLFLOW_AUTH_CONFIG_PATH=str(auth_ini),
        MLFLOW_AUTH_ADMIN_USERNAME=ADMIN[0],
        MLFLOW_AUTH_ADMIN_PASSWORD=ADMIN[1],
        MLFLOW_FLASK_SERVER_SECRET_KEY="flask-secret-for-tests",
    )
    command = [
        sys.executable, "-m", "mlflow", "server",
        "--backend-store-uri", f"postgresql+psycopg2://{user}@127.0.0.1:{postgres.port}/mlflow",
        "--artifacts-destination", f"s3://{BUCKET}/proxied",
        "--host", "127.0.0.1", "--port", str(port), "--workers", "1",
        "--app-name", "basic-auth",
    ]  # fmt: skip
    log = workdir / "mlflow.log"
    process = start(command, log, env, workdir)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_until_up(f"{url}/health", process, log)
        yield url
    finally:
        stop(process)


@pytest.fixture
def client_env(mlflow_server: str, moto_s3: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """What a steelqc process in the stack has: the server URL, its credentials, and S3 keys for direct writes."""
    monkeypatch.setenv("MLFLOW_TRACKING_URI", mlflow_server)
    monkeypatch.setenv("MLFLOW_TRACKING_USERNAME", ADMIN[0])
    monkeypatch.setenv("MLFLOW_TRACKING_PASSWORD", ADMIN[1])
    monkeypatch.setenv("MLFLOW_S3_ENDPOINT_URL", moto_s3)
    for key, value in AWS_KEYS.items():
        monkeypatch.setenv(key, value)
    try:
        yield mlflow_server
    finally:
        mlflow.set_tracking_uri(None)
        mlflow.set_registry_uri(None)


def _tiny_settings(registered_model: str) -> Settings:
    return load_settings(
        overrides={
            "model.backbone": "small_cnn",
            "model.weights": "none",
            "model.input_size": 32,
            "patches.stride": 256,
            "tracking.registered_model": registered_model,
        }
    )


def _log_register_promote_and_load(settings: Settings, experiment_id: str) -> None:
    """Log and register a steelqc model (steelqc.pyfunc, steelqc.registry), alias it champion, load it by alias and
    check it decides exactly like the model that was logged."""
    keras.utils.set_random_seed(0)
    model = build_model(settings.model, settings.patches.size)
    thresholds = Thresholds(0.3, 0.7, 0.96, 0.9, None, 0.8, 25, 100, True, "tiny test model")
    metrics = {"patch_recall": 0.96, "patch_precision": 0.5, "patch_specificity": 0.8}
    image = np.random.default_rng(0).integers(0, 256, (256, 1600), dtype=np.uint8)
    with mlflow.start_run(experiment_id=experiment_id):
        mlflow.log_metrics(metrics)
        info = log_pyfunc_model(model, thresholds, settings.patches, image)
    name = settings.tracking.registered_model
    version = register_version(info.model_uri, name, version_tags(metrics, thresholds, "pg-s3-data-hash"))
    mlflow.MlflowClient().set_registered_model_alias(name, "champion", str(version.version))

    inspector, metadata = load_inspector(f"models:/{name}@champion")
    assert metadata.version == str(version.version)
    assert metadata.tags is not None and metadata.tags["data_hash"] == "pg-s3-data-hash"
    expected = Inspector(model, thresholds, settings.patches.size, settings.patches.stride, settings.patches.pad_mode)
    [loaded_result], [expected_result] = inspector.inspect([image]), expected.inspect([image])
    assert loaded_result.decision == expected_result.decision
    np.testing.assert_allclose(loaded_result.patch_scores, expected_result.patch_scores, rtol=1e-5, atol=1e-6)


def _bucket_keys(endpoint: str, prefix: str) -> list[str]:
    s3 = boto3.client("s3", endpoint_url=endpoint, **_boto_keys())
    pages = s3.get_paginator("list_objects_v2").paginate(Bucket=BUCKET, Prefix=prefix)
    return [item["Key"] for page in pages for item in page.get("Contents", [])]


def _registry_rows(postgres: Postgres, name: str) -> list[tuple[str, str]]:
    """(alias, version) rows of ``name`` as stored in the PostgreSQL backend, read without MLflow."""
    user, password = MLFLOW_DB
    with postgres.connect("mlflow", user, password) as conn, conn.cursor() as cursor:
        cursor.execute("SELECT alias, version::text FROM registered_model_aliases WHERE name = %s", (name,))
        return [tuple(row) for row in cursor.fetchall()]


def test_init_script_gives_prefect_its_own_database(mlflow_server: str, postgres: Postgres) -> None:
    with postgres.connect("prefect", *PREFECT_DB) as conn, conn.cursor() as cursor:
        cursor.execute("SELECT extname FROM pg_extension WHERE extname = 'pg_trgm'")
        assert cursor.fetchall() == [("pg_trgm",)]
        cursor.execute("SELECT pg_catalog.pg_get_userbyid(datdba) FROM pg_database WHERE datname = current_database()")
        assert cursor.fetchone() == (PREFECT_DB[0],)


def test_server_refuses_requests_without_credentials(mlflow_server: str) -> None:
    search = f"{mlflow_server}/api/2.0/mlflow/experiments/search"
    assert requests.post(search, json={"max_results": 1}, timeout=30).status_code == 401
    wrong_password = (ADMIN[0], "wrong-password-123")
    assert requests.post(search, json={"max_results": 1}, auth=wrong_password, timeout=30).status_code == 401
    assert requests.post(search, json={"max_results": 1}, auth=ADMIN, timeout=30).status_code == 200


def test_model_registered_through_proxied_s3_loads_by_alias(client_env: str, moto_s3: str, postgres: Postgres) -> None:
    settings = _tiny_settings("steelqc-proxied")
    assert configure_tracking(settings) == client_env
    experiment_id = ensure_experiment(settings, "pg-proxied")
    assert mlflow.get_experiment(experiment_id).artifact_location.startswith("mlflow-artifacts:")

    _log_register_promote_and_load(settings, experiment_id)

    stored = _bucket_keys(moto_s3, "proxied/")
    assert any(key.endswith("model.keras") for key in stored), stored
    assert _registry_rows(postgres, "steelqc-proxied") == [("champion", "1")]


def test_model_written_directly_to_s3_loads_by_alias(client_env: str, moto_s3: str, postgres: Postgres) -> None:
    settings = _tiny_settings("steelqc-direct")
    configure_tracking(settings)
    experiment_id = mlflow.create_experiment("steelqc-pg-direct", artifact_location=f"s3://{BUCKET}/direct")

    _log_register_promote_and_load(settings, experiment_id)

    stored = _bucket_keys(moto_s3, "direct/")
    assert any(key.endswith("model.keras") for key in stored), stored
    assert _registry_rows(postgres, "steelqc-direct") == [("champion", "1")]
