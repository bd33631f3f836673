// The live books page: a LiveCollection of books rendered as a table, a form for create/edit,
// conflict handling for concurrent edits, and a panel of the latest change events.
//
// Data is only ever rendered with textContent / attributes, never as HTML: a title such as
// <img src=x onerror=alert(1)> shows as those characters.
//
// Stable hooks for browser tests:
//   #status                text and data-state: connecting | live | reconnecting | offline | closed;
//                          data-transport: websocket | sse
//   #offline-note          shown while not live; says what still works: data-api = "up" (the
//                          REST API answers: loads and saves still work) | "down" (the server
//                          cannot be reached, as when `rowcast up` is down) | "database" (the API
//                          answers 503) | "checking"
//   #page-error            load / delete errors (role=alert)
//   #book-form             data-mode="create" | "edit", data-editing="<id>" while editing
//   #title #author #num_pages   the form fields; #save (submit); #cancel (leave edit mode)
//   #actor                 "Your name", sent as X-Actor on writes (kept in localStorage)
//   #form-error            validation and API errors of the form (role=alert)
//   #conflict              the conflict notice/dialog; data-reason = changed | stale | deleted | delete
//   #conflict-text         who changed what, e.g. "Postgres via psql changed title at 14:02:11 …"
//   #conflict-values       for each field both changed: dd[data-field][data-side="theirs" | "mine"];
//                          else (a delete, or no field in common) their current values
//   #presence-note         (role=status) in the edit form: who else is viewing or editing the
//                          book, "bob is editing"; data-state = editing | viewing; hidden if nobody
//   #merge-note            (role=status) someone else's change to other fields was merged into
//                          the edit, or kept by a save: "alice via api changed pages at …"
//   #conflict-load         "Load their version"; #conflict-overwrite "Overwrite"; #conflict-dismiss
//   #book-rows tr[data-id="<id>"]   one row per book, newest first; data-state="removing" while
//                          fading out after a delete
//     td[data-col="title" | "author" | "num_pages"]   cells; class "flash" while a change shows
//     [data-testid="changed-by"]   "changed by postgres via psql at 14:02:11"
//     [data-testid="presence"]     who else has the book open: "alice is editing" (empty if
//                          nobody); data-state = editing | viewing | "" (presence, issue 18)
//     button[data-action="edit"], button[data-action="delete"]
//   #book-count            number of books; #empty shown when there are none
//   #events li             newest first, at most 50; data-table, data-op, data-id, data-mine;
//                          .what names the row by title/name (title attribute: "books 3")
//   #reload                reload the snapshot
//   document.body[data-ready="true"]   once the first snapshot is rendered
//
// Presence: editing a book announces "viewing", and "editing" while the form holds unsaved edits;
// others see it on the row and in their form. The name shown is "Your name" (open mode).
//
// Query parameters: ?transport=websocket|sse forces a transport.

import {
  ApiError,
  ConflictError,
  connect,
  editedFields,
  LiveCollection,
  MergeConflictError,
  mergeEdits,
  sameValue,
} from "./rowcast.js";
import {
  bookValues,
  changeLine,
  clockTime,
  COLUMN_NAMES,
  conflictText,
  actorLabel,
  differingColumns,
  formValues,
  keyLabel,
  listWords,
  meaningfulColumns,
  presenceText,
  rowLabel,
} from "./format.js";

const COLUMNS = ["title", "author", "num_pages"];
const MAX_EVENTS = 50;
const FLASH_MS = 1600;
const FADE_MS = 450;

const $ = (id) => document.getElementById(id);
const el = {
  status: $("status"),
  offlineNote: $("offline-note"),
  pageError: $("page-error"),
  form: $("book-form"),
  formHeading: $("form-heading"),
  title: $("title"),
  author: $("author"),
  numPages: $("num_pages"),
  save: $("save"),
  cancel: $("cancel"),
  formError: $("form-error"),
  actor: $("actor"),
  conflict: $("conflict"),
  conflictText: $("conflict-text"),
  conflictValues: $("conflict-values"),
  conflictLoad: $("conflict-load"),
  conflictOverwrite: $("conflict-overwrite"),
  conflictDismiss: $("conflict-dismiss"),
  mergeNote: $("merge-note"),
  presenceNote: $("presence-note"),
  rows: $("book-rows"),
  count: $("book-count"),
  empty: $("empty"),
  events: $("events"),
  reload: $("reload"),
};

