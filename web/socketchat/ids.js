// client_msg_id helpers: 16 random bytes, shown as 32 hex characters by the REST API.

/** Lower-case hex of a client_msg_id (the REST API's representation). */
export function idToHex(id) {
  let s = '';
  for (const b of id) s += b.toString(16).padStart(2, '0');
  return s;
}

/** Parses 32 hex characters into a 16-byte id. */
export function hexToId(hex) {
  if (typeof hex !== 'string' || !/^[0-9a-fA-F]{32}$/.test(hex)) throw new TypeError('expected 32 hex characters');
  const out = new Uint8Array(16);
  for (let i = 0; i < 16; i++) out[i] = parseInt(hex.slice(2 * i, 2 * i + 2), 16);
  return out;
}

/** A fresh random client_msg_id. */
export function newClientMsgId() {
  return globalThis.crypto.getRandomValues(new Uint8Array(16));
}
