// The errors of REST calls, shared by LiveCollection and the merge helpers.

/** A REST call failed: `status`, `code` and `message` from the API's JSON error body. */
export class ApiError extends Error {
  constructor(status, body, fallback) {
    super(body?.message ?? body?.error ?? fallback ?? `HTTP ${status}`);
    this.name = "ApiError";
    this.status = status;
    this.code = body?.error ?? null;
    this.body = body ?? null;
  }
}

/** 412: the row changed since the version the write was based on; `current` is the row now. */
export class ConflictError extends ApiError {
  constructor(status, body) {
    super(status, body, "the row changed since you loaded it");
    this.name = "ConflictError";
    this.current = body?.current ?? null;
  }
}
