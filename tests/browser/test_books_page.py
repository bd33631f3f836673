"""The live books page in Chromium against the whole stack: API, notifier, rowcast.js."""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path

import pytest
from playwright.sync_api import Locator, Page, expect

from tests.browser.conftest import Console
from tests.browser.live import BLOCK_LIVE_TRANSPORTS, LiveServer, psql

pytestmark = pytest.mark.browser

XSS = "<img src=x onerror=alert(1)>"
PSQL_LINE = re.compile(r"^changed by postgres via psql at \d\d:\d\d:\d\d$")
# A change must reach every open page within this long (the promise).
LIVE_MS = 1000

OpenPage = Callable[..., Page]


def row(page: Page, book_id: int | str) -> Locator:
    return page.locator(f'#book-rows tr[data-id="{book_id}"]')


def cell(page: Page, book_id: int | str, column: str) -> Locator:
    return row(page, book_id).locator(f'td[data-col="{column}"]')


def visible_rows(page: Page) -> Locator:
    return page.locator("#book-rows tr:not([data-state='removing'])")


def add_book(page: Page, title: str, author: str = "", pages: str = "") -> None:
    page.fill("#title", title)
    page.fill("#author", author)
    page.fill("#num_pages", pages)
    page.click("#save")


def ids_shown(page: Page) -> list[int]:
    return sorted(int(i) for i in visible_rows(page).evaluate_all("rows => rows.map(r => r.dataset.id)"))


def db_books(db_url: str) -> list[tuple[int, str]]:
    out = psql(db_url, "SELECT id, title FROM books ORDER BY id")
    return [(int(line.split("|", 1)[0]), line.split("|", 1)[1]) for line in out.splitlines() if line]


def seed(db_url: str, *titles: str) -> list[int]:
    values = ", ".join("('" + t.replace("'", "''") + "', 'Seed Author', 100)" for t in titles)
    out = psql(db_url, f"INSERT INTO books (title, author, num_pages) VALUES {values} RETURNING id")
    return [int(line) for line in out.splitlines()]


def expect_live(page: Page) -> None:
    expect(page.locator("#status")).to_have_text("live")


def test_two_pages_see_each_others_create_edit_and_delete_within_a_second(
    open_page: OpenPage, console: Console
) -> None:
    alice, bob = open_page("alice"), open_page("bob")
    for page, name in ((alice, "alice"), (bob, "bob")):
        expect_live(page)
        page.fill("#actor", name)

    add_book(alice, "The Left Hand of Darkness", "Ursula K. Le Guin", "304")
    new = bob.locator("#book-rows tr", has_text="The Left Hand of Darkness")
    expect(new).to_have_count(1, timeout=LIVE_MS)
    book_id = new.get_attribute("data-id")
    assert book_id is not None
    expect(cell(bob, book_id, "author")).to_have_text("Ursula K. Le Guin")
    expect(bob.locator("#book-count")).to_have_text("1")

    # Bob edits; Alice sees it with the changed cell flashing and Bob named.
    row(bob, book_id).locator('[data-action="edit"]').click()
    expect(bob.locator("#title")).to_have_value("The Left Hand of Darkness")
    bob.fill("#num_pages", "320")
    bob.click("#save")
    expect(cell(alice, book_id, "num_pages")).to_have_text("320", timeout=LIVE_MS)
    expect(cell(alice, book_id, "num_pages")).to_have_class(re.compile(r"\bflash\b"))
    expect(row(alice, book_id).get_by_test_id("changed-by")).to_have_text(
        re.compile(r"^changed by bob via api at \d\d:\d\d:\d\d$")
    )
    # Bob's own edit is not announced to him as someone else's, and never as a conflict.
    expect(row(bob, book_id).get_by_test_id("changed-by")).to_have_text(re.compile(r"^changed by you at "))
    expect(bob.locator("#conflict")).to_be_hidden()
    expect(bob.locator("#book-form")).to_have_attribute("data-mode", "create")
    expect(alice.locator("#events li[data-op='update']").first).to_contain_text("bob via api")
    expect(bob.locator("#events li[data-op='update']").first).to_have_attribute("data-mine", "true")

    # Alice deletes; the row fades out on Bob's page and is gone.
    row(alice, book_id).locator('[data-action="delete"]').click()
    expect(visible_rows(bob)).to_have_count(0, timeout=LIVE_MS)
    expect(row(bob, book_id)).to_have_count(0)
    expect(row(alice, book_id)).to_have_count(0)
    expect(bob.locator("#empty")).to_be_visible()
    assert console.errors == []


