"""Promotion state in the MLflow registry: pending approvals, alias moves, rollback, and their history.

State lives on the registered model versions (tags) and in the aliases ``champion`` and
``previous-champion``; every decision is also recorded as a run in the ``<prefix>-promotions``
experiment so the history is queryable in the MLflow UI. A promotion only moves the champion when
the champion is still the one its gate compared against: a promotion that lost a race stops.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from typing import Any

import pandas as pd
from mlflow.entities.model_registry import ModelVersion
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient

from steelqc.config import Settings
from steelqc.gate import GateDecision
from steelqc.promotion_lock import DecisionBusyError, DecisionLock, decision_lock
from steelqc.tracking import ensure_experiment, experiment_name

CHAMPION = "champion"
PREVIOUS = "previous-champion"
PROMOTIONS = "promotions"  # the experiment <prefix>-promotions holds one run per decision

# Model-version tags written by the gate and the approval steps.
TAG_GATE = "gate_decision"  # passed | failed
TAG_GATE_REASON = "gate_reason"
TAG_GATE_CHAMPION = "gate_champion_version"  # champion the gate compared against ("" = none)
TAG_APPROVAL = "approval_status"  # pending | approved | rejected | timed_out | superseded
TAG_FLOW_RUN = "flow_run_id"  # the suspended Prefect run waiting for this decision
TAG_APPROVED_BY = "approved_by"
TAG_APPROVED_AT = "approved_at"
TAG_COMMENT = "comment"
RERUN_HINT = "re-run the pipeline to gate against the current champion"
SUPERSEDED_HINT = f"the champion moved after its gate; {RERUN_HINT}"


class PromotionError(RuntimeError):
    """A promotion request that cannot be honoured; the message says why and what to do."""


class ChampionChangedError(PromotionError):
    """The champion moved after this version's gate ran: its evidence is stale."""


@dataclass(frozen=True)
class PendingPromotion:
    """A challenger whose gate passed and that waits for a QA lead."""

    version: str
    run_id: str | None
    created_at: str
    gate: dict[str, Any]
    flow_run_id: str | None
    champion_version: str | None

    @property
    def challenger_metrics(self) -> dict[str, float]:
        return self.gate.get("challenger", {})

    @property
    def champion_metrics(self) -> dict[str, float] | None:
        return self.gate.get("champion")


@dataclass(frozen=True)
class PromotionRecord:
    """What one promotion action did."""

    action: str  # promote | reject | rollback | gate | supersede | resume
    version: str
    previous_version: str | None
    reviewer: str
    comment: str
    outcome: str
    time: str

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


def _client(settings: Settings) -> MlflowClient:
    return MlflowClient(tracking_uri=settings.mlflow_tracking_uri, registry_uri=settings.mlflow_tracking_uri)


# What the registry answers for a model or alias that does not exist; any other error (a tracking server
# that is down, a broken store) must propagate: read as "no champion" it would let the gate pass on the
# target alone and promote over the real champion.
MISSING_ERROR_CODES = {"RESOURCE_DOES_NOT_EXIST", "INVALID_PARAMETER_VALUE", "NOT_FOUND"}


def _is_missing(exc: MlflowException) -> bool:
    return exc.error_code in MISSING_ERROR_CODES


def alias_version(client: MlflowClient, model_name: str, alias: str) -> str | None:
    """The version an alias points to, or None when the alias (or the model) does not exist."""
    try:
        return str(client.get_model_version_by_alias(model_name, alias).version)
    except MlflowException as exc:
        if _is_missing(exc):
            return None
        raise


def champion_version(settings: Settings) -> str | None:
    return alias_version(_client(settings), settings.tracking.registered_model, CHAMPION)


def champion_uri(settings: Settings) -> str:
    """The registered model's champion: what production inspects with and monitoring compares against."""
    return f"models:/{settings.tracking.registered_model}@{CHAMPION}"


