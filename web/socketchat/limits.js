// The numbers of protocol v2 (protocol/PROTOCOL.md § 5) a client needs before the server's
// Welcome tells it its limits, and how message text is measured against them.

/** Protocol version spoken by this client (`Hello.version`); a server that speaks another one
 * answers with GoAway 4502 (terminal). */
export const PROTOCOL_VERSION = 2;
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

const textEncoder = new TextEncoder();

/** Byte length of a string in UTF-8. */
export function utf8Length(text) {
  return textEncoder.encode(text).length;
}
