"""Promotion state in a real MLflow registry (SQLite): pending, approve, reject, rollback, the race."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

from steelqc import promotion
from steelqc.config import Settings, load_settings
from steelqc.gate import gate

METRICS = {"patch_recall": 0.99, "image_recall": 1.0, "patch_precision": 0.5}


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return load_settings(overrides={"state_dir": str(tmp_path / "state")})


def _new_version(settings: Settings, tmp_path: Path) -> str:
    client = MlflowClient(settings.mlflow_tracking_uri)
    name = settings.tracking.registered_model
    if not client.search_registered_models(f"name='{name}'"):
        client.create_registered_model(name)
    source = tmp_path / f"model-{len(client.search_model_versions(f'name={name!r}'))}"
    source.mkdir()
    return str(client.create_model_version(name, source=str(source)).version)


def _gate_passed(settings: Settings, version: str) -> None:
    champion = promotion.champion_version(settings)
    decision = gate(METRICS, METRICS if champion else None, recall_target=0.95, champion_version=champion)
    promotion.record_gate(settings, version, decision)


def test_gate_marks_pending_and_approve_promotes(settings: Settings, tmp_path: Path) -> None:
    version = _new_version(settings, tmp_path)
    _gate_passed(settings, version)
    pending = promotion.list_pending(settings)
    assert [p.version for p in pending] == [version]
    assert pending[0].challenger_metrics["patch_recall"] == 0.99

    promotion.approve_pending(settings, version, reviewer="qa-lead", comment="looks good")
    assert promotion.champion_version(settings) == version
    assert promotion.list_pending(settings) == []
    card = promotion.champion_card(settings)
    assert card is not None and card["version"] == version and card["approved_by"] == "qa-lead"
    history = promotion.list_decisions(settings)
    assert {"gate", "promote"} <= set(history["action"])
    # the decisions' experiment is made like every other: artefacts beside the training runs' under the state dir
    experiment = MlflowClient(settings.mlflow_tracking_uri).get_experiment_by_name("steelqc-promotions")
    assert experiment.artifact_location == (settings.mlflow_artifact_root / "steelqc-promotions").as_uri()


def test_reject_leaves_champion(settings: Settings, tmp_path: Path) -> None:
    first = _new_version(settings, tmp_path)
    _gate_passed(settings, first)
    promotion.approve_pending(settings, first, reviewer="qa")
    second = _new_version(settings, tmp_path)
    _gate_passed(settings, second)
    promotion.reject(settings, second, reviewer="qa", comment="too many false alarms")
    assert promotion.champion_version(settings) == first
    with pytest.raises(promotion.PromotionError, match="not pending"):
        promotion.approve_pending(settings, second, reviewer="qa")


def test_failed_gate_is_not_pending(settings: Settings, tmp_path: Path) -> None:
    version = _new_version(settings, tmp_path)
    promotion.record_gate(settings, version, gate({**METRICS, "patch_recall": 0.5}, None, recall_target=0.95))
    assert promotion.list_pending(settings) == []
    with pytest.raises(promotion.PromotionError):
        promotion.approve_pending(settings, version, reviewer="qa")
    assert promotion.champion_version(settings) is None


def test_rollback_swaps_aliases_and_is_recorded(settings: Settings, tmp_path: Path) -> None:
    with pytest.raises(promotion.PromotionError, match="no previous champion"):
        promotion.rollback(settings, reviewer="qa")
    first = _new_version(settings, tmp_path)
    _gate_passed(settings, first)
    promotion.approve_pending(settings, first, reviewer="qa")
    second = _new_version(settings, tmp_path)
    _gate_passed(settings, second)
    promotion.approve_pending(settings, second, reviewer="qa")
    assert promotion.champion_version(settings) == second

    promotion.rollback(settings, reviewer="qa", comment="field complaints")
    client = MlflowClient(settings.mlflow_tracking_uri)
    name = settings.tracking.registered_model
    assert promotion.alias_version(client, name, promotion.CHAMPION) == first
    assert promotion.alias_version(client, name, promotion.PREVIOUS) == second
    assert "rollback" in set(promotion.list_decisions(settings)["action"])


def _status(settings: Settings, version: str) -> str:
    client = MlflowClient(settings.mlflow_tracking_uri)
    return client.get_model_version(settings.tracking.registered_model, version).tags["approval_status"]


def test_race_second_promotion_stops_and_the_loser_is_superseded(settings: Settings, tmp_path: Path) -> None:
    """Two challengers gated against the same (absent) champion: the second must not overwrite the first, and
    it does not wait as pending forever: its gate evidence is stale once the champion moved."""
    a = _new_version(settings, tmp_path)
    b = _new_version(settings, tmp_path)
    _gate_passed(settings, a)
    _gate_passed(settings, b)
    promotion.approve_pending(settings, a, reviewer="qa")
    assert promotion.champion_version(settings) == a
    assert promotion.list_pending(settings) == []
    assert _status(settings, b) == "superseded"
    superseded = r"approval_status=superseded\): the champion moved after its gate"
    with pytest.raises(promotion.PromotionError, match=superseded):
        promotion.approve_pending(settings, b, reviewer="qa")
    history = promotion.list_decisions(settings)
    assert ("supersede", b, "superseded") in set(zip(history.action, history.version, history.outcome, strict=True))


def test_promotion_that_lost_the_race_after_its_check_is_superseded(settings: Settings, tmp_path: Path) -> None:
    """The flow's promote step (the QA answer came through a suspended run) meets a champion that moved."""
    a = _new_version(settings, tmp_path)
    b = _new_version(settings, tmp_path)
    _gate_passed(settings, a)
    _gate_passed(settings, b)
    client = MlflowClient(settings.mlflow_tracking_uri)
    client.set_registered_model_alias(settings.tracking.registered_model, promotion.CHAMPION, a)  # moved elsewhere
    with pytest.raises(promotion.ChampionChangedError, match="marked superseded"):
        promotion.promote(settings, b, reviewer="qa", expected_champion=None)
    assert promotion.champion_version(settings) == a and _status(settings, b) == "superseded"


