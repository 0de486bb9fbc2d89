"""Inspect page: an operator picks, uploads or points at strips and sees the champion's decision and where it looks.

The decision is the largest thing on the page, in its colour, with its reason; an image unlike the
champion's training data gets a warning beside it. Several images give a summary table and a CSV.
"""

from __future__ import annotations

import html
from dataclasses import dataclass

import numpy as np
import pandas as pd
import streamlit as st

from steelqc.app.champion import (
    REGISTRY_ERRORS,
    cached_inspector,
    cached_reference,
    champion_card_or_message,
    champion_model_uri,
    first_line,
    render_model_card,
)
from steelqc.app.images import (
    DECISION_COLORS,
    demo_images,
    heatmap_figure,
    patch_bars_figure,
    patch_heatmap,
    patch_table,
    read_strip,
)
from steelqc.batch_inspection import list_images
from steelqc.config import Settings
from steelqc.data.errors import DataError
from steelqc.inference import ImageResult, Inspector
from steelqc.monitoring import ImageDrift, image_drift
from steelqc.patches import extract_patches
from steelqc.thresholds import decision_reason, hold_band_note

DEMO, UPLOAD, FOLDER = "Demo image", "Upload", "Folder"
ERROR = "ERROR"
SUMMARY_COLUMNS = ["image", "decision", "reason", "worst_score", "worst_patch_y", "worst_patch_x", "unlike_training",
                   "error"]  # fmt: skip


@dataclass(frozen=True)
class Inspected:
    """One file as the page shows it: its decision and evidence, or why it could not be inspected."""

    name: str
    pixels: np.ndarray | None = None
    result: ImageResult | None = None
    drift: ImageDrift | None = None
    error: str | None = None


def _chosen_files(settings: Settings) -> list[tuple[str, bytes]]:
    """(name, bytes) of every image the operator chose; empty while nothing is chosen."""
    source = st.radio("Image source", [DEMO, UPLOAD, FOLDER], horizontal=True)
    if source == UPLOAD:
        uploaded = st.file_uploader(
            "Strip images (JPEG or PNG, checked by content; several at once give a summary table)",
            type=["jpg", "jpeg", "png"],
            accept_multiple_files=True,
            max_upload_size=settings.app.max_upload_mb,
        )
        return [(item.name, item.getvalue()) for item in uploaded or []]
    if source == FOLDER:
        return _folder_files(settings)
    choices = demo_images()
    if not choices:
        st.info("No demo images found; upload one instead.")
        return []
    label = st.selectbox("Demo image", list(choices))
    return [(label, choices[label].read_bytes())] if label else []


def _folder_files(settings: Settings) -> list[tuple[str, bytes]]:
    """The files of a folder (or ``s3://`` prefix) the app's server can read, at most ``app.max_batch_images``."""
    folder = st.text_input("Folder or s3:// prefix on the app's machine", placeholder="/data/coil-1234")
    if not folder.strip():
        return []
    try:
        storage, names = list_images(folder.strip(), settings.data.s3_endpoint_url)
    except (DataError, OSError) as exc:
        st.error(f"Cannot list {folder.strip()}: {exc}")
        return []
    limit = settings.app.max_batch_images
    if len(names) > limit:
        st.warning(f"{len(names)} files in {folder.strip()}: showing the first {limit} (app.max_batch_images); "
                   "`steelqc inspect` decides a whole folder.")  # fmt: skip
        names = names[:limit]
    files = []
    for name in names:
        try:
            files.append((name, storage.read_bytes(name)))
        except (DataError, OSError) as exc:
            st.error(f"Cannot read {name}: {exc}")
    return files


