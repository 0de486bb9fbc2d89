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
from qa_helpers import CHAMPION, pending_challenger
from streamlit.testing.v1 import AppTest

from steelqc import promotion
from steelqc.app.images import DECISION_COLORS
from steelqc.config import Settings, load_settings
from steelqc.data.images import encode_png
from steelqc.gate import gate

APP = Path(__file__).resolve().parents[2] / "steelqc" / "app" / "main.py"
DECISIONS = {"PASS", "HOLD", "FAIL"}


@pytest.fixture(autouse=True)
def reset_mlflow_uri() -> Iterator[None]:
    """The app points MLflow's process-global URI at the test's registry; do not leak it to other tests."""
    yield
    mlflow.set_tracking_uri(None)
    mlflow.set_registry_uri(None)


def run_app(page: str = "Inspect") -> AppTest:
    at = AppTest.from_file(str(APP), default_timeout=180).run()
    if page != "Inspect":
        at.sidebar.radio[0].set_value(page).run()
    assert not at.exception, at.exception
    return at


def texts(elements: object) -> str:
    return "\n".join(str(e.value) for e in elements)  # type: ignore[attr-defined]


def banner_of(at: AppTest) -> str:
    """The HTML of the one decision banner on the page."""
    banners = [m.value for m in at.markdown if 'class="steelqc-decision"' in m.value]
    assert len(banners) == 1, banners
    return banners[0]


def decision_of(at: AppTest) -> str:
    return banner_of(at).split('data-decision="', 1)[1].split('"', 1)[0]


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
    assert len(at.image) == 2  # the heatmap over the whole strip with its colour bar, the per-patch bars
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
    assert "Choose a demo image, upload" in texts(at.info)
    at.file_uploader[0].set_value((name, data, "image/png")).run()
    assert not at.exception
    errors = texts(at.error)
    assert message in errors and name in errors
    assert not [m for m in at.markdown if "steelqc-decision" in m.value]


def test_banner_shows_the_decision_in_its_colour_with_its_reason(registry: Settings) -> None:
    at = run_app()
    banner, decision = banner_of(at), decision_of(at)
    assert DECISION_COLORS[decision] in banner and f">{decision}</div>" in banner
    worst = float(at.metric[0].value)
    expected = {"PASS": f"worst patch score {worst:.3f} &lt; t_pass 0.300",
                "FAIL": f"worst patch score {worst:.3f} ≥ t_fail 0.700",
                "HOLD": f"t_pass 0.300 ≤ worst patch score {worst:.3f} &lt; t_fail 0.700"}[decision]  # fmt: skip
    assert expected in banner
    assert "no HOLD band" not in texts(at.info) + texts(at.markdown)


@pytest.fixture
def no_hold_band(registry: Settings) -> Settings:
    """Champion v2: the tiny untrained model with t_pass = t_fail = 0.5, as the demo model often has."""
    import keras

    from steelqc.model import build_model
    from steelqc.pyfunc import log_pyfunc_model
    from steelqc.registry import register_version, version_tags
    from steelqc.thresholds import Thresholds
    from steelqc.tracking import ensure_experiment

    settings = load_settings(overrides={"model.backbone": "small_cnn", "model.weights": "none", "model.input_size": 32})
    keras.utils.set_random_seed(1)
    metrics = {"patch_recall": 0.97, "image_recall": 1.0, "patch_precision": 0.9, "patch_specificity": 0.95}
    thresholds = Thresholds(0.5, 0.5, 0.97, 0.9, 0.9, 0.95, 25, 100, True, "empty HOLD band")
    with mlflow.start_run(experiment_id=ensure_experiment(settings, "tiny")):
        info = log_pyfunc_model(build_model(settings.model, 256), thresholds, settings.patches,
                                np.zeros((256, 1600), np.uint8))  # fmt: skip
    name = settings.tracking.registered_model
    version = str(register_version(info.model_uri, name, version_tags(metrics, thresholds, "h")).version)
    promotion.record_gate(settings, version, gate(metrics, CHAMPION, recall_target=0.95, champion_version="1"))
    promotion.approve_pending(settings, version, reviewer="qa-lead")
    return settings


def test_an_empty_hold_band_is_explained(no_hold_band: Settings) -> None:
    at = run_app()
    assert "Champion v2" in texts(at.subheader)
    note = texts(at.info)
    assert "This model has no HOLD band: t_pass = t_fail = 0.500" in note and "none is sent to a person" in note
    assert "HOLD (a person looks)" not in texts(at.markdown)  # no band described that cannot occur
    assert decision_of(at) in {"PASS", "FAIL"}


def test_an_image_unlike_the_training_data_gets_a_warning_beside_its_decision(
    registry: Settings, severstal_sample: Path
) -> None:
    at = run_app()  # a generated demo strip, like the reference the tiny champion was registered with
    assert "Like the training data of champion v1" in texts(at.success)
    assert not at.warning
    at.selectbox[0].set_value("severstal-sample: 0046839bd.jpg").run()  # a real strip
    assert not at.exception
    warning = texts(at.warning)
    assert "Image unlike the training data** of champion v1" in warning and "training " in warning
    assert decision_of(at) in DECISIONS


