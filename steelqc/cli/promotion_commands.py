"""``steelqc approve / reject / rollback / promotions``: the QA lead's side of the champion gate."""

from __future__ import annotations

import typer
from rich.table import Table

from steelqc.cli._app import ConfigOption, SetOption, app, registry_settings, run_guarded, stdout_console

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


@app.command()
def approve(
    version: str = typer.Argument(..., help="Registered model version waiting for approval"),
    reviewer: str = ReviewerOption,
    comment: str = CommentOption,
    config: str = ConfigOption,
    sets: list[str] = SetOption,
) -> None:
    """Approve a pending challenger: resumes its waiting run, or promotes it after re-checking the gate."""
    _decide(True, version, reviewer, comment, config, sets)


@app.command()
def reject(
    version: str = typer.Argument(..., help="Registered model version waiting for approval"),
    reviewer: str = ReviewerOption,
    comment: str = CommentOption,
    config: str = ConfigOption,
    sets: list[str] = SetOption,
) -> None:
    """Reject a pending challenger; the champion does not move."""
    _decide(False, version, reviewer, comment, config, sets)


@app.command()
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


@app.command()
def promotions(config: str = ConfigOption, sets: list[str] = SetOption) -> None:
    """List pending approvals and past gate, promotion, rejection and rollback decisions."""
    from steelqc import promotion

    settings = registry_settings(config, sets)
    champion = promotion.champion_version(settings)
    typer.echo(f"champion: v{champion}" if champion else "champion: none yet")
    pending = Table(title="Pending approval")
    for column in ("version", "created", "patch recall", "image recall", "champion then", "flow run"):
        pending.add_column(column)
    for item in promotion.list_pending(settings):
        metrics = item.challenger_metrics
        pending.add_row(
            item.version, item.created_at, f"{metrics.get('patch_recall', float('nan')):.4f}",
            f"{metrics.get('image_recall', float('nan')):.4f}", item.champion_version or "-", item.flow_run_id or "-",
        )
    history = Table(title="Decisions")
    decisions = promotion.list_decisions(settings)
    for column in decisions.columns:
        history.add_column(column)
    for row in decisions.itertuples(index=False):
        history.add_row(*[str(value) for value in row])
    out = stdout_console()
    out.print(pending)
    out.print(history)
