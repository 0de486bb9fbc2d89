"""Folders a job writes (issue 17, should-fix): unwritable ones are refused before any work, a full disk names the
folder, and a run left RUNNING by a killed process is marked FAILED on the next start."""

from __future__ import annotations

import errno
import os
import signal
import socket
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path

import pandas as pd
import pytest
from mlflow.tracking import MlflowClient
from typer.testing import CliRunner

from steelqc.cli import app
from steelqc.config import load_settings
from steelqc.patches import write_index
from steelqc.tracking import (
    TAG_ABANDONED,
    TAG_PROCESS,
    configure_tracking,
    ensure_experiment,
    fail_abandoned_runs,
    process_identity,
)
from steelqc.workspace import FolderNotWritableError, disk_full_names, require_writable


@pytest.fixture
def unwritable_folder(tmp_path: Path) -> Iterator[Path]:
    """A folder this process cannot write: read-only by mode, or (as root, which ignores modes) in sysfs."""
    if os.geteuid() != 0:
        folder = tmp_path / "read-only"
        folder.mkdir()
        folder.chmod(0o555)
        yield folder
        folder.chmod(0o755)
        return
    folder = Path("/sys/kernel")
    try:
        with open(folder / ".steelqc-probe", "wb"):
            pass
    except OSError:
        yield folder
        return
    pytest.skip("no unwritable folder available to root here")


def test_an_unwritable_folder_is_refused_with_its_path(unwritable_folder: Path) -> None:
    with pytest.raises(FolderNotWritableError, match=f"state folder {unwritable_folder} is not writable"):
        require_writable(unwritable_folder, "state folder")
    with pytest.raises(FolderNotWritableError, match="work folder .*/runs/x is not writable"):
        require_writable(unwritable_folder / "runs" / "x", "work folder")


