"""Browser fixtures: one Chromium for the browser tests, the full stack per test on a real port."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from playwright.sync_api import Browser, BrowserContext, ConsoleMessage, Page, sync_playwright

from rowcast.embedded import free_port
from rowcast.settings import Settings
from tests.browser.live import LiveServer

CHROMIUM = Path("/usr/bin/chromium")
ARTIFACTS = Path(__file__).resolve().parents[1] / "artifacts"


@pytest.fixture(scope="package")
def browser() -> Iterator[Browser]:
    """Debian's Chromium, launched once for all browser tests (package scope: closed before the
    async tests of other packages run, so Playwright's own event loop never overlaps theirs)."""
    if not CHROMIUM.exists():
        pytest.skip(f"{CHROMIUM} is not installed (apt-get install -y chromium)")
    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(
            executable_path=str(CHROMIUM),
            args=["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking"],
        )
        yield chromium
        chromium.close()


@pytest.fixture
def server(db_url: str) -> Iterator[LiveServer]:
    """API + notifier + page on one free port, on this test's fresh database."""
    live = LiveServer(Settings(database_url=db_url, auth="open", port=free_port()))
    try:
        live.start()
        yield live
    finally:
        live.close()


@dataclass
class Console:
    """What pages logged: console errors and uncaught exceptions, and any dialogs they opened."""

    errors: list[str] = field(default_factory=list)
    dialogs: list[str] = field(default_factory=list)

    def watch(self, page: Page, name: str) -> None:
        def on_console(message: ConsoleMessage) -> None:
            if message.type == "error":
                self.errors.append(f"{name}: {message.text}")

        page.on("console", on_console)
        page.on("pageerror", lambda error: self.errors.append(f"{name}: uncaught {error}"))

        def on_dialog(dialog: object) -> None:
            self.dialogs.append(f"{name}: {getattr(dialog, 'message', '')}")
            dialog.dismiss()  # type: ignore[attr-defined]

        page.on("dialog", on_dialog)


@pytest.fixture
def console() -> Console:
    return Console()


@pytest.fixture
def open_page(browser: Browser, server: LiveServer, console: Console) -> Iterator[Callable[..., Page]]:
    """open_page(name, query="", width=1280, height=900) -> a loaded books page in a context of its own."""
    contexts: list[BrowserContext] = []

    def opener(
        name: str, query: str = "", width: int = 1280, init_script: str | None = None, height: int = 900
    ) -> Page:
        context = browser.new_context(viewport={"width": width, "height": height})
        context.set_default_timeout(10_000)
        contexts.append(context)
        if init_script:
            context.add_init_script(init_script)
        page = context.new_page()
        console.watch(page, name)
        page.goto(f"{server.url}/{query}")
        page.wait_for_selector("body[data-ready='true']")
        return page

    yield opener
    for context in contexts:
        context.close()


@pytest.fixture
def artifacts() -> Path:
    ARTIFACTS.mkdir(exist_ok=True)
    return ARTIFACTS
