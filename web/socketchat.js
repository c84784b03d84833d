// SocketChat client library: postcard codec for protocol v2 (protocol/PROTOCOL.md), stream
// framing, and a reconnecting WebSocket client. Plain ES module, no dependencies; runs in
// browsers and in Node 20+.
//
// JS frame shape: `{type: 'Send', room, client_msg_id, text}` — the variant name as `type`
// plus the variant struct's fields under their spec names. Nested structs are plain objects,
// `Option` is `null` or the value, `Vec` is an array, integers are Numbers (values above
// 2^53 − 1 are rejected, never rounded), `[u8; 16]` is a Uint8Array of length 16.

// ---------------------------------------------------------------------------------------------
// Constants from the spec
// ---------------------------------------------------------------------------------------------

/** Protocol version spoken by this client (`Hello.version`); a server that speaks another one
 * answers with GoAway 4502 (terminal). */
export const PROTOCOL_VERSION = 2;
/** Largest frame a client may send (§ 5). */
export const MAX_CLIENT_FRAME = 16 * 1024;
/** Largest frame the server sends (§ 5). */
export const MAX_SERVER_FRAME = 1024 * 1024;
/** Largest message text in UTF-8 bytes (§ 5). */
export const MAX_TEXT_BYTES = 4000;

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

/** Whether a close code ends the session for good (4500–4999, § 4.2). */
export function isTerminalClose(code) {
  return code >= 4500 && code <= 4999;
}

// ---------------------------------------------------------------------------------------------
// Schema
// ---------------------------------------------------------------------------------------------

const opt = (of) => ({ kind: 'option', of });
const vec = (of) => ({ kind: 'vec', of });
const struct = (fields) => ({ kind: 'struct', fields });

const UserRef = struct([['id', 'u64'], ['username', 'string']]);
const Limits = struct([
  ['max_frame_bytes', 'u32'],
  ['max_text_bytes', 'u32'],
  ['max_rooms', 'u16'],
  ['max_history_page', 'u16'],
  ['sends_per_sec', 'u16'],
  ['send_burst', 'u16'],
]);
const ChatMessageFields = [
  ['room', 'string'],
  ['seq', 'u64'],
  ['message_id', 'u64'],
  ['sender', UserRef],
  ['client_msg_id', 'id16'],
  ['sent_at_ms', 'u64'],
  ['text', 'string'],
];
const ChatMessage = struct(ChatMessageFields);

/** Client → server variants, in discriminant order (§ 3.1). */
const CLIENT_VARIANTS = [
  ['Hello', [['version', 'u32'], ['client', 'string']]],
  ['Join', [['room', 'string'], ['after_seq', opt('u64')]]],
  ['Leave', [['room', 'string']]],
  ['Switch', [['room', 'string'], ['after_seq', opt('u64')]]],
  ['Send', [['room', 'string'], ['client_msg_id', 'id16'], ['text', 'string']]],
  ['History', [['request_id', 'u32'], ['room', 'string'], ['before_seq', opt('u64')], ['limit', 'u16']]],
  ['Typing', [['room', 'string'], ['active', 'bool']]],
  ['Ping', [['nonce', 'u64']]],
];

/**
 * Server → client variants, in discriminant order (§ 3.2). `null` marks an index retired in
 * v2 (#1 was v1's `Online`, #8 v1's `Presence`): never sent, decoded like an unknown index.
 */
const SERVER_VARIANTS = [
  ['Welcome', [['version', 'u32'], ['user', UserRef], ['connection_id', 'u64'], ['heartbeat_ms', 'u32'], ['limits', Limits]]],
  null,
  ['Joined', [['room', 'string'], ['head_seq', 'u64'], ['replay_from', 'u64']]],
  ['Left', [['room', 'string']]],
  ['Ack', [['room', 'string'], ['client_msg_id', 'id16'], ['seq', 'u64'], ['message_id', 'u64'], ['sent_at_ms', 'u64']]],
  ['Message', ChatMessageFields],
  ['History', [['request_id', 'u32'], ['room', 'string'], ['messages', vec(ChatMessage)], ['next_before', opt('u64')]]],
  ['Typing', [['room', 'string'], ['user', UserRef], ['active', 'bool']]],
  null,
  ['Pong', [['nonce', 'u64']]],
  ['Error', [
    ['code', 'u16'],
    ['message', 'string'],
    ['room', opt('string')],
    ['client_msg_id', opt('id16')],
    ['request_id', opt('u32')],
    ['retry_after_ms', opt('u32')],
  ]],
  ['GoAway', [['code', 'u16'], ['reason', 'string']]],
  ['RoomPresence', [['room', 'string'], ['online', 'u32'], ['users', vec(UserRef)]]],
];

function indexVariants(list) {
  const byName = new Map();
  list.forEach((variant, index) => variant && byName.set(variant[0], { index, fields: variant[1] }));
  return byName;
}
const CLIENT_BY_NAME = indexVariants(CLIENT_VARIANTS);
const SERVER_BY_NAME = indexVariants(SERVER_VARIANTS);

/** Client → server frame types, in discriminant order. */
export const CLIENT_FRAME_TYPES = Object.freeze(CLIENT_VARIANTS.map(([name]) => name));
/** Server → client frame types this codec knows, in discriminant order (retired ones left out). */
export const SERVER_FRAME_TYPES = Object.freeze(SERVER_VARIANTS.filter(Boolean).map(([name]) => name));
/** Server → client discriminants retired in v2 (§ 3.2): decoded as unknown frames. */
export const RETIRED_SERVER_FRAMES = Object.freeze(SERVER_VARIANTS.flatMap((v, index) => (v ? [] : [index])));

// Maximum varint length in bytes and maximum value, per integer type (§ 2). String and Vec
// lengths are a `usize` in postcard; the reference server is 64-bit, so they take up to 10
// bytes like a u64 (a length can never exceed the input anyway).
const INT_LIMITS = {
  u16: { bytes: 3, max: 0xffff },
  u32: { bytes: 5, max: 0xffffffff },
  u64: { bytes: 10, max: Number.MAX_SAFE_INTEGER },
  len: { bytes: 10, max: Number.MAX_SAFE_INTEGER },
};

const textEncoder = new TextEncoder();
const textDecoder = new TextDecoder('utf-8', { fatal: true, ignoreBOM: true });

// ---------------------------------------------------------------------------------------------
// Encoder
// ---------------------------------------------------------------------------------------------

class Writer {
  constructor() {
    this.buf = new Uint8Array(64);
    this.len = 0;
  }
  reserve(n) {
    if (this.len + n <= this.buf.length) return;
    let size = this.buf.length * 2;
    while (size < this.len + n) size *= 2;
    const next = new Uint8Array(size);
    next.set(this.buf.subarray(0, this.len));
    this.buf = next;
  }
  byte(b) {
    this.reserve(1);
    this.buf[this.len++] = b;
  }
  bytes(arr) {
    this.reserve(arr.length);
    this.buf.set(arr, this.len);
    this.len += arr.length;
  }
  varint(value, type, path) {
    const limit = INT_LIMITS[type];
    if (typeof value !== 'number' || !Number.isInteger(value) || value < 0) {
      throw new TypeError(`${path}: expected a non-negative integer, got ${describe(value)}`);
    }
    if (value > limit.max) throw new RangeError(`${path}: ${value} does not fit in ${type}`);
    // Division instead of bit operations: values may exceed 32 bits.
    let n = value;
    while (n >= 0x80) {
      this.byte((n % 0x80) | 0x80);
      n = Math.floor(n / 0x80);
    }
    this.byte(n);
  }
  finish() {
    return this.buf.slice(0, this.len);
  }
}

