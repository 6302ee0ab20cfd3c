"""A small client of the Chrome DevTools Protocol, enough to drive headless Chromium from a test.

Chromium is started with ``--remote-debugging-port=0``; it prints the port it chose, and the page's
websocket is found through its ``/json/list`` endpoint. Commands are JSON messages with an id; the
answer with the same id is awaited and events in between are dropped.
"""

from __future__ import annotations

import base64
import io
import json
import re
import shutil
import subprocess
import threading
import time
import urllib.request
from pathlib import Path

from PIL import Image

LISTENING = re.compile(rb"DevTools listening on (ws://[^\s]+)")


def find_chromium() -> str | None:
    for name in ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable"):
        path = shutil.which(name)
        if path:
            return path
    return None


class Browser:
    def __init__(self, executable: str, profile: Path, width: int = 1280, height: int = 1000):
        from websockets.sync.client import connect

        self.proc = subprocess.Popen(
            [
                executable,
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--no-first-run",
                "--no-default-browser-check",
                "--hide-scrollbars",
                "--force-device-scale-factor=1",
                f"--window-size={width},{height}",
                "--remote-debugging-port=0",
                f"--user-data-dir={profile}",
                "about:blank",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        port = self._port()
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/json/list", timeout=10) as r:
            targets = json.load(r)
        page = next(t for t in targets if t["type"] == "page")
        self._connection = connect(page["webSocketDebuggerUrl"], max_size=None, open_timeout=10)
        self.ws = self._connection.__enter__()
        self.next_id = 0
        self.call("Emulation.setDeviceMetricsOverride", width=width, height=height, deviceScaleFactor=1, mobile=False)

    def _port(self) -> int:
        deadline = time.monotonic() + 20
        seen = b""
        while time.monotonic() < deadline:
            line = self.proc.stderr.readline()
            if not line and self.proc.poll() is not None:
                break
            seen += line
            m = LISTENING.search(line)
            if m:  # keep draining its log, or a full pipe would stall the browser
                threading.Thread(target=self.proc.stderr.read, daemon=True).start()
                return int(re.search(rb":(\d+)/", m.group(1)).group(1))
        self.close()
        raise RuntimeError(f"chromium did not start: {seen.decode(errors='replace')[-2000:]}")

    def call(self, method: str, **params):
        self.next_id += 1
        self.ws.send(json.dumps({"id": self.next_id, "method": method, "params": params}))
        while True:
            message = json.loads(self.ws.recv(timeout=30))
            if message.get("id") == self.next_id:
                if "error" in message:
                    raise RuntimeError(f"{method}: {message['error']}")
                return message.get("result", {})

    def evaluate(self, expression: str):
        result = self.call("Runtime.evaluate", expression=expression, awaitPromise=True, returnByValue=True)
        if "exceptionDetails" in result:
            raise RuntimeError(f"{expression}: {result['exceptionDetails']}")
        return result["result"].get("value")

    def wait_for(self, condition: str, timeout_s: float = 15):
        """Poll a JavaScript expression in the page until it is truthy; its value, or None on timeout."""
        return self.evaluate(
            "new Promise((resolve) => { const t0 = Date.now(); (function poll() { let v = null;"
            f" try {{ v = ({condition}); }} catch (e) {{}}"
            f" if (v) resolve(v); else if (Date.now() - t0 > {int(timeout_s * 1000)}) "
            f"resolve(null); else setTimeout(poll, 50); }})(); }})"
        )

    def open(self, url: str) -> None:
        """Load ``url`` afresh (a URL differing only in its #fragment would otherwise not reload)."""
        self.call("Page.navigate", url="about:blank")
        self.call("Page.navigate", url=url)

    def rect(self, selector: str) -> dict:
        return self.evaluate(
            f"(() => {{ const r = document.querySelector({json.dumps(selector)}).getBoundingClientRect();"
            " return {x: r.x, y: r.y, width: r.width, height: r.height}; })()"
        )

    def scroll_into_view(self, selector: str) -> None:
        self.evaluate(f"document.querySelector({json.dumps(selector)}).scrollIntoView({{block: 'center'}})")

    def screenshot(self) -> Image.Image:
        data = self.call("Page.captureScreenshot", format="png")["data"]
        return Image.open(io.BytesIO(base64.b64decode(data))).convert("RGB")

    def mouse(self, kind: str, x: float, y: float) -> None:
        self.call("Input.dispatchMouseEvent", type=kind, x=x, y=y, button="left", clickCount=1)

    def drag(self, x0: float, y0: float, x1: float, y1: float, steps: int = 8) -> None:
        self.mouse("mousePressed", x0, y0)
        for i in range(1, steps + 1):
            self.mouse("mouseMoved", x0 + (x1 - x0) * i / steps, y0 + (y1 - y0) * i / steps)
        self.mouse("mouseReleased", x1, y1)

    def click(self, selector: str) -> None:
        r = self.rect(selector)
        x, y = r["x"] + r["width"] / 2, r["y"] + r["height"] / 2
        self.mouse("mousePressed", x, y)
        self.mouse("mouseReleased", x, y)

    def close(self) -> None:
        try:
            if getattr(self, "ws", None) is not None:
                self._connection.__exit__(None, None, None)
        finally:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
