"""``steelqc approve / reject / rollback / promotions``: the QA lead's side of the champion gate."""

from __future__ import annotations

import json
from dataclasses import asdict
from datetime import UTC, datetime
from typing import TYPE_CHECKING

import typer
from rich import box
from rich.table import Table

from steelqc.cli._app import (
    PROMOTION,
    ConfigOption,
    JsonOption,
    SetOption,
    app,
    registry_settings,
    run_guarded,
    stdout_console,
)
from steelqc.config import Settings
from steelqc.gate import side_by_side

if TYPE_CHECKING:  # the CLI imports MLflow (through promotion) only when a command runs
    import pandas as pd

    from steelqc import promotion

ReviewerOption = typer.Option(..., "--reviewer", "-r", help="Who decides (recorded on the model version)")
CommentOption = typer.Option("", "--comment", "-m", help="Why")


def _decide(
    approve_it: bool, version: str, reviewer: str, comment: str, config: str | None, sets: list[str] | None
) -> None:
    from flows.approval import approve as approve_version
    from flows.approval import reject as reject_version

    settings = registry_settings(config, sets)
    decide = approve_version if approve_it else reject_version
    typer.echo(run_guarded(decide, settings, version, reviewer=reviewer, comment=comment))


@app.command(rich_help_panel=PROMOTION)
def approve(
    version: str = typer.Argument(..., help="Registered model version waiting for approval"),
    reviewer: str = ReviewerOption,
    comment: str = CommentOption,
    config: str = ConfigOption,
    sets: list[str] = SetOption,
) -> None:
    """Approve a pending challenger: resumes its waiting run, or promotes it after re-checking the gate."""
    _decide(True, version, reviewer, comment, config, sets)


@app.command(rich_help_panel=PROMOTION)
def reject(
    version: str = typer.Argument(..., help="Registered model version waiting for approval"),
    reviewer: str = ReviewerOption,
    comment: str = CommentOption,
    config: str = ConfigOption,
    sets: list[str] = SetOption,
) -> None:
    """Reject a pending challenger; the champion does not move."""
    _decide(False, version, reviewer, comment, config, sets)


@app.command(rich_help_panel=PROMOTION)
def rollback(
    reviewer: str = ReviewerOption,
    comment: str = CommentOption,
    config: str = ConfigOption,
    sets: list[str] = SetOption,
) -> None:
    """Swap the champion back to the previous champion (recorded like a promotion)."""
    from steelqc import promotion

    settings = registry_settings(config, sets)
    record = run_guarded(promotion.rollback, settings, reviewer=reviewer, comment=comment)
    typer.echo(f"champion is v{record.version} again (was v{record.previous_version})")


def _with_delta(value: float | None, champion: float | None) -> str:
    if value is None:
        return "-"
    return f"{value:.3f}" + (f" ({value - champion:+.3f})" if champion is not None else "")


def _since(iso_time: str, now: datetime) -> str:
    """``2026-12-05 21:03 (3 h)``: when, and how long ago, in the compact form an 80-column table needs."""
    when = datetime.fromisoformat(iso_time)
    hours = (now - when).total_seconds() / 3600
    age = f"{hours:.0f} h" if hours < 48 else f"{hours / 24:.0f} d"
    return f"{when:%Y-%m-%d %H:%M} ({age})"


def _clip(text: object, width: int) -> str:
    text = str(text)
    return text if len(text) <= width else text[: width - 1] + "…"


def _pending_table(pending: list[promotion.PendingPromotion]) -> Table:
    table = Table(title="Pending approval (details: steelqc promotions --version N)", box=box.SIMPLE_HEAD,
                  title_justify="left", pad_edge=False)  # fmt: skip
    for column in ("version", "recall\n(vs champion)", "specificity\n(vs champion)", "gate", "waiting since\n(UTC)"):
        table.add_column(column)
    now = datetime.now(UTC)
    for item in pending:
        mine, theirs = item.challenger_metrics, item.champion_metrics or {}
        table.add_row(
            f"v{item.version}",
            _with_delta(mine.get("patch_recall"), theirs.get("patch_recall")),
            _with_delta(mine.get("patch_specificity"), theirs.get("patch_specificity")),
            "passed" if item.gate.get("passed") else "failed",
            _since(item.created_at, now),
        )
    return table