def test_reject_takes_the_decision_lock(settings: Settings, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from steelqc import promotion_lock

    version = _new_version(settings, tmp_path)
    _gate_passed(settings, version)
    monkeypatch.setattr(promotion_lock, "WAIT_S", 0.2)
    client = MlflowClient(settings.mlflow_tracking_uri)
    with promotion_lock.decision_lock(settings, client):  # another decision in progress
        with pytest.raises(promotion.PromotionError, match="another promotion decision has held"):
            promotion.reject(settings, version, reviewer="qa")
        with pytest.raises(promotion.PromotionError, match="another promotion decision has held"):
            promotion.approve_pending(settings, version, reviewer="qa")
    assert _status(settings, version) == "pending"
    promotion.reject(settings, version, reviewer="qa")
    assert _status(settings, version) == "rejected"
    with pytest.raises(promotion.PromotionError, match="not pending"):  # checked again under the lock
        promotion.reject(settings, version, reviewer="qa")


def test_registry_claim_is_exclusive_and_expires(settings: Settings, tmp_path: Path) -> None:
    """The claim clients of a tracking server take (exercised here on the SQLite registry, which stores tags
    alike); the two-process race against a real server is in tests/flows/test_promotion_server.py."""
    from steelqc.promotion_lock import CLAIM_TAG, DecisionBusyError, RegistryClaim

    _new_version(settings, tmp_path)
    client = MlflowClient(settings.mlflow_tracking_uri)
    name = settings.tracking.registered_model
    first = RegistryClaim(client, name, settle_s=0.5)
    second = RegistryClaim(client, name, settle_s=0.5)
    first.acquire()
    with pytest.raises(DecisionBusyError, match="held the registry claim"):
        second.acquire(wait_s=1)
    first.confirm()
    first.release()
    assert CLAIM_TAG not in client.get_registered_model(name).tags
    second.acquire(wait_s=5)
    # a holder killed mid-decision leaves its claim behind; it expires after its lease
    client.set_registered_model_tag(name, CLAIM_TAG, f"{second.token} 0")
    first.acquire(wait_s=5)
    with pytest.raises(DecisionBusyError, match="took the registry claim"):
        second.confirm()
    second.release()  # not its claim any more: left alone
    assert client.get_registered_model(name).tags[CLAIM_TAG].startswith(first.token)


def test_a_first_claim_refused_because_a_rival_wrote_it_the_same_instant_waits_its_turn(
    settings: Settings, tmp_path: Path
) -> None:
    """Two first claims at once are two INSERTs of one tag row: the store refuses the second (seen against a
    real server on SQLite: a 400 'UNIQUE constraint failed'). The loser waits instead of failing."""
    from mlflow.exceptions import MlflowException

    from steelqc.promotion_lock import CLAIM_TAG, DecisionBusyError, RegistryClaim

    _new_version(settings, tmp_path)
    name = settings.tracking.registered_model
    rival = RegistryClaim(MlflowClient(settings.mlflow_tracking_uri), name, settle_s=0.2)

    class RacedClient(MlflowClient):
        def set_registered_model_tag(self, name: str, key: str, value: object) -> None:
            rival.client.set_registered_model_tag(name, key, f"{rival.token} {time.time() + 60:.3f}")
            raise MlflowException("UNIQUE constraint failed: registered_model_tags.key")

    loser = RegistryClaim(RacedClient(settings.mlflow_tracking_uri), name, settle_s=0.2)
    with pytest.raises(DecisionBusyError, match="held the registry claim"):
        loser.acquire(wait_s=1)
    assert MlflowClient(settings.mlflow_tracking_uri).get_registered_model(name).tags[CLAIM_TAG].startswith(
        rival.token
    )


def test_unknown_version(settings: Settings, tmp_path: Path) -> None:
    _new_version(settings, tmp_path)
    with pytest.raises(promotion.PromotionError, match="no version 99"):
        promotion.approve_pending(settings, "99", reviewer="qa")


def test_no_champion_card(settings: Settings) -> None:
    assert promotion.champion_card(settings) is None


def test_cli_approve_reject_rollback_promotions(
    settings: Settings, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from typer.testing import CliRunner

    from steelqc.cli import app

    monkeypatch.setenv("STEELQC_STATE_DIR", str(settings.state_dir))
    runner = CliRunner()
    first, second = _new_version(settings, tmp_path), _new_version(settings, tmp_path)
    _gate_passed(settings, first)

    result = runner.invoke(app, ["approve", first, "--reviewer", ""])
    assert result.exit_code == 1 and "reviewer name is required" in result.output
    result = runner.invoke(app, ["approve", first, "--reviewer", "qa-lead", "--comment", "ok"])
    assert result.exit_code == 0, result.output
    assert "now the champion" in result.output

    _gate_passed(settings, second)
    result = runner.invoke(app, ["reject", second, "--reviewer", "qa-lead"])
    assert result.exit_code == 0 and "champion is unchanged" in result.output
    result = runner.invoke(app, ["approve", second, "--reviewer", "qa-lead"])
    assert result.exit_code == 1 and "not pending" in result.output

    result = runner.invoke(app, ["rollback", "--reviewer", "qa-lead"])
    assert result.exit_code == 1 and "no previous champion" in result.output

    result = runner.invoke(app, ["promotions"])
    assert result.exit_code == 0
    assert f"champion: v{first}" in result.output and "reject" in result.output


def test_unreachable_registry_is_an_error_not_no_champion(monkeypatch: pytest.MonkeyPatch) -> None:
    """Read as "no champion", a registry outage would let a challenger pass on the target alone."""
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_TIMEOUT", "2")
    client = MlflowClient(tracking_uri="http://127.0.0.1:9", registry_uri="http://127.0.0.1:9")
    with pytest.raises(Exception):  # noqa: B017 - MLflow or requests, depending on where the connection fails
        promotion.alias_version(client, "steelqc", promotion.CHAMPION)


def test_a_retried_promotion_completes_and_a_rollback_supersedes_what_was_gated_against_the_old_champion(
    settings: Settings, tmp_path: Path
) -> None:
    first = _new_version(settings, tmp_path)
    _gate_passed(settings, first)
    promotion.approve_pending(settings, first, reviewer="qa")
    second = _new_version(settings, tmp_path)
    _gate_passed(settings, second)
    promotion.promote(settings, second, reviewer="flow", expected_champion=first)
    # the flow's promote task retried after its alias moves landed: it completes, nothing moves twice
    record = promotion.promote(settings, second, reviewer="flow", expected_champion=first)
    assert (record.version, record.previous_version) == (second, first)
    client = MlflowClient(settings.mlflow_tracking_uri)
    name = settings.tracking.registered_model
    assert promotion.alias_version(client, name, promotion.PREVIOUS) == first

    third = _new_version(settings, tmp_path)
    _gate_passed(settings, third)  # against the champion `second`
    promotion.rollback(settings, reviewer="qa")
    assert promotion.champion_version(settings) == first
    assert _status(settings, third) == "superseded" and promotion.list_pending(settings) == []


def test_gate_evidence_is_a_side_by_side_table_on_the_run_and_the_verdict_is_in_the_description(
    settings: Settings, tmp_path: Path
) -> None:
    client = MlflowClient(settings.mlflow_tracking_uri)
    name = settings.tracking.registered_model
    client.create_registered_model(name)
    run = client.create_run(client.create_experiment("training", artifact_location=(tmp_path / "a").as_uri()))
    version = str(client.create_model_version(name, source=str(tmp_path), run_id=run.info.run_id).version)
    challenger = {**METRICS, "patch_specificity": 0.8}
    champion = {"patch_recall": 0.97, "image_recall": 1.0, "patch_precision": 0.6, "patch_specificity": 0.9}
    decision = gate(challenger, champion, recall_target=0.95, champion_version="3")
    promotion.record_gate(settings, version, decision)

    table = client.download_artifacts(run.info.run_id, "gate/evidence.md", str(tmp_path))
    lines = Path(table).read_text().splitlines()
    assert lines[0] == f"# Gate for v{version}: PASSED: recall holds against champion v3"
    assert f"| metric | challenger v{version} | champion v3 | difference |" in lines
    assert "| patch_recall | 0.9900 | 0.9700 | +0.0200 |" in lines
    assert "| patch_precision | 0.5000 | 0.6000 | -0.1000 |" in lines
    html = Path(client.download_artifacts(run.info.run_id, "gate/evidence.html", str(tmp_path))).read_text()
    assert "<td>0.9900</td><td>0.9700</td><td>+0.0200</td>" in html
    description = client.get_model_version(name, version).description
    assert "**gate**: passed: recall holds against champion v3" in description
