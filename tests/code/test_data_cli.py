"""`steelqc synth` and `steelqc import-voc` through the real Typer app: output, exit codes, error messages."""

from __future__ import annotations

from pathlib import Path

from typer.testing import CliRunner

from steelqc.cli import app
from steelqc.data.dataset import Dataset

runner = CliRunner()


def test_error_messages_stay_on_one_line_in_narrow_output(tmp_path: Path, monkeypatch) -> None:
    """A long path in a narrow, non-terminal output is printed whole: users grep logs for messages."""
    monkeypatch.setenv("COLUMNS", "40")
    missing = tmp_path.joinpath(*["a-rather-long-folder-name"] * 6, "nowhere")
    result = runner.invoke(app, ["import-voc", str(missing), "--out", str(tmp_path / "o")])
    assert result.exit_code == 2
    assert f"{missing} does not exist" in result.output.splitlines()[-1]


def test_synth_writes_a_dataset_and_refuses_to_overwrite(tmp_path: Path) -> None:
    out = tmp_path / "gen"
    result = runner.invoke(app, ["synth", "--out", str(out), "--images", "5", "--seed", "2", "--contrast", "1.5"])
    assert result.exit_code == 0, result.output
    assert "wrote 5 images" in result.output
    assert len(Dataset.open(str(out)).image_ids) == 5
    again = runner.invoke(app, ["synth", "--out", str(out), "--images", "5"])
    assert again.exit_code == 2 and "already holds a dataset" in again.output


def test_synth_rejects_bad_options(tmp_path: Path) -> None:
    result = runner.invoke(app, ["synth", "--out", str(tmp_path / "x"), "--images", "0"])
    assert result.exit_code == 2


def test_import_voc_errors_are_clear(tmp_path: Path) -> None:
    missing = runner.invoke(app, ["import-voc", str(tmp_path / "nowhere"), "--out", str(tmp_path / "o")])
    assert missing.exit_code == 2 and "does not exist" in missing.output
    (tmp_path / "voc" / "images").mkdir(parents=True)
    (tmp_path / "voc" / "annotations").mkdir()
    (tmp_path / "voc" / "annotations" / "a.xml").write_text("<annotation>")
    bad = runner.invoke(app, ["import-voc", str(tmp_path / "voc"), "--out", str(tmp_path / "o")])
    assert bad.exit_code == 2 and "not valid XML" in bad.output and "annotations/a.xml" in bad.output
    half = runner.invoke(app, ["import-voc", str(tmp_path / "voc"), "--out", str(tmp_path / "o"), "--height", "9"])
    assert half.exit_code == 2 and "--height and --width go together" in half.output