function describe(v) {
  if (v === null) return 'null';
  if (v === undefined) return 'undefined';
  if (typeof v === 'string') return JSON.stringify(v.length > 20 ? v.slice(0, 20) + '…' : v);
  return typeof v === 'object' ? Object.prototype.toString.call(v) : String(v);
}

function encodeValue(w, type, value, path) {
  if (typeof type === 'string') {
    switch (type) {
      case 'u8':
        if (!Number.isInteger(value) || value < 0 || value > 0xff) {
          throw new RangeError(`${path}: expected a u8, got ${describe(value)}`);
        }
        w.byte(value);
        return;
      case 'u16':
      case 'u32':
      case 'u64':
        w.varint(value, type, path);
        return;
      case 'bool':
        if (typeof value !== 'boolean') throw new TypeError(`${path}: expected a boolean, got ${describe(value)}`);
        w.byte(value ? 1 : 0);
        return;
      case 'string': {
        if (typeof value !== 'string') throw new TypeError(`${path}: expected a string, got ${describe(value)}`);
        if (typeof value.isWellFormed === 'function' && !value.isWellFormed()) {
          throw new TypeError(`${path}: string contains a lone surrogate`);
        }
        const bytes = textEncoder.encode(value);
        w.varint(bytes.length, 'len', path);
        w.bytes(bytes);
        return;
      }
      case 'id16': {
        const ok = (value instanceof Uint8Array || Array.isArray(value)) && value.length === 16;
        if (!ok) throw new TypeError(`${path}: expected 16 bytes (Uint8Array), got ${describe(value)}`);
        for (let i = 0; i < 16; i++) encodeValue(w, 'u8', value[i], `${path}[${i}]`);
        return;
      }
      default:
        throw new Error(`unknown type ${type}`);
    }
  }
  switch (type.kind) {
    case 'option':
      if (value === null || value === undefined) {
        w.byte(0);
      } else {
        w.byte(1);
        encodeValue(w, type.of, value, path);
      }
      return;
    case 'vec':
      if (!Array.isArray(value)) throw new TypeError(`${path}: expected an array, got ${describe(value)}`);
      w.varint(value.length, 'len', path);
      value.forEach((item, i) => encodeValue(w, type.of, item, `${path}[${i}]`));
      return;
    case 'struct':
      encodeFields(w, type.fields, value, path);
      return;
    default:
      throw new Error(`unknown type kind ${type.kind}`);
  }
}

function encodeFields(w, fields, obj, path) {
  if (obj === null || typeof obj !== 'object') throw new TypeError(`${path}: expected an object, got ${describe(obj)}`);
  for (const [name, type] of fields) {
    const value = obj[name];
    const optional = typeof type === 'object' && type.kind === 'option';
    if (value === undefined && !optional) throw new TypeError(`${path}.${name} is missing`);
    encodeValue(w, type, value, `${path}.${name}`);
  }
}

function encodeFrame(byName, frame, side) {
  if (frame === null || typeof frame !== 'object') throw new TypeError(`${side} frame must be an object`);
  const variant = byName.get(frame.type);
  if (!variant) throw new TypeError(`unknown ${side} frame type ${describe(frame.type)}`);
  const w = new Writer();
  w.varint(variant.index, 'u32', 'discriminant');
  encodeFields(w, variant.fields, frame, frame.type);
  return w.finish();
}

/** Encodes a client → server frame into its postcard bytes. */
export function encodeClientFrame(frame) {
  return encodeFrame(CLIENT_BY_NAME, frame, 'client');
}

/** Encodes a server → client frame (for tests and mock servers). */
export function encodeServerFrame(frame) {
  return encodeFrame(SERVER_BY_NAME, frame, 'server');
}

// ---------------------------------------------------------------------------------------------
// Decoder
// ---------------------------------------------------------------------------------------------

/** Thrown for any bytes that are not exactly one valid frame. */
export class DecodeError extends Error {
  /** @param {string} message @param {string} [kind] 'unknown_frame' for an unknown discriminant */
  constructor(message, kind = 'malformed') {
    super(message);
    this.name = 'DecodeError';
    this.kind = kind;
  }
}

function toUint8Array(input) {
  if (input instanceof Uint8Array) {
    // Normalise Node Buffers (whose slice() is a view) into a plain Uint8Array view.
    return input.constructor === Uint8Array ? input : new Uint8Array(input.buffer, input.byteOffset, input.byteLength);
  }
  if (input instanceof ArrayBuffer) return new Uint8Array(input);
  if (ArrayBuffer.isView(input)) return new Uint8Array(input.buffer, input.byteOffset, input.byteLength);
  throw new TypeError('expected a Uint8Array or ArrayBuffer');
}

class Reader {
  constructor(bytes) {
    this.bytes = bytes;
    this.pos = 0;
  }
  remaining() {
    return this.bytes.length - this.pos;
  }
  byte(path) {
    if (this.pos >= this.bytes.length) throw new DecodeError(`truncated frame: ${path} needs more bytes`);
    return this.bytes[this.pos++];
  }
  take(n, path) {
    if (n > this.remaining()) throw new DecodeError(`truncated frame: ${path} needs ${n} bytes, ${this.remaining()} left`);
    const out = this.bytes.slice(this.pos, this.pos + n);
    this.pos += n;
    return out;
  }
  varint(type, path) {
    const limit = INT_LIMITS[type];
    let value = 0;
    let scale = 1;
    for (let i = 0; i < limit.bytes; i++) {
      const b = this.byte(path);
      value += (b & 0x7f) * scale;
      scale *= 0x80;
      if ((b & 0x80) === 0) {
        // value only grows, so a sum above max (exact or rounded) is an overflow.
        if (value > limit.max) {
          const what = type === 'u64' || type === 'len' ? 'exceeds 2^53 - 1' : `overflows ${type}`;
          throw new DecodeError(`${path}: varint ${what}`);
        }
        return value;
      }
    }
    throw new DecodeError(`${path}: varint longer than ${limit.bytes} bytes`);
  }
}

function decodeValue(r, type, path) {
  if (typeof type === 'string') {
    switch (type) {
      case 'u8':
        return r.byte(path);
      case 'u16':
      case 'u32':
      case 'u64':
        return r.varint(type, path);
      case 'bool': {
        const b = r.byte(path);
        if (b > 1) throw new DecodeError(`${path}: invalid bool byte 0x${b.toString(16).padStart(2, '0')}`);
        return b === 1;
      }
      case 'string': {
        const len = r.varint('len', `${path} length`);
        const bytes = r.take(len, path);
        try {
          return textDecoder.decode(bytes);
        } catch {
          throw new DecodeError(`${path}: invalid UTF-8`);
        }
      }
      case 'id16':
        return r.take(16, path);
      default:
        throw new Error(`unknown type ${type}`);
    }
  }
  switch (type.kind) {
    case 'option': {
      const tag = r.byte(path);
      if (tag === 0) return null;
      if (tag === 1) return decodeValue(r, type.of, path);
      throw new DecodeError(`${path}: invalid option tag 0x${tag.toString(16).padStart(2, '0')}`);
    }
    case 'vec': {
      const count = r.varint('len', `${path} length`);
      // Every element takes at least one byte: refuse absurd counts before allocating.
      if (count > r.remaining()) throw new DecodeError(`truncated frame: ${path} announces ${count} elements`);
      const out = new Array(count);
      for (let i = 0; i < count; i++) out[i] = decodeValue(r, type.of, `${path}[${i}]`);
      return out;
    }
    case 'struct':
      return decodeFields(r, type.fields, {}, path);
    default:
      throw new Error(`unknown type kind ${type.kind}`);
  }
}