def test_psql_writes_show_on_both_pages_attributed_to_psql(
    open_page: OpenPage, db_url: str, console: Console
) -> None:
    (kept,) = seed(db_url, "Kindred")
    first, second = open_page("first"), open_page("second")
    expect_live(first)
    expect_live(second)

    (inserted,) = seed(db_url, "Parable of the Sower")
    psql(db_url, f"UPDATE books SET title = 'Kindred (2nd ed.)' WHERE id = {kept}")
    for page in (first, second):
        expect(cell(page, inserted, "title")).to_have_text("Parable of the Sower", timeout=LIVE_MS)
        expect(cell(page, kept, "title")).to_have_text("Kindred (2nd ed.)", timeout=LIVE_MS)
        expect(row(page, kept).get_by_test_id("changed-by")).to_have_text(PSQL_LINE)
        expect(row(page, inserted).get_by_test_id("changed-by")).to_have_text(
            re.compile(r"^added by postgres via psql at ")
        )

    psql(db_url, f"DELETE FROM books WHERE id = {inserted}")
    for page in (first, second):
        expect(row(page, inserted)).to_have_count(0, timeout=LIVE_MS + 500)  # + the fade-out
        events = page.locator("#events li[data-table='books']")
        expect(events.first).to_have_attribute("data-op", "delete")
        expect(events.first).to_contain_text("postgres via psql")
        expect(events).to_have_count(3)
    assert console.errors == []


def test_psql_update_while_editing_gives_a_notice_and_the_save_a_conflict_not_a_lost_update(
    open_page: OpenPage, db_url: str, console: Console, artifacts: Path
) -> None:
    (book,) = seed(db_url, "Solaris")
    page = open_page("editor")
    expect_live(page)
    row(page, book).locator('[data-action="edit"]').click()
    page.fill("#title", "Solaris (my edit)")

    # psql changes the field being edited (and another): only that one is a conflict.
    psql(db_url, f"UPDATE books SET title = 'Solaris (psql)', num_pages = 204 WHERE id = {book}")
    conflict = page.locator("#conflict")
    expect(conflict).to_be_visible(timeout=LIVE_MS)
    expect(conflict).to_have_attribute("data-reason", "changed")
    expect(page.locator("#conflict-text")).to_contain_text(
        re.compile(
            r"^This book was changed by postgres via psql at \d\d:\d\d:\d\d while you were editing it "
            r"\(changed: title and pages\)\.$"
        )
    )
    expect(page.locator("#conflict-load")).to_have_text("Load their version")
    expect(page.locator("#conflict-overwrite")).to_have_text("Overwrite")
    # Typing goes on undisturbed: the notice does not take the focus.
    expect(page.locator("#title")).to_be_focused()
    expect(page.locator("#title")).to_have_value("Solaris (my edit)")

    # Saving anyway is refused with 412 and lands in the same dialog, not as a raw error.
    page.click("#save")
    expect(conflict).to_have_attribute("data-reason", "stale")
    expect(page.locator("#conflict-text")).to_contain_text(
        "Not saved: this book was changed by postgres via psql at "
    )
    expect(page.locator("#conflict-text")).to_contain_text("(changed: title and pages)")
    expect(page.locator("#conflict-values")).to_contain_text("Solaris (psql)")
    expect(page.locator("#form-error")).to_be_hidden()
    assert db_books(db_url) == [(book, "Solaris (psql)")]  # psql's row stands: nothing was lost
    page.screenshot(path=str(artifacts / "books-conflict.png"), full_page=True)

    # Load their version, redo the edit on top of it: both changes survive.
    page.click("#conflict-load")
    expect(conflict).to_be_hidden()
    expect(page.locator("#num_pages")).to_have_value("204")
    expect(page.locator("#title")).to_have_value("Solaris (psql)")
    page.fill("#title", "Solaris (my edit)")
    page.click("#save")
    expect(page.locator("#book-form")).to_have_attribute("data-mode", "create")
    expect(cell(page, book, "title")).to_have_text("Solaris (my edit)")
    assert psql(db_url, f"SELECT title, num_pages FROM books WHERE id = {book}") == "Solaris (my edit)|204"
    # The only console line is Chromium's own network log of the expected 412.
    assert console.errors == [
        "editor: Failed to load resource: the server responded with a status of 412 (Precondition Failed)"
    ]


