// How long to wait before reconnecting (§ 4.2). Pure: the caller passes the attempt count and
// its random source.
import { CloseCode } from './codes.js';

/**
 * Delay in ms before reconnect attempt number `attempt` (0 for the first) after a close with
 * `code`. A server shutting down (4000) is reconnected to soon, spread over `minDelayMs` so
 * that its clients do not all come back at once; a connection closed for flooding (4004)
 * waits 10–12 s; anything else backs off exponentially from `minDelayMs` to `maxDelayMs`
 * with "equal jitter" (half fixed, half random).
 * @param {number} code close code
 * @param {number} attempt reconnect attempts made since the last stable connection
 * @param {{minDelayMs: number, maxDelayMs: number, random: () => number}} policy
 */
export function reconnectDelay(code, attempt, { minDelayMs, maxDelayMs, random }) {
  if (code === CloseCode.ServerShutdown) return Math.floor(random() * minDelayMs);
  if (code === CloseCode.Flood) return 10000 + Math.floor(random() * 2000);
  const base = Math.min(maxDelayMs, minDelayMs * 2 ** Math.min(attempt, 20));
  return Math.floor(base / 2 + random() * (base / 2));
}