function decodeFields(r, fields, out, path) {
  for (const [name, type] of fields) out[name] = decodeValue(r, type, `${path}.${name}`);
  return out;
}

function decodeFrame(variants, input, side) {
  const r = new Reader(toUint8Array(input));
  const index = r.varint('u32', 'discriminant');
  const variant = variants[index];
  if (!variant) {
    const retired = side === 'server' && RETIRED_SERVER_FRAMES.includes(index) ? ' (retired in protocol v2)' : '';
    throw new DecodeError(`unknown ${side} frame discriminant ${index}${retired}`, 'unknown_frame');
  }
  const [type, fields] = variant;
  const frame = decodeFields(r, fields, { type }, type);
  if (r.remaining() !== 0) throw new DecodeError(`${r.remaining()} trailing bytes after ${type} frame`);
  return frame;
}

/** Decodes exactly one server → client frame; throws DecodeError on anything else. */
export function decodeServerFrame(bytes) {
  return decodeFrame(SERVER_VARIANTS, bytes, 'server');
}

/** Decodes exactly one client → server frame (for tests and mock servers). */
export function decodeClientFrame(bytes) {
  return decodeFrame(CLIENT_VARIANTS, bytes, 'client');
}

// ---------------------------------------------------------------------------------------------
// Stream framing (§ 1.3)
// ---------------------------------------------------------------------------------------------

/** Prefixes frame bytes with their length as a varint (for byte streams). */
export function encodeStreamFrame(bytes) {
  const frame = toUint8Array(bytes);
  const w = new Writer();
  w.varint(frame.length, 'u32', 'length');
  w.bytes(frame);
  return w.finish();
}

/**
 * Finds the first complete length-prefixed frame at the start of `buf`.
 * Returns `{frame: Uint8Array, consumed: number}`, or `null` while more bytes are needed.
 * Throws DecodeError when the prefix does not end within 5 bytes or announces a length above
 * `maxFrameBytes` (default: the server frame limit).
 */
export function decodeStreamFrame(buf, maxFrameBytes = MAX_SERVER_FRAME) {
  const bytes = toUint8Array(buf);
  let len = 0;
  let scale = 1;
  for (let i = 0; i < 5; i++) {
    if (i >= bytes.length) return null;
    const b = bytes[i];
    len += (b & 0x7f) * scale;
    scale *= 0x80;
    if ((b & 0x80) === 0) {
      if (len > maxFrameBytes) throw new DecodeError(`stream frame of ${len} bytes exceeds the limit of ${maxFrameBytes}`, 'too_large');
      const start = i + 1;
      if (bytes.length < start + len) return null;
      return { frame: bytes.slice(start, start + len), consumed: start + len };
    }
  }
  throw new DecodeError('stream length prefix longer than 5 bytes');
}

/**
 * Reassembles length-prefixed frames (§ 1.3) from a byte stream that arrives in arbitrary
 * chunks: a frame may be split over several chunks and a chunk may hold several frames.
 * `push(chunk)` returns the frames completed by that chunk, in order. The buffer holds at most
 * one incomplete frame, whose announced length was already checked against `maxFrameBytes`;
 * a longer length (or a prefix over 5 bytes) throws DecodeError, after which the reader is
 * unusable (the stream cannot be resynchronised).
 */
export class StreamFrameReader {
  constructor(maxFrameBytes = MAX_SERVER_FRAME) {
    this.maxFrameBytes = maxFrameBytes;
    this.buf = new Uint8Array(0);
    this.start = 0;
    this.end = 0;
    this.failed = null;
  }

  /** Bytes received but not yet returned as a frame. */
  get buffered() {
    return this.end - this.start;
  }

  push(chunk) {
    if (this.failed) throw this.failed;
    const bytes = toUint8Array(chunk);
    const frames = [];
    try {
      if (this.buffered === 0) {
        // Common case: decode straight from the chunk, keep only an incomplete tail.
        const used = this._drain(bytes, frames);
        this._append(bytes.subarray(used));
      } else {
        this._append(bytes);
        this.start += this._drain(this.buf.subarray(this.start, this.end), frames);
        if (this.start === this.end) this.start = this.end = 0;
      }
    } catch (err) {
      this.failed = err;
      this.buf = new Uint8Array(0);
      this.start = this.end = 0;
      throw err;
    }
    return frames;
  }

  _drain(bytes, frames) {
    let pos = 0;
    for (;;) {
      const next = decodeStreamFrame(bytes.subarray(pos), this.maxFrameBytes);
      if (next === null) return pos;
      frames.push(next.frame);
      pos += next.consumed;
    }
  }

  _append(bytes) {
    if (bytes.length === 0) return;
    if (this.end + bytes.length > this.buf.length) {
      const live = this.end - this.start;
      const need = live + bytes.length;
      if (need <= this.buf.length) {
        this.buf.copyWithin(0, this.start, this.end);
      } else {
        let size = Math.max(64, this.buf.length);
        while (size < need) size *= 2;
        const next = new Uint8Array(size);
        next.set(this.buf.subarray(this.start, this.end));
        this.buf = next;
      }
      this.start = 0;
      this.end = live;
    }
    this.buf.set(bytes, this.end);
    this.end += bytes.length;
  }
}

// ---------------------------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------------------------

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

/** Byte length of a string in UTF-8. */
export function utf8Length(text) {
  return textEncoder.encode(text).length;
}

// ---------------------------------------------------------------------------------------------
// ChatClient
// ---------------------------------------------------------------------------------------------

/** Event carrying a payload in `detail` (CustomEvent is not everywhere in Node 20). */
export class ChatEvent extends Event {
  constructor(type, detail) {
    super(type);
    this.detail = detail;
  }
}

function defaultUrl() {
  const loc = globalThis.location;
  if (!loc) throw new Error('ChatClient: no location; pass {url}');
  return `${loc.protocol === 'https:' ? 'wss' : 'ws'}://${loc.host}/ws`;
}

const WS_OPEN = 1;
/** Sends transmitted but not yet acknowledged, at most (keeps a long offline queue from flooding). */
const MAX_SENDS_IN_FLIGHT = 32;

// ---------------------------------------------------------------------------------------------
// Transports: one small adapter per transport, one session logic (ChatClient) on top.
//
// An adapter carries whole frames (Uint8Array, no length prefix) both ways:
//   conn.kind                     'websocket' | 'webtransport'
//   conn.start(handlers)          wires the callbacks below; `open` may be called at once
//   conn.isOpen                   true while frames can be sent
//   conn.send(bytes)              sends one frame
//   conn.close(code, reason)      ends the connection; no callback follows
//   conn.detach()                 no callback follows any more (the connection is left as is)
//   conn.drop()                   ends the connection underneath; `close` is reported (tests)
// handlers: open(), frame(bytes), text(message) for a WebSocket text message (skipped),
// fatal(message, code) for unreadable stream framing, close(code, reason) when the connection
// ended without the client closing it (a WebTransport session reports 1006 unless the
// session close carried a 4xxx code: the GoAway read before it is what counts).
// ---------------------------------------------------------------------------------------------

/** How long a WebTransport attempt may take before falling back to WebSocket (ms). */
export const WEBTRANSPORT_TIMEOUT_MS = 5000;
/** After a failed WebTransport attempt, WebSocket is used for this long (ms). */
export const WEBTRANSPORT_RETRY_AFTER_MS = 60000;

/** WebSocket: one binary message is one frame (§ 1.2). */
export class WebSocketConnection {
  constructor(WebSocketImpl, url) {
    this.kind = 'websocket';
    this.ws = new WebSocketImpl(url);
    this.ws.binaryType = 'arraybuffer';
    this.handlers = null;
  }