def _version(client: MlflowClient, model_name: str, version: str) -> ModelVersion:
    try:
        return client.get_model_version(model_name, str(version))
    except MlflowException as exc:
        if _is_missing(exc):
            raise PromotionError(f"model {model_name!r} has no version {version}") from None
        raise


@contextmanager
def _decision(settings: Settings, client: MlflowClient) -> Iterator[DecisionLock]:
    """One check-and-move decision at a time on the registered model (:mod:`steelqc.promotion_lock`)."""
    try:
        with decision_lock(settings, client) as lock:
            yield lock
    except DecisionBusyError as exc:
        raise PromotionError(str(exc)) from None


def record_decision(settings: Settings, record: PromotionRecord, evidence: dict[str, Any] | None = None) -> str:
    """Write one decision as a run of the promotions experiment; return its run id."""
    client = _client(settings)
    tags = {f"promotion.{k}": str(v if v is not None else "") for k, v in record.to_dict().items()}
    tags["mlflow.runName"] = f"{record.action}-v{record.version}"
    run = client.create_run(ensure_experiment(settings, PROMOTIONS), tags=tags)
    if evidence:
        client.log_dict(run.info.run_id, evidence, "evidence.json")
        for side in ("challenger", "champion"):
            for name, value in (evidence.get(side) or {}).items():
                client.log_metric(run.info.run_id, f"{side}_{name}", float(value))
    client.set_terminated(run.info.run_id)
    return run.info.run_id


def record_gate(
    settings: Settings, version: str, decision: GateDecision, *, flow_run_id: str | None = None
) -> PromotionRecord:
    """Tag the version with the gate's verdict (pending approval when it passed) and record it."""
    client = _client(settings)
    name = settings.tracking.registered_model
    _version(client, name, version)
    tags = {
        TAG_GATE: "passed" if decision.passed else "failed",
        TAG_GATE_REASON: decision.reason[:4900],
        TAG_GATE_CHAMPION: decision.champion_version or "",
        "gate_evidence": decision.to_json()[:4900],
        TAG_APPROVAL: "pending" if decision.passed else "not_eligible",
    }
    if flow_run_id:
        tags[TAG_FLOW_RUN] = flow_run_id
    for key, value in tags.items():
        client.set_model_version_tag(name, version, key, value)
    record = PromotionRecord(
        "gate", version, decision.champion_version, "gate", decision.rule,
        "passed" if decision.passed else f"failed: {decision.reason}", _now(),
    )
    record_decision(settings, record, decision.to_dict())
    return record


def _gate_of(version: ModelVersion) -> dict[str, Any]:
    try:
        return json.loads(version.tags.get("gate_evidence", "{}"))
    except json.JSONDecodeError:
        return {}


def list_pending(settings: Settings) -> list[PendingPromotion]:
    """Versions whose gate passed and that wait for a QA decision, newest first."""
    client = _client(settings)
    name = settings.tracking.registered_model
    try:
        versions = client.search_model_versions(f"name='{name}' and tag.{TAG_APPROVAL}='pending'")
    except MlflowException as exc:
        if _is_missing(exc):
            return []
        raise
    return sorted((_review(v) for v in versions), key=lambda p: int(p.version), reverse=True)


def _review(version: ModelVersion) -> PendingPromotion:
    return PendingPromotion(
        version=str(version.version),
        run_id=version.run_id,
        created_at=datetime.fromtimestamp(version.creation_timestamp / 1000, UTC).isoformat(timespec="seconds"),
        gate=_gate_of(version),
        flow_run_id=version.tags.get(TAG_FLOW_RUN) or None,
        champion_version=version.tags.get(TAG_GATE_CHAMPION) or None,
    )


def version_review(settings: Settings, version: str) -> tuple[PendingPromotion, dict[str, str]]:
    """Any version's gate evidence as QA reviews it (pending or not) and all its tags (approval status, reviewer)."""
    found = _version(_client(settings), settings.tracking.registered_model, version)
    return _review(found), dict(found.tags)


