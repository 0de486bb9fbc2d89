"""``steelqc app`` takes its Streamlit server down with it: a SIGTERM to the command leaves no port served."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from servers import free_port, stop, wait_until_up

pytestmark = pytest.mark.slow


def test_sigterm_to_steelqc_app_stops_streamlit_and_frees_the_port(tmp_path: Path) -> None:
    port = free_port()
    log = tmp_path / "app.log"
    steelqc_cli = Path(sys.executable).with_name("steelqc")
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [str(steelqc_cli), "app", "--port", str(port)], stdout=out, stderr=subprocess.STDOUT,
            start_new_session=True,
        )  # fmt: skip
    try:
        wait_until_up(f"http://127.0.0.1:{port}/_stcore/health", proc, log, timeout=120)
        os.kill(proc.pid, signal.SIGTERM)  # the command alone, as `kill PID` or a service manager sends it
        assert proc.wait(timeout=30) == 0
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                os.killpg(proc.pid, 0)  # anything left of the command's process group (Streamlit)?
            except ProcessLookupError:
                break
            time.sleep(0.2)
        else:
            pytest.fail(f"Streamlit still runs after steelqc app exited:\n{log.read_text()[-2000:]}")
        with pytest.raises(ConnectionRefusedError):
            socket.create_connection(("127.0.0.1", port), timeout=2).close()
    finally:
        if proc.poll() is None:
            stop(proc)
        else:
            try:
                os.killpg(proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