def inspect_files(
    files: list[tuple[str, bytes]], inspector: Inspector, settings: Settings, reference: pd.DataFrame | None
) -> list[Inspected]:
    """Decode and check every file, decide on the good ones in shared model batches, compare each with the reference."""
    loaded: list[Inspected] = []
    for name, data in files:
        try:
            pixels = read_strip(
                data, name=name, max_mb=settings.app.max_upload_mb,
                min_height=inspector.patch_size, min_width=inspector.patch_size,
                max_pixels=settings.data.max_image_pixels,
            )  # fmt: skip
        except DataError as exc:
            loaded.append(Inspected(name, error=str(exc)))
        else:
            loaded.append(Inspected(name, pixels=pixels))
    good = [item for item in loaded if item.pixels is not None]
    results = iter(inspector.inspect([item.pixels for item in good if item.pixels is not None]))
    inspected = []
    for item in loaded:
        if item.pixels is None:
            inspected.append(item)
            continue
        drift = None
        if reference is not None:
            patches, _ = extract_patches(item.pixels, inspector.patch_size, inspector.stride, inspector.pad_mode)
            drift = image_drift(patches, reference, settings.monitoring)
        inspected.append(Inspected(item.name, item.pixels, next(results), drift))
    return inspected


def reason_of(result: ImageResult, inspector: Inspector) -> str:
    """The decision's reason: the result's own when it carries one (e.g. a novel pattern), else the thresholds'."""
    own = getattr(result, "reason", None)
    return str(own) if own else decision_reason(result.worst_score, inspector.thresholds)


def summary_table(inspected: list[Inspected], inspector: Inspector) -> pd.DataFrame:
    """One row per file, as ``decisions.csv`` of ``steelqc inspect``, plus the reason and the training-data check."""
    rows: list[dict[str, object]] = []
    for item in inspected:
        if item.result is None:
            rows.append({"image": item.name, "decision": ERROR, "reason": "not inspected", "error": item.error})
            continue
        result = item.result
        rows.append({
            "image": item.name, "decision": result.decision, "reason": reason_of(result, inspector),
            "worst_score": round(result.worst_score, 4), "worst_patch_y": result.worst_patch[0],
            "worst_patch_x": result.worst_patch[1],
            "unlike_training": item.drift.message() if item.drift and item.drift.unlike_training else "",
            "error": "",
        })  # fmt: skip
    return pd.DataFrame(rows, columns=SUMMARY_COLUMNS)


def render_banner(decision: str, reason: str) -> None:
    """The decision as the largest text on the page, white on its colour, its reason under it."""
    st.markdown(
        f'<div class="steelqc-decision" data-decision="{decision}" style="background:{DECISION_COLORS[decision]};'
        'color:white;border-radius:0.75rem;padding:0.5rem 1.5rem 0.9rem">'
        f'<div style="font-size:5rem;font-weight:800;line-height:1.15">{decision}</div>'
        f'<div style="font-size:1.25rem">{html.escape(reason)}</div></div>',
        unsafe_allow_html=True,
    )


def render_training_check(drift: ImageDrift | None, version: str) -> None:
    """Beside the decision: a warning when the image is unlike the champion's training data."""
    if drift is None:
        st.caption(f"Champion v{version} has no reference set: cannot tell if this image is like its training data.")
    elif drift.unlike_training:
        st.warning(
            f"**Image unlike the training data** of champion v{version}: the decision may not be reliable; have a "
            f"person check it.  \n{drift.message().removeprefix('unlike the training data: ')}",
            icon=":material/warning:",
        )
    else:
        st.success(f"Like the training data of champion v{version} ({drift.n_patches} patches checked).",
                   icon=":material/check_circle:")  # fmt: skip


