"""Headless Chromium driven over the Chrome DevTools protocol (for the report-in-a-browser test).

Debian's ``chromium`` package (``/usr/bin/chromium``; ``.ci/run`` installs it when missing), never a
browser download. :func:`open_page` starts it with a fresh profile and ``--remote-debugging-port=0``,
loads one URL, collects what the console reported (console.error, uncaught exceptions, failed
loads), evaluates a script in the page and takes a full-page screenshot; the browser is stopped
afterwards.
"""
from __future__ import annotations

import base64
import json
import shutil
import subprocess
import tempfile
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

#: The flags of the issue: no GPU, no sandbox (root in CI), nothing fetched in the background.
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-background-networking",
         "--disable-component-update", "--disable-sync", "--remote-debugging-port=0", "--remote-allow-origins=*",
         "--window-size=1280,900", "--hide-scrollbars"]


def chromium() -> str | None:
    """The Chromium executable, or None."""
    return shutil.which("chromium") or shutil.which("chromium-browser") or (
        "/usr/bin/chromium" if Path("/usr/bin/chromium").exists() else None)


@dataclass
class Page:
    """What a loaded page showed: console problems, the script's result and the screenshot (PNG bytes)."""

    errors: list[str] = field(default_factory=list)
    result: Any = None
    screenshot: bytes = b""


class _Session:
    def __init__(self, ws_url: str):
        import websocket

        self.ws = websocket.create_connection(ws_url, timeout=60, suppress_origin=True)
        self.next_id = 0
        self.events: list[dict[str, Any]] = []

    def call(self, method: str, **params: Any) -> dict[str, Any]:
        self.next_id += 1
        self.ws.send(json.dumps({"id": self.next_id, "method": method, "params": params}))
        while True:
            msg = json.loads(self.ws.recv())
            if msg.get("id") == self.next_id:
                if "error" in msg:
                    raise RuntimeError(f"{method}: {msg['error']}")
                return msg.get("result", {})
            self.events.append(msg)

    def wait_for(self, method: str, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        while not any(e.get("method") == method for e in self.events):
            if time.monotonic() > deadline:
                raise TimeoutError(f"no {method} within {timeout:g} s")
            self.events.append(json.loads(self.ws.recv()))


def _problems(events: list[dict[str, Any]]) -> list[str]:
    out = []
    for e in events:
        m, p = e.get("method"), e.get("params", {})
        if m == "Runtime.consoleAPICalled" and p.get("type") in ("error", "assert"):
            out.append("console." + p["type"] + ": " + " ".join(str(a.get("value", a.get("description", "")))
                                                               for a in p.get("args", [])))
        elif m == "Runtime.exceptionThrown":
            out.append("exception: " + p["exceptionDetails"].get("text", "") + " " +
                       str(p["exceptionDetails"].get("exception", {}).get("description", "")))
        elif m == "Log.entryAdded" and p["entry"].get("level") == "error":
            out.append(f"log: {p['entry'].get('text')} {p['entry'].get('url', '')}")
    return out


def open_page(url: str, script: str, *, exe: str | None = None, timeout: float = 90) -> Page:
    """Load ``url`` in headless Chromium, evaluate ``script`` (its value returned by value) and screenshot."""
    exe = exe or chromium()
    assert exe, "no chromium executable"
    profile = Path(tempfile.mkdtemp(prefix="qsweep-chromium-"))
    proc = subprocess.Popen([exe, *FLAGS, f"--user-data-dir={profile}", "about:blank"], stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE)
    try:
        port_file = profile / "DevToolsActivePort"
        deadline = time.monotonic() + timeout
        while not (port_file.exists() and port_file.read_text().count("\n") >= 1):
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"chromium did not start: {proc.stderr.read().decode(errors='replace')[-2000:]}"
                                   if proc.poll() is not None else "chromium did not open its DevTools port")
            time.sleep(0.1)
        port = int(port_file.read_text().splitlines()[0])
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/json/list", timeout=10) as r:
            target = next(t for t in json.loads(r.read()) if t["type"] == "page")
        s = _Session(target["webSocketDebuggerUrl"])
        for domain in ("Page", "Runtime", "Log"):
            s.call(f"{domain}.enable")
        s.call("Page.navigate", url=url)
        s.wait_for("Page.loadEventFired", timeout)
        value = s.call("Runtime.evaluate", expression=script, returnByValue=True, awaitPromise=True)
        shot = s.call("Page.captureScreenshot", format="png", captureBeyondViewport=True)
        time.sleep(0.2)  # late console messages
        s.ws.settimeout(0.5)
        try:
            while True:
                s.events.append(json.loads(s.ws.recv()))
        except Exception:  # noqa: BLE001 - nothing more to read
            pass
        s.ws.close()
        return Page(errors=_problems(s.events), result=value.get("result", {}).get("value"),
                    screenshot=base64.b64decode(shot["data"]))
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        shutil.rmtree(profile, ignore_errors=True)
