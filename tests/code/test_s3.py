"""Reading a dataset from S3 through boto3, against moto's S3 server started on 127.0.0.1 by the test."""

from __future__ import annotations

import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import boto3
import numpy as np
import pytest

from steelqc.data.dataset import Dataset
from steelqc.data.errors import DatasetError, MissingImageError
from steelqc.data.storage import open_storage
from steelqc.data.synth import generate_dataset


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture
def s3_endpoint(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """A moto S3 server on a free local port, with fake credentials; stopped after the test."""
    for key, value in {
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_DEFAULT_REGION": "us-east-1",
        "AWS_CONFIG_FILE": str(tmp_path / "aws-config"),
        "AWS_SHARED_CREDENTIALS_FILE": str(tmp_path / "aws-credentials"),
    }.items():
        monkeypatch.setenv(key, value)
    for key in ("AWS_PROFILE", "AWS_SESSION_TOKEN", "AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_S3"):
        monkeypatch.delenv(key, raising=False)
    port = _free_port()
    server = subprocess.Popen(
        [str(Path(sys.executable).parent / "moto_server"), "-H", "127.0.0.1", "-p", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    endpoint = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                urllib.request.urlopen(endpoint, timeout=1).close()
                break
            except OSError:
                if time.monotonic() > deadline or server.poll() is not None:
                    pytest.fail("moto_server did not start")
                time.sleep(0.2)
        yield endpoint
    finally:
        server.terminate()
        server.wait(timeout=10)


def test_dataset_reads_from_s3(synthetic_dataset: Path, s3_endpoint: str) -> None:
    client = boto3.client("s3", endpoint_url=s3_endpoint)
    client.create_bucket(Bucket="steel-data")
    for path in synthetic_dataset.rglob("*"):
        if path.is_file():
            client.upload_file(str(path), "steel-data", f"runs/one/{path.relative_to(synthetic_dataset).as_posix()}")

    local = Dataset.open(str(synthetic_dataset))
    remote = Dataset.open("s3://steel-data/runs/one/", endpoint_url=s3_endpoint)
    assert remote.root == "s3://steel-data/runs/one"
    assert remote.meta == local.meta
    assert remote.image_ids == local.image_ids and len(remote.image_ids) == 24
    assert remote.labels.equals(local.labels)
    defective = local.labels["ImageId"].iloc[0]
    np.testing.assert_array_equal(remote.load_image(defective), local.load_image(defective))
    np.testing.assert_array_equal(remote.masks(defective), local.masks(defective))
    assert remote.masks(defective).any()

    with pytest.raises(MissingImageError) as info:
        remote.load_image("000000000.jpg")
    assert info.value.file == "s3://steel-data/runs/one/train_images/000000000.jpg"
    with pytest.raises(DatasetError, match="no train.csv"):
        Dataset.open("s3://steel-data/elsewhere", endpoint_url=s3_endpoint)
    client.put_object(Bucket="steel-data", Key="spark/train.csv/part-00000.csv", Body=b"ImageId,ClassId\n")
    with pytest.raises(DatasetError, match="train.csv is a folder"):
        Dataset.open("s3://steel-data/spark", endpoint_url=s3_endpoint)


def test_generate_straight_into_s3(s3_endpoint: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """Writers take the endpoint from boto3's standard variable, as every AWS tool does."""
    monkeypatch.setenv("AWS_ENDPOINT_URL_S3", s3_endpoint)
    boto3.client("s3").create_bucket(Bucket="synth")
    summary = generate_dataset("s3://synth/gen", 3, seed=1, height=32, width=200)
    assert summary.root == "s3://synth/gen"
    ds = Dataset.open("s3://synth/gen")
    assert ds.image_ids == tuple(sorted(summary.image_ids))
    assert ds.load_image(ds.image_ids[0]).shape == (32, 200)

    top = open_storage("s3://synth")  # no prefix: the bucket's top level
    top.write_bytes("notes.txt", b"x")
    assert top.list_files("") == ["notes.txt"] and top.list_files("gen") == ["dataset.yaml", "train.csv"]


def test_the_endpoint_is_the_setting_else_boto3s_own(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """data.s3_endpoint_url, else what boto3 picks (AWS_ENDPOINT_URL_S3, then AWS_ENDPOINT_URL); MLflow's
    MLFLOW_S3_ENDPOINT_URL is for MLflow's artefacts and never redirects steelqc's data."""
    from steelqc.config import load_settings

    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "aws-config"))
    monkeypatch.delenv("AWS_PROFILE", raising=False)
    monkeypatch.setenv("AWS_ENDPOINT_URL_S3", "http://127.0.0.1:9001")
    monkeypatch.setenv("AWS_ENDPOINT_URL", "http://127.0.0.1:9002")
    monkeypatch.setenv("MLFLOW_S3_ENDPOINT_URL", "http://127.0.0.1:9003")

    def endpoint(endpoint_url: str | None = None) -> str:
        return open_storage("s3://bucket/prefix", endpoint_url).client.meta.endpoint_url  # type: ignore[union-attr]

    configured = load_settings(overrides={"data.s3_endpoint_url": "http://127.0.0.1:9000"}).data.s3_endpoint_url
    assert endpoint(configured) == "http://127.0.0.1:9000"
    assert endpoint(load_settings().data.s3_endpoint_url) == "http://127.0.0.1:9001"
    monkeypatch.delenv("AWS_ENDPOINT_URL_S3")
    assert endpoint() == "http://127.0.0.1:9002"
    monkeypatch.delenv("AWS_ENDPOINT_URL")
    assert endpoint() == "https://s3.amazonaws.com"


@pytest.mark.parametrize("code", ["AccessDenied", "InvalidAccessKeyId", "403"])
def test_refused_credentials_are_one_clear_dataset_error(code: str, monkeypatch: pytest.MonkeyPatch) -> None:
    from botocore.stub import Stubber

    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "wrong")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "wrong")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    storage = open_storage("s3://line-3/strips", "http://127.0.0.1:9")
    with Stubber(storage.client) as stub:  # type: ignore[union-attr]
        for operation in ("get_object", "list_objects_v2", "head_object"):
            stub.add_client_error(operation, service_error_code=code, service_message="Denied", http_status_code=403)
        for call in (lambda: storage.read_bytes("a.jpg"), lambda: storage.list_files("x"),
                     lambda: storage.exists("a.jpg")):  # fmt: skip
            with pytest.raises(DatasetError, match=f"S3 refused the request: {code}.*check AWS credentials"):
                call()
