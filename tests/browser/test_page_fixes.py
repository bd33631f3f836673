"""Rough edges of the books page seen in two browsers (issue 18), each pinned by a test."""

from __future__ import annotations

import re

import pytest
from playwright.sync_api import Page, expect

from tests.browser.conftest import Console
from tests.browser.live import BLOCK_LIVE_TRANSPORTS, LiveServer, psql
from tests.browser.test_books_page import LIVE_MS, OpenPage, add_book, cell, expect_live, row, seed

pytestmark = pytest.mark.browser


def looks_invalid(page: Page, selector: str) -> bool:
    return bool(page.eval_on_selector(selector, "e => e.matches(':user-invalid')"))


def border(page: Page, selector: str) -> str:
    return str(page.eval_on_selector(selector, "e => getComputedStyle(e).borderTopColor"))


def test_the_empty_title_is_not_red_after_a_successful_save(open_page: OpenPage, db_url: str) -> None:
    (book,) = seed(db_url, "Kindred")
    page = open_page("writer")
    expect_live(page)
    add_book(page, "Wild Seed", "Octavia E. Butler", "300")
    expect(page.locator("#book-rows tr", has_text="Wild Seed")).to_have_count(1)
    expect(page.locator("#title")).to_have_value("")
    assert not looks_invalid(page, "#title")
    assert border(page, "#title") == border(page, "#author")

    row(page, book).locator('[data-action="edit"]').click()
    page.fill("#title", "Kindred (2nd ed.)")
    page.click("#save")
    expect(page.locator("#book-form")).to_have_attribute("data-mode", "create")
    assert not looks_invalid(page, "#title")
    assert border(page, "#title") == border(page, "#author")

    # A real mistake still shows: trying to submit an empty title marks it.
    page.click("#save")
    assert looks_invalid(page, "#title")


def test_the_event_log_names_rows_by_title_or_name_also_for_a_delete(
    open_page: OpenPage, db_url: str
) -> None:
    page = open_page("watcher")
    expect_live(page)
    (book,) = seed(db_url, "Parable of the Sower")
    psql(db_url, f"UPDATE books SET title = 'Parable of the Talents' WHERE id = {book}")
    psql(db_url, f"DELETE FROM books WHERE id = {book}")
    psql(db_url, "INSERT INTO authors (name) VALUES ('Octavia E. Butler')")

    events = page.locator("#events li")
    expect(events).to_have_count(4, timeout=LIVE_MS)
    names = [text.strip() for text in page.locator("#events li .what").all_text_contents()]
    assert names == [
        "Octavia E. Butler",
        "Parable of the Talents",  # the delete: named from the old row, its only trace
        "Parable of the Talents",
        "Parable of the Sower",
    ]
    # The key is still there for whoever needs it, just not as the label.
    assert page.locator("#events li[data-op='delete'] .what").get_attribute("title") == f"books {book}"


def test_column_widths_stay_put_when_a_last_change_cell_fills(open_page: OpenPage, db_url: str) -> None:
    books = seed(db_url, "Dune", "The Dispossessed", "Kindred")
    page = open_page("viewer")
    expect_live(page)
    widths = (
        "() => [...document.querySelectorAll('#books thead th')].map(th => th.getBoundingClientRect().width)"
    )
    before = page.evaluate(widths)
    psql(db_url, f"UPDATE books SET title = 'Dune (a much longer title than before)' WHERE id = {books[0]}")
    expect(row(page, books[0]).get_by_test_id("changed-by")).to_contain_text("changed by postgres via psql")
    after = page.evaluate(widths)
    assert after == before


def test_with_the_whole_server_down_the_banner_does_not_promise_saves(
    open_page: OpenPage, server: LiveServer, db_url: str
) -> None:
    # As under `rowcast up`: the API and the notifier are one process, so both are gone.
    seed(db_url, "Kept")
    page = open_page("b")
    expect_live(page)
    server.stop()
    note = page.locator("#offline-note")
    expect(note).to_be_visible()
    expect(note).to_have_attribute("data-api", "down", timeout=10_000)
    expect(note).not_to_contain_text("saves books")
    expect(note).to_contain_text(re.compile("reconnecting", re.IGNORECASE))
    server.start()
    expect(page.locator("#status")).to_have_text("live", timeout=30_000)
    expect(note).to_be_hidden()


def test_with_only_live_updates_blocked_the_banner_says_saves_still_work(
    open_page: OpenPage, db_url: str, console: Console
) -> None:
    seed(db_url, "Loaded over REST")
    page = open_page("rest-only", init_script=BLOCK_LIVE_TRANSPORTS)
    expect(page.locator("#status")).to_have_text("offline", timeout=15_000)
    note = page.locator("#offline-note")
    expect(note).to_be_visible()
    # The page probes /api/healthz with a 2.5 s timeout every 3 s: under a parallel suite on 2
    # cores a probe may time out ("down") before one answers; the banner must settle on "up".
    expect(note).to_have_attribute("data-api", "up", timeout=20_000)
    expect(note).to_contain_text("Live updates are paused")
    expect(note).to_contain_text("still loads and saves books")


@pytest.mark.parametrize("width", [1280, 1024])
def test_the_conflict_dialogs_actions_are_visible_in_an_800px_high_window(
    open_page: OpenPage, db_url: str, width: int
) -> None:
    (book,) = seed(db_url, "Solaris")
    page = open_page("editor", width=width, height=800)
    expect_live(page)
    row(page, book).locator('[data-action="edit"]').click()
    page.fill("#title", "Solaris (mine)")
    psql(db_url, f"UPDATE books SET title = 'Solaris (theirs)', author = 'S. Lem' WHERE id = {book}")
    expect(page.locator("#conflict")).to_have_attribute("data-reason", "changed", timeout=LIVE_MS)
    for button in ("#conflict-load", "#conflict-overwrite", "#conflict-dismiss"):
        expect(page.locator(button)).to_be_in_viewport(ratio=1)
    expect(page.locator("#title")).to_be_in_viewport()  # still where the person types

    page.click("#save")  # the 412 dialog too
    expect(page.locator("#conflict")).to_have_attribute("data-reason", "stale")
    for button in ("#conflict-load", "#conflict-overwrite", "#conflict-dismiss"):
        expect(page.locator(button)).to_be_in_viewport(ratio=1)
    expect(cell(page, book, "title")).to_have_text("Solaris (theirs)")