  start(handlers) {
    this.handlers = handlers;
    const ws = this.ws;
    ws.onopen = () => this.handlers?.open();
    ws.onmessage = (ev) => {
      if (!this.handlers) return;
      if (typeof ev.data === 'string') this.handlers.text('text message from server');
      else this.handlers.frame(ev.data);
    };
    ws.onerror = () => {
      /* the close event follows */
    };
    ws.onclose = (ev) => this.handlers?.close(ev.code, ev.reason);
  }

  get isOpen() {
    return this.ws.readyState === WS_OPEN;
  }

  send(bytes) {
    this.ws.send(bytes);
  }

  detach() {
    this.handlers = null;
    const ws = this.ws;
    ws.onopen = ws.onmessage = ws.onerror = ws.onclose = null;
  }

  close(code, reason) {
    this.detach();
    try {
      this.ws.close(code, reason);
    } catch {
      /* already closed */
    }
  }

  /** Closes the socket but keeps the callbacks: its end is reported like any other. */
  drop() {
    try {
      this.ws.close(4000, 'dropped by the client');
    } catch {
      /* already closed */
    }
  }
}

function timeoutError(ms) {
  const err = new Error(`WebTransport not ready within ${ms} ms`);
  err.name = 'TimeoutError';
  return err;
}

function errorText(err) {
  if (err === undefined || err === null) return 'unknown error';
  return err.message ? `${err.name && err.name !== 'Error' ? err.name + ': ' : ''}${err.message}` : String(err);
}

/**
 * WebTransport: one bidirectional stream opened by the client carries every frame in both
 * directions, each prefixed by its length (§ 1.3). The session is established by
 * `WebTransportConnection.establish()`, which resolves only once the stream exists.
 */
export class WebTransportConnection {
  /**
   * @param {Function} WebTransportImpl the WebTransport constructor
   * @param {string} url `https://…/wt?ticket=…`
   * @param {object} options passed to the constructor (serverCertificateHashes)
   * @param {number} timeoutMs establishment deadline
   * @param {AbortSignal} [signal] gives up the attempt
   * @returns {Promise<WebTransportConnection>} rejects when the session or stream fails
   */
  static async establish(WebTransportImpl, url, options, timeoutMs = WEBTRANSPORT_TIMEOUT_MS, signal = undefined) {
    const conn = new WebTransportConnection();
    let timer = null;
    const deadline = abortable(
      new Promise((_, reject) => {
        timer = setTimeout(() => reject(timeoutError(timeoutMs)), timeoutMs);
      }),
      signal,
    );
    deadline.catch(() => {});
    try {
      conn.wt = new WebTransportImpl(url, options);
      // Observe `closed` at once so an early failure is never an unhandled rejection.
      conn.closedInfo = Promise.resolve(conn.wt.closed).then(
        (info) => ({ clean: true, code: info?.closeCode ?? 0, reason: info?.reason ?? '' }),
        (err) => ({ clean: false, code: 0, reason: errorText(err) }),
      );
      await Promise.race([conn.wt.ready, deadline]);
      const stream = await Promise.race([conn.wt.createBidirectionalStream(), deadline]);
      conn.reader = stream.readable.getReader();
      conn.writer = stream.writable.getWriter();
      conn.writer.closed.catch(() => {});
      conn.ready = true;
      return conn;
    } catch (err) {
      conn._abort(err);
      throw err;
    } finally {
      clearTimeout(timer);
    }
  }

  constructor() {
    this.kind = 'webtransport';
    this.wt = null;
    this.reader = null;
    this.writer = null;
    this.closedInfo = null;
    this.ready = false;
    this.handlers = null;
    this.ended = false;
    this.framer = new StreamFrameReader(MAX_SERVER_FRAME);
  }

  _abort(err) {
    this.ended = true;
    try {
      this.wt?.close({ closeCode: 0, reason: errorText(err).slice(0, 100) });
    } catch {
      /* not open */
    }
  }

  start(handlers) {
    this.handlers = handlers;
    const readDone = this._readLoop();
    // The end is reported once, after whatever the stream still delivered (a GoAway comes
    // just before the server closes the connection).
    this.closedInfo.then(async (info) => {
      await Promise.race([readDone, delay(200)]);
      this._finish(info);
    });
    readDone.then(async (why) => {
      if (why === null) return; // detached
      const info = await Promise.race([this.closedInfo, delay(200).then(() => null)]);
      this._finish(info ?? { clean: false, code: 0, reason: why });
    });
    this.handlers.open();
  }

  async _readLoop() {
    try {
      for (;;) {
        const { value, done } = await this.reader.read();
        if (!this.handlers) return null;
        if (done) return 'stream ended by the server';
        let frames;
        try {
          frames = this.framer.push(value);
        } catch (err) {
          this.handlers.fatal(`bad stream framing from server: ${err.message}`, err.kind === 'too_large' ? 4501 : 4500);
          return null;
        }
        for (const f of frames) {
          if (!this.handlers) return null;
          this.handlers.frame(f);
        }
      }
    } catch (err) {
      return this.handlers ? errorText(err) : null;
    }
  }

  _finish(info) {
    if (this.ended) return;
    this.ended = true;
    const handlers = this.handlers;
    this.handlers = null;
    try {
      this.wt.close({ closeCode: 0, reason: '' });
    } catch {
      /* already closed */
    }
    if (!handlers) return;
    // A browser sees the server's connection close as an error without a code: what counts
    // is the GoAway read before it (ChatClient), so report a drop. A session close capsule
    // carrying one of our close codes is honoured.
    const code = info.clean && info.code >= 4000 && info.code <= 4999 ? info.code : 1006;
    handlers.close(code, info.reason || 'WebTransport session closed');
  }

  get isOpen() {
    return this.ready && !this.ended;
  }

  send(bytes) {
    this.writer.write(encodeStreamFrame(bytes)).catch(() => {
      /* the session's end is reported by the read side */
    });
  }

  detach() {
    this.handlers = null;
  }

  /** Closes the session but keeps the callbacks: its end is reported like any other. */
  drop() {
    try {
      this.wt.close({ closeCode: 0, reason: 'dropped by the client' });
    } catch {
      /* already closed */
    }
  }

  close(code, reason) {
    this.handlers = null;
    if (this.ended) return;
    this.ended = true;
    // End our side of the stream first (FIN after any queued frames): a server that watches
    // only the stream sees the end even if the session close is not acted upon.
    this.writer.close().catch(() => {});
    try {
      this.wt.close({ closeCode: code, reason: String(reason ?? '').slice(0, 120) });
    } catch {
      /* already closed */
    }
  }
}

const delay = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

/** `promise`, or a rejection as soon as `signal` aborts. */
function abortable(promise, signal) {
  if (!signal) return Promise.resolve(promise);
  if (signal.aborted) return Promise.reject(new Error('attempt abandoned'));
  return new Promise((resolve, reject) => {
    const onAbort = () => reject(new Error('attempt abandoned'));
    signal.addEventListener('abort', onAbort, { once: true });
    Promise.resolve(promise).then(
      (v) => {
        signal.removeEventListener('abort', onAbort);
        resolve(v);
      },
      (e) => {
        signal.removeEventListener('abort', onAbort);
        reject(e);
      },
    );
  });
}

/** Decodes standard base64 into bytes. */
export function base64ToBytes(text) {
  const bin = globalThis.atob(text);
  const out = new Uint8Array(bin.length);
  for (let i = 0; i < bin.length; i++) out[i] = bin.charCodeAt(i);
  return out;
}

