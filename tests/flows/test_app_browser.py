"""End to end: ``steelqc app`` serves the champion's decision on a demo image to a real headless browser."""

from __future__ import annotations

import base64
import shutil
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import cv2
import numpy as np
import pytest

from browser import CHROMIUM, chromium_page
from servers import free_port, stop

DECISIONS = ("PASS", "HOLD", "FAIL")

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(
        not CHROMIUM.exists(), reason="/usr/bin/chromium is absent (.ci/run installs Debian's chromium)"
    ),
]


def wait_for_http(url: str, timeout: float, proc: subprocess.Popen[bytes]) -> bytes:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise AssertionError(f"{proc.args[0]} exited with {proc.returncode} before {url} answered")
        try:
            with urllib.request.urlopen(url, timeout=2) as response:
                return response.read()
        except OSError:
            time.sleep(0.5)
    raise AssertionError(f"{url} did not answer within {timeout:.0f} s")


@pytest.fixture
def app_url(tiny_champion_db: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """``steelqc app`` on a free 127.0.0.1 port, its champion the tiny registered model; stopped afterwards."""
    db = tmp_path / "mlflow.db"
    shutil.copy(tiny_champion_db, db)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{db}")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))  # nothing the app or the browser writes lands in $HOME
    port = free_port()
    steelqc_cli = Path(sys.executable).with_name("steelqc")
    log = (tmp_path / "app.log").open("wb")
    proc = subprocess.Popen(
        [str(steelqc_cli), "app", "--port", str(port)], stdout=log, stderr=subprocess.STDOUT, start_new_session=True
    )
    try:
        assert wait_for_http(f"http://127.0.0.1:{port}/_stcore/health", 120, proc) == b"ok"
        yield f"http://127.0.0.1:{port}/"
    finally:
        stop(proc)
        log.close()


def test_browser_sees_a_decision_on_a_demo_image(app_url: str, tmp_path: Path) -> None:
    with chromium_page(tmp_path / "chromium") as tools:
        tools.call("Page.navigate", url=app_url)
        deadline, text = time.monotonic() + 180, ""
        while time.monotonic() < deadline and "Worst patch score" not in text:
            time.sleep(1)
            text = tools.text()
        assert "Worst patch score" in text, f"no decision within 180 s; page shows:\n{text[:2000]}"
        assert "Champion v1" in text and "t_pass = 0.300" in text, text
        assert any(line.strip() in DECISIONS for line in text.splitlines()), text[:2000]
        time.sleep(2)  # let the heatmap image finish painting
        shot = base64.b64decode(tools.call("Page.captureScreenshot", format="png")["data"])
    path = tmp_path / "app.png"
    path.write_bytes(shot)
    pixels = cv2.imread(str(path), cv2.IMREAD_GRAYSCALE)
    assert pixels is not None and pixels.shape[0] >= 800 and pixels.shape[1] >= 1200
    assert float(np.std(pixels)) > 20, "the screenshot is nearly blank"
