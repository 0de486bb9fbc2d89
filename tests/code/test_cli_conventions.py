"""CLI conventions: --version, -h, help panels, flags without type noise, results on stdout, --json, 80 columns."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from qa_helpers import CHALLENGER, CHAMPION, pending_challenger
from typer.main import get_command
from typer.testing import CliRunner

from steelqc import __version__
from steelqc.cli import app
from steelqc.config import Settings


def test_version_is_printed_on_stdout() -> None:
    for flag in ("--version", "-V"):
        result = CliRunner().invoke(app, [flag])
        assert result.exit_code == 0 and result.stdout == f"steelqc {__version__}\n" and not result.stderr


def test_short_help_is_the_long_help_with_commands_in_four_panels() -> None:
    short, long = CliRunner().invoke(app, ["-h"]), CliRunner().invoke(app, ["--help"])
    assert short.exit_code == 0 and short.stdout == long.stdout
    panels = re.findall(r"─ (\w+) ─", short.stdout)
    assert panels == ["Options", "Data", "Training", "Promotion", "Inspection"]
    assert CliRunner().invoke(app, ["promotions", "-h"]).exit_code == 0


def test_no_help_page_labels_a_flag_bool() -> None:
    for name in ["", *get_command(app).commands]:  # type: ignore[attr-defined]
        result = CliRunner().invoke(app, [name, "--help"] if name else ["--help"], env={"COLUMNS": "160"})
        assert result.exit_code == 0, name
        assert "<bool>" not in result.stdout, name


def test_promotions_fits_80_columns_with_recall_and_specificity_against_the_champion(
    registry: Settings, tmp_path: Path
) -> None:
    version = pending_challenger(registry, tmp_path)
    result = CliRunner().invoke(app, ["promotions"], env={"COLUMNS": "80"})
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert max(len(line) for line in lines) <= 80, "\n".join(lines)
    assert lines[0] == "champion: v1"
    row = next(line for line in lines if line.strip().startswith(f"v{version} "))
    recall, specificity = CHALLENGER["patch_recall"], CHALLENGER["patch_specificity"]
    assert f"{recall:.3f} ({recall - CHAMPION['patch_recall']:+.3f})" in row
    assert f"{specificity:.3f} ({specificity - CHAMPION['patch_specificity']:+.3f})" in row
    assert "passed" in row and re.search(r"\d{4}-\d\d-\d\d \d\d:\d\d \(0 h\)", row)
    assert any(" promote " in line and "v1" in line for line in lines)  # the champion's own approval


def test_promotions_version_shows_the_evidence_side_by_side(registry: Settings, tmp_path: Path) -> None:
    version = pending_challenger(registry, tmp_path)
    result = CliRunner().invoke(app, ["promotions", "--version", version], env={"COLUMNS": "80"})
    assert result.exit_code == 0, result.output
    text = result.stdout
    assert f"v{version}: gate passed, approval pending" in text
    assert f"challenger v{version}" in text and "champion v1" in text
    assert re.search(r"patch_recall\s+0\.9800\s+0\.9600\s+\+0\.0200", text), text
    table = [line for line in text.splitlines() if line.lstrip().startswith(("metric", "patch_", "image_"))]
    assert len(table) == 1 + len(CHALLENGER) and max(len(line) for line in table) <= 80  # prose wraps in a terminal


def test_promotions_json_is_the_only_thing_on_stdout(registry: Settings, tmp_path: Path) -> None:
    version = pending_challenger(registry, tmp_path)
    listing = json.loads(CliRunner().invoke(app, ["promotions", "--json"]).stdout)
    assert listing["champion"] == "1" and [p["version"] for p in listing["pending"]] == [version]
    evidence = {row["metric"]: row for row in listing["pending"][0]["evidence"]}
    assert evidence["patch_recall"]["difference"] == pytest.approx(0.02)
    assert {"gate", "promote"} <= {d["action"] for d in listing["decisions"]}
    details = json.loads(CliRunner().invoke(app, ["promotions", "--version", version, "--json"]).stdout)
    assert details["approval_status"] == "pending" and details["gate"] is True
    assert CliRunner().invoke(app, ["promotions", "--version", "9"]).exit_code == 1  # no such version


def test_patches_json_is_one_object_on_stdout_and_the_report_goes_there_without_it(
    synthetic_dataset: Path, tmp_path: Path
) -> None:
    out = tmp_path / "index.parquet"
    result = CliRunner().invoke(app, ["patches", str(synthetic_dataset), "--out", str(out), "--json"])
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)
    assert summary["index"] == str(out) and summary["patches"] == sum(s["patches"] for s in summary["splits"].values())
    plain = CliRunner().invoke(app, ["patches", str(synthetic_dataset), "--out", str(out)])
    assert plain.stdout.startswith("train: ") and f"to {out}" in plain.stdout
