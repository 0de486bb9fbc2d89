"""``mlflow models serve`` of a registered version answers a bad payload with steelqc's one-line reason (issue 17,
item 8): a 400 whose body holds the reason and no traceback or install path.

The app under test is MLflow's own scoring app, ``mlflow.pyfunc.scoring_server.init(model)``: what
``mlflow models serve --env-manager local`` runs under uvicorn, here driven in-process through FastAPI's test client.
"""

from __future__ import annotations

import base64
import json
import shutil
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import mlflow
import numpy as np
import pytest
from mlflow.exceptions import MlflowException
from mlflow.pyfunc import scoring_server

from steelqc.data.images import encode_png
from steelqc.pyfunc_io import serving_errors

from hostile_files import png_header_claiming

with warnings.catch_warnings():
    warnings.filterwarnings("ignore", "Using `httpx`")  # Starlette's test client asks for httpx2 (not installed)
    from fastapi.testclient import TestClient

INSTALL_PATH_MARKERS = ("Traceback", "site-packages", "File \"/", ".py\", line")


@pytest.fixture(scope="module")
def scoring_client(tiny_champion_db: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[TestClient]:
    db = tmp_path_factory.mktemp("serving") / "mlflow.db"
    shutil.copy(tiny_champion_db, db)
    mlflow.set_tracking_uri(f"sqlite:///{db}")
    mlflow.set_registry_uri(f"sqlite:///{db}")
    try:
        model = scoring_server.load_model_with_mlflow_config("models:/steelqc@champion")
    finally:
        mlflow.set_tracking_uri(None)
        mlflow.set_registry_uri(None)
    with TestClient(scoring_server.init(model)) as client:
        yield client


def _post(client: TestClient, payload: dict[str, Any]) -> tuple[int, dict[str, Any], str]:
    response = client.post("/invocations", content=json.dumps(payload), headers={"Content-Type": "application/json"})
    return response.status_code, response.json(), response.text


def _images(*items: bytes | str) -> dict[str, Any]:
    encoded = [base64.b64encode(item).decode() if isinstance(item, bytes) else item for item in items]
    return {"dataframe_split": {"columns": ["image"], "data": [[item] for item in encoded]}}


def _strip(value: int = 90) -> np.ndarray:
    return np.full((256, 1600), value, np.uint8)


def test_a_sound_image_is_decided(scoring_client: TestClient) -> None:
    status, body, _ = _post(scoring_client, _images(encode_png(_strip())))
    assert status == 200, body
    assert body["predictions"][0]["decision"] in {"PASS", "HOLD", "FAIL"}


@pytest.mark.parametrize(
    ("payload", "reason"),
    [
        (_images(b"this is not an image at all"), "not a JPEG/PNG/BMP/TIFF image (unknown leading bytes)"),
        (_images(png_header_claiming(60000, 60000)), "60000x60000"),
        (_images("%%% not base64 %%%"), "text input is not base64-encoded image bytes (file input[0])"),
        ({"dataframe_split": {"columns": ["pixels"], "data": [["x"]]}}, "model input needs a column named 'image'"),
        ({"dataframe_records": [{"image": [[1, 2], [3]]}]}, "nested lists are not a rectangular pixel array"),
    ],
    ids=["undecodable", "over-pixel-budget", "not-base64", "wrong-column", "ragged-array"],
)
def test_a_bad_payload_gets_steelqcs_reason_and_no_traceback(
    scoring_client: TestClient, payload: dict[str, Any], reason: str
) -> None:
    status, body, text = _post(scoring_client, payload)
    assert status == 400 and body["error_code"] == "INVALID_PARAMETER_VALUE"
    # MLflow puts "Failed to predict data '<the input, as pandas prints it>'" before the model's message
    assert body["message"].splitlines()[-1].startswith("Error: ") and reason in body["message"].splitlines()[-1]
    assert "stack_trace" not in body
    for marker in INSTALL_PATH_MARKERS:
        assert marker not in text, text


def test_a_large_bad_image_is_not_echoed_back(scoring_client: TestClient) -> None:
    """MLflow quotes the parsed input before the reason: as a DataFrame (the documented payload) it is cut short."""
    junk = bytes(range(256)) * 4096  # 1 MB that is no image
    for payload in (_images(junk), {"dataframe_records": [{"image": base64.b64encode(junk).decode()}]}):
        status, body, text = _post(scoring_client, payload)
        assert status == 400 and "not a JPEG/PNG" in body["message"]
        assert len(text) < 2000, len(text)


def test_an_unexpected_error_is_logged_on_the_server_and_answered_with_its_type_only(
    caplog: pytest.LogCaptureFixture,
) -> None:
    with pytest.raises(MlflowException) as caught, serving_errors():
        raise ZeroDivisionError("details that stay on the server")
    assert caught.value.error_code == "INTERNAL_ERROR"
    assert caught.value.message == (
        "steelqc could not score this input (ZeroDivisionError); the traceback is in the server's log"
    )
    assert "Traceback" in caplog.text and "details that stay on the server" in caplog.text
