"""Take the README's screenshot of the Inspect page: ``steelqc app`` on this state's champion, headless Chromium.

    .venv/bin/python docs/images/screenshot_inspect_page.py IMAGE [--out docs/images/inspect-page.png]

Starts ``steelqc app`` on a free port with the environment as it is (``STEELQC_STATE_DIR``,
``MLFLOW_TRACKING_URI``), uploads IMAGE on the Inspect page through the DevTools protocol, waits for the
decision and saves a 1400-px-wide PNG. Needs Debian's chromium (``make system-deps``).
"""

from __future__ import annotations

import argparse
import base64
import itertools
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

from websockets.sync.client import connect

CHROMIUM = "/usr/bin/chromium"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_for(url: str, timeout: float) -> bytes:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(url, timeout=2) as response:
                return response.read()
        except OSError:
            time.sleep(0.5)
    raise SystemExit(f"{url} did not answer within {timeout:.0f} s")


class Page:
    """The few DevTools calls needed: evaluate JavaScript, set a file input, take a screenshot."""

    def __init__(self, ws_url: str) -> None:
        self.ws = connect(ws_url, max_size=None, open_timeout=20)
        self.ids = itertools.count(1)

    def call(self, method: str, **params: object) -> dict:
        message_id = next(self.ids)
        self.ws.send(json.dumps({"id": message_id, "method": method, "params": params}))
        while True:
            reply = json.loads(self.ws.recv(timeout=60))
            if reply.get("id") == message_id:
                if "error" in reply:
                    raise RuntimeError(reply["error"])
                return reply["result"]

    def js(self, expression: str) -> object:
        return self.call("Runtime.evaluate", expression=expression, returnByValue=True)["result"].get("value")

    def wait_text(self, text: str, timeout: float = 180) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if text in str(self.js("document.body.innerText")):
                return
            time.sleep(1)
        raise SystemExit(f"the page never showed {text!r}; it shows:\n{self.js('document.body.innerText')}")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("image", type=Path)
    parser.add_argument("--out", type=Path, default=Path(__file__).with_name("inspect-page.png"))
    args = parser.parse_args()
    app_port, debug_port = free_port(), free_port()
    steelqc = Path(sys.executable).with_name("steelqc")
    app = subprocess.Popen([str(steelqc), "app", "--port", str(app_port)], start_new_session=True,
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # fmt: skip
    with tempfile.TemporaryDirectory() as profile:
        browser = subprocess.Popen(
            [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", "--hide-scrollbars",
             "--disable-background-networking", f"--user-data-dir={profile}", f"--remote-debugging-port={debug_port}",
             "--remote-debugging-address=127.0.0.1", "--window-size=1400,1250", "about:blank"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
        )  # fmt: skip
        try:
            wait_for(f"http://127.0.0.1:{app_port}/_stcore/health", 120)
            targets = json.loads(wait_for(f"http://127.0.0.1:{debug_port}/json/list", 30))
            page = Page(next(t for t in targets if t["type"] == "page")["webSocketDebuggerUrl"])
            page.call("Page.navigate", url=f"http://127.0.0.1:{app_port}/")
            page.wait_text("Worst patch score")
            page.js("[...document.querySelectorAll('label')].find(l => l.innerText.trim() === 'Upload').click()")
            page.wait_text("per file")
            root = page.call("DOM.getDocument")["root"]["nodeId"]
            node = page.call("DOM.querySelector", nodeId=root, selector="input[type=file]")["nodeId"]
            page.call("DOM.setFileInputFiles", nodeId=node, files=[str(args.image.resolve())])
            page.wait_text("score of each patch")
            deadline = time.monotonic() + 60  # both figures loaded and painted
            while time.monotonic() < deadline and not page.js(
                "[...document.querySelectorAll('[data-testid=stImage] img')].filter(i => i.complete && i.naturalWidth)"
                ".length >= 2"
            ):
                time.sleep(0.5)
            time.sleep(2)
            shot = page.call("Page.captureScreenshot", format="png")["data"]
            args.out.write_bytes(base64.b64decode(shot))
            print(f"wrote {args.out}")
        finally:
            for proc in (browser, app):
                os.killpg(proc.pid, signal.SIGTERM)
                proc.wait(30)


if __name__ == "__main__":
    main()
