// The numbers of protocol v3 (protocol/PROTOCOL.md § 5) a client needs before the server's
// Welcome tells it its limits, the limits Welcome does not carry, and how message text is
// measured against them.

/** Protocol version spoken by this client (`Hello.version`); a server that speaks another one
 * answers with GoAway 4502 (terminal). */
export const PROTOCOL_VERSION = 3;
/** Largest frame a client may send (§ 5). */
export const MAX_CLIENT_FRAME = 16 * 1024;
/** Largest frame the server sends (§ 5). */
export const MAX_SERVER_FRAME = 1024 * 1024;
/** Largest message text in UTF-8 bytes (§ 5). */
export const MAX_TEXT_BYTES = 4000;
/** Typing updates a connection may send in a burst (§ 5; not in Welcome's limits). */
export const TYPING_BURST = 5;
/** Typing updates per second a connection may send after its burst (§ 5). */
export const TYPING_RATE_PER_SEC = 1;
/** Read marks (`MarkRead`) a connection may send in a burst (§ 5; not in Welcome's limits). */
export const MARK_READ_BURST = 10;
/** Read marks per second a connection may send after its burst (§ 5). */
export const MARK_READ_RATE_PER_SEC = 2;
/** `Join`, `Switch` and `History` together: a connection's burst (§ 5; not in Welcome's limits). */
export const READ_BURST = 20;
/** `Join`, `Switch` and `History` per second after the burst (§ 5). */
export const READ_RATE_PER_SEC = 5;
/** Rooms one connection may have joined at once (§ 5; also `Welcome.limits.max_rooms`). */
export const MAX_ROOMS = 32;
/** Attachments per `Send` (§ 5). */
export const MAX_ATTACHMENTS = 10;

const textEncoder = new TextEncoder();

/** Byte length of a string in UTF-8. */
export function utf8Length(text) {
  return textEncoder.encode(text).length;
}
