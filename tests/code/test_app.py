"""Both app pages through Streamlit's AppTest against a real MLflow registry (SQLite) and a tiny real model."""

from __future__ import annotations

import shutil
import socket
from collections.abc import Iterator
from pathlib import Path

import mlflow
import numpy as np
import pytest
from mlflow.tracking import MlflowClient
from streamlit.testing.v1 import AppTest

from steelqc import promotion
from steelqc.config import Settings, load_settings
from steelqc.data.images import encode_png
from steelqc.gate import gate
from steelqc.tracking import configure_tracking

APP = Path(__file__).resolve().parents[2] / "steelqc" / "app" / "main.py"
DECISIONS = {"PASS", "HOLD", "FAIL"}


@pytest.fixture(autouse=True)
def reset_mlflow_uri() -> Iterator[None]:
    """The app points MLflow's process-global URI at the test's registry; do not leak it to other tests."""
    yield
    mlflow.set_tracking_uri(None)
    mlflow.set_registry_uri(None)


@pytest.fixture
def registry(tiny_champion_db: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Settings:
    """This test's own copy of the registry with the tiny champion v1, as the app's settings see it."""
    db = tmp_path / "mlflow.db"
    shutil.copy(tiny_champion_db, db)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{db}")
    settings = load_settings()
    configure_tracking(settings)  # MLflow's registry store resolves logged models through the global URI
    return settings


def run_app(page: str = "Inspect") -> AppTest:
    at = AppTest.from_file(str(APP), default_timeout=180).run()
    if page != "Inspect":
        at.sidebar.radio[0].set_value(page).run()
    assert not at.exception, at.exception
    return at


def texts(elements: object) -> str:
    return "\n".join(str(e.value) for e in elements)  # type: ignore[attr-defined]


def decision_of(at: AppTest) -> str:
    badges = [m.value for m in at.markdown if "-badge[" in m.value]
    assert len(badges) == 1, badges
    return badges[0].split("[", 1)[1].rstrip("]")


def test_no_champion_yet_is_a_message_on_both_pages() -> None:
    at = run_app()
    assert "No champion model yet" in texts(at.info)
    at.sidebar.radio[0].set_value("QA").run()
    assert not at.exception
    assert "No champion yet" in texts(at.info)
    assert "No promotions are waiting" in texts(at.info)


def test_unreachable_registry_is_a_message(monkeypatch: pytest.MonkeyPatch) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]  # closed again when the block ends: nothing listens there
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"http://127.0.0.1:{port}")
    for page in ("Inspect", "QA"):
        at = run_app(page)
        assert f"127.0.0.1:{port} is unreachable" in texts(at.error)


def test_demo_and_real_sample_get_a_decision_heatmap_and_patch_table(
    registry: Settings, severstal_sample: Path
) -> None:
    at = run_app()
    assert "Champion v1" in texts(at.subheader)
    card = texts(at.markdown)
    assert "qa-lead" in card and "tiny-data-hash" in card and "0.3000" in card and "0.7000" in card
    assert at.selectbox[0].value.startswith("demo: ")
    assert decision_of(at) in DECISIONS

    at.selectbox[0].set_value("severstal-sample: 0046839bd.jpg").run()
    assert not at.exception
    assert decision_of(at) in DECISIONS
    assert len(at.image) == 1  # the heatmap overlay of the whole strip
    table = at.dataframe[0].value
    assert list(table.columns) == ["patch", "y", "x", "score", "decision"]
    assert len(table) == 7 and table["x"].max() == 1600 - 256  # 256x1600 strip, 256 px patches, stride 256
    assert float(at.metric[0].value) == pytest.approx(table["score"].max(), abs=1e-3)
    assert "t_pass = 0.300" in texts(at.markdown) and "t_fail = 0.700" in texts(at.markdown)


@pytest.mark.parametrize(
    ("name", "data", "message"),
    [
        ("small.png", encode_png(np.full((100, 100), 128, np.uint8)), "too small for the model's 256x256 patches"),
        ("notes.jpg", b"this is not an image", "only JPEG and PNG images can be inspected"),
        ("strip.png", b"BM" + bytes(64), "its content is BMP"),
    ],
    ids=["smaller-than-a-patch", "not-an-image", "bmp-named-png"],
)
def test_bad_uploads_are_messages(registry: Settings, name: str, data: bytes, message: str) -> None:
    at = run_app()
    at.radio[0].set_value("Upload").run()
    assert "Choose a demo image or upload" in texts(at.info)
    at.file_uploader[0].set_value((name, data, "image/png")).run()
    assert not at.exception
    errors = texts(at.error)
    assert message in errors and name in errors
    assert not [m for m in at.markdown if "-badge[" in m.value]


CHALLENGER = {"patch_recall": 0.98, "image_recall": 1.0, "patch_precision": 0.6, "patch_specificity": 0.85}
CHAMPION = {"patch_recall": 0.96, "image_recall": 1.0, "patch_precision": 0.5, "patch_specificity": 0.8}
TEST_SPLIT = {"patch_n": 150.0, "patch_n_defective": 50.0, "patch_missed": 1.0}


