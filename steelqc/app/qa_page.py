"""QA page: the QA lead compares each pending challenger with the champion and approves or rejects it.

Decisions go through ``flows.approval`` — the code path of ``steelqc approve`` / ``reject`` — so a
suspended retraining run is resumed exactly as from the command line (imported on use, like the CLI,
to keep Prefect out of the library's import graph).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import mlflow
import pandas as pd
import streamlit as st
from mlflow.tracking import MlflowClient

from steelqc import promotion
from steelqc.app.champion import render_model_card
from steelqc.config import Settings
from steelqc.gate import side_by_side
from steelqc.monitoring import latest_drift_check

#: Written by ``evaluation.evaluate`` and logged by ``tracking.log_evaluation`` when a test defect was missed.
FALSE_NEGATIVE_GALLERY = "evaluation/plots/false_negatives.png"
FLASH_KEY = "qa_flash"


def metrics_comparison(challenger: dict[str, float], champion: dict[str, float] | None) -> pd.DataFrame:
    """Both models' test metrics on the same split side by side (:func:`steelqc.gate.side_by_side`)."""
    return pd.DataFrame(side_by_side(challenger, champion), columns=["metric", "challenger", "champion", "difference"])


def confusion_on_split(rates: Mapping[str, float], split: Mapping[str, float], level: str) -> pd.DataFrame | None:
    """The 2×2 matrix at ``t_pass`` from recall and specificity on a test split of known size.

    The gate keeps only rates for the champion; both models were scored on the challenger's test split,
    whose counts (``<level>_n``, ``<level>_n_defective``) its run records, so the counts follow exactly.
    None when a number is missing.
    """
    keys = (f"{level}_recall", f"{level}_specificity")
    sizes = (f"{level}_n", f"{level}_n_defective")
    if not all(k in rates for k in keys) or not all(k in split for k in sizes):
        return None
    defective = int(round(float(split[sizes[1]])))
    clean = int(round(float(split[sizes[0]]))) - defective
    caught = int(round(float(rates[keys[0]]) * defective))
    passed_clean = int(round(float(rates[keys[1]]) * clean))
    return pd.DataFrame(
        {"flagged (HOLD/FAIL)": [caught, clean - passed_clean], "passed": [defective - caught, passed_clean]},
        index=["defective", "clean"],
    )


def false_negative_gallery(run_id: str, dst: Path) -> Path | None:
    """Download the run's gallery of missed defects into ``dst``; None when the run has none (nothing missed)."""
    folder = FALSE_NEGATIVE_GALLERY.rsplit("/", 1)[0]
    if FALSE_NEGATIVE_GALLERY not in {item.path for item in MlflowClient().list_artifacts(run_id, folder)}:
        return None
    return Path(
        mlflow.artifacts.download_artifacts(run_id=run_id, artifact_path=FALSE_NEGATIVE_GALLERY, dst_path=str(dst))
    )


@st.cache_data(show_spinner="Fetching the missed-defect gallery…", max_entries=16)
def _cached_gallery(tracking_uri: str, run_id: str, cache_dir: str) -> str | None:
    path = false_negative_gallery(run_id, Path(cache_dir) / run_id)
    return str(path) if path else None


def _render_confusion(title: str, rates: Mapping[str, float] | None, split: Mapping[str, float]) -> None:
    st.markdown(f"**{title}**")
    shown = False
    for level, plural in (("patch", "patches"), ("image", "images")):
        matrix = confusion_on_split(rates or {}, split, level)
        if matrix is not None:
            st.caption(f"{plural} of the test split at t_pass")
            st.table(matrix)
            shown = True
    if not shown:
        st.caption("confusion counts not recorded for this test split")


def mlflow_ui_url(settings: Settings) -> str:
    """Where the MLflow UI of this registry answers: ``app.mlflow_ui_url``, a tracking server itself, else the
    default address of ``mlflow ui`` (a SQLite or folder store has no UI until someone starts one)."""
    if settings.app.mlflow_ui_url:
        return settings.app.mlflow_ui_url.rstrip("/")
    uri = settings.mlflow_tracking_uri
    return uri.rstrip("/") if uri.startswith(("http://", "https://")) else "http://127.0.0.1:5000"


def mlflow_run_link(settings: Settings, experiment_id: str, run_id: str) -> str:
    return f"{mlflow_ui_url(settings)}/#/experiments/{experiment_id}/runs/{run_id}"


def flow_run_link(settings: Settings, flow_run_id: str) -> str | None:
    """The flow run in the Prefect UI (``app.prefect_ui_url``, else ``PREFECT_API_URL`` without ``/api``); None
    without a server (an ephemeral run has no UI)."""
    ui = settings.app.prefect_ui_url or os.environ.get("PREFECT_UI_URL") or os.environ.get("PREFECT_API_URL", "")
    ui = ui.rstrip("/").removesuffix("/api")
    return f"{ui}/runs/flow-run/{flow_run_id}" if ui else None


