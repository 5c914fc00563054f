"""A real headless Chromium, driven over the Chrome DevTools Protocol (aiohttp's websocket client), for tests
that must see a page as a user's browser does: console errors, script execution, layout, a screenshot."""

import asyncio
import base64
import json
import os
import re
import shutil
import signal
import subprocess
import tempfile
import threading

import aiohttp
import pytest

CHROMIUM = shutil.which("chromium")
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--remote-debugging-address=127.0.0.1", "--remote-debugging-port=0"]


def require_chromium() -> str:
    """The browser's path; a skip with the reason when it is missing, except in CI, where it must be there."""
    if CHROMIUM:
        return CHROMIUM
    if os.environ.get("CI") == "true":
        pytest.fail("chromium is not installed; .ci/run installs it (apt-get install chromium)")
    pytest.skip("chromium is not installed (apt-get install chromium); CI installs it and runs this test")


class PageResult:
    def __init__(self, values: dict, screenshot: bytes, console_errors: list[str]):
        self.values, self.screenshot, self.console_errors = values, screenshot, console_errors


class _Session:
    """One CDP websocket: numbered commands, and every event kept for the test to read."""

    def __init__(self, ws):
        self.ws, self.next_id, self.events, self.pending = ws, 0, [], {}

    async def pump(self):
        async for message in self.ws:
            data = json.loads(message.data)
            if "id" in data:
                self.pending.pop(data["id"]).set_result(data)
            else:
                self.events.append(data)

    async def send(self, method: str, **params) -> dict:
        self.next_id += 1
        future = asyncio.get_running_loop().create_future()
        self.pending[self.next_id] = future
        await self.ws.send_json({"id": self.next_id, "method": method, "params": params})
        reply = await asyncio.wait_for(future, 60)
        if "error" in reply:
            raise RuntimeError(f"{method}: {reply['error']}")
        return reply["result"]

    async def wait_for_event(self, method: str, timeout: float = 60) -> dict:
        async def seen():
            while not any(e["method"] == method for e in self.events):
                await asyncio.sleep(0.05)
        await asyncio.wait_for(seen(), timeout)
        return next(e for e in self.events if e["method"] == method)


async def _drive(port: int, url: str, expressions: dict[str, str], width: int, height: int) -> PageResult:
    async with aiohttp.ClientSession() as http:
        async with http.put(f"http://127.0.0.1:{port}/json/new?about:blank") as r:
            target = await r.json(content_type=None)
        async with http.ws_connect(target["webSocketDebuggerUrl"], max_msg_size=0) as ws:
            session = _Session(ws)
            pump = asyncio.create_task(session.pump())
            try:
                for domain in ("Page", "Runtime", "Log"):
                    await session.send(f"{domain}.enable")
                await session.send("Emulation.setDeviceMetricsOverride", width=width, height=height,
                                   deviceScaleFactor=1, mobile=False)
                await session.send("Page.navigate", url=url)
                await session.wait_for_event("Page.loadEventFired")
                values = {}
                for name, expression in expressions.items():
                    result = await session.send("Runtime.evaluate", expression=expression, returnByValue=True)
                    if "exceptionDetails" in result:
                        raise RuntimeError(f"{name}: {result['exceptionDetails']}")
                    values[name] = result["result"].get("value")
                shot = await session.send("Page.captureScreenshot", format="png")
                errors = _console_errors(session.events)
            finally:
                pump.cancel()
    return PageResult(values, base64.b64decode(shot["data"]), errors)


def _console_errors(events: list[dict]) -> list[str]:
    errors = []
    for e in events:
        if e["method"] == "Runtime.exceptionThrown":
            errors.append(json.dumps(e["params"]["exceptionDetails"])[:500])
        elif e["method"] == "Runtime.consoleAPICalled" and e["params"]["type"] in ("error", "assert"):
            errors.append(json.dumps(e["params"]["args"])[:500])
        elif e["method"] == "Log.entryAdded" and e["params"]["entry"]["level"] == "error":
            errors.append(e["params"]["entry"].get("text", "")[:500])
    return errors


def open_page(url: str, expressions: dict[str, str], width: int = 1200, height: int = 900) -> PageResult:
    """Load url in a fresh headless Chromium (own profile, no network beyond what the page names), evaluate
    each JavaScript expression after the load event, and take a screenshot of the viewport."""
    browser = require_chromium()
    with tempfile.TemporaryDirectory() as profile:
        proc = subprocess.Popen([browser, *FLAGS, f"--user-data-dir={profile}", "about:blank"],
                                stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                                start_new_session=True)  # its own process group: its helpers end with it
        try:
            port = _devtools_port(proc)
            return asyncio.run(asyncio.wait_for(_drive(port, url, expressions, width, height), 120))
        finally:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


def _devtools_port(proc: subprocess.Popen) -> int:
    """Chromium prints 'DevTools listening on ws://127.0.0.1:PORT/...' on stderr once it is ready."""
    seen = []
    for line in proc.stderr:
        seen.append(line)
        match = re.search(r"DevTools listening on ws://[^:]+:(\d+)/", line)
        if match:
            # Keep reading its stderr, or a chatty browser fills the pipe and stalls.
            threading.Thread(target=proc.stderr.read, daemon=True).start()
            return int(match.group(1))
    raise RuntimeError("chromium exited before opening its DevTools port:\n" + "".join(seen[-20:]))
