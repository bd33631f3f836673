"""Two people editing the same book in two Chromium pages: field-level merges (issue 18)."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
from playwright.sync_api import Page, Request, Response, expect

from tests.browser.conftest import Console
from tests.browser.live import BLOCK_LIVE_TRANSPORTS, psql
from tests.browser.test_books_page import LIVE_MS, OpenPage, cell, expect_live, row, seed

pytestmark = pytest.mark.browser

# Both live transports blocked, REST reachable: this page never hears of the other's save, so
# its own save is the one that meets the 412 (see test_books_page for the same trick).
DEAF = BLOCK_LIVE_TRANSPORTS
# The only console errors a 412 costs: Chromium's own network log line.
PRECONDITION_FAILED = (
    "Failed to load resource: the server responded with a status of 412 (Precondition Failed)"
)


def watch_conflict(page: Page) -> None:
    """Record whether the conflict dialog is ever shown, however briefly."""
    page.evaluate(
        """() => {
          const dialog = document.getElementById("conflict");
          window.conflictShown = false;
          new MutationObserver(() => { if (!dialog.hidden) window.conflictShown = true; })
            .observe(dialog, { attributes: true, attributeFilter: ["hidden"] });
        }"""
    )


def conflict_was_shown(page: Page) -> bool:
    return bool(page.evaluate("window.conflictShown"))


def start_editing(page: Page, book: int) -> None:
    row(page, book).locator('[data-action="edit"]').click()
    expect(page.locator("#book-form")).to_have_attribute("data-editing", str(book))


def saved(page: Page) -> None:
    expect(page.locator("#book-form")).to_have_attribute("data-mode", "create")


def patches(page: Page) -> tuple[list[Any], list[int]]:
    """Bodies of the PATCHes the page sends, and the statuses they get, as they happen."""
    bodies: list[Any] = []
    statuses: list[int] = []

    def on_request(request: Request) -> None:
        if request.method == "PATCH":
            bodies.append(request.post_data_json)

    def on_response(response: Response) -> None:
        if response.request.method == "PATCH":
            statuses.append(response.status)

    page.on("request", on_request)
    page.on("response", on_response)
    return bodies, statuses


def book_in_db(db_url: str, book: int) -> str:
    return psql(db_url, f"SELECT title, author, num_pages FROM books WHERE id = {book}")


def seed_304(db_url: str, title: str) -> int:
    (book,) = seed(db_url, title)
    psql(db_url, f"UPDATE books SET num_pages = 304 WHERE id = {book}")
    return book


def test_different_fields_edited_at_once_are_both_saved_without_a_dialog(
    open_page: OpenPage, db_url: str, console: Console, artifacts: Path
) -> None:
    book = seed_304(db_url, "Dune")
    alice, bob = open_page("alice"), open_page("bob")
    for page, name in ((alice, "alice"), (bob, "bob")):
        expect_live(page)
        page.fill("#actor", name)
        watch_conflict(page)
        start_editing(page, book)
    bob_bodies, _ = patches(bob)

    alice.fill("#num_pages", "305")
    bob.fill("#title", "Dune (2nd ed.)")
    alice.click("#save")
    saved(alice)
    # Bob's form takes Alice's page count in the field he did not touch, and keeps his title.
    expect(bob.locator("#num_pages")).to_have_value("305", timeout=LIVE_MS)
    expect(bob.locator("#title")).to_have_value("Dune (2nd ed.)")
    expect(bob.locator("#merge-note")).to_contain_text("alice via api changed pages")
    bob.screenshot(path=str(artifacts / "books-merge-while-editing.png"), full_page=True)
    bob.click("#save")
    saved(bob)

    assert book_in_db(db_url, book) == "Dune (2nd ed.)|Seed Author|305"
    assert bob_bodies == [{"title": "Dune (2nd ed.)"}]  # only the field Bob changed
    for page in (alice, bob):
        expect(cell(page, book, "title")).to_have_text("Dune (2nd ed.)", timeout=LIVE_MS)
        expect(cell(page, book, "num_pages")).to_have_text("305")
        assert not conflict_was_shown(page)
    assert console.errors == []


def test_a_save_that_meets_a_412_on_other_fields_merges_and_retries_by_itself(
    open_page: OpenPage, db_url: str, console: Console, artifacts: Path
) -> None:
    book = seed_304(db_url, "Hyperion")
    alice = open_page("alice")
    bob = open_page("bob", init_script=DEAF)
    expect_live(alice)
    expect(cell(bob, book, "title")).to_have_text("Hyperion")
    for page in (alice, bob):
        watch_conflict(page)
        start_editing(page, book)
    bob_bodies, bob_statuses = patches(bob)

    alice.fill("#num_pages", "305")
    alice.click("#save")
    saved(alice)
    bob.fill("#author", "Dan Simmons")
    bob.click("#save")  # based on version 2; Alice made it 3
    saved(bob)

    assert bob_statuses == [412, 200]
    assert bob_bodies == [{"author": "Dan Simmons"}, {"author": "Dan Simmons"}]
    assert book_in_db(db_url, book) == "Hyperion|Dan Simmons|305"
    expect(bob.locator("#merge-note")).to_contain_text("pages")
    expect(cell(bob, book, "num_pages")).to_have_text("305")
    expect(cell(bob, book, "author")).to_have_text("Dan Simmons")
    expect(cell(alice, book, "author")).to_have_text("Dan Simmons", timeout=LIVE_MS)
    expect(cell(alice, book, "num_pages")).to_have_text("305")
    assert not conflict_was_shown(alice) and not conflict_was_shown(bob)
    bob.screenshot(path=str(artifacts / "books-merge-after-412.png"), full_page=True)
    assert not [e for e in console.errors if "uncaught" in e or "alice" in e]


def test_the_same_field_edited_by_both_asks_showing_both_values(
    open_page: OpenPage, db_url: str, console: Console, artifacts: Path
) -> None:
    book = seed_304(db_url, "Solaris")
    alice, bob = open_page("alice"), open_page("bob")
    for page, name in ((alice, "alice"), (bob, "bob")):
        expect_live(page)
        page.fill("#actor", name)
        start_editing(page, book)

    alice.fill("#title", "Solaris (Alice)")
    bob.fill("#title", "Solaris (Bob)")
    alice.click("#save")
    saved(alice)

    dialog = bob.locator("#conflict")
    theirs = bob.locator('#conflict-values [data-field="title"][data-side="theirs"]')
    mine = bob.locator('#conflict-values [data-field="title"][data-side="mine"]')
    expect(dialog).to_have_attribute("data-reason", "changed", timeout=LIVE_MS)
    expect(theirs).to_contain_text("Solaris (Alice)")
    expect(mine).to_contain_text("Solaris (Bob)")
    expect(bob.locator("#title")).to_be_focused()  # a live notice never steals the focus

    bob.click("#save")
    expect(dialog).to_have_attribute("data-reason", "stale")
    expect(bob.locator("#conflict-text")).to_contain_text(
        re.compile(r"changed by alice via api at .*\(changed: title\)")
    )
    expect(theirs).to_contain_text("Solaris (Alice)")
    expect(mine).to_contain_text("Solaris (Bob)")
    assert book_in_db(db_url, book) == "Solaris (Alice)|Seed Author|304"  # nothing overwritten unasked
    bob.screenshot(path=str(artifacts / "books-conflict-both-values.png"), full_page=True)
    assert console.errors == [f"bob: {PRECONDITION_FAILED}"]


def test_overwrite_writes_only_the_fields_the_person_edited(
    open_page: OpenPage, db_url: str, console: Console
) -> None:
    # The reported bug: Overwrite re-sent every field and put back 304 pages over Alice's 305.
    book = seed_304(db_url, "The Left Hand of Darkness")
    alice, bob = open_page("alice"), open_page("bob")
    for page, name in ((alice, "alice"), (bob, "bob")):
        expect_live(page)
        page.fill("#actor", name)
        start_editing(page, book)
    bob_bodies, _ = patches(bob)

    bob.fill("#title", "Left Hand (Bob)")
    alice.fill("#title", "Left Hand (Alice)")
    alice.fill("#num_pages", "305")
    alice.click("#save")
    saved(alice)
    expect(bob.locator("#conflict")).to_have_attribute("data-reason", "changed", timeout=LIVE_MS)
    # The field Bob never touched already shows Alice's value: the form shows what will stand.
    expect(bob.locator("#num_pages")).to_have_value("305")
    expect(bob.locator("#title")).to_have_value("Left Hand (Bob)")
    bob.click("#save")
    expect(bob.locator("#conflict")).to_have_attribute("data-reason", "stale")
    bob.click("#conflict-overwrite")
    saved(bob)

    assert book_in_db(db_url, book) == "Left Hand (Bob)|Seed Author|305"
    assert bob_bodies == [{"title": "Left Hand (Bob)"}, {"title": "Left Hand (Bob)"}]
    for page in (alice, bob):
        expect(cell(page, book, "num_pages")).to_have_text("305", timeout=LIVE_MS)
        expect(cell(page, book, "title")).to_have_text("Left Hand (Bob)", timeout=LIVE_MS)
    assert console.errors == [f"bob: {PRECONDITION_FAILED}"]