def render_drift_status(settings: Settings, version: str) -> None:
    """The champion's latest drift check (``steelqc monitor``): when, over which days, and what it found."""
    check = latest_drift_check(settings, version)
    if check is None:
        st.caption(f"Drift: v{version} was never checked against production; run `steelqc monitor`.")
        return
    link = f"[MLflow run]({mlflow_run_link(settings, check.experiment_id, check.run_id)})"
    when = f"checked {check.time} over {check.window} · {link}"
    if check.drift_detected:
        st.error(f"**Drift detected** on champion v{version}: {check.reasons}  \n{when}", icon=":material/warning:")
    else:
        st.success(f"**No drift** on champion v{version}  \n{when}", icon=":material/check_circle:")


def _decide(settings: Settings, version: str, approve: bool, reviewer: str, comment: str) -> None:
    """Run the CLI's approval code path; keep the outcome for the next run of the page."""
    from flows.approval import approve as approve_version
    from flows.approval import reject as reject_version

    action = approve_version if approve else reject_version
    try:
        st.session_state[FLASH_KEY] = ("success", action(settings, version, reviewer=reviewer, comment=comment))
    except promotion.PromotionError as exc:
        st.session_state[FLASH_KEY] = ("error", f"v{version}: {exc}")
    st.rerun()


def _render_pending(settings: Settings, item: promotion.PendingPromotion) -> None:
    gate: dict[str, Any] = item.gate
    with st.container(border=True):
        st.subheader(f"Challenger v{item.version}")
        against = f"champion v{item.champion_version}" if item.champion_version else "no champion"
        st.markdown(f"**Gate {'passed' if gate.get('passed') else 'failed'}** against {against}: "
                    f"{gate.get('reason', '—')}")  # fmt: skip
        run = MlflowClient().get_run(item.run_id) if item.run_id else None
        links = [f"registered {item.created_at}"]
        if run is not None:
            links.append(f"[MLflow run]({mlflow_run_link(settings, run.info.experiment_id, run.info.run_id)})")
        if item.flow_run_id:
            url = flow_run_link(settings, item.flow_run_id)
            links.append(f"[flow run]({url})" if url else f"flow run `{item.flow_run_id}`")
        st.markdown(" · ".join(links))
        st.caption("Test metrics of both models on this challenger's test split")
        st.dataframe(
            metrics_comparison(item.challenger_metrics, item.champion_metrics),
            hide_index=True,
            column_config={
                "challenger": st.column_config.NumberColumn(f"challenger v{item.version}", format="%.4f"),
                "champion": st.column_config.NumberColumn(against, format="%.4f"),
                "difference": st.column_config.NumberColumn("difference", format="%+.4f"),
            },
        )
        split = run.data.metrics if run is not None else {}
        challenger_col, champion_col = st.columns(2)
        with challenger_col:
            _render_confusion(f"Challenger v{item.version}", item.challenger_metrics, split)
        with champion_col:
            if item.champion_version:
                _render_confusion(f"Champion v{item.champion_version}", item.champion_metrics, split)
            else:
                st.markdown("**No champion yet**: the recall target alone decided the gate.")
        if item.run_id:
            count = int(split["patch_missed"]) if "patch_missed" in split else None
            missed = "" if count is None else f" ({count} patch{'' if count == 1 else 'es'})"
            with st.expander(f"Missed defects of the challenger on the test split{missed}"):
                gallery = _cached_gallery(
                    settings.mlflow_tracking_uri, item.run_id, str(settings.state_dir / "app-cache")
                )
                if gallery:
                    st.image(gallery, caption="false negatives at t_pass (lowest scores first)")
                else:
                    st.caption("no missed-defect gallery was logged with this run")
        with st.form(f"decide-{item.version}"):
            reviewer = st.text_input("Reviewer", key=f"reviewer-{item.version}")
            comment = st.text_area("Comment", key=f"comment-{item.version}")
            approve_col, reject_col = st.columns(2)
            approved = approve_col.form_submit_button(f"Approve v{item.version}", type="primary")
            rejected = reject_col.form_submit_button(f"Reject v{item.version}")
        if approved or rejected:
            if not reviewer.strip():
                st.error("Enter your name as reviewer before deciding.")
            else:
                _decide(settings, item.version, approved, reviewer.strip(), comment.strip())


def render_qa_page(settings: Settings) -> None:
    """Pending promotions beside the champion, the decision forms, and the history of decisions."""
    st.title("QA: promotions")
    flash = st.session_state.pop(FLASH_KEY, None)
    if flash is not None:
        kind, message = flash
        (st.success if kind == "success" else st.error)(message)
    pending_col, champion_col = st.columns([3, 1])
    with champion_col:
        card = promotion.champion_card(settings)
        if card is None:
            st.info("No champion yet: the first approved version becomes the champion.")
        else:
            render_model_card(card)
            render_drift_status(settings, card["version"])
    with pending_col:
        pending = promotion.list_pending(settings)
        if not pending:
            st.info("No promotions are waiting for approval.")
        for item in pending:
            _render_pending(settings, item)
    st.subheader("Past decisions")
    decisions = promotion.list_decisions(settings)
    if decisions.empty:
        st.caption("none yet")
    else:
        st.dataframe(decisions, hide_index=True)
