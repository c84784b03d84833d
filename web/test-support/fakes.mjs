// Shared scaffolding of the JavaScript tests in web/test/ (client.test.mjs, transport.test.mjs):
// fake WebSocket and WebTransport that let a test play the server, frame fixtures and waiting
// helpers. It lives outside web/test/ so that `node --test web/test/` does not run it as a test
// file; it defines no tests and does nothing when imported. The server does not serve it.
import assert from 'node:assert/strict';

import { StreamFrameReader, MAX_CLIENT_FRAME, encodeServerFrame, encodeStreamFrame, decodeClientFrame } from '../socketchat.js';

export const concat = (parts) => {
  const out = new Uint8Array(parts.reduce((n, p) => n + p.length, 0));
  let at = 0;
  for (const p of parts) {
    out.set(p, at);
    at += p.length;
  }
  return out;
};

export const tick = (ms = 0) => new Promise((r) => setTimeout(r, ms));

export async function until(pred, what, timeoutMs = 2000) {
  const deadline = Date.now() + timeoutMs;
  while (!pred()) {
    if (Date.now() > deadline) throw new Error(`timeout waiting for ${what}`);
    await tick(2);
  }
}

/** Resolves with the next `type` event of `client` that satisfies `pred`. */
export function waitFor(client, type, pred = () => true, timeoutMs = 3000) {
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => {
      off();
      reject(new Error(`timeout waiting for ${type}`));
    }, timeoutMs);
    const off = client.on(type, (detail) => {
      if (!pred(detail)) return;
      clearTimeout(timer);
      off();
      resolve(detail);
    });
  });
}

// ---------------------------------------------------------------------------------------------
// Frames
// ---------------------------------------------------------------------------------------------

export const alice = { id: 1, username: 'alice' };
export const bob = { id: 2, username: 'bob' };
export const limits = { max_frame_bytes: 16384, max_text_bytes: 4000, max_rooms: 32, max_history_page: 100, sends_per_sec: 20, send_burst: 50 };
export const welcome = (heartbeat_ms = 25000) => ({ type: 'Welcome', version: 3, user: alice, connection_id: 7, heartbeat_ms, limits });
/** A RoomPresence: `online` users in `room`, `users` the first page (default: all of `online` are listed). */
export const roomPresence = (room, users, online = users.length) => ({ type: 'RoomPresence', room, online, users });
/** A Message (a `Post`) in #general with seq `seq` (text `m<seq>` unless `extra` says otherwise). */
export const message = (seq, sender = bob, extra = {}) => ({
  type: 'Message',
  room: 'general',
  seq,
  message_id: 100 + seq,
  sender,
  client_msg_id: new Uint8Array(16).fill(seq % 256),
  sent_at_ms: 1795000000000 + seq,
  text: `m${seq}`,
  kind: 'Post',
  target_seq: null,
  edited_at_ms: null,
  deleted: false,
  attachments: [],
  ...extra,
});

/** An `Edit` (or with `kind: 'Delete'` in `extra`, a `Delete`) event at `seq` of the post at `target`. */
export const editEvent = (seq, target, text, sender = bob, extra = {}) =>
  message(seq, sender, { kind: 'Edit', target_seq: target, text, ...extra });

// ---------------------------------------------------------------------------------------------
// Fakes
// ---------------------------------------------------------------------------------------------

