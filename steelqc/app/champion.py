"""The champion as both pages see it: the model card and one cached Inspector per version.

Registry failures become a message on the page, never a traceback: the operator needs to know whom to
call, not where in MLflow the connection broke (``main`` checks a tracking server is up before any page).
"""

from __future__ import annotations

from typing import Any

import pandas as pd
import streamlit as st
from mlflow.exceptions import MlflowException

from steelqc import promotion
from steelqc.config import Settings
from steelqc.inference import Inspector
from steelqc.monitoring import MonitoringDataError, model_reference
from steelqc.pyfunc import ModelMetadata, load_inspector
from steelqc.runtimes import AUTO

#: What MLflow raises when its store cannot be reached (HTTP errors are wrapped; sockets and files are OSError).
REGISTRY_ERRORS = (MlflowException, OSError)


def first_line(exc: BaseException) -> str:
    """The useful part of an error: MLflow's connection errors carry pages of retry detail after it."""
    text = str(exc).strip() or type(exc).__name__
    return text.splitlines()[0][:300]


def champion_model_uri(settings: Settings, card: dict[str, Any]) -> str:
    """The pinned version, not the alias: the cache then reloads exactly when the champion moves."""
    return f"models:/{settings.tracking.registered_model}/{card['version']}"


@st.cache_resource(show_spinner="Loading the champion model…", max_entries=2)
def cached_inspector(tracking_uri: str, model_uri: str) -> tuple[Inspector, ModelMetadata]:
    """One loaded model per registry and version for the whole server, shared by every session; it scores
    with the pyfunc's own choice (``auto``: an export that passed its parity check, else Keras) in its mode."""
    return load_inspector(model_uri, runtime=AUTO)


@st.cache_resource(show_spinner="Loading the champion's reference set…", max_entries=2)
def cached_reference(tracking_uri: str, run_id: str) -> pd.DataFrame | None:
    """The champion's reference patches (logged with its run), or None when it was registered without them."""
    try:
        return model_reference(run_id)[0]
    except MonitoringDataError:
        return None


def _fmt(value: Any, digits: int = 4) -> str:
    if value is None or value == "":
        return "—"
    try:
        return f"{float(value):.{digits}f}"
    except (TypeError, ValueError):
        return str(value)


def render_model_card(card: dict[str, Any]) -> None:
    """The champion's identity and evidence: what an operator may quote when a decision is questioned."""
    st.subheader(f"Champion v{card['version']}")
    st.markdown(
        "\n".join(
            [
                f"- **t_pass** {_fmt(card.get('t_pass'))} · **t_fail** {_fmt(card.get('t_fail'))}",
                f"- **recall bound** {_fmt(card.get('recall_bound'))} (lower confidence bound on validation recall)",
                f"- **test recall** {_fmt(card.get('recall'))} · **precision** {_fmt(card.get('precision'))}"
                f" · **specificity** {_fmt(card.get('specificity'))}",
                f"- **training data hash** `{card.get('data_hash') or '—'}`",
                f"- **promoted** {card.get('promoted_at') or '—'} by **{card.get('approved_by') or '—'}**",
            ]
        )
    )
    metrics = card.get("test_metrics") or {}
    if metrics:
        st.caption("Test metrics of the training run")
        st.dataframe(
            {"metric": list(metrics), "value": [round(float(v), 4) for v in metrics.values()]},
            hide_index=True,
        )


def champion_card_or_message(settings: Settings) -> dict[str, Any] | None:
    """The champion card, or None after saying on the page that there is no champion yet."""
    card = promotion.champion_card(settings)
    if card is None:
        st.info(
            "No champion model yet: run the pipeline (`steelqc pipeline`), then approve a version on the QA page "
            "or with `steelqc approve`."
        )
    return card