def _decisions_table(decisions: pd.DataFrame) -> Table:
    table = Table(title="Decisions (newest first)", box=box.SIMPLE_HEAD, title_justify="left", pad_edge=False)
    for column in ("time (UTC)", "action", "version", "by", "outcome"):
        table.add_column(column)
    for row in decisions.itertuples(index=False):
        table.add_row(str(row.time)[:16].replace("T", " "), row.action, f"v{row.version}", _clip(row.reviewer, 10),
                      _clip(row.outcome, 26))  # fmt: skip
    return table


def _version_details(settings: Settings, version: str, as_json: bool) -> None:
    from steelqc import promotion

    review, tags = run_guarded(promotion.version_review, settings, version)
    rows = side_by_side(review.challenger_metrics, review.champion_metrics)
    details = {
        "version": review.version, "gate": review.gate.get("passed"), "gate_reason": review.gate.get("reason", ""),
        "gate_rule": review.gate.get("rule", ""), "approval_status": tags.get(promotion.TAG_APPROVAL, "untagged"),
        "registered": review.created_at, "champion_compared": review.champion_version, "run_id": review.run_id,
        "flow_run_id": review.flow_run_id, "reviewer": tags.get(promotion.TAG_APPROVED_BY),
        "comment": tags.get(promotion.TAG_COMMENT), "evidence": rows,
    }  # fmt: skip
    if as_json:
        typer.echo(json.dumps(details))
        return
    out = stdout_console()
    gate = {True: "passed", False: "failed"}.get(details["gate"], "not run")
    out.print(f"v{review.version}: gate {gate}, approval {details['approval_status']}, registered {review.created_at}")
    out.print(f"gate: {details['gate_reason'] or '-'}")
    if details["gate_rule"]:
        out.print(f"rule: {details['gate_rule']}")
    against = f"champion v{review.champion_version}" if review.champion_version else "champion (none then)"
    table = Table(box=box.SIMPLE_HEAD, pad_edge=False)
    for column in ("metric", f"challenger v{review.version}", against, "difference"):
        table.add_column(column, justify="left" if column == "metric" else "right")
    for row in rows:
        table.add_row(
            row["metric"], f"{row['challenger']:.4f}", "-" if row["champion"] is None else f"{row['champion']:.4f}",
            "-" if row["difference"] is None else f"{row['difference']:+.4f}",
        )  # fmt: skip
    out.print(table)
    out.print(f"MLflow run: {review.run_id or '-'}")
    out.print(f"flow run:   {review.flow_run_id or '-'}")
    if details["reviewer"]:
        out.print(f"decided by {details['reviewer']}: {details['comment'] or '(no comment)'}")


@app.command(rich_help_panel=PROMOTION)
def promotions(
    version: str | None = typer.Option(None, "--version", "-v", help="Show one version's gate evidence in full"),
    limit: int = typer.Option(10, "--limit", "-n", min=1, help="How many past decisions to list"),
    as_json: bool = JsonOption,
    config: str = ConfigOption,
    sets: list[str] = SetOption,
) -> None:
    """The champion, the challengers waiting for approval (vs the champion) and the latest decisions."""
    from steelqc import promotion

    settings = registry_settings(config, sets)
    if version is not None:
        _version_details(settings, version, as_json)
        return
    champion = promotion.champion_version(settings)
    pending = promotion.list_pending(settings)
    decisions = promotion.list_decisions(settings, limit=limit)
    if as_json:
        typer.echo(json.dumps({
            "champion": champion,
            "pending": [{**asdict(item), "evidence": side_by_side(item.challenger_metrics, item.champion_metrics)}
                        for item in pending],
            "decisions": decisions.to_dict("records"),
        }))  # fmt: skip
        return
    out = stdout_console()
    out.print(f"champion: v{champion}" if champion else "champion: none yet")
    out.print(_pending_table(pending) if pending else "no challenger is waiting for approval")
    out.print(_decisions_table(decisions) if not decisions.empty else "no decisions yet")
