"""Issue 17 (5): the operator's /status page in Chromium. It shows a captured table's changes
rising as rows are written (live through rowcast.js, then confirmed by /status.json), the
notifier serving the page with at least one client, and in token mode asks for a token."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
from playwright.sync_api import Browser, Page, expect

from rowcast.auth import issue_token
from rowcast.embedded import free_port
from rowcast.settings import Settings
from tests.browser.conftest import Console
from tests.browser.live import LiveServer

pytestmark = pytest.mark.browser

SECRET = "status-browser-secret-" + "k" * 32


def field(page: Page, table: str, name: str) -> str:
    return page.locator(f'tr[data-table="{table}"] td[data-field="{name}"]').inner_text()


def open_status(browser: Browser, url: str, console: Console) -> Page:
    context = browser.new_context(viewport={"width": 1400, "height": 700})
    context.set_default_timeout(10_000)
    page = context.new_page()
    console.watch(page, "status")
    page.goto(url)
    return page


def test_status_page_shows_changes_rising_and_the_notifiers_clients(
    browser: Browser, server: LiveServer, db_url: str, console: Console, artifacts: Path
) -> None:
    page = open_status(browser, f"{server.url}/status", console)
    page.wait_for_selector("body[data-ready='true']")
    expect(page.locator("#live")).to_have_text("live")
    assert field(page, "public.books", "log_rows") == "0"
    assert field(page, "public.books", "wake_mode") == "notify"
    assert field(page, "public.books", "retention") == "24 h"

    with psycopg.connect(db_url, autocommit=True) as conn:
        for i in range(30):
            conn.execute("INSERT INTO books (title, author) VALUES (%s, 'status page')", (f"s{i}",))
            if i % 10 == 9:
                time.sleep(0.3)
        conn.execute("INSERT INTO authors (name) VALUES ('Le Guin')")

    # Live through rowcast.js first, then the same numbers from the database.
    expect(page.locator('tr[data-table="public.books"] td[data-field="live"]')).to_contain_text("30 (")
    expect(page.locator('tr[data-table="public.books"] td[data-field="log_rows"]')).to_have_text("30")
    expect(page.locator('tr[data-table="public.authors"] td[data-field="log_rows"]')).to_have_text("1")
    chart = page.locator('tr[data-table="public.books"] svg.chart')
    expect(chart).to_have_attribute("data-counts", "0,0,0,0,0,0,0,0,0,0,0,0,0,0,30")
    assert float(field(page, "public.books", "rate")) == pytest.approx(0.5)
    # The next read of /status.json: the oldest change now comes from the database, and its
    # counts agree with what arrived live.
    expect(page.locator('tr[data-table="public.books"] td[data-field="oldest"]')).to_contain_text(" ago")
    assert field(page, "public.books", "log_rows") == "30"
    assert chart.get_attribute("data-counts") == "0,0,0,0,0,0,0,0,0,0,0,0,0,0,30"

    notifier = page.locator("tr[data-notifier]")
    expect(notifier).to_have_count(1)
    expect(notifier.locator('td[data-field="state"]')).to_have_text("listening")
    # The page's own WebSocket and its two subscriptions, reported by the heartbeat row.
    expect(notifier.locator('td[data-field="clients"]')).to_have_text("1")
    expect(notifier.locator('td[data-field="subscriptions"]')).to_have_text("2")
    expect(notifier.locator('td[data-field="lag_p99"]')).to_contain_text(" ms")
    expect(notifier.locator('td[data-field="notify_queue"]')).to_have_text("0.0 %")
    page.screenshot(path=str(artifacts / "status-page.png"), full_page=True)
    assert console.errors == []


@pytest.fixture
def token_server(db_url: str) -> Iterator[LiveServer]:
    live = LiveServer(Settings(database_url=db_url, auth="token", jwt_secret=SECRET, port=free_port()))
    try:
        live.start()
        yield live
    finally:
        live.close()


def test_status_page_in_token_mode_asks_for_a_token_with_the_metrics_grant(
    browser: Browser, token_server: LiveServer, console: Console
) -> None:
    page = open_status(browser, f"{token_server.url}/status", console)
    expect(page.locator("#token-form")).to_be_visible()
    expect(page.locator("#live")).to_have_text("token needed")
    assert page.locator("tr[data-table]").count() == 0

    page.fill("#token", issue_token(SECRET, "alice", read=["books"]))  # no metrics grant
    page.click("#token-form button")
    expect(page.locator("#token-error")).to_contain_text("metrics grant")

    page.fill("#token", issue_token(SECRET, "ops", metrics=True))
    page.click("#token-form button")
    page.wait_for_selector("body[data-ready='true']")
    expect(page.locator("#token-form")).to_be_hidden()
    expect(page.locator("#live")).to_have_text("live")
    expect(page.locator('tr[data-table="public.books"] td[data-field="log_rows"]')).to_have_text("0")

    # The fragment form: the token never reaches the server's URL, and leaves the address bar.
    other = open_status(
        browser, f"{token_server.url}/status#token={issue_token(SECRET, 'ops', metrics=True)}", console
    )
    other.wait_for_selector("body[data-ready='true']")
    assert "token" not in other.url
    expect(other.locator("#live")).to_have_text("live")
    # The 401 and 403 answers are the expected ones; anything else logged is not.
    assert [e for e in console.errors if "401" not in e and "403" not in e] == []
