// Postcard encoding of protocol v3 frames (§ 2, § 3), no IO. A frame in JS is
// `{type: 'Send', room, client_msg_id, text, attachments}`: the variant name as `type` plus the
// variant's fields under their spec names. Nested structs are plain objects, `Option` is `null`
// or the value, `Vec` is an array, integers are Numbers (values above 2^53 − 1 are rejected,
// never rounded), `[u8; 16]` is a Uint8Array of length 16, an enum without fields
// (`MessageKind`) is its variant's name ('Post', 'Edit', 'Delete').
import { CLIENT_BY_NAME, CLIENT_VARIANTS, RETIRED_SERVER_FRAMES, SERVER_BY_NAME, SERVER_VARIANTS } from './frames.js';

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

export class Writer {
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
    case 'enum': {
      const index = type.variants.indexOf(value);
      if (index < 0) throw new TypeError(`${path}: expected one of ${type.variants.join(', ')}, got ${describe(value)}`);
      w.varint(index, 'u32', path);
      return;
    }
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

export function toUint8Array(input) {
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
    case 'enum': {
      const index = r.varint('u32', path);
      if (index >= type.variants.length) throw new DecodeError(`${path}: unknown variant ${index}`);
      return type.variants[index];
    }
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
    const retired = side === 'server' && RETIRED_SERVER_FRAMES.includes(index) ? ' (retired since protocol v2)' : '';
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