// What the page is doing: the book being edited (with the row the edit started from) and the
// conflict on show, if any.
const state = {
  editing: null, // {id, base}
  conflict: null, // {reason, id, current, actor, at, columns, conflicts}
  busy: false,
};

// -- the banner: say only what is true --
//
// The live stream and the REST API may share a process (`rowcast up`) or not (a proxy that
// blocks WebSockets and SSE). Which one it is, only asking the API tells, so while live
// updates are paused the page asks /api/healthz every few seconds and words the banner by it.

const API_PROBE_MS = 3000;
const API_PROBE_TIMEOUT_MS = 2500;
const BANNER = {
  checking: "Live updates are paused, reconnecting…",
  up: "Live updates are paused, reconnecting. The page still loads and saves books; it catches up when the connection returns.",
  down: "The server cannot be reached: live updates are paused and nothing can be loaded or saved until it is back. Reconnecting…",
  database: "The database is unavailable: live updates are paused and nothing can be saved until it is back. Reconnecting…",
};
let apiTimer = null;

function showApi(state) {
  if (el.offlineNote.dataset.api === state) return; // a status region: announce changes only
  el.offlineNote.dataset.api = state;
  el.offlineNote.textContent = BANNER[state];
}

function watchApi() {
  if (apiTimer !== null) return;
  showApi("checking");
  const probe = async () => {
    const state = await probeApi();
    if (apiTimer === null) return; // live again meanwhile
    showApi(state);
    apiTimer = setTimeout(probe, API_PROBE_MS);
  };
  apiTimer = setTimeout(probe, 0);
}

function stopWatchingApi() {
  clearTimeout(apiTimer);
  apiTimer = null;
  delete el.offlineNote.dataset.api;
}

async function probeApi() {
  try {
    const response = await fetch("/api/healthz", { cache: "no-store", signal: AbortSignal.timeout(API_PROBE_TIMEOUT_MS) });
    return response.status === 503 ? "database" : "up";
  } catch {
    return "down"; // no answer at all: no HTTP server there
  }
}

// -- connection and collection --

const params = new URLSearchParams(location.search);
const connection = connect(location.origin, {
  transport: params.get("transport") ?? "auto",
  name: () => el.actor.value.trim() || "someone",
});
connection.onStatus(showStatus);
showStatus(connection.status);

const books = new LiveCollection({
  resource: "books",
  connection,
  actor: () => el.actor.value.trim(),
  onReset: renderAll,
  onChange: applyChange,
  onPresence: renderPresence,
  onError: (frame) => {
    if (frame.about === "presence") return; // who sees this book is a courtesy: never an error on the page
    showPageError(`Live updates for books failed: ${frame.message ?? frame.error ?? frame.code}`);
  },
});

// The event panel also shows authors; nothing else on the page uses them.
connection.subscribe({
  table: "authors",
  onChange: (event) => logEvent(event, false),
});

// -- status --

function showStatus(status, detail = "") {
  el.status.textContent = status;
  el.status.dataset.state = status;
  el.status.title = detail;
  el.status.dataset.transport = connection?.transport ?? "";
  const paused = status !== "live" && status !== "connecting";
  el.offlineNote.hidden = !paused;
  if (paused) watchApi();
  else stopWatchingApi();
}


// -- the table --

function renderAll(rows) {
  el.rows.replaceChildren(...[...rows].sort(byIdDescending).map((row) => buildRow(row)));
  updateCount();
  renderPresence();
  if (state.editing && !books.get(state.editing.id)) {
    showConflict({ reason: "deleted", id: state.editing.id, current: null });
  }
  document.body.dataset.ready = "true";
}

function byIdDescending(a, b) {
  return Number(b.id) - Number(a.id);
}

function rowElement(id) {
  return el.rows.querySelector(`tr[data-id="${CSS.escape(String(id))}"]`);
}

