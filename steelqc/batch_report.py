"""The one-page HTML report of a batch inspection: counts per decision, the worst images, the model card.

Written beside ``decisions.csv`` so whoever opens the output folder sees at a glance what was decided and by
which model; overlay images are linked relatively (``overlays/…``), so the folder can be moved or zipped whole.
Plain HTML with inline styles: it opens offline, in any browser.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from html import escape
from pathlib import Path

import pandas as pd

REPORT_FILE = "report.html"
#: How many of the highest-scoring images the report shows with their overlays.
WORST_SHOWN = 8
DECISION_COLOURS = {"PASS": "#1b7f3b", "HOLD": "#b76e00", "FAIL": "#c62828", "ERROR": "#555555"}
#: Version tags shown on the model card, in this order, when the version has them.
CARD_TAGS = (
    "recall", "recall_bound", "precision", "specificity", "image_recall", "image_precision", "image_specificity",
    "gate_decision", "approved_by", "approved_at", "data_hash", "git_commit",
)  # fmt: skip
_STYLE = """
body { font-family: system-ui, sans-serif; margin: 2em; color: #222; max-width: 1200px; }
h1 { font-size: 1.5em; } h2 { font-size: 1.15em; margin-top: 1.6em; }
table { border-collapse: collapse; margin: 0.5em 0; } td, th { border: 1px solid #ccc; padding: 4px 10px; }
th { background: #f3f3f3; text-align: left; } td.num { text-align: right; font-variant-numeric: tabular-nums; }
.badge { color: white; font-weight: bold; padding: 2px 10px; border-radius: 4px; }
.worst { margin: 1em 0; } .worst img { max-width: 100%; border: 1px solid #999; }
.note { color: #555; font-size: 0.9em; }
"""


def _badge(decision: str) -> str:
    colour = DECISION_COLOURS.get(decision, "#555555")
    return f'<span class="badge" style="background:{colour}">{escape(decision)}</span>'


def _table(rows: list[tuple[str, str]], header: tuple[str, str] | None = None) -> str:
    head = f"<tr><th>{escape(header[0])}</th><th>{escape(header[1])}</th></tr>" if header else ""
    body = "".join(f"<tr><th>{escape(k)}</th><td>{v}</td></tr>" for k, v in rows)
    return f"<table>{head}{body}</table>"


def _counts(counts: Mapping[str, int]) -> str:
    total = max(sum(counts.values()), 1)
    rows = []
    for decision in DECISION_COLOURS:
        n = int(counts.get(decision, 0))
        rows.append(f"<tr><td>{_badge(decision)}</td><td class='num'>{n}</td><td class='num'>{n / total:.0%}</td></tr>")
    return f"<table><tr><th>decision</th><th>images</th><th>share</th></tr>{''.join(rows)}</table>"


def _first(decisions: pd.DataFrame, column: str) -> str:
    if column not in decisions or decisions.empty:
        return ""
    value = decisions[column].iloc[0]
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return ""
    return f"{value:.6f}" if isinstance(value, float) else str(value)


def _model_card(decisions: pd.DataFrame, card: Mapping[str, str]) -> str:
    version = _first(decisions, "model_version")
    t_pass, t_fail = _first(decisions, "t_pass"), _first(decisions, "t_fail")
    rows = [
        ("model", escape(_first(decisions, "model_uri") or "not named by the caller")),
        ("version", escape(f"v{version}" if version else "-")),
        ("runtime / mode", escape(f"{_first(decisions, 'runtime') or '-'} / {_first(decisions, 'mode')}")),
        ("t_pass / t_fail", escape(f"{t_pass} / {t_fail}")),
        ("decided at (UTC)", escape(_first(decisions, "decided_at"))),
    ]
    rows += [(name, escape(str(card[name]))) for name in CARD_TAGS if name in card]
    note = ""
    if t_pass and t_pass == t_fail:
        note = "<p class='note'>t_pass equals t_fail: this model has no HOLD band, every image is PASS or FAIL.</p>"
    return _table(rows) + note


def _worst(decisions: pd.DataFrame, overlays: Mapping[str, Path], out_dir: Path) -> str:
    scored = decisions[decisions["decision"] != "ERROR"].sort_values("worst_score", ascending=False)
    if scored.empty:
        return "<p>No image was scored.</p>"
    blocks = []
    for row in scored.head(WORST_SHOWN).itertuples(index=False):
        where = f"worst patch at y={row.worst_patch_y}, x={row.worst_patch_x}"
        overlay = overlays.get(str(row.image))
        picture = (
            f'<img src="{escape(overlay.relative_to(out_dir).as_posix())}" alt="overlay of {escape(str(row.image))}">'
            if overlay is not None
            else "<p class='note'>no overlay: overlays are drawn for HOLD and FAIL images</p>"
        )
        blocks.append(
            f"<div class='worst'><p>{_badge(str(row.decision))} <b>{escape(str(row.image))}</b> "
            f"score {float(row.worst_score):.4f}, {where}</p>{picture}</div>"
        )
    return "".join(blocks)


def _errors(decisions: pd.DataFrame, total: int) -> str:
    errors = decisions[decisions["decision"] == "ERROR"]
    if errors.empty:
        return "<p>None.</p>"
    rows = "".join(
        f"<tr><td>{escape(str(r.image))}</td><td>{escape(str(r.error))}</td></tr>" for r in errors.itertuples()
    )
    more = f"<p class='note'>and {total - len(errors)} more in decisions.csv</p>" if total > len(errors) else ""
    return f"<table><tr><th>image</th><th>reason</th></tr>{rows}</table>{more}"


def write_batch_report(
    shown: pd.DataFrame,
    counts: Mapping[str, int],
    overlays: Mapping[str, Path],
    out_dir: Path,
    card: Mapping[str, str] | None = None,
) -> Path:
    """Write ``out_dir/report.html`` for a batch whose images per decision are ``counts``.

    ``shown`` holds the rows the page lists (provenance columns included): the highest-scoring images and
    ERROR rows, not the whole batch, so a batch of any length makes the same small page. ``overlays`` maps
    image names to their overlay files inside ``out_dir``; ``card`` holds the registered version's tags (test
    metrics, gate verdict, lineage) shown on the model card.
    """
    total = sum(counts.values())
    html = f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>steelqc batch inspection: {total} images</title>
<style>{_STYLE}</style></head><body>
<h1>Batch inspection: {total} images</h1>
<p class="note">Decisions in <a href="decisions.csv">decisions.csv</a> and <a href="decisions.json">decisions.json</a>;
an image's decision is its worst patch's (PASS below t_pass, FAIL from t_fail, HOLD between).</p>
<h2>Decisions</h2>{_counts(counts)}
<h2>Model card</h2>{_model_card(shown, card or {})}
<h2>Worst images (highest score first, at most {WORST_SHOWN})</h2>{_worst(shown, overlays, out_dir)}
<h2>Images that could not be inspected</h2>{_errors(shown, int(counts.get("ERROR", 0)))}
</body></html>
"""
    path = out_dir / REPORT_FILE
    path.write_text(html, encoding="utf-8")
    return path
