"""QA approval: the typed input a suspended retraining run waits for, and how a decision reaches it.

``approve`` / ``reject`` are the one code path used by ``steelqc approve``/``reject`` and the app's QA
page: when a Prefect run is suspended waiting for this version, the decision resumes it (the flow
then promotes after re-checking the champion); without one (ephemeral mode), the library promotes
directly after re-checking that the gate still holds.
"""

from __future__ import annotations

from uuid import UUID

from prefect.client.orchestration import get_client
from prefect.exceptions import ObjectNotFound
from prefect.flow_runs import resume_flow_run
from prefect.input import RunInput
from prefect.settings import PREFECT_API_URL

from steelqc import promotion
from steelqc.config import Settings


class ApprovalInput(RunInput):
    """What a QA lead answers to a pending promotion (shown as a form in the Prefect UI too)."""

    approve: bool
    reviewer: str
    comment: str = ""


def _resume(settings: Settings, item: promotion.PendingPromotion, decision: ApprovalInput) -> bool:
    """Resume the suspended run waiting for ``item``; False when the version has no waiting run.

    A version gated inside a deployment run can only be decided through that run: if it timed out or
    ended, the version is marked timed out (timeout = rejected) and nothing is promoted.
    """
    if not item.flow_run_id:
        return False
    if not PREFECT_API_URL.value():  # the env var or the active Prefect profile (`prefect config set`)
        raise promotion.PromotionError(
            f"v{item.version} waits in Prefect flow run {item.flow_run_id}: set PREFECT_API_URL to its server"
        )
    with get_client(sync_client=True) as client:
        try:
            state = client.read_flow_run(UUID(item.flow_run_id)).state
        except ObjectNotFound:
            state = None
    if state is not None and not state.is_paused() and not state.is_final():
        # Answered already (a second reviewer, the CLI and the app) or not suspended yet: change nothing.
        raise promotion.PromotionError(
            f"flow run {item.flow_run_id} of v{item.version} is {state.name}, not waiting for an answer: "
            "it was already answered or has not suspended yet"
        )
    if state is None or not state.is_paused():
        status = "timed_out" if state is not None and state.is_final() else "orphaned"
        promotion.reject(
            settings, item.version, reviewer="prefect", comment=f"waiting run is {state and state.name}", status=status
        )
        raise promotion.PromotionError(
            f"the run waiting for v{item.version} is {state.name if state else 'gone'}: marked {status}; "
            "re-run retraining"
        )
    resume_flow_run(UUID(item.flow_run_id), run_input=decision.model_dump())
    return True


def _decide(settings: Settings, version: str, decision: ApprovalInput) -> promotion.PendingPromotion | None:
    """Send ``decision`` to the run waiting for ``version``; None when no run waits (ephemeral mode)."""
    if not decision.reviewer.strip():
        raise promotion.PromotionError("a reviewer name is required")
    item = promotion.pending_version(settings, version)
    return item if _resume(settings, item, decision) else None


def approve(settings: Settings, version: str, *, reviewer: str, comment: str = "") -> str:
    """Approve ``version``; return a one-line account of what happened."""
    waiting = _decide(settings, version, ApprovalInput(approve=True, reviewer=reviewer, comment=comment))
    if waiting is not None:
        return f"approved v{version}: resumed flow run {waiting.flow_run_id}, which promotes it"
    record = promotion.approve_pending(settings, version, reviewer=reviewer, comment=comment)
    previous = f" (previous champion v{record.previous_version})" if record.previous_version else ""
    return f"approved v{version}: it is now the champion{previous}"


def reject(settings: Settings, version: str, *, reviewer: str, comment: str = "") -> str:
    """Reject ``version``; the champion does not move."""
    waiting = _decide(settings, version, ApprovalInput(approve=False, reviewer=reviewer, comment=comment))
    if waiting is not None:
        return f"rejected v{version}: resumed flow run {waiting.flow_run_id}, which records the rejection"
    promotion.reject(settings, version, reviewer=reviewer, comment=comment)
    return f"rejected v{version}: the champion is unchanged"
