// A token bucket on passed-in time, like the server's (src/rate.rs): the client keeps its own
// copy of a server limit so that it never sends what the server would refuse.

/** `burst` tokens, refilled at `perSec`; time is whatever clock the caller uses, in ms. */
export class TokenBucket {
  /**
   * @param {number} burst tokens when full (the bucket starts full)
   * @param {number} perSec tokens added per second
   * @param {number} now current time (ms)
   */
  constructor(burst, perSec, now) {
    this.burst = burst;
    this.perSec = perSec;
    this.tokens = burst;
    this.last = now;
  }

  _refill(now) {
    const elapsed = Math.max(0, now - this.last);
    this.last = Math.max(now, this.last);
    this.tokens = Math.min(this.burst, this.tokens + (elapsed * this.perSec) / 1000);
  }

  /** Takes a token if there is one; false (and nothing taken) when the bucket is empty. */
  take(now) {
    this._refill(now);
    if (this.tokens < 1) return false;
    this.tokens -= 1;
    return true;
  }

  /** In how many ms a token will be there (0 when there is one now). */
  waitMs(now) {
    this._refill(now);
    return this.tokens >= 1 ? 0 : Math.ceil(((1 - this.tokens) / this.perSec) * 1000);
  }
}
