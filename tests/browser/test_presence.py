"""Presence on the books page in two Chromium pages (issue 18): who else is viewing or editing a
book shows on the row and in the edit form before anyone saves, and goes when their page closes."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from playwright.sync_api import Browser, Locator, Page, expect

from rowcast.auth import issue_token
from rowcast.embedded import free_port
from rowcast.settings import Settings
from tests.browser.conftest import Console
from tests.browser.live import LiveServer, psql
from tests.browser.test_books_page import OpenPage, expect_live, row, seed

pytestmark = pytest.mark.browser

SECRET = "presence-browser-secret-" + "k" * 32


def presence_on(page: Page, book: int) -> Locator:
    return row(page, book).locator('[data-testid="presence"]')


def named(page: Page, name: str) -> None:
    page.fill("#actor", name)
    page.dispatch_event("#actor", "change")


def start_editing(page: Page, book: int) -> None:
    row(page, book).locator('[data-action="edit"]').click()
    expect(page.locator("#book-form")).to_have_attribute("data-editing", str(book))


def test_presence_shows_on_the_row_and_in_the_form_and_goes_when_the_page_closes(
    open_page: OpenPage, db_url: str, console: Console, artifacts: Path
) -> None:
    book, other = seed(db_url, "Presence: Dune", "Presence: Emma")
    alice, bob = open_page("alice"), open_page("bob")
    for page in (alice, bob):
        expect_live(page)
    named(alice, "Alice")
    named(bob, "Bob")

    started = time.monotonic()
    start_editing(alice, book)
    expect(presence_on(bob, book)).to_have_text("Alice is viewing", timeout=1000)
    assert time.monotonic() - started < 1.5  # the click included; the issue's bound is 1 s after it
    expect(presence_on(bob, other)).to_have_text("")
    expect(presence_on(alice, book)).to_have_text("")  # never one's own presence
    bob.screenshot(path=str(artifacts / "books-presence-viewing.png"), full_page=True)

    # Unsaved edits: "editing", on the row and in the form of whoever opens the same book.
    alice.fill("#num_pages", "512")
    expect(presence_on(bob, book)).to_have_text("Alice is editing", timeout=1000)
    expect(presence_on(bob, book)).to_have_attribute("data-state", "editing")
    start_editing(bob, book)
    note = bob.locator("#presence-note")
    expect(note).to_be_visible(timeout=1000)
    expect(note).to_have_text("Alice is editing this book right now.")
    expect(alice.locator("#presence-note")).to_have_text("Bob is viewing this book right now.", timeout=1000)
    bob.screenshot(path=str(artifacts / "books-presence-editing.png"), full_page=True)
    alice.screenshot(path=str(artifacts / "books-presence-other-viewing.png"), full_page=True)

    # Back to no edits: "viewing" again.
    alice.fill("#num_pages", "100")
    expect(presence_on(bob, book)).to_have_text("Alice is viewing", timeout=1000)

    # The page closes: gone within 5 s (the socket's close withdraws it at once).
    alice.fill("#num_pages", "512")
    expect(note).to_have_text("Alice is editing this book right now.", timeout=1000)
    alice.context.close()
    closed = time.monotonic()
    expect(note).to_be_hidden(timeout=5000)
    expect(presence_on(bob, book)).to_have_text("", timeout=5000)
    assert time.monotonic() - closed < 5.0
    bob.screenshot(path=str(artifacts / "books-presence-gone.png"), full_page=True)
    assert console.errors == [] and console.dialogs == []


def test_cancelling_or_saving_the_edit_withdraws_presence(
    open_page: OpenPage, db_url: str, console: Console
) -> None:
    (book,) = seed(db_url, "Presence: Kim")
    alice, bob = open_page("alice"), open_page("bob")
    for page in (alice, bob):
        expect_live(page)
    named(alice, "Alice")
    start_editing(alice, book)
    expect(presence_on(bob, book)).to_have_text("Alice is viewing", timeout=1000)
    alice.click("#cancel")
    expect(presence_on(bob, book)).to_have_text("", timeout=2000)

    start_editing(alice, book)
    alice.fill("#title", "Presence: Kim (revised)")
    expect(presence_on(bob, book)).to_have_text("Alice is editing", timeout=1000)
    alice.click("#save")
    expect(row(bob, book).locator('td[data-col="title"]')).to_have_text("Presence: Kim (revised)")
    expect(presence_on(bob, book)).to_have_text("", timeout=2000)
    assert console.errors == []


# A page that speaks rowcast.js directly with a token: the books page itself runs in open mode.
WATCH = """async ({ token, announce }) => {
  const { connect } = await import("/rowcast.js");
  window.presence = [];
  window.errors = [];
  const connection = connect(location.origin, { token, name: "mallory" });
  const sub = connection.subscribe({
    table: "books",
    onChange() {},
    onError: (frame) => window.errors.push(frame.code),
    onPresence: (list) => {
      window.presence = list.map((e) => ({ id: e.pk.id, who: e.who, state: e.state }));
      const ul = document.createElement("ul");
      for (const e of window.presence) {
        const li = document.createElement("li");
        li.textContent = `book ${e.id}: ${e.who} is ${e.state}`;
        ul.append(li);
      }
      document.body.replaceChildren(ul);
    },
  });
  for (const [id, state] of announce) sub.announce({ id }, state);
}"""


@pytest.fixture
def token_server(db_url: str) -> Iterator[LiveServer]:
    live = LiveServer(Settings(database_url=db_url, auth="token", jwt_secret=SECRET, port=free_port()))
    try:
        live.start()
        yield live
    finally:
        live.close()


def test_a_token_scoped_to_alice_sees_no_presence_on_bobs_rows_in_chromium(
    browser: Browser, token_server: LiveServer, db_url: str, artifacts: Path
) -> None:
    alices = int(psql(db_url, "INSERT INTO books (title, owner) VALUES ('Alice''s', 'alice') RETURNING id"))
    bobs = int(psql(db_url, "INSERT INTO books (title, owner) VALUES ('Bob''s', 'bob') RETURNING id"))
    alice_token = issue_token(SECRET, "alice", read=["books"], scopes=["books.owner=alice"])
    carol_token = issue_token(SECRET, "carol", read=["books"])
    pages = []
    for _ in range(2):
        context = browser.new_context()
        context.set_default_timeout(10_000)
        page = context.new_page()
        # The server's own page (its app cannot connect without a token: harmless), to import
        # /rowcast.js into and draw the presence list on.
        page.goto(f"{token_server.url}/")
        pages.append(page)
    alice, carol = pages
    try:
        alice.evaluate(WATCH, {"token": alice_token, "announce": [[bobs, "viewing"], [alices, "viewing"]]})
        carol.evaluate(WATCH, {"token": carol_token, "announce": [[bobs, "editing"], [alices, "viewing"]]})
        alice.wait_for_function("() => window.presence.length > 0", timeout=2000)
        alice.wait_for_timeout(1500)  # time for anything else to arrive: nothing may
        assert alice.evaluate("window.presence") == [{"id": alices, "who": "carol", "state": "viewing"}]
        assert alice.evaluate("window.errors") == ["forbidden"]  # her own announce on bob's row
        # Carol (unscoped) sees alice on alice's row, under her token's subject, not "mallory".
        carol.wait_for_function("() => window.presence.length > 0", timeout=2000)
        assert carol.evaluate("window.presence") == [{"id": alices, "who": "alice", "state": "viewing"}]
        alice.screenshot(path=str(artifacts / "presence-token-scoped-alice.png"))
    finally:
        for page in pages:
            page.context.close()