function buildRow(row) {
  const tr = document.createElement("tr");
  tr.dataset.id = String(row.id);
  for (const column of COLUMNS) {
    const td = document.createElement("td");
    td.dataset.col = column;
    td.dataset.label = COLUMN_NAMES[column];
    if (column === "num_pages") td.className = "num";
    tr.append(td);
  }
  const changed = document.createElement("td");
  changed.dataset.col = "changed";
  changed.dataset.label = "last change";
  const line = document.createElement("span");
  line.className = "changed-by";
  line.dataset.testid = "changed-by";
  const others = document.createElement("span");
  others.className = "presence";
  others.dataset.testid = "presence";
  others.dataset.state = "";
  changed.append(line, others);
  tr.append(changed);

  const actions = document.createElement("td");
  actions.className = "actions";
  actions.append(actionButton("edit", "Edit"), actionButton("delete", "Delete"));
  tr.append(actions);
  fillRow(tr, row);
  return tr;
}

function actionButton(action, text) {
  const button = document.createElement("button");
  button.type = "button";
  button.dataset.action = action;
  button.textContent = text;
  return button;
}

function fillRow(tr, row) {
  for (const column of COLUMNS) {
    tr.querySelector(`td[data-col="${column}"]`).textContent = row[column] === null || row[column] === undefined ? "" : String(row[column]);
  }
  const title = row.title ?? "";
  tr.querySelector('[data-action="edit"]').setAttribute("aria-label", `Edit ${title}`);
  tr.querySelector('[data-action="delete"]').setAttribute("aria-label", `Delete ${title}`);
}

function insertSorted(tr, row) {
  for (const other of el.rows.children) {
    if (Number(other.dataset.id) < Number(row.id)) {
      el.rows.insertBefore(tr, other);
      return;
    }
  }
  el.rows.append(tr);
}

function flash(node, className = "flash") {
  node.classList.remove(className);
  void node.offsetWidth; // restart the animation when the same cell changes again
  node.classList.add(className);
  setTimeout(() => node.classList.remove(className), FLASH_MS);
}

function fadeOut(tr) {
  tr.dataset.state = "removing";
  tr.querySelectorAll("button").forEach((b) => (b.disabled = true));
  setTimeout(() => tr.remove(), FADE_MS);
}

function setChangedBy(tr, kind, actor, at, mine) {
  const line = tr.querySelector('[data-testid="changed-by"]');
  line.textContent = changeLine(kind, actor, at, mine);
  tr.classList.add("recent");
}

function updateCount() {
  const n = books.rows.length;
  el.count.textContent = String(n);
  el.empty.hidden = n > 0;
}

/** One applied change from the collection (a live event, or a REST reply of our own write). */
function applyChange(change) {
  const { kind, row, prev, event, mine } = change;
  if (event) logEvent(event, mine);
  const actor = event?.actor ?? null;
  const at = event?.at ?? row?.updated_at ?? new Date().toISOString();

  if (kind === "truncate") {
    for (const tr of el.rows.querySelectorAll("tr:not([data-state='removing'])")) fadeOut(tr);
  } else if (kind === "delete") {
    const id = (prev ?? event?.old ?? event?.pk)?.id;
    const tr = id !== undefined ? rowElement(id) : null;
    if (tr) fadeOut(tr);
  } else {
    if (change.oldKey && prev && prev.id !== row.id) rowElement(prev.id)?.remove();
    let tr = rowElement(row.id);
    if (tr?.dataset.state === "removing") {
      tr.remove();
      tr = null;
    }
    if (!tr) {
      tr = buildRow(row);
      insertSorted(tr, row);
      showPresence(tr, row.id);
      flash(tr, "added");
    } else {
      fillRow(tr, row);
      const columns = event?.old && kind === "update" ? Object.keys(event.old) : change.changed;
      for (const column of columns) {
        const td = tr.querySelector(`td[data-col="${CSS.escape(column)}"]`);
        if (td) flash(td);
      }
    }
    // A reply echo that changed nothing keeps the line its live event already wrote.
    if (change.source === "live" || change.changed.length) setChangedBy(tr, kind, actor, at, mine);
  }
  updateCount();
  noticeEditedBook(change);
}

// -- presence: who else has a book open --

function renderPresence() {
  for (const tr of el.rows.children) showPresence(tr, Number(tr.dataset.id));
  showPresenceNote();
}

