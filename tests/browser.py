"""Headless Chromium driven over the DevTools protocol, for tests that look at a page as a user would.

``make system-deps`` installs Debian's chromium; tests skip without it (``CHROMIUM.exists()``).
"""

from __future__ import annotations

import itertools
import json
import subprocess
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from websockets.sync.client import connect

from servers import free_port, stop

CHROMIUM = Path("/usr/bin/chromium")


class DevTools:
    """The few DevTools protocol calls tests need, over one page's websocket; events are kept in ``events``."""

    def __init__(self, ws_url: str) -> None:
        self.ws = connect(ws_url, max_size=None, open_timeout=20)
        self.ids = itertools.count(1)
        self.events: list[dict[str, Any]] = []

    def call(self, method: str, **params: object) -> dict[str, Any]:
        message_id = next(self.ids)
        self.ws.send(json.dumps({"id": message_id, "method": method, "params": params}))
        while True:
            reply = json.loads(self.ws.recv(timeout=60))
            if reply.get("id") == message_id:
                assert "error" not in reply, reply
                return dict(reply["result"])
            if "method" in reply:
                self.events.append(reply)

    def evaluate(self, expression: str) -> Any:
        """The value of a JavaScript expression in the page."""
        return self.call("Runtime.evaluate", expression=expression, returnByValue=True)["result"].get("value")

    def text(self) -> str:
        return str(self.evaluate("document.body ? document.body.innerText : ''") or "")


def _wait_for_targets(port: int, browser: subprocess.Popen[bytes], timeout: float = 30) -> list[dict[str, Any]]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if browser.poll() is not None:
            raise AssertionError(f"chromium exited with {browser.returncode} before its DevTools port answered")
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/json/list", timeout=2) as response:
                return list(json.loads(response.read()))
        except OSError:
            time.sleep(0.3)
    raise AssertionError(f"chromium's DevTools port did not answer within {timeout:.0f} s")


@contextmanager
def chromium_page(profile_dir: Path, *, offline: bool = False, window: str = "1400,1100") -> Iterator[DevTools]:
    """A headless Chromium showing ``about:blank``; navigate with ``Page.navigate``. Stopped on exit.

    ``offline``: every proxied request goes to a closed port and the page's network is emulated offline
    (DevTools' ``Network.emulateNetworkConditions``), so anything fetched from the internet fails; requests the
    page attempted are in ``events`` (``Network.requestWillBeSent``).
    """
    debug_port = free_port()
    no_network = ["--proxy-server=127.0.0.1:9", "--proxy-bypass-list=<-loopback>"] if offline else []
    browser = subprocess.Popen(
        [
            str(CHROMIUM), "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
            "--disable-background-networking", "--disable-component-update", "--disable-sync", *no_network,
            f"--user-data-dir={profile_dir}", f"--remote-debugging-port={debug_port}",
            "--remote-debugging-address=127.0.0.1", f"--window-size={window}", "about:blank",
        ],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
    )  # fmt: skip
    try:
        page = next(t for t in _wait_for_targets(debug_port, browser) if t["type"] == "page")
        tools = DevTools(page["webSocketDebuggerUrl"])
        tools.call("Page.enable")
        tools.call("Network.enable")
        if offline:
            tools.call(
                "Network.emulateNetworkConditions", offline=True, latency=0, downloadThroughput=-1, uploadThroughput=-1
            )
        try:
            yield tools
        finally:
            tools.ws.close()
    finally:
        stop(browser)
