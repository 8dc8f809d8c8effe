"""Browser tests: headless Debian chromium driven by Playwright, against real local servers.

Every test here skips (with the reason) when /usr/bin/chromium or the playwright package is
missing. Servers run as subprocesses in their own process group on a free 127.0.0.1 port and
are always killed at teardown. Screenshots go to test-artifacts/ui/ at the repo root.
"""

from __future__ import annotations

import importlib.util
import os
import re
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator, Sequence
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
CHROMIUM = Path("/usr/bin/chromium")
SHOTS = REPO / "test-artifacts" / "ui"
HERE = Path(__file__).resolve().parent
# Generous, because the React apps load big bundles and the machine may be busy (2 cores).
DEFAULT_TIMEOUT_MS = 60_000


def skip_reason() -> str | None:
    if not CHROMIUM.exists():
        return f"{CHROMIUM} is missing (apt-get install chromium); browser tests skipped"
    if importlib.util.find_spec("playwright") is None:
        return "the playwright package is not installed (pip install -e '.[dev]')"
    return None


def pytest_collection_modifyitems(config, items):
    reason = skip_reason()
    if reason is None:
        return
    for item in items:
        if HERE in Path(str(item.path)).resolve().parents:
            item.add_marker(pytest.mark.skip(reason=reason))


@pytest.hookimpl(wrapper=True, tryfirst=True)
def pytest_runtest_makereport(item, call):
    rep = yield
    setattr(item, f"rep_{rep.when}", rep)
    return rep


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def venv_bin(name: str) -> str:
    """A console script of the interpreter running the tests (the project's .venv)."""
    return str(Path(sys.executable).parent / name)


class Server:
    """A server subprocess in its own process group; output goes to `log`."""

    def __init__(
        self,
        name: str,
        cmd: Sequence[str],
        port: int,
        log: Path,
        cwd: Path = REPO,
        env: dict[str, str] | None = None,
    ) -> None:
        self.name, self.port, self.log = name, port, log
        self.url = f"http://127.0.0.1:{port}"
        log.parent.mkdir(parents=True, exist_ok=True)
        self._log_fh = open(log, "wb")  # noqa: SIM115 - closed in stop()
        self.proc = subprocess.Popen(
            list(cmd),
            cwd=cwd,
            env={**os.environ, **(env or {})},
            stdin=subprocess.DEVNULL,
            stdout=self._log_fh,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # own process group: kill the whole tree at teardown
        )

    def log_tail(self, n: int = 60) -> str:
        try:
            lines = self.log.read_text(errors="replace").splitlines()
        except OSError:
            return ""
        return "\n".join(lines[-n:])

    def wait_http(self, path: str = "/", timeout_s: float = 180.0) -> None:
        """Poll until the server answers HTTP (any status below 500) or fail with its log."""
        deadline = time.monotonic() + timeout_s
        last = ""
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(
                    f"{self.name} exited with {self.proc.returncode} before answering:\n"
                    + self.log_tail()
                )
            try:
                with urllib.request.urlopen(self.url + path, timeout=5) as r:
                    if r.status < 500:
                        return
            except urllib.error.HTTPError as e:
                if e.code < 500:
                    return
                last = f"HTTP {e.code}"
            except (OSError, urllib.error.URLError) as e:
                last = str(e)
            time.sleep(0.5)
        raise TimeoutError(
            f"{self.name} did not answer {self.url + path} in {timeout_s:.0f}s ({last}):\n"
            + self.log_tail()
        )

    def stop(self) -> None:
        """SIGTERM the process group (and any child that left it), then SIGKILL what is left."""
        try:
            import psutil

            kids = psutil.Process(self.proc.pid).children(recursive=True)
        except Exception:  # noqa: BLE001 - psutil missing or the process already gone
            kids = []
        self._signal(signal.SIGTERM, kids)
        try:
            self.proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            pass
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and any(_alive(k) for k in kids):
            time.sleep(0.2)
        self._signal(signal.SIGKILL, kids)
        try:
            self.proc.wait(timeout=10)
        finally:
            self._log_fh.close()

    def _signal(self, sig: int, kids: list) -> None:
        try:
            os.killpg(self.proc.pid, sig)
        except (ProcessLookupError, PermissionError):
            pass
        for k in kids:
            if _alive(k):
                try:
                    k.send_signal(sig)
                except Exception:  # noqa: BLE001 - already gone
                    pass


def _alive(proc) -> bool:
    try:
        return proc.is_running() and proc.status() != "zombie"
    except Exception:  # noqa: BLE001 - psutil.NoSuchProcess
        return False


@pytest.fixture
def start_server(tmp_path: Path) -> Iterator:
    """`start_server(name, cmd, port, **kw)` -> a Server; all are stopped at teardown."""
    servers: list[Server] = []

    def start(name: str, cmd: Sequence[str], port: int, **kw) -> Server:
        srv = Server(name, cmd, port, tmp_path / f"{name}.log", **kw)
        servers.append(srv)
        return srv

    yield start
    for srv in reversed(servers):
        srv.stop()


@pytest.fixture(scope="session")
def browser() -> Iterator:
    reason = skip_reason()
    if reason:
        pytest.skip(reason)
    from playwright.sync_api import expect, sync_playwright

    expect.set_options(timeout=DEFAULT_TIMEOUT_MS)
    with sync_playwright() as pw:
        b = pw.chromium.launch(
            executable_path=str(CHROMIUM),
            headless=True,
            args=["--disable-dev-shm-usage", "--disable-gpu"],
        )
        try:
            yield b
        finally:
            b.close()


@pytest.fixture
def page(browser, request) -> Iterator:
    """A fresh 1440x900 page; a screenshot is saved if the test fails."""
    ctx = browser.new_context(viewport={"width": 1440, "height": 900})
    ctx.set_default_timeout(DEFAULT_TIMEOUT_MS)
    ctx.set_default_navigation_timeout(DEFAULT_TIMEOUT_MS)
    pg = ctx.new_page()
    try:
        yield pg
    finally:
        rep = getattr(request.node, "rep_call", None)
        if rep is not None and rep.failed:
            try:
                save_screenshot(pg, f"{request.node.name}-FAILED")
            except Exception:  # noqa: BLE001 - best effort, never hide the real failure
                pass
        ctx.close()


def save_screenshot(page, name: str) -> Path:
    SHOTS.mkdir(parents=True, exist_ok=True)
    path = SHOTS / (re.sub(r"[^A-Za-z0-9_.-]+", "_", name) + ".png")
    page.screenshot(path=str(path), full_page=True)
    return path


@pytest.fixture
def screenshot(request):
    """`screenshot(page, "what")` saves test-artifacts/ui/<test module>-<what>.png."""
    prefix = Path(str(request.node.path)).stem.removeprefix("test_")

    def shoot(page, what: str) -> Path:
        return save_screenshot(page, f"{prefix}-{what}")

    return shoot