def pending_version(settings: Settings, version: str) -> PendingPromotion:
    """The pending promotion of ``version``, or :class:`PromotionError` saying what state it is in."""
    for item in list_pending(settings):
        if item.version == str(version):
            return item
    client = _client(settings)
    _require_pending(client, settings.tracking.registered_model, str(version))
    raise PromotionError(f"version {version} is pending but was not listed; try again")


def _status(client: MlflowClient, model_name: str, version: str) -> str:
    return _version(client, model_name, version).tags.get(TAG_APPROVAL, "untagged")


def _require_pending(client: MlflowClient, model_name: str, version: str) -> None:
    status = _status(client, model_name, version)
    if status != "pending":
        hint = f": {SUPERSEDED_HINT}" if status == "superseded" else ""
        raise PromotionError(f"version {version} is not pending approval (approval_status={status}){hint}")


def _mark(client: MlflowClient, model_name: str, version: str, status: str, reviewer: str, comment: str) -> str:
    """Write a decision's approval tags on ``version``; return its time."""
    when = _now()
    tags = {TAG_APPROVAL: status, TAG_APPROVED_BY: reviewer, TAG_APPROVED_AT: when, TAG_COMMENT: comment}
    if status == "approved":
        tags["promoted_at"] = when
    for key, value in tags.items():
        client.set_model_version_tag(model_name, str(version), key, value)
    return when


def _supersede_stale(settings: Settings, client: MlflowClient, champion: str | None, reviewer: str) -> list[str]:
    """Mark every pending version whose gate compared against another champion than ``champion`` superseded.

    Its evidence is stale, so it could never be approved: without this it would wait as ``pending`` forever.
    """
    stale = [item for item in list_pending(settings) if item.champion_version != champion]
    for item in stale:
        note = f"champion is v{champion}, its gate compared against v{item.champion_version or 'none'}"
        _supersede(settings, client, item.version, champion, reviewer, note)
    return [item.version for item in stale]


def _supersede(
    settings: Settings, client: MlflowClient, version: str, champion: str | None, reviewer: str, note: str
) -> None:
    when = _mark(client, settings.tracking.registered_model, version, "superseded", reviewer, note)
    record_decision(settings, PromotionRecord("supersede", version, champion, reviewer, note, "superseded", when))


def promote(
    settings: Settings, version: str, *, reviewer: str, comment: str = "", expected_champion: str | None
) -> PromotionRecord:
    """Move ``champion`` to pending ``version`` (and ``previous-champion`` to the old one) if nothing raced us.

    Under the decision lock: the version must still be pending and the alias still point at
    ``expected_champion`` (the champion its gate compared against); otherwise change nothing but mark the
    version ``superseded`` and raise :class:`ChampionChangedError`. Other pending versions gated against the
    old champion are marked ``superseded`` once the champion moved.
    """
    client = _client(settings)
    name = settings.tracking.registered_model
    version = str(version)
    with _decision(settings, client) as lock:
        current = alias_version(client, name, CHAMPION)
        already_moved = current == version  # a retried call whose alias moves landed before it failed
        if not already_moved:
            _require_pending(client, name, version)
        if not already_moved and current != (expected_champion or None):
            note = f"champion is v{current} but the gate of v{version} compared against v{expected_champion or 'none'}"
            lock.confirm()
            _supersede(settings, client, version, current, reviewer, note)
            raise ChampionChangedError(f"{note}: marked superseded; {RERUN_HINT}")
        previous = alias_version(client, name, PREVIOUS) if already_moved else current
        lock.confirm()
        if not already_moved:
            if current is not None:
                client.set_registered_model_alias(name, PREVIOUS, current)
            client.set_registered_model_alias(name, CHAMPION, version)
        when = _mark(client, name, version, "approved", reviewer, comment)
        _supersede_stale(settings, client, version, reviewer)
    record = PromotionRecord("promote", version, previous, reviewer, comment, "champion moved", when)
    record_decision(settings, record, _gate_of(_version(client, name, version)))
    return record