def render_result(item: Inspected, inspector: Inspector, version: str) -> None:
    """Decision banner and training-data check, the thresholds, the heatmap with its colour bar, the patch bars."""
    result, pixels = item.result, item.pixels
    assert result is not None and pixels is not None
    thresholds = inspector.thresholds
    banner_col, check_col = st.columns([3, 2], vertical_alignment="center")
    with banner_col:
        render_banner(result.decision, reason_of(result, inspector))
    with check_col:
        render_training_check(item.drift, version)
    _novelty_note(result, inspector)
    y, x = result.worst_patch
    score_col, rule_col = st.columns([1, 3])
    score_col.metric("Worst patch score", f"{result.worst_score:.3f}")
    score_col.caption(f"at y={y}, x={x} ({inspector.patch_size} px); {inspector.runtime}, {inspector.mode} mode")
    note = hold_band_note(thresholds)
    (rule_col.info if thresholds.t_fail <= thresholds.t_pass else rule_col.markdown)(note)
    heat = patch_heatmap(pixels.shape, result.positions, result.patch_scores, inspector.patch_size)
    st.image(
        heatmap_figure(pixels, heat, result.worst_patch, inspector.patch_size, thresholds, result.decision),
        caption=f"{item.name}: patch scores over the strip; the worst patch is framed in the decision's colour",
        width="stretch",
    )
    st.image(
        patch_bars_figure(result.patch_scores, result.patch_decisions, thresholds),
        caption="score of each patch, coloured by the decision it alone would get", width="stretch",
    )
    with st.expander(f"Patch table ({len(result.positions)} patches of {inspector.patch_size} px)"):
        table = patch_table(result.positions, result.patch_scores, result.patch_decisions)
        if result.patch_novelty is not None and result.novel is not None:  # the novelty guard's evidence
            table["novelty"], table["novel"] = result.patch_novelty, result.novel
        st.dataframe(table, hide_index=True)


def render_batch(inspected: list[Inspected], inspector: Inspector, version: str) -> None:
    """Counts per decision, the summary table, its CSV, and the detail of one image (the worst by default)."""
    table = summary_table(inspected, inspector)
    counts = table["decision"].value_counts()
    st.subheader(" · ".join(f"{counts.get(d, 0)} {d}" for d in ("PASS", "HOLD", "FAIL", ERROR) if counts.get(d, 0)))
    st.dataframe(table, hide_index=True, column_config={"worst_score": st.column_config.NumberColumn(format="%.3f")})
    st.download_button("Download the table (CSV)", table.to_csv(index=False).encode(), file_name="decisions.csv",
                       mime="text/csv", icon=":material/download:")  # fmt: skip
    decided = [item for item in inspected if item.result is not None]
    if not decided:
        return
    decided.sort(key=lambda item: -item.result.worst_score if item.result else 0.0)
    name = st.selectbox("Show image", [item.name for item in decided])
    render_result(next(item for item in decided if item.name == name), inspector, version)


def _novelty_note(result: ImageResult, inspector: Inspector) -> None:
    """The novelty guard's evidence beside the classifier's score, when the model carries a guard and it fired."""
    if inspector.novelty is None or result.patch_novelty is None or result.novel is None or not result.novel.any():
        return
    y, x = result.positions[int(np.argmax(result.patch_novelty))]
    st.warning(
        f"**Novel pattern** at y={y}, x={x}: unlike every clean training patch (novelty "
        f"{float(np.max(result.patch_novelty)):.3f} > {inspector.novelty.threshold:.3f}), so at least HOLD whatever "
        f"the classifier says (worst score {result.worst_score:.3f}); novel patches are marked in the patch table.",
        icon=":material/help:",
    )


def render_inspect_page(settings: Settings) -> None:
    """Model card beside the inspection; every failure is a message on the page."""
    st.title("Inspect strips")
    card = champion_card_or_message(settings)
    if card is None:
        return
    main, side = st.columns([3, 1])
    with side:
        render_model_card(card)
    with main:
        try:
            inspector, _metadata = cached_inspector(settings.mlflow_tracking_uri, champion_model_uri(settings, card))
            reference = cached_reference(settings.mlflow_tracking_uri, card["run_id"]) if card["run_id"] else None
        except REGISTRY_ERRORS as exc:
            st.error(f"Could not load champion v{card['version']}: {first_line(exc)}")
            return
        files = _chosen_files(settings)
        if not files:
            st.info("Choose a demo image, upload JPEG/PNG strips or name a folder to inspect.")
            return
        with st.spinner(f"Scoring the patches of {len(files)} image{'s' if len(files) > 1 else ''}…"):
            inspected = inspect_files(files, inspector, settings, reference)
        for item in inspected:
            if item.error is not None:
                st.error(f"Cannot inspect this file: {item.error}")
        if len(inspected) > 1:
            render_batch(inspected, inspector, card["version"])
        elif inspected[0].result is not None:
            render_result(inspected[0], inspector, card["version"])