function presenceState(entries) {
  if (!entries.length) return "";
  return entries.some((e) => e.state === "editing") ? "editing" : "viewing";
}

function showPresence(tr, id) {
  const span = tr.querySelector('[data-testid="presence"]');
  if (!span) return;
  const entries = books.presence(id);
  span.textContent = presenceText(entries);
  span.dataset.state = presenceState(entries);
}

function showPresenceNote() {
  const entries = state.editing ? books.presence(state.editing.id) : [];
  el.presenceNote.hidden = entries.length === 0;
  el.presenceNote.dataset.state = presenceState(entries);
  el.presenceNote.textContent = entries.length ? `${presenceText(entries)} this book right now.` : "";
}

/** Tell others what this page does with the book in the form: viewing, or editing (unsaved edits). */
function announceEditing() {
  if (!state.editing) return;
  const next = Object.keys(myEdits()).length ? "editing" : "viewing";
  if (state.editing.announced === next) return;
  state.editing.announced = next;
  books.announce(state.editing.id, next);
}

// -- the event panel --

function logEvent(event, mine) {
  const li = document.createElement("li");
  li.dataset.table = event.table;
  li.dataset.op = event.op;
  li.dataset.mine = String(Boolean(mine));
  if (event.pk?.id !== undefined) li.dataset.id = String(event.pk.id);

  const time = document.createElement("time");
  time.dateTime = event.at ?? "";
  time.textContent = clockTime(event.at ?? new Date());
  const op = document.createElement("span");
  op.className = `op op-${event.op}`;
  op.textContent = event.op;
  const what = document.createElement("span");
  what.className = "what";
  what.textContent = rowLabel(event);
  what.title = keyLabel(event); // the key stays at hand, just not as the name
  const who = document.createElement("span");
  who.className = "who";
  who.textContent = actorLabel(event.actor, mine);
  li.append(time, " ", op, " ", what, " ", who);

  el.events.prepend(li);
  while (el.events.children.length > MAX_EVENTS) el.events.lastElementChild.remove();
}

// -- the form --

function readFields() {
  return { title: el.title.value, author: el.author.value, num_pages: el.numPages.value };
}

function readForm() {
  return bookValues(readFields());
}

const INPUTS = { title: () => el.title, author: () => el.author, num_pages: () => el.numPages };

function fillField(column, value) {
  INPUTS[column]().value = value ?? "";
}

function fillForm(row) {
  for (const column of COLUMNS) fillField(column, row?.[column]);
}

function startEditing(id) {
  const row = books.get(id);
  if (!row) return;
  if (state.editing && state.editing.id !== row.id) books.announce(state.editing.id, null);
  state.editing = { id: row.id, base: { ...row } };
  hideConflict();
  hideMergeNote();
  hideFormError();
  fillForm(row);
  el.form.dataset.mode = "edit";
  el.form.dataset.editing = String(row.id);
  el.formHeading.textContent = "Edit book";
  el.save.textContent = "Save changes";
  el.cancel.hidden = false;
  announceEditing();
  showPresenceNote();
  el.title.focus();
}

function stopEditing() {
  if (state.editing) books.announce(state.editing.id, null);
  state.editing = null;
  showPresenceNote();
  hideConflict();
  hideFormError();
  hideMergeNote();
  clearForm();
  el.form.dataset.mode = "create";
  delete el.form.dataset.editing;
  el.formHeading.textContent = "Add a book";
  el.save.textContent = "Add book";
  el.cancel.hidden = true;
}

function clearForm() {
  // reset(), not just empty values: it also forgets that the person had typed in the fields, so
  // the now empty required title is not marked :user-invalid (red) after every save.
  el.form.reset();
  fillForm(null);
}

function showFormError(message) {
  el.formError.textContent = message;
  el.formError.hidden = false;
}

function hideFormError() {
  el.formError.hidden = true;
  el.formError.textContent = "";
}

function showPageError(message) {
  el.pageError.textContent = message;
  el.pageError.hidden = false;
}

async function busy(task) {
  if (state.busy) return;
  state.busy = true;
  el.form.setAttribute("aria-busy", "true");
  try {
    await task();
  } finally {
    state.busy = false;
    el.form.removeAttribute("aria-busy");
  }
}