def _pending_challenger(settings: Settings, tmp_path: Path) -> str:
    """A second version (the champion's model files, its own run) whose gate passed against v1: it waits for QA.

    Its run records what a training run does for QA: test metrics with the split's size and the
    gallery of missed defects.
    """
    uri = settings.mlflow_tracking_uri
    client = MlflowClient(uri, registry_uri=uri)
    name = settings.tracking.registered_model
    champion = client.get_model_version(name, "1")
    run = client.create_run(client.get_run(champion.run_id).info.experiment_id)
    for key, value in {**CHALLENGER, **TEST_SPLIT}.items():
        client.log_metric(run.info.run_id, key, value)
    tmp_path.mkdir(parents=True, exist_ok=True)
    gallery = tmp_path / "false_negatives.png"
    gallery.write_bytes(encode_png(np.full((60, 80), 200, np.uint8)))
    client.log_artifact(run.info.run_id, str(gallery), "evaluation/plots")
    client.set_terminated(run.info.run_id)
    version = str(client.create_model_version(name, source=champion.source, run_id=run.info.run_id).version)
    promotion.record_gate(settings, version, gate(CHALLENGER, CHAMPION, recall_target=0.95, champion_version="1"))
    return version


def test_qa_page_approve_moves_the_champion_alias(registry: Settings, tmp_path: Path) -> None:
    version = _pending_challenger(registry, tmp_path)
    at = run_app("QA")
    assert f"Challenger v{version}" in texts(at.subheader)
    comparison = at.dataframe[0].value
    assert comparison.set_index("metric").loc["patch_recall", "difference"] == pytest.approx(0.02)
    challenger_matrix, champion_matrix = (t.value for t in at.table)
    assert challenger_matrix.loc["defective"].tolist() == [49, 1]  # recall 0.98 of 50 defective test patches
    assert champion_matrix.loc["defective"].tolist() == [48, 2]  # the champion's 0.96 on the same split
    assert champion_matrix.loc["clean"].tolist() == [20, 80]  # specificity 0.8 of 100 clean patches
    assert "(1 patch)" in at.expander[0].label and len(at.image) == 1  # the missed-defect gallery

    at.button(key=f"FormSubmitter:decide-{version}-Approve v{version}").click().run()
    assert "Enter your name as reviewer" in texts(at.error)
    assert promotion.champion_version(registry) == "1"

    at.text_input(key=f"reviewer-{version}").input("qa-lead")
    at.text_area(key=f"comment-{version}").input("fewer false alarms")
    at.button(key=f"FormSubmitter:decide-{version}-Approve v{version}").click().run()
    assert not at.exception
    assert f"approved v{version}: it is now the champion (previous champion v1)" in texts(at.success)
    assert promotion.champion_version(registry) == version
    assert "No promotions are waiting" in texts(at.info)
    history = at.dataframe[-1].value
    assert {"gate", "promote"} <= set(history["action"])
    assert "fewer false alarms" in set(history["comment"])


def test_qa_page_reject_keeps_the_champion(registry: Settings, tmp_path: Path) -> None:
    version = _pending_challenger(registry, tmp_path)
    at = run_app("QA")
    at.text_input(key=f"reviewer-{version}").input("qa-lead")
    at.button(key=f"FormSubmitter:decide-{version}-Reject v{version}").click().run()
    assert f"rejected v{version}: the champion is unchanged" in texts(at.success)
    assert promotion.champion_version(registry) == "1"
    assert promotion.list_pending(registry) == []


def test_qa_page_stale_gate_is_a_message_and_changes_nothing(registry: Settings, tmp_path: Path) -> None:
    older = _pending_challenger(registry, tmp_path / "older")
    newer = _pending_challenger(registry, tmp_path / "newer")  # both were gated against champion v1
    at = run_app("QA")
    # another reviewer (another process) promotes the newer one while this page still offers the older one
    promotion.approve_pending(registry, newer, reviewer="other-lead")
    at.text_input(key=f"reviewer-{older}").input("qa-lead")
    at.button(key=f"FormSubmitter:decide-{older}-Approve v{older}").click().run()
    assert not at.exception
    # its evidence went stale with the promotion: marked superseded, no longer offered, nothing changed
    assert f"reviewer-{older}" not in [widget.key for widget in at.text_input]
    assert promotion.champion_version(registry) == newer
    client = MlflowClient(registry.mlflow_tracking_uri)
    assert client.get_model_version(registry.tracking.registered_model, older).tags["approval_status"] == "superseded"


def test_qa_page_champion_moved_since_the_gate_is_a_message(registry: Settings, tmp_path: Path) -> None:
    pending = _pending_challenger(registry, tmp_path / "pending")  # gated against champion v1
    elsewhere = _pending_challenger(registry, tmp_path / "elsewhere")
    at = run_app("QA")
    client = MlflowClient(registry.mlflow_tracking_uri)
    client.set_registered_model_alias(registry.tracking.registered_model, promotion.CHAMPION, elsewhere)
    at.text_input(key=f"reviewer-{pending}").input("qa-lead")
    at.button(key=f"FormSubmitter:decide-{pending}-Approve v{pending}").click().run()
    assert not at.exception
    assert f"champion is v{elsewhere} but the gate of v{pending} compared against v1" in texts(at.error)
    assert promotion.champion_version(registry) == elsewhere
