// rowcast.js: the browser client for rowcast (docs/PROTOCOL.md). ES module, no build step.
//
//   import { connect, LiveCollection } from "/rowcast.js";
//   const connection = connect(location.origin, { token, getToken });
//   connection.onStatus((status) => …);            // connecting | live | reconnecting | offline | closed
//   const sub = connection.subscribe({ table: "books", where, columns, cursor, mode, onChange, onStatus });
//   sub.unsubscribe();
//
//   const books = new LiveCollection({ resource: "books", connection, onChange, onReset });
//   await books.load();                               // GET /api/books, then subscribe from its cursor
//   await books.update(7, { title: "Dune" });          // If-Match + X-Request-ID; 412 -> ConflictError
//   await books.saveFields(7, { base, mine });         // PATCH only edited fields; on 412 merge
//                                                     // and retry, MergeConflictError if the
//                                                     // same field changed on both sides
//
//   books.announce(7, "editing");                     // presence: others see who views/edits
//   new LiveCollection({ ..., onPresence(list) {} });  // [{pk, who, session, state, since}]
//   sub.announce({ id: 7 }, "viewing"); sub.presence({ id: 7 });  // the same on a subscription
//
// The merge rule on its own, for apps with their own I/O: mergeEdits(base, mine, theirs) (pure)
// and saveFields(write, {base, mine, version}) (PATCH, 412, merge, bounded retries).
//
// The pure pieces (row applier, backoff, URLs, frames) live in their own modules and are
// exported too, for tests and for clients that bring their own I/O.

export { connect, Connection } from "./connection.js";
export { LiveCollection, ApiError, ConflictError, ifMatch, newRequestId } from "./collection.js";
export { RowStore, changedColumns } from "./rowstore.js";
export { MERGE_RETRIES, MergeConflictError, editedFields, mergeEdits, sameValue, saveFields } from "./merge.js";
export { Backoff } from "./backoff.js";
export { PRESENCE_STATES, PresenceBook, presenceFrame } from "./presence.js";
export {
  CLOSE,
  SUBPROTOCOL,
  SeenIds,
  apiUrl,
  canonicalJson,
  chooseTransport,
  closeAction,
  eventTable,
  NUMBER_MODES,
  numberIsExact,
  parseFrame,
  parseJson,
  pkOf,
  qualify,
  canonicalTable,
  splitName,
  rowKey,
  sseUrl,
  statusAfterFailure,
  subscribeFrame,
  wsProtocols,
  wsUrl,
} from "./protocol.js";