async function save() {
  const { values, error } = readForm();
  if (error) {
    showFormError(error);
    return;
  }
  hideFormError();
  hideMergeNote(); // it was about the previous save
  if (!state.editing) {
    try {
      await books.create(values);
      clearForm();
      el.title.focus();
    } catch (err) {
      showFormError(errorText(err));
    }
    return;
  }
  const { base } = state.editing;
  await writeEdit(myEdits(values), base);
}

/**
 * The fields the person edited: the form against the row the edit started from, less those
 * that already hold the row's current value. Those are either untouched fields the page filled
 * with someone else's change, or the same change made by both: neither needs sending.
 */
function myEdits(values = formValues(readFields())) {
  const edits = editedFields(formValues(state.editing.base), values);
  const current = books.get(state.editing.id);
  if (!current) return edits;
  const now = formValues(current);
  return Object.fromEntries(Object.entries(edits).filter(([column, value]) => !sameValue(value, now[column])));
}

/**
 * Save only the edited fields on top of `base` (rowcast.js merges a 412 on other fields and
 * retries); a field both sides changed goes to the conflict dialog, never raw.
 */
async function writeEdit(mine, base) {
  const { id } = state.editing;
  if (Object.keys(mine).length === 0) {
    stopEditing(); // nothing edited: nothing to write, no version to bump
    return;
  }
  try {
    const { merged } = await books.saveFields(id, { base, mine });
    stopEditing();
    if (meaningfulColumns(merged).length) showMergeNote({ ...whoChanged(id, books.get(id)), columns: merged, saved: true });
  } catch (err) {
    if (err instanceof MergeConflictError) {
      showConflict({ reason: "stale", id, current: err.current, conflicts: err.conflicts, ...whoChanged(id, err.current) });
    } else if (err instanceof ConflictError) {
      // The row kept moving past the bounded retries: let the person look.
      const current = err.current ?? books.get(id) ?? null;
      const conflicts = current ? mergeEdits(base, mine, current).conflicts : [];
      showConflict({ reason: current ? "stale" : "deleted", id, current, conflicts, ...whoChanged(id, current) });
    } else if (err instanceof ApiError && err.status === 404) {
      showConflict({ reason: "deleted", id, current: null, ...whoChanged(id, null) });
    } else {
      showFormError(errorText(err));
    }
  }
}

async function removeBook(id) {
  const row = books.get(id);
  if (!row) return;
  el.pageError.hidden = true;
  try {
    await books.remove(id, { version: row.version });
    if (state.editing?.id === row.id) stopEditing();
  } catch (err) {
    if (err instanceof ConflictError && err.current) {
      if (!state.editing || state.editing.id !== row.id) startEditing(row.id);
      showConflict({ reason: "delete", id: row.id, current: err.current, ...whoChanged(row.id, err.current) });
    } else if (err instanceof ApiError && err.status === 404) {
      // Already gone: the delete event removes (or removed) the row.
    } else {
      showPageError(`Could not delete “${row.title}”: ${errorText(err)}`);
    }
  }
}

function errorText(err) {
  if (err instanceof ApiError) return err.message;
  return `The server could not be reached (${err?.message ?? err}).`;
}

// -- concurrent edits --

// The last change event seen per book id, to name who made a change a 412 reports.
const lastEvents = new Map();

function whoChanged(id, current) {
  const event = lastEvents.get(String(id));
  if (!event) return { actor: null, at: current?.updated_at ?? null, columns: differingColumns(state.editing?.base, current, COLUMNS) };
  const fresh = !current || event.row?.version === current.version;
  return {
    actor: fresh ? event.actor : null,
    at: fresh ? event.at : (current?.updated_at ?? null),
    columns: differingColumns(state.editing?.base, current, COLUMNS),
  };
}

