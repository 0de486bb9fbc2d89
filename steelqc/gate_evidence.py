"""The gate's evidence as a table people read: challenger beside champion on the same test split, with deltas.

The same rows feed the markdown and HTML artefacts logged on the challenger's run (``gate/evidence.md``,
``gate/evidence.html``) and any screen that shows the comparison; the JSON tag ``gate_evidence`` stays the
machine-readable record.
"""

from __future__ import annotations

from html import escape

from steelqc.gate import GateDecision, side_by_side

EVIDENCE_DIR = "gate"


def evidence_rows(decision: GateDecision) -> list[tuple[str, float | None, float | None, float | None]]:
    """``(metric, challenger, champion, challenger - champion)``: :func:`steelqc.gate.side_by_side` of the decision."""
    return [
        (row["metric"], row["challenger"], row["champion"], row["difference"])
        for row in side_by_side(decision.challenger, decision.champion)
    ]


def _number(value: float | None, signed: bool = False) -> str:
    if value is None:
        return "–"
    return f"{value:+.4f}" if signed else f"{value:.4f}"


def _headers(decision: GateDecision, version: str) -> tuple[str, str, str]:
    champion = f"champion v{decision.champion_version}" if decision.champion_version else "champion (none)"
    return f"challenger v{version}", champion, "difference"


def _verdict(decision: GateDecision) -> str:
    return f"{'PASSED' if decision.passed else 'FAILED'}: {decision.reason}"


def evidence_markdown(decision: GateDecision, version: str) -> str:
    """The verdict, the rule and the side-by-side table as markdown."""
    challenger, champion, difference = _headers(decision, version)
    lines = [
        f"# Gate for v{version}: {_verdict(decision)}",
        "",
        f"Rule: {decision.rule}",
        "",
        "Both models scored on the same test split (patches, and images by their worst patch) at their own t_pass.",
        "",
        f"| metric | {challenger} | {champion} | {difference} |",
        "|---|---:|---:|---:|",
    ]
    lines += [
        f"| {name} | {_number(mine)} | {_number(theirs)} | {_number(delta, signed=True)} |"
        for name, mine, theirs, delta in evidence_rows(decision)
    ]
    return "\n".join(lines) + "\n"


def evidence_html(decision: GateDecision, version: str) -> str:
    """The same as :func:`evidence_markdown`, as a small self-contained HTML page."""
    challenger, champion, difference = _headers(decision, version)
    colour = "#1b7f3b" if decision.passed else "#c62828"
    rows = "".join(
        f"<tr><th>{escape(name)}</th><td>{_number(mine)}</td><td>{_number(theirs)}</td>"
        f"<td>{_number(delta, signed=True)}</td></tr>"
        for name, mine, theirs, delta in evidence_rows(decision)
    )
    return (
        '<!DOCTYPE html><html lang="en"><head><meta charset="utf-8">'
        f"<title>Gate for v{escape(version)}</title><style>"
        "body{font-family:system-ui,sans-serif;margin:1.5em;color:#222}"
        "table{border-collapse:collapse}th,td{border:1px solid #ccc;padding:4px 10px}"
        "td{text-align:right;font-variant-numeric:tabular-nums}thead th{background:#f3f3f3}"
        "</style></head><body>"
        f'<h1>Gate for v{escape(version)}: <span style="color:{colour}">{escape(_verdict(decision))}</span></h1>'
        f"<p>Rule: {escape(decision.rule)}</p>"
        "<p>Both models scored on the same test split, at their own t_pass.</p>"
        f"<table><thead><tr><th>metric</th><th>{escape(challenger)}</th><th>{escape(champion)}</th>"
        f"<th>{escape(difference)}</th></tr></thead><tbody>{rows}</tbody></table></body></html>\n"
    )