/**
 * Which transport to try first for one connection attempt.
 * @param {object} p
 * @param {'auto'|'websocket'|'webtransport'} p.mode the client's `transport` option
 * @param {object|null} p.info `GET /api/transport` answer, null when it could not be fetched
 * @param {boolean} p.hasWebTransport whether the WebTransport API exists here
 * @param {number} p.now current time (ms)
 * @param {number} p.webTransportBlockedUntil no WebTransport attempt before this time
 * @returns {{transport: 'webtransport'|'websocket', why: string}}
 */
export function chooseTransport({ mode = 'auto', info, hasWebTransport, now, webTransportBlockedUntil = 0 }) {
  if (mode === 'websocket') return { transport: 'websocket', why: 'WebSocket forced' };
  if (!hasWebTransport) return { transport: 'websocket', why: 'no WebTransport API' };
  if (!info || typeof info.webtransport !== 'string' || info.webtransport === '') {
    return { transport: 'websocket', why: info ? 'server offers no WebTransport' : 'transport info unavailable' };
  }
  if (mode !== 'webtransport' && now < webTransportBlockedUntil) {
    return { transport: 'websocket', why: 'WebTransport failed recently' };
  }
  return { transport: 'webtransport', why: mode === 'webtransport' ? 'WebTransport forced' : 'offered by the server' };
}

/** `new WebTransport()` options from `GET /api/transport`'s cert_hashes (sha-256 only). */
export function webTransportOptions(info) {
  const hashes = Array.isArray(info && info.cert_hashes) ? info.cert_hashes : [];
  const serverCertificateHashes = hashes
    .filter((h) => h && h.algorithm === 'sha-256' && typeof h.value === 'string')
    .map((h) => ({ algorithm: 'sha-256', value: base64ToBytes(h.value) }));
  return serverCertificateHashes.length ? { serverCertificateHashes } : {};
}

/** `url?ticket=…` (or `&ticket=…` when the URL has a query already). */
export function webTransportUrl(base, ticket) {
  return `${base}${base.includes('?') ? '&' : '?'}ticket=${encodeURIComponent(ticket)}`;
}

async function fetchJson(path, init) {
  const res = await globalThis.fetch(path, {
    credentials: 'same-origin',
    headers: { accept: 'application/json' },
    signal: AbortSignal.timeout(WEBTRANSPORT_TIMEOUT_MS),
    ...init,
  });
  if (!res.ok) {
    await res.body?.cancel();
    throw new Error(`${init?.method ?? 'GET'} ${path} answered ${res.status}`);
  }
  return res.json();
}

/** `GET /api/transport` (same origin). */
export function fetchTransportInfo() {
  return fetchJson('/api/transport');
}

/** `POST /api/auth/ticket` (same origin, cookie-authenticated) → the ticket string. */
export async function fetchTicket() {
  const body = await fetchJson('/api/auth/ticket', { method: 'POST' });
  if (!body || typeof body.ticket !== 'string' || body.ticket === '') throw new Error('no ticket in the answer');
  return body.ticket;
}


/**
 * A SocketChat connection that survives reconnects, over WebTransport when the server offers
 * it and the browser can, else over WebSocket.
 *
 * Events (each an EventTarget event with the payload in `event.detail`, also delivered to
 * `client.on(type, fn)` listeners as `fn(detail)`):
 * - `status` `{state: 'idle'|'connecting'|'connected'|'reconnecting'|'disconnected', ...}`;
 *   reconnecting carries `delay_ms`, `retry_at`, `code`, `reason`, `attempt`;
 *   disconnected carries `code`, `reason`, `terminal`.
 * - `welcome`, `joined`, `left`, `message`, `ack`, `history`, `typing`, `error`, `pong`,
 *   `goaway`: the decoded server frame. `joined` also carries `after_seq` (what this client
 *   asked for), `first` (after_seq was null) and `stale` (replay_from > after_seq + 1: older
 *   missed messages were not replayed).
 * - `room_presence` `{type: 'RoomPresence', room, online, users}`: who is online in the current
 *   room (§ 6.8): `online` users in all, `users` the first 50 of them by username. Each one
 *   replaces the previous one for the room; `client.roomPresence(room)` holds the latest. The
 *   snapshot is dropped when the client switches to another room and at the room's `left`
 *   (a fresh one follows the next `joined`). Who else is online, and when a user was last
 *   seen, is asked over HTTP (§ 7).
 * - `send_failed` `{room, client_msg_id, code, message}`: a pending send was given up.
 * - `unauthorized` `{code, reason}`: the session ended (4505 or the token is gone); log in again.
 *   Any terminal close (4500–4999, e.g. 4502 when the server speaks another protocol version)
 *   stops reconnecting and ends in `status` `disconnected` with `terminal: true`, its `code`
 *   and the server's `reason` (from its GoAway when it sent one).
 * - `frame`: every decoded server frame, before its specific event.
 * - `transport` `{transport, previous}`: the transport of the open connection changed
 *   (`'webtransport'` | `'websocket'`); `client.transport` holds the current one.
 * - `transport_fallback` `{error, retry_webtransport_at}`: a WebTransport attempt failed and
 *   this attempt goes on over WebSocket (and later ones too until `retry_webtransport_at`).
 */
