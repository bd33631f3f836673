// Pure formatting for the books page: who changed a row, when, and which columns. No DOM here.

// Bookkeeping columns every write bumps: not worth naming to a person.
const BOOKKEEPING = new Set(["version", "created_at", "updated_at"]);

/** hh:mm:ss (24 h, local time) of an ISO timestamp or Date; "" when it cannot be read. */
export function clockTime(value) {
  if (value === null || value === undefined || value === "") return "";
  const date = value instanceof Date ? value : new Date(value);
  if (Number.isNaN(date.getTime())) return "";
  const pad = (n) => String(n).padStart(2, "0");
  return `${pad(date.getHours())}:${pad(date.getMinutes())}:${pad(date.getSeconds())}`;
}

/** "alice via rowcast-api", "postgres via psql", or "you" for the page's own writes. */
export function actorLabel(actor, mine = false) {
  if (mine) return "you";
  const who = actor?.actor || actor?.user || "someone";
  return actor?.app ? `${who} via ${actor.app}` : who;
}

/** "changed by postgres via psql at 14:02:11" (or "added by", "deleted by"). */
export function changeLine(kind, actor, at, mine = false) {
  const verb = kind === "insert" ? "added" : kind === "delete" ? "deleted" : "changed";
  const time = clockTime(at);
  return `${verb} by ${actorLabel(actor, mine)}${time ? ` at ${time}` : ""}`;
}

/** The columns a person would say changed: `old`'s keys (or a diff), without bookkeeping. */
export function meaningfulColumns(columns) {
  return columns.filter((c) => !BOOKKEEPING.has(c));
}

/** "title and num_pages", "title, author and num_pages". */
export function listWords(words) {
  if (words.length <= 1) return words.join("");
  return `${words.slice(0, -1).join(", ")} and ${words.at(-1)}`;
}

// Columns that name a row for a person, in order of preference.
const READABLE = ["title", "name", "label"];

/** "books 3": the table and the primary key's values ("books" for a truncate). */
export function keyLabel(event) {
  return event?.pk ? `${event.table} ${Object.values(event.pk).join("/")}` : String(event?.table ?? "");
}

/**
 * What to call the row of a change event: its title, name or label when the table has one (for
 * a delete from the old row, its only trace), else the table and key ("books 3").
 */
export function rowLabel(event) {
  const row = event?.row ?? event?.old ?? null;
  for (const column of READABLE) {
    const value = row?.[column];
    if (typeof value === "string" && value.trim() !== "") return value;
  }
  return keyLabel(event);
}

/** Human names of the book columns. */
export const COLUMN_NAMES = Object.freeze({ title: "title", author: "author", num_pages: "pages", owner: "owner" });

/**
 * The conflict notice's text. reason: "changed" (an event arrived while editing), "stale" (the
 * save got 412), "deleted", or "delete" (a delete got 412).
 */
export function conflictText({ reason, actor, at, columns = [], mine = false }) {
  const who = actor ? actorLabel(actor, mine) : "someone else";
  const time = clockTime(at);
  const when = time ? ` at ${time}` : "";
  const what = listWords(meaningfulColumns(columns).map((c) => COLUMN_NAMES[c] ?? c));
  if (reason === "deleted") return `This book was deleted by ${who}${when} while you were editing it.`;
  const detail = what ? ` (changed: ${what})` : "";
  if (reason === "delete") return `This book was changed by ${who}${when} since you loaded it${detail}. Delete it anyway?`;
  if (reason === "stale") return `Not saved: this book was changed by ${who}${when} since you started editing${detail}.`;
  return `This book was changed by ${who}${when} while you were editing it${detail}.`;
}

/**
 * The form's values as the API wants them: trimmed title and author, pages as an integer or
 * null. Returns {values} or {error}.
 */
export function bookValues({ title, author, num_pages }) {
  const values = { title: String(title ?? "").trim(), author: String(author ?? "").trim(), num_pages: null };
  if (!values.title) return { error: "A title is required." };
  if (values.title.length > 300) return { error: "The title is longer than 300 characters." };
  if (values.author.length > 200) return { error: "The author is longer than 200 characters." };
  const pages = String(num_pages ?? "").trim();
  if (pages) {
    const n = Number(pages);
    if (!Number.isInteger(n) || n < 1 || n > 100000) return { error: "Pages must be a whole number from 1 to 100000." };
    values.num_pages = n;
  }
  return { values };
}

/**
 * A row (or the raw form) as the form would send it, unvalidated: trimmed title and author
 * ("" for none), pages as a number or null. Comparing these tells which fields a person edited:
 * an author that is null in the row and blank in the form was not edited.
 */
export function formValues({ title, author, num_pages }) {
  const pages = String(num_pages ?? "").trim();
  const n = Number(pages);
  return {
    title: String(title ?? "").trim(),
    author: String(author ?? "").trim(),
    num_pages: pages === "" ? null : Number.isFinite(n) ? n : pages,
  };
}

/** The columns whose values differ between two rows, among `columns`. */
export function differingColumns(a, b, columns) {
  return columns.filter((c) => (a?.[c] ?? null) !== (b?.[c] ?? null));
}

/**
 * Who else is on a row, for a person: "alice is editing", "alice and bob are viewing",
 * "bob is editing · alice is viewing". Editing comes first: it is what a save may meet. One
 * person in two tabs is named once, by their busiest state.
 */
export function presenceText(entries) {
  const state = new Map(); // who -> editing | viewing
  for (const { who, state: s } of entries) {
    const name = who || "someone";
    if (state.get(name) !== "editing") state.set(name, s);
  }
  const parts = [];
  for (const verb of ["editing", "viewing"]) {
    const names = [...state].filter(([, s]) => s === verb).map(([name]) => name);
    if (names.length) parts.push(`${listWords(names)} ${names.length === 1 ? "is" : "are"} ${verb}`);
  }
  return parts.join(" · ");
}
