// Stream framing (§ 1.3): on a byte stream (WebTransport) each frame is prefixed by its length
// as a varint. No IO: bytes in, frames out.
import { DecodeError, Writer, toUint8Array } from './codec.js';
import { MAX_SERVER_FRAME } from './limits.js';

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