def test_a_psql_change_to_another_field_merges_into_the_edit_without_a_dialog(
    open_page: OpenPage, db_url: str, console: Console
) -> None:
    (book,) = seed(db_url, "Roadside Picnic")
    page = open_page("editor")
    expect_live(page)
    row(page, book).locator('[data-action="edit"]').click()
    page.fill("#num_pages", "145")
    psql(db_url, f"UPDATE books SET author = 'A. & B. Strugatsky' WHERE id = {book}")
    # The untouched field follows psql; the edited one keeps the edit; nothing asks.
    expect(page.locator("#author")).to_have_value("A. & B. Strugatsky", timeout=LIVE_MS)
    expect(page.locator("#num_pages")).to_have_value("145")
    expect(page.locator("#merge-note")).to_contain_text("postgres via psql changed author")
    expect(page.locator("#conflict")).to_be_hidden()
    page.click("#save")
    expect(page.locator("#book-form")).to_have_attribute("data-mode", "create")
    assert psql(db_url, f"SELECT author, num_pages FROM books WHERE id = {book}") == "A. & B. Strugatsky|145"
    expect(cell(page, book, "author")).to_have_text("A. & B. Strugatsky")
    assert console.errors == []


def test_page_catches_up_with_exactly_the_right_rows_after_the_notifier_was_down(
    open_page: OpenPage, server: LiveServer, db_url: str
) -> None:
    kept, changed, deleted = seed(db_url, "Kept", "Changed", "Deleted")
    page = open_page("b")
    expect_live(page)
    assert ids_shown(page) == [kept, changed, deleted]

    # Record every status the page shows, however briefly.
    page.evaluate(
        """() => {
          const status = document.getElementById("status");
          window.statusHistory = [];
          new MutationObserver(() => window.statusHistory.push(status.textContent))
            .observe(status, { childList: true, characterData: true, subtree: true });
        }"""
    )
    server.stop()
    expect(page.locator("#status")).to_have_text("reconnecting")
    expect(page.locator("#offline-note")).to_be_visible()
    (inserted,) = seed(db_url, "Inserted while away")
    psql(db_url, f"UPDATE books SET title = 'Changed while away' WHERE id = {changed}")
    psql(db_url, f"DELETE FROM books WHERE id = {deleted}")
    server.start()

    expect(page.locator("#status")).to_have_text("live", timeout=30_000)
    history = page.evaluate("window.statusHistory")
    assert history[0] == "reconnecting" and history[-1] == "live", history
    # "live" means the socket is open; the replay of what was missed follows it.
    expect(row(page, inserted)).to_have_count(1)
    expect(row(page, deleted)).to_have_count(0)
    for book_id, title in db_books(db_url):
        expect(cell(page, book_id, "title")).to_have_text(title)
    assert ids_shown(page) == sorted([kept, changed, inserted])
    # Each change that happened while away is listed once: the replay's duplicates are dropped.
    events = page.locator("#events li[data-table='books']")
    expect(events).to_have_count(3)
    assert sorted(events.evaluate_all("items => items.map(i => i.dataset.op)")) == [
        "delete",
        "insert",
        "update",
    ]
    # And it is live again, not just caught up.
    psql(db_url, f"UPDATE books SET title = 'Kept, then changed' WHERE id = {kept}")
    expect(cell(page, kept, "title")).to_have_text("Kept, then changed", timeout=LIVE_MS)
    expect(events).to_have_count(4)  # no late duplicate of the replay slipped in before it