/** A WebSocket as a browser exposes it. The test plays the server: `open()`, `deliver()`, `serverClose()`. */
export class FakeWebSocket {
  static instances = [];
  constructor(url) {
    this.url = url;
    this.readyState = 0;
    this.sent = [];
    this.binaryType = 'blob';
    this.closedByClient = null;
    FakeWebSocket.instances.push(this);
  }
  send(bytes) {
    assert.equal(this.readyState, 1, 'send on an open socket only');
    assert.ok(bytes instanceof Uint8Array);
    this.sent.push(decodeClientFrame(bytes));
  }
  close(code, reason) {
    this.closedByClient = { code, reason };
    this.readyState = 3;
  }
  // --- server side ---
  open() {
    this.readyState = 1;
    this.onopen?.({});
  }
  deliver(frame) {
    const bytes = encodeServerFrame(frame);
    // A browser with binaryType 'arraybuffer' delivers an ArrayBuffer.
    this.onmessage?.({ data: bytes.buffer.slice(bytes.byteOffset, bytes.byteOffset + bytes.byteLength) });
  }
  serverClose(code, reason = '') {
    this.readyState = 3;
    this.onclose?.({ code, reason, wasClean: code !== 1006 });
  }
  static last() {
    return FakeWebSocket.instances[FakeWebSocket.instances.length - 1];
  }
}

/**
 * A WebTransport session as a browser exposes it. The test plays the server: `accept()` or
 * `refuse()` the session, `deliverBytes()` on the stream, `connectionClose()` like a server
 * closing the QUIC connection (the browser sees an error, no code).
 */
export class FakeWebTransport {
  static instances = [];
  static onCreate = null;
  constructor(url, options) {
    this.url = url;
    this.options = options;
    this.sent = [];
    this.closedByClient = null;
    this.streams = 0;
    this.state = 'connecting';
    this.clientReader = new StreamFrameReader(MAX_CLIENT_FRAME);
    let readyResolve, readyReject, closedResolve, closedReject;
    this.ready = new Promise((res, rej) => {
      readyResolve = res;
      readyReject = rej;
    });
    this.closed = new Promise((res, rej) => {
      closedResolve = res;
      closedReject = rej;
    });
    Object.assign(this, { readyResolve, readyReject, closedResolve, closedReject });
    this.ready.catch(() => {});
    this.closed.catch(() => {});
    FakeWebTransport.instances.push(this);
    FakeWebTransport.onCreate?.(this);
  }
  static last() {
    return FakeWebTransport.instances.at(-1);
  }
  async createBidirectionalStream() {
    assert.equal(this.state, 'connected', 'stream only after ready');
    this.streams += 1;
    const self = this;
    const readable = new ReadableStream({
      start(controller) {
        self.controller = controller;
      },
    });
    const writable = new WritableStream({
      write(chunk) {
        assert.ok(chunk instanceof Uint8Array);
        for (const f of self.clientReader.push(chunk)) self.sent.push(decodeClientFrame(f));
      },
    });
    return { readable, writable };
  }
  close(info = {}) {
    if (this.state === 'closed') return;
    const wasConnecting = this.state === 'connecting';
    this.state = 'closed';
    this.closedByClient = { code: info.closeCode ?? 0, reason: info.reason ?? '' };
    if (wasConnecting) {
      const err = new Error('closed before ready');
      this.readyReject(err);
      this.closedReject(err);
      return;
    }
    try {
      this.controller?.error(new Error('session closed'));
    } catch {
      /* already */
    }
    this.closedResolve({ closeCode: info.closeCode ?? 0, reason: info.reason ?? '' });
  }
  // --- server side ---
  accept() {
    this.state = 'connected';
    this.readyResolve();
  }
  refuse(message = 'Opening handshake failed.') {
    this.state = 'closed';
    const err = new Error(message);
    err.name = 'WebTransportError';
    this.readyReject(err);
    this.closedReject(err);
  }
  deliverBytes(bytes) {
    this.controller.enqueue(bytes);
  }
  deliver(...frames) {
    this.deliverBytes(concat(frames.map((f) => encodeStreamFrame(encodeServerFrame(f)))));
  }
  connectionClose(message = 'Connection lost.') {
    this.state = 'closed';
    const err = new Error(message);
    err.name = 'WebTransportError';
    try {
      this.controller.error(err);
    } catch {
      /* already */
    }
    this.closedReject(err);
  }
}
