// Error frame codes (§ 4.1) and close codes (§ 4.2), mirrored from src/wire/codes.rs.

/** `Error` frame codes (§ 4.1). */
export const ErrorCode = Object.freeze({
  BadRequest: 1,
  UnknownRoom: 2,
  NotMember: 3,
  InvalidText: 4,
  RateLimited: 5,
  TooManyRooms: 6,
  Unavailable: 7,
  AlreadyGreeted: 8,
});

/** Close codes (§ 4.2). */
export const CloseCode = Object.freeze({
  ServerShutdown: 4000,
  Slow: 4001,
  InternalError: 4002,
  IdleTimeout: 4003,
  Flood: 4004,
  BadFrame: 4500,
  FrameTooLarge: 4501,
  UnsupportedVersion: 4502,
  TextNotSupported: 4503,
  HelloRequired: 4504,
  Unauthorized: 4505,
});

/**
 * Whether a close code ends the session for good (4500–4999, and 1002: the server found a
 * malformed WebSocket frame from this client, § 4.2).
 */
export function isTerminalClose(code) {
  return (code >= 4500 && code <= 4999) || code === 1002;
}

const CLOSE_NAMES = Object.fromEntries(Object.entries(CloseCode).map(([k, v]) => [v, k]));

/** Human-readable name of a close code. */
export function closeName(code) {
  if (CLOSE_NAMES[code]) return CLOSE_NAMES[code];
  if (code === 1000) return 'normal closure';
  if (code === 1001) return 'going away';
  if (code === 1006) return 'connection lost';
  return `code ${code}`;
}