export class ChatClient extends EventTarget {
  /**
   * @param {object} [opts]
   * @param {string} [opts.url] WebSocket URL (default `ws(s)://<location.host>/ws`)
   * @param {string} [opts.clientName] `Hello.client`
   * @param {Function} [opts.WebSocket] WebSocket constructor (default the global one)
   * @param {number} [opts.minDelayMs] first reconnect delay (500)
   * @param {number} [opts.maxDelayMs] largest reconnect delay (10000)
   * @param {() => Promise<boolean>} [opts.checkAuth] asked before reconnecting when the last
   *   attempt never got a Welcome (a refused upgrade looks like a network error to a browser);
   *   resolve false when the session is gone, and the client stops with `unauthorized`.
   * @param {'auto'|'websocket'|'webtransport'} [opts.transport] 'auto' (default): WebTransport
   *   when offered and available, with WebSocket as the fallback; 'websocket': never
   *   WebTransport; 'webtransport': try WebTransport first even right after a failure
   * @param {() => Promise<object>} [opts.transportInfo] fetches `GET /api/transport`; default
   *   a same-origin fetch in a page (without `url`), none elsewhere (then WebSocket only)
   * @param {() => Promise<string>} [opts.getTicket] `POST /api/auth/ticket` → ticket
   * @param {Function} [opts.WebTransport] WebTransport constructor (default the global one)
   * @param {number} [opts.webTransportTimeoutMs] establishment deadline (5000)
   * @param {number} [opts.webTransportRetryAfterMs] WebSocket only for this long after a
   *   WebTransport failure (60000)
   * @param {Object<string, Function>} [opts.on] event callbacks by type
   */
  constructor(opts = {}) {
    super();
    this.url = opts.url ?? null;
    this.clientName = opts.clientName ?? 'socketchat-web/1.0';
    this.WebSocketImpl = opts.WebSocket ?? globalThis.WebSocket;
    this.minDelayMs = opts.minDelayMs ?? 500;
    this.maxDelayMs = opts.maxDelayMs ?? 10000;
    this.checkAuth = opts.checkAuth ?? null;
    this.random = opts.random ?? Math.random;
    this.transportMode = opts.transport ?? 'auto';
    const inPage = !!globalThis.location && typeof globalThis.fetch === 'function';
    this.transportInfo = opts.transportInfo ?? (inPage && !opts.url ? fetchTransportInfo : null);
    this.getTicket = opts.getTicket ?? fetchTicket;
    this.WebTransportImpl = opts.WebTransport ?? globalThis.WebTransport;
    this.webTransportTimeoutMs = opts.webTransportTimeoutMs ?? WEBTRANSPORT_TIMEOUT_MS;
    this.webTransportRetryAfterMs = opts.webTransportRetryAfterMs ?? WEBTRANSPORT_RETRY_AFTER_MS;
    /** No WebTransport attempt before this time (set by a failure, unless forced). */
    this.webTransportBlockedUntil = 0;
    /** Transport of the open (or last open) connection: 'webtransport' | 'websocket' | null. */
    this.transport = null;
    /** What the last attempt decided and why: {transport, why}. */
    this.lastTransportChoice = null;

    this.state = 'idle';
    /** Adapter of the current connection (opening or open), or null. */
    this.conn = null;
    /** Bumped whenever an attempt in progress must be abandoned. */
    this.openToken = 0;
    this.openAbort = null;
    this.stopped = true;
    this.welcomed = false;
    this.welcome = null;
    this.user = null;
    this.limits = null;
    this.attempt = 0;
    this.connectedAt = 0;
    this.lastRxAt = 0;
    this.reconnectTimer = null;
    this.heartbeatTimer = null;
    this.pingNonce = 0;
    this.lastGoAway = null;

    /** The room this client wants to be in; re-joined after every reconnect. */
    this.currentRoom = null;
    /** room → highest seq received (Message frames and History pages). */
    this.lastSeq = new Map();
    /** room → queue of after_seq values of Join/Switch requests awaiting their Joined. */
    this.joinRequests = new Map();
    /**
     * Outbox, in send order: hex(client_msg_id) → {room, client_msg_id, text, state, rejoins}.
     * state 'queued' = to be (re)transmitted, 'sent' = transmitted on the current connection.
     */
    this.pending = new Map();
    /** No send is transmitted before this time (after RateLimited / Unavailable). */
    this.sendPausedUntil = 0;
    /** After a RateLimited, sends are paced at the server's rate until this time. */
    this.pacingUntil = 0;
    this.lastSendAt = 0;
    this.pumpTimer = null;
    /** request_id → {resolve, reject, room} */
    this.historyRequests = new Map();
    this.nextRequestId = 1;
    /** room → latest RoomPresence of a joined room, as `{room, online, users}`. */
    this.presence = new Map();

    if (opts.on) for (const [type, fn] of Object.entries(opts.on)) this.on(type, fn);
    this._onBrowserOnline = () => {
      if (this.state === 'reconnecting') this._reconnectNow();
    };
    this._onPageHide = () => {
      // Unlike a WebSocket, a WebTransport session is not ended by the page going away (the
      // browser may keep its QUIC connection until it idles out), so the server would keep
      // the user online: end it here. Should the page come back (back/forward cache), the
      // client reconnects like after any drop.
      const conn = this.conn;
      if (!conn || conn.kind !== 'webtransport' || this.stopped) return;
      conn.close(1001, 'page closed');
      this._handleClose(1001, 'page closed');
    };
  }

  /** Subscribes `fn(detail)` to an event type; returns an unsubscribe function. */
  on(type, fn) {
    const listener = (e) => fn(e.detail);
    this.addEventListener(type, listener);
    return () => this.removeEventListener(type, listener);
  }

  _emit(type, detail) {
    this.dispatchEvent(new ChatEvent(type, detail));
  }

  _setStatus(state, extra = {}) {
    this.state = state;
    this._emit('status', { state, ...extra });
  }

  get connected() {
    return this.state === 'connected';
  }

  /** Opens the connection (and keeps it open until `disconnect()` or a terminal close). */
  connect() {
    if (!this.stopped) return;
    this.stopped = false;
    this.attempt = 0;
    if (typeof globalThis.addEventListener === 'function') {
      globalThis.addEventListener('online', this._onBrowserOnline);
      globalThis.addEventListener('pagehide', this._onPageHide);
    }
    this._open();
  }

  /** Closes the connection and stops reconnecting. Pending sends are kept. */
  disconnect(reason = 'closed by client') {
    this.stopped = true;
    clearTimeout(this.reconnectTimer);
    this.reconnectTimer = null;
    if (typeof globalThis.removeEventListener === 'function') {
      globalThis.removeEventListener('online', this._onBrowserOnline);
      globalThis.removeEventListener('pagehide', this._onPageHide);
    }
    const conn = this.conn;
    this._teardown('disconnected');
    if (conn) conn.close(1000, reason);
    this._setStatus('disconnected', { reason, code: 1000, terminal: false });
  }

  /** Forgets everything about the session (for logout). */
  reset() {
    this.disconnect('logged out');
    this.pending.clear();
    this.lastSeq.clear();
    this.joinRequests.clear();
    this.presence.clear();
    this.currentRoom = null;
    this.user = null;
    this.welcome = null;
  }

  _open() {
    this.welcomed = false;
    this.lastGoAway = null;
    this._setStatus('connecting', { attempt: this.attempt });
    const token = ++this.openToken;
    const canTryWebTransport =
      this.transportMode !== 'websocket' && typeof this.transportInfo === 'function' && typeof this.WebTransportImpl === 'function';
    if (!canTryWebTransport) {
      this.lastTransportChoice = chooseTransport({
        mode: this.transportMode,
        info: null,
        hasWebTransport: typeof this.WebTransportImpl === 'function',
        now: Date.now(),
      });
      this._openWebSocket();
      return;
    }
    this._openPreferred(token);
  }

  /** Asks the server what it offers, tries WebTransport when it should, else WebSocket. */
  async _openPreferred(token) {
    const stale = () => this.stopped || token !== this.openToken;
    const abort = new AbortController();
    this.openAbort = abort;
    let info = null;
    try {
      info = await abortable(this.transportInfo(), abort.signal);
    } catch {
      info = null; // the WebSocket attempt will tell whether the server is there at all
    }
    if (stale()) return;
    const choice = chooseTransport({
      mode: this.transportMode,
      info,
      hasWebTransport: true,
      now: Date.now(),
      webTransportBlockedUntil: this.webTransportBlockedUntil,
    });
    this.lastTransportChoice = choice;
    if (choice.transport === 'webtransport') {
      try {
        const ticket = await abortable(this.getTicket(), abort.signal);
        if (stale()) return;
        const conn = await WebTransportConnection.establish(
          this.WebTransportImpl,
          webTransportUrl(info.webtransport, ticket),
          webTransportOptions(info),
          this.webTransportTimeoutMs,
          abort.signal,
        );
        if (stale()) {
          conn.close(1000, 'superseded');
          return;
        }
        this.openAbort = null;
        this._attach(conn);
        return;
      } catch (err) {
        if (stale()) return;
        this.webTransportBlockedUntil = Date.now() + this.webTransportRetryAfterMs;
        this.lastTransportChoice = { transport: 'websocket', why: `WebTransport failed: ${errorText(err)}` };
        this._emit('transport_fallback', { error: errorText(err), retry_webtransport_at: this.webTransportBlockedUntil });
      }
    }
    this.openAbort = null;
    this._openWebSocket();
  }

  _openWebSocket() {
    let conn;
    try {
      conn = new WebSocketConnection(this.WebSocketImpl, this.url ?? defaultUrl());
    } catch (err) {
      this._handleClose(1006, errorText(err));
      return;
    }
    this._attach(conn);
  }

