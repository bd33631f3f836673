// Exponential backoff with full jitter: wait a uniformly random time in [0, min(cap, base * 2^n)).
// Full jitter spreads a crowd of clients that lost the same server over the whole window, so
// they do not come back in lock-step (AWS Architecture Blog, "Exponential Backoff and Jitter").

export class Backoff {
  constructor({ base = 500, cap = 30000, random = Math.random } = {}) {
    this.base = base;
    this.cap = cap;
    this.random = random;
    this.attempt = 0;
  }

  /** The ceiling of the next delay, in ms. */
  ceiling() {
    // The exponent is bounded so 2 ** n stays finite however long a server stays down.
    return Math.min(this.cap, this.base * 2 ** Math.min(this.attempt, 30));
  }

  /** The next delay in ms; each call widens the window until it reaches the cap. */
  next() {
    const delay = Math.floor(this.random() * this.ceiling());
    this.attempt += 1;
    return delay;
  }

  reset() {
    this.attempt = 0;
  }
}