def approve_pending(settings: Settings, version: str, *, reviewer: str, comment: str = "") -> PromotionRecord:
    """Approve a pending version without a waiting flow run: re-check that its gate still holds, promote."""
    item = pending_version(settings, version)
    if not item.gate.get("passed", False):
        raise PromotionError(f"version {version} has no passing gate evidence")
    return promote(settings, version, reviewer=reviewer, comment=comment, expected_champion=item.champion_version)


def reject(
    settings: Settings, version: str, *, reviewer: str, comment: str = "", status: str = "rejected"
) -> PromotionRecord:
    """Mark a pending version rejected (or timed_out); the champion never moves.

    Checked and written under the decision lock, so a concurrent approval of the same version cannot interleave.
    """
    client = _client(settings)
    name = settings.tracking.registered_model
    with _decision(settings, client) as lock:
        _require_pending(client, name, str(version))
        lock.confirm()
        when = _mark(client, name, str(version), status, reviewer, comment)
        champion = alias_version(client, name, CHAMPION)
    record = PromotionRecord("reject", str(version), champion, reviewer, comment, status, when)
    record_decision(settings, record)
    return record


def rollback(settings: Settings, *, reviewer: str, comment: str = "") -> PromotionRecord:
    """Swap ``champion`` and ``previous-champion`` back; recorded like a promotion."""
    client = _client(settings)
    name = settings.tracking.registered_model
    with _decision(settings, client) as lock:
        current = alias_version(client, name, CHAMPION)
        previous = alias_version(client, name, PREVIOUS)
        if previous is None:
            raise PromotionError("there is no previous champion to roll back to")
        lock.confirm()
        client.set_registered_model_alias(name, CHAMPION, previous)
        if current is not None:
            client.set_registered_model_alias(name, PREVIOUS, current)
        when = _now()
        client.set_model_version_tag(name, previous, "promoted_at", when)
        _supersede_stale(settings, client, previous, reviewer)
    record = PromotionRecord("rollback", previous, current, reviewer, comment, "champion rolled back", when)
    record_decision(settings, record)
    return record


def list_decisions(settings: Settings, limit: int = 200) -> pd.DataFrame:
    """Past gate results, promotions, rejections and rollbacks, newest first."""
    client = _client(settings)
    columns = ["time", "action", "version", "previous_version", "reviewer", "comment", "outcome"]
    experiment = client.get_experiment_by_name(experiment_name(settings.tracking, PROMOTIONS))
    if experiment is None:
        return pd.DataFrame(columns=columns)
    runs = client.search_runs([experiment.experiment_id], max_results=limit, order_by=["attributes.start_time DESC"])
    rows = [{c: run.data.tags.get(f"promotion.{c}", "") for c in columns} for run in runs]
    return pd.DataFrame(rows, columns=columns)


def champion_card(settings: Settings) -> dict[str, Any] | None:
    """What an operator should know about the model deciding right now; None when there is no champion."""
    client = _client(settings)
    name = settings.tracking.registered_model
    current = alias_version(client, name, CHAMPION)
    if current is None:
        return None
    version = client.get_model_version(name, current)
    tags = version.tags
    metrics: dict[str, float] = {}
    if version.run_id:
        try:
            metrics = dict(client.get_run(version.run_id).data.metrics)
        except MlflowException as exc:
            if not _is_missing(exc):
                raise
    return {
        "version": str(version.version),
        "t_pass": tags.get("t_pass"),
        "t_fail": tags.get("t_fail"),
        "recall_bound": tags.get("recall_bound"),
        "recall": tags.get("recall"),
        "precision": tags.get("precision"),
        "specificity": tags.get("specificity"),
        "data_hash": tags.get("data_hash"),
        "promoted_at": tags.get("promoted_at") or tags.get(TAG_APPROVED_AT),
        "approved_by": tags.get(TAG_APPROVED_BY),
        "run_id": version.run_id,
        "test_metrics": {k: v for k, v in metrics.items() if k.startswith(("patch_", "image_"))},
    }