def test_falls_back_to_sse_when_websockets_cannot_open(open_page: OpenPage, db_url: str) -> None:
    # A WebSocket aimed at a closed port: it errors and closes without ever opening, which is
    # what a proxy that blocks upgrades looks like to the page.
    blocked = """
      const Real = window.WebSocket;
      window.WebSocket = class extends Real {
        constructor(url, protocols) { super("ws://127.0.0.1:9/blocked", protocols); }
      };
    """
    page = open_page("behind-proxy", init_script=blocked)
    expect_live(page)
    expect(page.locator("#status")).to_have_attribute("data-transport", "sse")
    (book,) = seed(db_url, "Over SSE")
    expect(cell(page, book, "title")).to_have_text("Over SSE", timeout=LIVE_MS)
    expect(row(page, book).get_by_test_id("changed-by")).to_have_text(
        re.compile(r"^added by postgres via psql at ")
    )


def test_a_hostile_title_renders_as_text(open_page: OpenPage, db_url: str, console: Console) -> None:
    (from_psql,) = seed(db_url, XSS)
    page = open_page("viewer")
    expect_live(page)
    expect(cell(page, from_psql, "title")).to_have_text(XSS)
    # The same through the form and a live event.
    add_book(page, '"><script>alert(2)</script>', "<b>bold</b>")
    created = page.locator("#book-rows tr", has_text="<script>")
    expect(created).to_have_count(1)
    expect(created.locator('td[data-col="author"]')).to_have_text("<b>bold</b>")
    assert page.locator("#book-rows img, #book-rows script, #book-rows b, #events img").count() == 0
    assert console.dialogs == []
    assert console.errors == []


def test_page_fits_a_phone_and_a_desktop_and_is_keyboard_operable(
    open_page: OpenPage, db_url: str, console: Console, artifacts: Path
) -> None:
    seed(db_url, "Dune", "The Dispossessed", XSS)
    phone = open_page("phone", width=360)
    expect_live(phone)
    width = phone.evaluate("document.documentElement.scrollWidth")
    assert width <= 360, f"the page scrolls sideways at 360 px ({width} px wide)"
    phone.screenshot(path=str(artifacts / "books-360px.png"), full_page=True)

    desktop = open_page("desktop")
    expect_live(desktop)
    # Keyboard only: tab to the title, type, submit with Enter.
    desktop.focus("#actor")
    desktop.keyboard.press("Shift+Tab")  # keyboard focus shows a visible outline
    expect(desktop.locator("#save")).to_be_focused()
    outline = desktop.evaluate("getComputedStyle(document.activeElement).outlineStyle")
    assert outline not in ("none", ""), "focused buttons need a visible outline"
    desktop.focus("#title")
    desktop.keyboard.type("Typed, not clicked")
    desktop.keyboard.press("Tab")
    desktop.keyboard.type("Keyboard User")
    desktop.keyboard.press("Enter")
    expect(desktop.locator("#book-rows tr", has_text="Typed, not clicked")).to_have_count(1)
    expect(phone.locator("#book-rows tr", has_text="Typed, not clicked")).to_have_count(1, timeout=LIVE_MS)
    for field in ("title", "author", "num_pages", "actor"):
        assert desktop.locator(f"label[for='{field}']").count() == 1
    assert desktop.locator("#status").get_attribute("role") == "status"
    desktop.screenshot(path=str(artifacts / "books-desktop.png"), full_page=True)
    assert console.errors == []


def test_without_live_updates_the_page_still_loads_and_saves_over_rest(
    open_page: OpenPage, db_url: str, console: Console
) -> None:
    # Both live transports blocked (a hostile proxy), the REST API reachable.
    (book,) = seed(db_url, "Loaded over REST")
    page = open_page("rest-only", init_script=BLOCK_LIVE_TRANSPORTS)
    expect(cell(page, book, "title")).to_have_text("Loaded over REST")
    expect(page.locator("#status")).to_have_text("offline", timeout=40_000)
    expect(page.locator("#offline-note")).to_be_visible()

    add_book(page, "Saved over REST", "Offline Author", "10")
    created = page.locator("#book-rows tr", has_text="Saved over REST")
    expect(created).to_have_count(1)
    row(page, book).locator('[data-action="edit"]').click()
    page.fill("#title", "Edited over REST")
    page.click("#save")
    expect(cell(page, book, "title")).to_have_text("Edited over REST")
    assert [title for _, title in db_books(db_url)] == ["Edited over REST", "Saved over REST"]
    # Only the blocked transports complained; the page itself raised nothing.
    assert not [e for e in console.errors if "uncaught" in e]
