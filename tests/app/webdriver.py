"""A minimal W3C WebDriver client (the chromedriver HTTP API, standard library only) and a headless Chromium.

Only what the page tests need: a session, navigation, CSS/XPath lookups, clicks, typing, text, JavaScript, waiting
and screenshots. Chromium runs headless with a fresh profile and no background networking.
"""
from __future__ import annotations

import base64
import json
import os
import shutil
import socket
import subprocess
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any, Callable, Optional

CHROMIUM = os.environ.get("MSTA_CHROMIUM", "/usr/bin/chromium")
CHROMEDRIVER = os.environ.get("MSTA_CHROMEDRIVER", "/usr/bin/chromedriver")
CHROME_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
               "--disable-background-networking", "--disable-component-update", "--disable-sync",
               "--disable-dev-shm-usage", "--window-size=1280,1000"]
_ELEMENT = "element-6066-11e4-a52e-4f735466cecf"   # the W3C key of an element reference


def missing_browser() -> Optional[str]:
    """Why the browser cannot run here, or None."""
    for path, pkg in ((CHROMIUM, "chromium"), (CHROMEDRIVER, "chromium-driver")):
        if not (Path(path).is_file() and os.access(path, os.X_OK)):
            return (f"{path} is missing: install Debian's {pkg} (apt-get install -y chromium chromium-driver; "
                    "`make test` does it)")
    return None


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class WebDriverError(RuntimeError):
    pass


class Browser:
    """A headless Chromium driven through chromedriver; use as a context manager."""

    def __init__(self, timeout: float = 60.0):
        self.timeout = timeout
        self.profile = tempfile.mkdtemp(prefix="msta-chromium-")
        self.port = free_port()
        self.driver = subprocess.Popen([CHROMEDRIVER, f"--port={self.port}"], stdout=subprocess.DEVNULL,
                                       stderr=subprocess.DEVNULL)
        self.base = f"http://127.0.0.1:{self.port}"
        deadline = time.monotonic() + 30
        while True:
            try:
                self._call("GET", "/status")
                break
            except (OSError, WebDriverError):
                if time.monotonic() > deadline or self.driver.poll() is not None:
                    self.close()
                    raise WebDriverError("chromedriver did not start")
                time.sleep(0.1)
        caps = {"browserName": "chrome", "goog:chromeOptions": {
            "binary": CHROMIUM, "args": [*CHROME_ARGS, f"--user-data-dir={self.profile}"]}}
        self.session = self._call("POST", "/session", {"capabilities": {"alwaysMatch": caps}})["sessionId"]

    # --------------------------------------------------------------------------------------------- protocol

    def _call(self, method: str, path: str, body: Optional[dict] = None) -> Any:
        data = json.dumps(body).encode() if body is not None else (b"{}" if method == "POST" else None)
        req = urllib.request.Request(self.base + path, data=data, method=method,
                                     headers={"Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(req, timeout=self.timeout) as r:
                return json.loads(r.read())["value"]
        except urllib.error.HTTPError as e:
            raise WebDriverError(f"{method} {path}: {e.code} {e.read()[:500]!r}") from None

    def _s(self, method: str, path: str, body: Optional[dict] = None) -> Any:
        return self._call(method, f"/session/{self.session}{path}", body)

    # --------------------------------------------------------------------------------------------- actions

    def get(self, url: str) -> None:
        self._s("POST", "/url", {"url": url})

    def find_all(self, css: str = "", xpath: str = "") -> list[str]:
        using, value = ("xpath", xpath) if xpath else ("css selector", css)
        return [e[_ELEMENT] for e in self._s("POST", "/elements", {"using": using, "value": value})]

    def wait_for(self, css: str = "", xpath: str = "", *, count: int = 1, timeout: float = 60.0) -> list[str]:
        """Elements matching the selector once at least ``count`` exist (raises after ``timeout`` seconds)."""
        return self.wait_until(lambda: (lambda found: found if len(found) >= count else None)(
            self.find_all(css, xpath)), timeout, f"{css or xpath} (x{count})")

    def wait_until(self, condition: Callable[[], Any], timeout: float = 60.0, what: str = "condition") -> Any:
        deadline = time.monotonic() + timeout
        while True:
            value = condition()
            if value:
                return value
            if time.monotonic() > deadline:
                raise TimeoutError(f"waited {timeout:.0f} s for {what}")
            time.sleep(0.2)

    def click(self, element: str) -> None:
        self._s("POST", f"/element/{element}/click")

    def type(self, element: str, text: str) -> None:
        self._s("POST", f"/element/{element}/value", {"text": text})

    def text(self, element: str) -> str:
        return self._s("GET", f"/element/{element}/text")

    def script(self, js: str, *args) -> Any:
        return self._s("POST", "/execute/sync", {"script": js, "args": list(args)})

    def screenshot(self, path: str | os.PathLike) -> Path:
        path = Path(path)
        path.write_bytes(base64.b64decode(self._s("GET", "/screenshot")))
        return path

    def close(self) -> None:
        try:
            if getattr(self, "session", None):
                self._s("DELETE", "")
        except (OSError, WebDriverError):
            pass
        if self.driver.poll() is None:
            self.driver.terminate()
            try:
                self.driver.wait(10)
            except subprocess.TimeoutExpired:
                self.driver.kill()
        shutil.rmtree(self.profile, ignore_errors=True)

    def __enter__(self) -> "Browser":
        return self

    def __exit__(self, *exc) -> None:
        self.close()
