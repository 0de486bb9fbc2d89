"""The retraining flow: validate → patch index → train → thresholds → evaluate → register → gate →
QA approval → promote. Composition only; every step is a task in ``tasks/training.py``.

Run by a deployment (``prefect.yaml``: weekly), the flow suspends after a passing gate until a QA lead
answers (``steelqc approve/reject`` or the app), for at most ``gate.approval_timeout_hours``; the
resumed run reloads every persisted task result and goes straight to the promotion. Run without a
deployment (``steelqc pipeline``, Prefect's ephemeral mode) it ends with the version *pending approval*.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pandas as pd
from prefect import flow, get_run_logger, suspend_flow_run, unmapped

from flows.approval import ApprovalInput
from flows.context import current_flow_run
from steelqc.config import Settings, load_settings, resolve_profile
from tasks import data as data_tasks
from tasks import training as t


def validate_and_index(data_root: str, settings: Settings, work_dir: Path) -> tuple[dict[str, Any], pd.DataFrame]:
    """The data half of a retraining: GX validation, then the split patch index of the clean images.

    The fan-out work (image scan, patch labelling) is mapped over chunks of images: threads with the
    local runner, worker processes with ``--runner dask``.
    """
    scans = data_tasks.scan_chunk.map(
        unmapped(data_root), data_tasks.image_chunks(data_root, settings), unmapped(settings)
    )
    # Prefect resolves the futures before the task runs; Task.__call__'s types know only the resolved values.
    validation = data_tasks.validate_data(data_root, settings, work_dir, scans)  # type: ignore[arg-type]
    rows = data_tasks.index_chunk.map(
        unmapped(validation["manifest_path"]), unmapped(validation["data_hash"]), validation["clean_chunks"],
        unmapped(settings),
    )
    return validation, data_tasks.split_index(rows, settings, work_dir)


@flow(name="retrain", persist_result=True, log_prints=True)
def retrain(
    data: str | None = None,
    config: str | None = None,
    overrides: dict[str, Any] | None = None,
    auto_approve: bool = False,
) -> dict[str, Any]:
    """Retrain on ``data`` (folder or s3://; None = generated data) and propose the model for promotion.

    ``config`` None: the demo profile on generated data, else the built-in defaults (``resolve_profile``).
    """
    logger = get_run_logger()
    settings = load_settings(resolve_profile(config, generated_data=data is None), overrides)
    flow_run = current_flow_run()
    work_dir = settings.state_dir / "runs" / str(flow_run.id)

    data_root = data or data_tasks.generate_data(settings)
    validation, index = validate_and_index(data_root, settings, work_dir)
    run_id = t.start_run(settings, validation, index, work_dir, str(flow_run.id))
    training = t.train(validation["manifest_path"], index, settings, work_dir, run_id)
    thresholds = t.choose_thresholds(validation["manifest_path"], index, settings, training, run_id)
    evaluation = t.evaluate(validation["manifest_path"], index, settings, training, thresholds, work_dir)
    version = t.register(
        validation["manifest_path"], index, settings, training, thresholds, evaluation, validation["data_hash"], run_id
    )
    champion = t.score_champion(validation["manifest_path"], index, settings, work_dir)
    waits_for_qa = not auto_approve and flow_run.deployment_id is not None
    decision = t.run_gate(
        settings, version, evaluation, thresholds, champion, str(flow_run.id) if waits_for_qa else None
    )
    summary: dict[str, Any] = {
        "version": version,
        "run_id": run_id,
        "data_hash": validation["data_hash"],
        "metrics": evaluation.metrics,
        "thresholds": thresholds,
        "gate": decision,
        "champion_before": champion["version"],
        "work_dir": str(work_dir),
        "data_docs": validation["docs_index"],
        "data_root": data_root,
    }
    if not decision["passed"]:
        logger.warning("gate failed for v%s: %s (champion unchanged)", version, decision["reason"])
        return {**summary, "outcome": "gate failed"}
    if auto_approve:
        t.promote(settings, version, decision, "auto-approve", "promoted by --auto-approve")
        return {**summary, "outcome": "promoted"}
    if not waits_for_qa:
        logger.info("v%s passed the gate and waits for QA: steelqc approve %s --reviewer NAME", version, version)
        return {**summary, "outcome": "pending approval"}

    logger.info("v%s passed the gate; suspending until a QA lead approves or rejects it", version)
    answer = suspend_flow_run(
        wait_for_input=ApprovalInput,
        timeout=int(settings.gate.approval_timeout_hours * 3600),
        key=f"qa-approval-v{version}",
    )
    if answer.approve:
        t.promote(settings, version, decision, answer.reviewer, answer.comment)
        return {**summary, "outcome": "promoted", "reviewer": answer.reviewer}
    t.reject(settings, version, answer.reviewer, answer.comment)
    return {**summary, "outcome": "rejected", "reviewer": answer.reviewer}