function noticeEditedBook(change) {
  const { event, mine } = change;
  if (event?.pk?.id !== undefined) lastEvents.set(String(event.pk.id), event);
  if (!state.editing || !event || mine) return;
  const id = state.editing.id;
  const affected = change.kind === "truncate" || event.pk?.id === id || change.prev?.id === id;
  if (!affected) return;
  if (change.kind === "delete" || change.kind === "truncate" || (change.oldKey && change.prev?.id === id)) {
    showConflict({ reason: "deleted", id, current: null, actor: event.actor, at: event.at, columns: [] });
    return;
  }
  const earlier = state.conflict?.reason === "changed" ? state.conflict.columns : [];
  const columns = [...new Set([...earlier, ...Object.keys(event.old ?? {})])];
  const { base } = state.editing;
  const mineNow = myEdits();
  const { conflicts } = mergeEdits(formValues(base), mineNow, formValues(change.row));
  if (conflicts.length === 0) {
    // Their change touched other fields: take it into the form now, so the save merges cleanly.
    if (state.conflict?.reason === "changed") hideConflict();
    rebase(change.row, mineNow);
    const theirs = meaningfulColumns(Object.keys(event.old ?? {}));
    if (theirs.length) showMergeNote({ actor: event.actor, at: event.at, columns: theirs, saved: false });
    return;
  }
  // The base stays (the save must still meet the conflict), but the fields the person never
  // touched show their values already: the form shows what will stand.
  for (const column of COLUMNS) {
    if (!(column in mineNow) && !conflicts.some((c) => c.field === column)) fillField(column, change.row[column]);
  }
  showConflict({ reason: "changed", id, current: change.row, actor: event.actor, at: event.at, columns, conflicts });
}

/** Start the edit over from `row`, keeping the person's edits `mine` in their fields. */
function rebase(row, mine) {
  state.editing.base = { ...row };
  for (const column of COLUMNS) {
    if (!(column in mine)) fillField(column, row[column]);
  }
  announceEditing(); // the edits left may be none now: "viewing" again
}

function showMergeNote({ actor, at, columns, saved }) {
  const time = clockTime(at);
  const what = listWords(columns.map((c) => COLUMN_NAMES[c] ?? c));
  const who = actor ? actorLabel(actor) : "someone else";
  el.mergeNote.textContent = saved
    ? `Saved. ${who} changed ${what}${time ? ` at ${time}` : ""} meanwhile; both changes were kept.`
    : `${who} changed ${what}${time ? ` at ${time}` : ""}; your edits stay and will be saved on top.`;
  el.mergeNote.hidden = false;
}

function hideMergeNote() {
  el.mergeNote.hidden = true;
  el.mergeNote.textContent = "";
}

function showConflict(conflict) {
  state.conflict = conflict;
  el.conflict.dataset.reason = conflict.reason;
  el.conflictText.textContent = conflictText(conflict);
  el.conflictValues.replaceChildren();
  if (conflict.conflicts?.length) {
    showBothValues(conflict.conflicts);
  } else if (conflict.current) {
    for (const column of COLUMNS) {
      const dt = document.createElement("dt");
      dt.textContent = `Their ${COLUMN_NAMES[column]}`;
      const dd = document.createElement("dd");
      const value = conflict.current[column];
      dd.textContent = value === null || value === undefined || value === "" ? "—" : String(value);
      el.conflictValues.append(dt, dd);
    }
  }
  const deleted = conflict.reason === "deleted";
  el.conflictLoad.hidden = deleted;
  el.conflictLoad.textContent = conflict.reason === "delete" ? "Keep the book" : "Load their version";
  el.conflictOverwrite.textContent = deleted ? "Save mine as a new book" : conflict.reason === "delete" ? "Delete anyway" : "Overwrite";
  el.conflictDismiss.textContent = deleted ? "Discard my edit" : "Keep editing";
  const wasHidden = el.conflict.hidden;
  el.conflict.hidden = false;
  // Its choices must be on screen (not below the fold at 800 px): scroll, which is not focus.
  el.conflict.scrollIntoView({ block: "nearest" });
  // A 412 answers the user's own click: take focus to the choice. A live notice must not
  // steal focus from someone typing.
  if (conflict.reason !== "changed" && wasHidden) el.conflictOverwrite.focus();
}

/** Per field both changed: their value and mine, side by side. */
function showBothValues(conflicts) {
  for (const { field, theirs, mine } of conflicts) {
    const dt = document.createElement("dt");
    dt.textContent = COLUMN_NAMES[field] ?? field;
    el.conflictValues.append(dt, sideValue(field, "theirs", "Theirs", theirs), sideValue(field, "mine", "Yours", mine));
  }
}