def test_train_refuses_an_unwritable_state_folder_before_any_work(
    unwritable_folder: Path, synthetic_dataset: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("STEELQC_STATE_DIR", str(unwritable_folder))
    started = time.monotonic()
    result = CliRunner().invoke(app, ["train", str(synthetic_dataset), "--config", "demo"])
    assert result.exit_code == 2, result.output
    assert f"state folder {unwritable_folder} is not writable" in result.output
    assert "nothing was started" in result.output
    assert time.monotonic() - started < 20


def test_a_full_disk_names_the_folder_being_written(tmp_path: Path) -> None:
    """/dev/full answers every write with ENOSPC, as pyarrow, h5py and Keras' writers report it: no file name."""
    with pytest.raises(OSError) as caught, disk_full_names(tmp_path, "work folder"), open("/dev/full", "wb") as full:
        full.write(b"x" * 65536)
        full.flush()
    assert caught.value.errno == errno.ENOSPC
    assert f"no space left on the device of work folder {tmp_path}" in str(caught.value)
    with pytest.raises(OSError, match="named.bin"), disk_full_names(tmp_path, "work folder"):  # a name is kept
        raise OSError(errno.ENOSPC, "No space left on device", "named.bin")


def test_a_full_disk_under_pyarrow_names_the_work_folder(tmp_path: Path) -> None:
    """The patch index as ``steelqc train`` writes it (pyarrow, which names no file), onto a full device."""
    index = tmp_path / "patch_index.parquet"
    index.symlink_to("/dev/full")
    with pytest.raises(OSError, match=f"no space left on the device of work folder {tmp_path}"):
        with disk_full_names(tmp_path, "work folder"):
            write_index(pd.DataFrame({"image_id": ["a.jpg"] * 50_000, "y": 0, "x": 0}), index)


KILLED_TRAINER = textwrap.dedent(
    """
    import sys, time
    import mlflow
    from steelqc.tracking import TAG_PROCESS, process_identity

    mlflow.set_tracking_uri(sys.argv[1])
    with mlflow.start_run(experiment_id=sys.argv[2]) as run:
        mlflow.set_tags({"job": "train", TAG_PROCESS: process_identity()})
        print(run.info.run_id, flush=True)
        time.sleep(600)
    """
)


def test_a_run_left_running_by_a_killed_process_is_failed_on_the_next_start() -> None:
    settings = load_settings()
    uri = configure_tracking(settings)
    experiment_id = ensure_experiment(settings, "abandoned")
    trainer = subprocess.Popen(
        [sys.executable, "-c", KILLED_TRAINER, uri, experiment_id], stdout=subprocess.PIPE, text=True
    )
    assert trainer.stdout is not None
    killed_run = trainer.stdout.readline().strip()
    os.kill(trainer.pid, signal.SIGKILL)
    trainer.wait(timeout=30)
    client = MlflowClient()
    assert client.get_run(killed_run).info.status == "RUNNING"  # what SIGKILL leaves behind

    def running(job: str, process: str) -> str:
        return client.create_run(experiment_id, tags={"job": job, TAG_PROCESS: process}).info.run_id

    alive = running("train", process_identity())  # a training in progress: this process
    reused_pid = running("train", f"{socket.gethostname()} {os.getpid()} 0")  # its pid now belongs to another
    other_machine = running("train", "elsewhere 1 0")  # cannot be checked from here
    other_job = running("retrain", f"{socket.gethostname()} {os.getpid()} 0")

    assert sorted(fail_abandoned_runs(experiment_id, "train")) == sorted([killed_run, reused_pid])
    killed = client.get_run(killed_run)
    assert killed.info.status == "FAILED" and "killed?" in killed.data.tags[TAG_ABANDONED]
    assert client.get_run(reused_pid).info.status == "FAILED"
    for run_id in (alive, other_machine, other_job):
        assert client.get_run(run_id).info.status == "RUNNING"


def test_ctrl_c_during_training_says_where_to_resume_and_closes_the_run_killed(
    synthetic_dataset: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from steelqc import train_job  # TensorFlow: loaded by this test only

    def pressed_ctrl_c(*args: object, **kwargs: object) -> None:
        os.kill(os.getpid(), signal.SIGINT)  # Python's default handler raises KeyboardInterrupt here
        time.sleep(5)

    monkeypatch.setattr(train_job, "train", pressed_ctrl_c)
    work = tmp_path / "work"
    result = CliRunner().invoke(app, ["train", str(synthetic_dataset), "--config", "demo", "--work-dir", str(work)])
    assert result.exit_code == 130, result.output
    assert f"Resume with: steelqc train {synthetic_dataset} --work-dir {work}" in result.output
    configure_tracking(load_settings("demo"))
    (run,) = MlflowClient().search_runs(
        [ensure_experiment(load_settings("demo"), "synthetic-severstal")], "attributes.status = 'KILLED'"
    )
    assert run.data.tags[train_job.TAG_INTERRUPTED] == f"resume with --work-dir {work}"


def test_ctrl_c_during_the_retraining_flow_exits_130_and_leaves_the_champion(
    synthetic_dataset: Path, tmp_path: Path
) -> None:
    """A real process (Prefect's engine and a SIGINT, as from a terminal): the training task is interrupted, the
    flow run crashes, and the command ends with one line and 130, no traceback, no new champion."""
    script = textwrap.dedent(f"""
        import os, signal, sys, time
        from steelqc import train_job

        def pressed_ctrl_c(*args, **kwargs):
            os.kill(os.getpid(), signal.SIGINT)
            time.sleep(5)

        train_job.train = pressed_ctrl_c
        from steelqc.cli import app
        sys.argv = ["steelqc", "pipeline", {str(synthetic_dataset)!r}, "--config", "demo", "--auto-approve",
                    "--set", "state_dir={tmp_path / 'state'}"]
        app()
    """)
    ended = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300)
    assert ended.returncode == 130, ended.stderr[-3000:]
    assert "error: interrupted: the champion is unchanged" in ended.stderr
    assert "Traceback" not in ended.stderr
    from steelqc import promotion, train_job

    settings = load_settings("demo", {"state_dir": str(tmp_path / "state")})
    assert promotion.champion_card(settings) is None
    configure_tracking(settings)
    (run,) = MlflowClient().search_runs([ensure_experiment(settings, "synthetic-severstal")])
    assert run.info.status == "KILLED" and run.data.tags["job"] == "retrain"
    assert run.data.tags[train_job.TAG_INTERRUPTED] == "interrupted during the retraining flow's training"
