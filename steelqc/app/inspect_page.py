"""Inspect page: an operator picks or uploads a strip and sees the champion's decision and where it looks."""

from __future__ import annotations

import numpy as np
import streamlit as st

from steelqc.app.champion import (
    REGISTRY_ERRORS,
    cached_inspector,
    champion_card_or_message,
    champion_model_uri,
    first_line,
    render_model_card,
)
from steelqc.app.images import DECISION_COLORS, demo_images, overlay_heatmap, patch_heatmap, patch_table, read_strip
from steelqc.config import Settings
from steelqc.data.errors import DataError
from steelqc.inference import ImageResult, Inspector

DEMO, UPLOAD = "Demo image", "Upload"


def _chosen_file(settings: Settings) -> tuple[str, bytes] | None:
    """(name, bytes) of the image the operator chose, or None when nothing is chosen yet."""
    source = st.radio("Image source", [DEMO, UPLOAD], horizontal=True)
    if source == UPLOAD:
        uploaded = st.file_uploader(
            "Strip image (JPEG or PNG, checked by content)",
            type=["jpg", "jpeg", "png"],
            max_upload_size=settings.app.max_upload_mb,
        )
        return (uploaded.name, uploaded.getvalue()) if uploaded is not None else None
    choices = demo_images()
    if not choices:
        st.info("No demo images found; upload one instead.")
        return None
    label = st.selectbox("Demo image", list(choices))
    return (label, choices[label].read_bytes()) if label else None


def render_result(name: str, pixels: np.ndarray, result: ImageResult, inspector: Inspector) -> None:
    """Decision badge, worst score against both thresholds, heatmap over the whole strip, patch table."""
    thresholds = inspector.thresholds
    st.markdown(f"### :{DECISION_COLORS[result.decision]}-badge[{result.decision}]")
    y, x = result.worst_patch
    score_col, rule_col = st.columns([1, 3])
    score_col.metric("Worst patch score", f"{result.worst_score:.3f}")
    fail_rule = (
        f"FAIL at or above **t_fail = {thresholds.t_fail:.3f}**"
        if thresholds.t_fail <= 1.0
        else "no automatic FAIL (no threshold reached the precision target)"
    )
    rule_col.markdown(
        f"PASS below **t_pass = {thresholds.t_pass:.3f}** · {fail_rule} · "
        f"HOLD otherwise (a person looks).  \nWorst patch at y={y}, x={x} "
        f"({inspector.patch_size}×{inspector.patch_size} px, framed in white).  \n"
        f"Scored by {inspector.runtime} in {inspector.mode} mode."
    )
    heat = patch_heatmap(pixels.shape, result.positions, result.patch_scores, inspector.patch_size)
    st.image(
        overlay_heatmap(pixels, heat, result.worst_patch, inspector.patch_size),
        caption=f"{name}: patch scores over the strip (blue 0 → red 1)",
        width="stretch",
    )
    st.dataframe(
        patch_table(result.positions, result.patch_scores, result.patch_decisions),
        hide_index=True,
        column_config={"score": st.column_config.ProgressColumn("score", min_value=0.0, max_value=1.0, format="%.3f")},
    )


def render_inspect_page(settings: Settings) -> None:
    """Model card beside the inspection; every failure is a message on the page."""
    st.title("Inspect a strip")
    card = champion_card_or_message(settings)
    if card is None:
        return
    main, side = st.columns([3, 1])
    with side:
        render_model_card(card)
    with main:
        try:
            inspector, _metadata = cached_inspector(settings.mlflow_tracking_uri, champion_model_uri(settings, card))
        except REGISTRY_ERRORS as exc:
            st.error(f"Could not load champion v{card['version']}: {first_line(exc)}")
            return
        chosen = _chosen_file(settings)
        if chosen is None:
            st.info("Choose a demo image or upload a JPEG/PNG strip to inspect it.")
            return
        name, data = chosen
        try:
            pixels = read_strip(
                data, name=name, max_mb=settings.app.max_upload_mb,
                min_height=inspector.patch_size, min_width=inspector.patch_size,
                max_pixels=settings.data.max_image_pixels,
            )
        except DataError as exc:
            st.error(f"Cannot inspect this file: {exc}")
            return
        with st.spinner("Scoring patches…"):
            result = inspector.inspect([pixels])[0]
        render_result(name, pixels, result, inspector)