def test_several_images_give_a_summary_table_and_a_csv(registry: Settings, severstal_sample: Path) -> None:
    from steelqc.app.images import PACKAGED_DEMO_DIR

    files = [(p.name, p.read_bytes(), "image/png") for p in sorted(PACKAGED_DEMO_DIR.glob("*.png"))[:2]]
    files.append(("0046839bd.jpg", (severstal_sample / "train_images" / "0046839bd.jpg").read_bytes(), "image/png"))
    files.append(("notes.png", b"not an image at all", "image/png"))
    at = run_app()
    at.radio[0].set_value("Upload").run()
    at.file_uploader[0].set_value(files).run()
    assert not at.exception
    table = at.dataframe[0].value
    assert list(table["image"]) == [name for name, _, _ in files]
    assert set(table["decision"][:3]) <= DECISIONS and table["decision"][3] == "ERROR"
    assert "unlike the training data" in table["unlike_training"][2] and table["unlike_training"][0] == ""
    assert "notes.png" in texts(at.error)
    assert "1 ERROR" in texts(at.subheader)
    assert at.download_button[0].label == "Download the table (CSV)"
    assert at.selectbox[0].options[0] == table.sort_values("worst_score", ascending=False)["image"].iloc[0]
    assert decision_of(at) in DECISIONS  # the worst image's detail under the table


def test_a_folder_on_the_apps_machine_is_inspected_as_a_batch(registry: Settings, tmp_path: Path) -> None:


    from steelqc.app.images import PACKAGED_DEMO_DIR

    folder = tmp_path / "coil"
    folder.mkdir()
    for path in sorted(PACKAGED_DEMO_DIR.glob("*.png"))[:2]:
        shutil.copy(path, folder / path.name)
    (folder / "readme.txt").write_text("not an image")
    at = run_app()
    at.radio[0].set_value("Folder").run()
    at.text_input[0].input(str(folder)).run()
    assert not at.exception
    table = at.dataframe[0].value
    assert sorted(table["image"]) == sorted(p.name for p in folder.iterdir())
    assert table.set_index("image").loc["readme.txt", "decision"] == "ERROR"
    at.text_input[0].input(str(tmp_path / "nowhere")).run()
    assert "Cannot list" in texts(at.error) and "no such file or folder" in texts(at.error)


def test_qa_page_approve_moves_the_champion_alias(registry: Settings, tmp_path: Path) -> None:
    version = pending_challenger(registry, tmp_path)
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
    version = pending_challenger(registry, tmp_path)
    at = run_app("QA")
    at.text_input(key=f"reviewer-{version}").input("qa-lead")
    at.button(key=f"FormSubmitter:decide-{version}-Reject v{version}").click().run()
    assert f"rejected v{version}: the champion is unchanged" in texts(at.success)
    assert promotion.champion_version(registry) == "1"
    assert promotion.list_pending(registry) == []


def test_qa_page_stale_gate_is_a_message_and_changes_nothing(registry: Settings, tmp_path: Path) -> None:
    older = pending_challenger(registry, tmp_path / "older")
    newer = pending_challenger(registry, tmp_path / "newer")  # both were gated against champion v1
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
    pending = pending_challenger(registry, tmp_path / "pending")  # gated against champion v1
    elsewhere = pending_challenger(registry, tmp_path / "elsewhere")
    at = run_app("QA")
    client = MlflowClient(registry.mlflow_tracking_uri)
    client.set_registered_model_alias(registry.tracking.registered_model, promotion.CHAMPION, elsewhere)
    at.text_input(key=f"reviewer-{pending}").input("qa-lead")
    at.button(key=f"FormSubmitter:decide-{pending}-Approve v{pending}").click().run()
    assert not at.exception
    assert f"champion is v{elsewhere} but the gate of v{pending} compared against v1" in texts(at.error)
    assert promotion.champion_version(registry) == elsewhere


def test_qa_page_links_the_runs_and_shows_the_champions_drift_status(
    registry: Settings, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from steelqc.tracking import ensure_experiment

    monkeypatch.setenv("PREFECT_API_URL", "http://127.0.0.1:4200/api")
    version = pending_challenger(registry, tmp_path)
    client = MlflowClient(registry.mlflow_tracking_uri, registry_uri=registry.mlflow_tracking_uri)
    client.set_model_version_tag(registry.tracking.registered_model, version, promotion.TAG_FLOW_RUN, "abc-123")
    at = run_app("QA")
    links = texts(at.markdown)
    assert "[flow run](http://127.0.0.1:4200/runs/flow-run/abc-123)" in links
    run = client.get_run(client.get_model_version(registry.tracking.registered_model, version).run_id)
    assert f"[MLflow run](http://127.0.0.1:5000/#/experiments/{run.info.experiment_id}/runs/{run.info.run_id})" in links
    assert "**Gate passed** against champion v1" in links
    assert "v1 was never checked against production" in texts(at.caption)

    tags = {"drift_detected": "true", "reasons": "29% of columns drifted: blur, contrast"}
    check = client.create_run(ensure_experiment(registry, "monitoring"), tags=tags)
    for key, value in {"model_version": "1", "since": "2026-12-01", "until": "today"}.items():
        client.log_param(check.info.run_id, key, value)
    client.set_terminated(check.info.run_id)
    at.run()
    assert not at.exception
    drift = texts(at.error)
    assert "**Drift detected** on champion v1: 29% of columns drifted: blur, contrast" in drift
    assert "over 2026-12-01 to today" in drift and check.info.run_id in drift