  /** Makes `conn` the current connection and wires its callbacks to the session logic. */
  _attach(conn) {
    this.conn = conn;
    const current = () => this.conn === conn;
    conn.start({
      open: () => current() && this._onTransportOpen(conn),
      frame: (bytes) => current() && this._onFrameBytes(bytes),
      text: (message) => current() && this._emit('protocol_error', { message }),
      fatal: (message, code = 4500) => {
        if (!current()) return;
        this._emit('protocol_error', { message });
        this._fail(code, message);
      },
      close: (code, reason) => current() && this._handleClose(code, reason),
    });
  }

  _onTransportOpen(conn) {
    this.lastRxAt = Date.now();
    this.connectedAt = Date.now();
    if (this.transport !== conn.kind) {
      const previous = this.transport;
      this.transport = conn.kind;
      this._emit('transport', { transport: conn.kind, previous });
    }
    this._sendFrame({ type: 'Hello', version: PROTOCOL_VERSION, client: this.clientName });
    // Frames sent right after Hello are processed in order (§ 1.2): re-join and resend now.
    if (this.currentRoom !== null) {
      const room = this.currentRoom;
      const after = this.lastSeq.get(room) ?? null;
      this._requestJoin(room, after, 'Join');
      this._pump();
    }
  }

  _onFrameBytes(bytes) {
    this.lastRxAt = Date.now();
    let frame;
    try {
      frame = decodeServerFrame(bytes);
    } catch (err) {
      this._emit('protocol_error', { message: err.message });
      // A frame type from a newer server is skipped (frames are delimited by the transport,
      // so nothing else is lost); any other undecodable frame means we cannot trust the stream.
      if (err.kind !== 'unknown_frame') this._fail(4500, `undecodable frame from server: ${err.message}`);
      return;
    }
    this._handleFrame(frame);
  }

  /**
   * Ends the current connection as if the network had dropped it (for tests and debugging):
   * the client reconnects and resumes like after any drop. Returns false when not connected.
   */
  dropConnection() {
    const conn = this.conn;
    if (!conn || this.stopped) return false;
    conn.drop();
    return true;
  }

  /** Ends the session for good from the client side (terminal, no reconnect). */
  _fail(code, reason) {
    const conn = this.conn;
    this.stopped = true;
    this._teardown('failed');
    if (conn) conn.close(code, reason.slice(0, 120));
    this._setStatus('disconnected', { code, reason, terminal: true });
  }

  _teardown(_why) {
    const conn = this.conn;
    this.conn = null;
    if (conn) conn.detach();
    this.openToken += 1;
    if (this.openAbort) {
      this.openAbort.abort();
      this.openAbort = null;
    }
    clearInterval(this.heartbeatTimer);
    this.heartbeatTimer = null;
    clearTimeout(this.pumpTimer);
    this.pumpTimer = null;
    // Whatever was transmitted but not acknowledged is sent again (same id) after reconnect.
    for (const p of this.pending.values()) p.state = 'queued';
    this.joinRequests.clear();
    for (const [id, req] of this.historyRequests) {
      req.reject(new Error('connection closed'));
      this.historyRequests.delete(id);
    }
  }

  _handleClose(code, reason) {
    const welcomed = this.welcomed;
    const uptime = Date.now() - this.connectedAt;
    if (!welcomed && this.conn && this.conn.kind === 'webtransport' && this.transportMode === 'auto') {
      // The session opened but died before Welcome: as good as a failed attempt.
      this.webTransportBlockedUntil = Date.now() + this.webTransportRetryAfterMs;
    }
    // The GoAway names the code to act on when the close carries none (1006), and its reason is
    // the server's full text (a close reason is cut at 123 bytes).
    if (this.lastGoAway && (!reason || code === 1006 || code === this.lastGoAway.code)) {
      code = this.lastGoAway.code;
      reason = this.lastGoAway.reason;
    }
    this._teardown('closed');
    if (this.stopped) return;
    if (isTerminalClose(code)) {
      this.stopped = true;
      this._setStatus('disconnected', { code, reason: reason || closeName(code), terminal: true });
      if (code === CloseCode.Unauthorized) this._emit('unauthorized', { code, reason });
      return;
    }
    if (welcomed && uptime > 5000) this.attempt = 0;
    const schedule = () => {
      if (this.stopped) return;
      const delay = this._delayFor(code);
      this.attempt += 1;
      const retryAt = Date.now() + delay;
      this._setStatus('reconnecting', { delay_ms: delay, retry_at: retryAt, code, reason: reason || closeName(code), attempt: this.attempt });
      this.reconnectTimer = setTimeout(() => {
        this.reconnectTimer = null;
        if (!this.stopped) this._open();
      }, delay);
    };
    if (!welcomed && this.checkAuth) {
      // A refused upgrade (401) is indistinguishable from a network error in a browser.
      Promise.resolve()
        .then(() => this.checkAuth())
        .catch(() => true)
        .then((ok) => {
          if (this.stopped) return;
          if (ok === false) {
            this.stopped = true;
            this._setStatus('disconnected', { code, reason: 'not logged in', terminal: true });
            this._emit('unauthorized', { code, reason: 'not logged in' });
          } else {
            schedule();
          }
        });
    } else {
      schedule();
    }
  }

  _delayFor(code) {
    if (code === CloseCode.ServerShutdown) return Math.floor(this.random() * this.minDelayMs);
    if (code === CloseCode.Flood) return 10000 + Math.floor(this.random() * 2000);
    const base = Math.min(this.maxDelayMs, this.minDelayMs * 2 ** Math.min(this.attempt, 20));
    // "Equal jitter": half fixed, half random.
    return Math.floor(base / 2 + this.random() * (base / 2));
  }

  _reconnectNow() {
    if (this.stopped || this.state !== 'reconnecting') return;
    clearTimeout(this.reconnectTimer);
    this.reconnectTimer = null;
    this._open();
  }

  _sendFrame(frame) {
    const conn = this.conn;
    if (!conn || !conn.isOpen) return false;
    conn.send(encodeClientFrame(frame));
    return true;
  }

  _requestJoin(room, after, type) {
    if (!this._sendFrame({ type, room, after_seq: after })) return false;
    if (!this.joinRequests.has(room)) this.joinRequests.set(room, []);
    this.joinRequests.get(room).push(after);
    return true;
  }

  /**
   * Transmits queued sends of the current room in send order. Normally all at once; while
   * paused after a RateLimited/Unavailable error nothing, and for a while after a RateLimited
   * one at a time at the server's sustained rate, so retries neither reorder much nor flood.
   */
  _pump() {
    clearTimeout(this.pumpTimer);
    this.pumpTimer = null;
    if (!this.conn || !this.conn.isOpen || this.currentRoom === null) return;
    const now = Date.now();
    if (now < this.sendPausedUntil) {
      this.pumpTimer = setTimeout(() => this._pump(), this.sendPausedUntil - now);
      return;
    }
    const pacing = now < this.pacingUntil;
    const rate = (this.limits && this.limits.sends_per_sec) || 20;
    const interval = Math.ceil(1000 / rate) + 5;
    let inFlight = 0;
    for (const p of this.pending.values()) if (p.state === 'sent') inFlight += 1;
    for (const p of this.pending.values()) {
      if (p.state !== 'queued' || p.room !== this.currentRoom) continue;
      if (inFlight >= MAX_SENDS_IN_FLIGHT) return; // continued when an Ack arrives
      if (pacing && now - this.lastSendAt < interval) {
        this.pumpTimer = setTimeout(() => this._pump(), interval - (now - this.lastSendAt));
        return;
      }
      if (!this._sendFrame({ type: 'Send', room: p.room, client_msg_id: p.client_msg_id, text: p.text })) return;
      p.state = 'sent';
      inFlight += 1;
      this.lastSendAt = now;
    }
  }