function sideValue(field, side, label, value) {
  const dd = document.createElement("dd");
  dd.dataset.field = field;
  dd.dataset.side = side;
  const name = document.createElement("span");
  name.className = "side";
  name.textContent = `${label}: `;
  const text = document.createElement("span");
  text.className = "value";
  text.textContent = value === null || value === undefined || value === "" ? "—" : String(value);
  dd.append(name, text);
  return dd;
}

function hideConflict() {
  state.conflict = null;
  el.conflict.hidden = true;
  delete el.conflict.dataset.reason;
}

async function loadTheirVersion() {
  const conflict = state.conflict;
  if (!conflict || !state.editing) return;
  if (conflict.reason === "delete") {
    stopEditing();
    return;
  }
  // Their values where both changed a field; the person's other edits stay in the form.
  const current = books.get(conflict.id) ?? conflict.current;
  const mine = myEdits();
  const { patch } = mergeEdits(formValues(state.editing.base), mine, formValues(current));
  fillForm(current);
  rebase(current, patch);
  for (const [column, value] of Object.entries(patch)) fillField(column, value);
  announceEditing();
  hideConflict();
  el.title.focus();
}

async function overwrite() {
  const conflict = state.conflict;
  if (!conflict || !state.editing) return;
  if (conflict.reason === "delete") {
    hideConflict();
    await deleteAt(conflict.id, conflict.current.version);
    return;
  }
  const { values, error } = readForm();
  if (error) {
    showFormError(error);
    return;
  }
  if (conflict.reason === "deleted") {
    try {
      await books.create(values);
      stopEditing();
    } catch (err) {
      showFormError(errorText(err));
    }
    return;
  }
  // Overwrite writes the fields the person edited, and only those, over the row as we last saw
  // it: a field they never touched is never sent, so it can never be reverted. Yet another
  // change to other fields merges; one to the same fields asks again.
  const mine = myEdits(values);
  const seen = [conflict.current, books.get(conflict.id)].filter(Boolean);
  const current = seen.reduce((a, b) => (b.version > a.version ? b : a));
  hideConflict();
  await writeEdit(mine, current);
}

async function deleteAt(id, version) {
  try {
    await books.remove(id, { version });
    stopEditing();
  } catch (err) {
    if (err instanceof ConflictError && err.current) {
      showConflict({ reason: "delete", id, current: err.current, ...whoChanged(id, err.current) });
    } else {
      showFormError(errorText(err));
    }
  }
}

function dismissConflict() {
  if (state.conflict?.reason === "deleted" || state.conflict?.reason === "delete") stopEditing();
  else hideConflict();
}

// -- wiring --

el.form.addEventListener("submit", (event) => {
  event.preventDefault();
  busy(save);
});
el.cancel.addEventListener("click", stopEditing);
el.form.addEventListener("input", announceEditing);
el.conflictLoad.addEventListener("click", () => busy(loadTheirVersion));
el.conflictOverwrite.addEventListener("click", () => busy(overwrite));
el.conflictDismiss.addEventListener("click", dismissConflict);
el.form.addEventListener("keydown", (event) => {
  if (event.key === "Escape" && state.editing) stopEditing();
});
el.rows.addEventListener("click", (event) => {
  const button = event.target.closest("button[data-action]");
  if (!button) return;
  const id = Number(button.closest("tr").dataset.id);
  if (button.dataset.action === "edit") startEditing(id);
  else busy(() => removeBook(id));
});
el.reload.addEventListener("click", () => load());

const ACTOR_KEY = "rowcast.actor";
try {
  el.actor.value = localStorage.getItem(ACTOR_KEY) ?? "";
} catch {
  // storage can be disabled; the name then lasts for this page only
}
el.actor.addEventListener("change", () => {
  try {
    localStorage.setItem(ACTOR_KEY, el.actor.value.trim());
  } catch {
    // see above
  }
});

let loaded = false;

async function load() {
  try {
    await books.load();
    loaded = true;
    el.pageError.hidden = true;
  } catch (err) {
    showPageError(`Could not load the books: ${errorText(err)}`);
  }
}

// A page opened while the server was down loads as soon as the server is back.
connection.onStatus((status) => {
  if (status === "live" && !loaded) load();
});

load();
