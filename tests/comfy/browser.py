"""Headless Chromium (Debian's ``chromium`` package) driven by Playwright from PyPI, for the browser tests.

Never ``playwright install``: the browser is the system one (``/usr/bin/chromium``; ``FDTA_CHROMIUM``
overrides), launched with a fresh profile and with every background service off, so it does not try to
reach the network. Screenshots go to ``test-artifacts/screenshots/`` (ignored by git; CI keeps them as
artefacts). Missing Playwright or Chromium skips the tests, or fails them under ``FDTA_REQUIRE_COMFYUI=1``.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[2]
SCREENSHOTS = Path(os.environ.get("FDTA_SCREENSHOTS", REPO / "test-artifacts" / "screenshots"))
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-dev-shm-usage",
]


def chromium_path() -> str | None:
    for cand in (os.environ.get("FDTA_CHROMIUM"), "/usr/bin/chromium", shutil.which("chromium")):
        if cand and Path(cand).is_file():
            return cand
    return None


def browser_or_skip() -> str:
    """The Chromium executable, after checking that Playwright imports; else skip (or fail in CI)."""
    import pytest

    reason = None
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        reason = "playwright is not installed (pip install -e '.[dev]')"
    exe = chromium_path()
    if reason is None and exe is None:
        reason = "no Chromium at /usr/bin/chromium (apt-get install -y chromium) or $FDTA_CHROMIUM"
    if reason is not None:
        if os.environ.get("FDTA_REQUIRE_COMFYUI") == "1":
            pytest.fail(f"FDTA_REQUIRE_COMFYUI=1 but {reason}", pytrace=False)
        pytest.skip(reason)
    return exe  # type: ignore[return-value]


@dataclass
class Page:
    """A Playwright page on ComfyUI plus what the browser logged (console and page errors)."""

    page: Any
    base_url: str
    console: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)

    def screenshot(self, name: str, **kwargs: Any) -> Path:
        SCREENSHOTS.mkdir(parents=True, exist_ok=True)
        path = SCREENSHOTS / f"{name}.png"
        self.page.screenshot(path=str(path), **kwargs)
        return path

    def js(self, script: str, arg: Any = None) -> Any:
        return self.page.evaluate(script, arg)

    def open_comfyui(self, timeout_ms: int = 120_000) -> None:
        """Load the frontend and wait until the app and the graph exist and FDTA's extension registered."""
        self.page.goto(self.base_url + "/", wait_until="domcontentloaded", timeout=timeout_ms)
        self.page.wait_for_function(
            "() => window.app && window.app.graph && window.app.extensionManager && "
            "window.app.extensions?.some?.((e) => e.name === 'FDTA.Frontend')",
            timeout=timeout_ms,
        )


@contextlib.contextmanager
def chromium_page(base_url: str, *, width: int = 1600, height: int = 1000) -> Iterator[Page]:
    """One browser with a fresh profile and one page (closed and removed afterwards)."""
    from playwright.sync_api import sync_playwright

    exe = browser_or_skip()
    profile = tempfile.mkdtemp(prefix="fdta-chromium-")
    try:
        with sync_playwright() as pw:
            ctx = pw.chromium.launch_persistent_context(
                profile,
                executable_path=exe,
                headless=True,
                args=CHROMIUM_ARGS,
                viewport={"width": width, "height": height},
                device_scale_factor=1,
            )
            try:
                page = ctx.pages[0] if ctx.pages else ctx.new_page()
                out = Page(page=page, base_url=base_url)
                page.on("console", lambda m: out.console.append(f"{m.type}: {m.text}"))
                page.on("pageerror", lambda e: out.errors.append(str(e)))
                yield out
            finally:
                ctx.close()
    finally:
        shutil.rmtree(profile, ignore_errors=True)