  _startHeartbeat(ms) {
    clearInterval(this.heartbeatTimer);
    const interval = Math.max(100, ms || 25000);
    this.heartbeatTimer = setInterval(() => {
      const conn = this.conn;
      if (!conn) return;
      if (Date.now() - this.lastRxAt > 2 * interval + 5000) {
        // Nothing (not even a Pong) for two heartbeats: the connection is dead.
        conn.close(4000, 'heartbeat timeout');
        this._handleClose(1006, 'heartbeat timeout');
        return;
      }
      this.pingNonce += 1;
      this._sendFrame({ type: 'Ping', nonce: this.pingNonce });
    }, interval);
  }

  _handleFrame(frame) {
    this._emit('frame', frame);
    switch (frame.type) {
      case 'Welcome':
        this.welcomed = true;
        this.welcome = frame;
        this.user = frame.user;
        this.limits = frame.limits;
        this.connectedAt = Date.now();
        this._startHeartbeat(frame.heartbeat_ms);
        this._setStatus('connected', { user: frame.user, transport: this.transport });
        this._emit('welcome', frame);
        return;
      case 'Joined': {
        const queue = this.joinRequests.get(frame.room);
        const after = queue && queue.length ? queue.shift() : null;
        const first = after === null;
        // A head below what we already have means the room's history was reset on the server:
        // our seqs are meaningless there, so start over like a first visit.
        const reset = !first && frame.head_seq < after;
        if (reset) this.lastSeq.delete(frame.room);
        const stale = !first && (reset || frame.replay_from > after + 1);
        this._emit('joined', { ...frame, after_seq: after, first, stale, reset });
        return;
      }
      case 'Left':
        // Nothing more comes for this membership; a later Joined brings a fresh RoomPresence.
        this.presence.delete(frame.room);
        this._emit('left', frame);
        return;
      case 'RoomPresence':
        // This client is only ever in its current room: a frame for another one was sent
        // before the server handled our Switch, and its Left is on the way.
        if (frame.room !== this.currentRoom) return;
        this.presence.set(frame.room, { room: frame.room, online: frame.online, users: frame.users });
        this._emit('room_presence', frame);
        return;
      case 'Ack':
        this._settle(frame.client_msg_id);
        this._emit('ack', frame);
        return;
      case 'Message': {
        this._noteSeq(frame.room, frame.seq);
        if (this.user && frame.sender.id === this.user.id) this._settle(frame.client_msg_id);
        this._emit('message', frame);
        return;
      }
      case 'History': {
        for (const m of frame.messages) this._noteSeq(m.room, m.seq);
        const req = this.historyRequests.get(frame.request_id);
        if (req) {
          this.historyRequests.delete(frame.request_id);
          req.resolve(frame);
        }
        this._emit('history', frame);
        return;
      }
      case 'Typing':
        this._emit('typing', frame);
        return;
      case 'Pong':
        this._emit('pong', frame);
        return;
      case 'Error':
        this._handleError(frame);
        return;
      case 'GoAway':
        this.lastGoAway = { code: frame.code, reason: frame.reason };
        this._emit('goaway', frame);
        return;
      default:
        return;
    }
  }

  _noteSeq(room, seq) {
    const prev = this.lastSeq.get(room);
    if (prev === undefined || seq > prev) this.lastSeq.set(room, seq);
  }

  _settle(id) {
    const key = idToHex(id);
    const p = this.pending.get(key);
    if (!p) return;
    this.pending.delete(key);
    if (this.pending.size === 0) this.pacingUntil = 0;
    else if (p.state === 'sent' && !this.pumpTimer) this._pump();
  }

  _handleError(frame) {
    if (frame.request_id !== null) {
      const req = this.historyRequests.get(frame.request_id);
      if (req) {
        this.historyRequests.delete(frame.request_id);
        const err = new Error(frame.message);
        err.code = frame.code;
        req.reject(err);
      }
    }
    let retrying = false;
    const key = frame.client_msg_id !== null ? idToHex(frame.client_msg_id) : null;
    const p = key !== null ? this.pending.get(key) : undefined;
    if (p) {
      const now = Date.now();
      if (frame.code === ErrorCode.RateLimited || frame.code === ErrorCode.Unavailable) {
        // Retry with the same client_msg_id after retry_after_ms (§ 4.1).
        retrying = true;
        p.state = 'queued';
        const wait = frame.retry_after_ms ?? 1000;
        this.sendPausedUntil = Math.max(this.sendPausedUntil, now + wait);
        if (frame.code === ErrorCode.RateLimited) this.pacingUntil = now + wait + 5000;
        this._pump();
      } else if (frame.code === ErrorCode.NotMember && p.room === this.currentRoom && p.rejoins < 3) {
        // Join first, then retry with the same client_msg_id (§ 4.1).
        retrying = true;
        p.rejoins += 1;
        p.state = 'queued';
        if (p.rejoins === 1 || !this.joinRequests.get(p.room)?.length) {
          this._requestJoin(p.room, this.lastSeq.get(p.room) ?? null, 'Join');
        }
        this._pump();
      } else if (frame.code === ErrorCode.NotMember && p.room !== this.currentRoom) {
        // Sent just before a switch: stays queued and goes out when the room is current again.
        p.state = 'queued';
        retrying = true;
      } else {
        this.pending.delete(key);
        this._emit('send_failed', { room: p.room, client_msg_id: p.client_msg_id, text: p.text, code: frame.code, message: frame.message });
      }
    }
    this._emit('error', { ...frame, retrying });
  }

  /**
   * Makes `room` the current room: sends `Switch{room, after_seq}` where after_seq is the
   * highest seq received for it (null the first time). Returns that after_seq. When not
   * connected, the room is joined on (re)connect.
   */
  switchRoom(room) {
    this.currentRoom = room;
    for (const other of this.presence.keys()) if (other !== room) this.presence.delete(other);
    const after = this.lastSeq.get(room) ?? null;
    if (this.conn && this.conn.isOpen) {
      this._requestJoin(room, after, 'Switch');
      this._pump();
    }
    return after;
  }

  /**
   * Latest `{room, online, users}` of a joined room (§ 6.8), or null before its first
   * RoomPresence and after the client left it.
   */
  roomPresence(room) {
    return this.presence.get(room) ?? null;
  }

  /** Highest seq received for a room, or null. */
  highestSeq(room) {
    return this.lastSeq.get(room) ?? null;
  }

  /**
   * Sends a message. It stays pending (and is re-sent with the same client_msg_id after a
   * reconnect) until its Ack or its own Message arrives. Returns `{client_msg_id, key}`.
   */
  send(room, text) {
    const client_msg_id = newClientMsgId();
    const key = idToHex(client_msg_id);
    this.pending.set(key, { room, client_msg_id, text, state: 'queued', rejoins: 0 });
    this._pump();
    return { client_msg_id, key };
  }

  /** Pending sends, oldest first. */
  pendingSends(room) {
    return [...this.pending.values()].filter((p) => room === undefined || p.room === room);
  }

  /** Requests a history page; resolves with the History frame, rejects on Error or disconnect. */
  history(room, before_seq = null, limit = 50) {
    const request_id = this.nextRequestId;
    this.nextRequestId = this.nextRequestId >= 0xffffffff ? 1 : this.nextRequestId + 1;
    return new Promise((resolve, reject) => {
      if (!this._sendFrame({ type: 'History', request_id, room, before_seq, limit })) {
        reject(new Error('not connected'));
        return;
      }
      this.historyRequests.set(request_id, { resolve, reject, room });
    });
  }

  /** Sends a typing state for a joined room (dropped when not connected). */
  typing(room, active) {
    return this._sendFrame({ type: 'Typing', room, active });
  }
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
