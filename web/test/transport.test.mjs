// Transport layer: the stream framing reader (frames split over chunks, many frames per chunk,
// oversized prefixes), the WebTransport-or-WebSocket decision, and ChatClient over a fake
// WebTransport (fallback to WebSocket, GoAway codes, resume). Run with `node --test web/test/`.
import { test, describe, afterEach } from 'node:test';
import assert from 'node:assert/strict';

import {
  ChatClient,
  StreamFrameReader,
  DecodeError,
  MAX_SERVER_FRAME,
  MAX_CLIENT_FRAME,
  chooseTransport,
  webTransportOptions,
  webTransportUrl,
  base64ToBytes,
  encodeServerFrame,
  encodeStreamFrame,
  decodeServerFrame,
} from '../socketchat.js';
import { FakeWebSocket, FakeWebTransport, alice, bob, concat, message, roomPresence, tick, until, waitFor, welcome } from '../test-support/fakes.mjs';

/** Deterministic PRNG (mulberry32) so failures reproduce. */
function rng(seed) {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

/** Messages whose text varies in length with seq. */
const msg = (seq, sender = bob, extra = {}) => message(seq, sender, { text: `m${seq} ${'x'.repeat(seq % 50)}`, ...extra });

// ---------------------------------------------------------------------------------------------
// StreamFrameReader
// ---------------------------------------------------------------------------------------------

describe('StreamFrameReader', () => {
  const frames = [welcome(), roomPresence('general', [alice, bob], 130), msg(1), msg(2), { type: 'Pong', nonce: 9 }, msg(300)].map(encodeServerFrame);
  const stream = concat(frames.map((f) => encodeStreamFrame(f)));

  test('a frame split at any point comes out whole, once', () => {
    for (let cut = 0; cut <= stream.length; cut++) {
      const r = new StreamFrameReader();
      const got = [...r.push(stream.subarray(0, cut)), ...r.push(stream.subarray(cut))];
      assert.deepEqual(got, frames, `cut at ${cut}`);
      assert.equal(r.buffered, 0);
    }
  });

  test('one byte at a time', () => {
    const r = new StreamFrameReader();
    const got = [];
    for (let i = 0; i < stream.length; i++) {
      got.push(...r.push(stream.subarray(i, i + 1)));
      assert.ok(r.buffered <= Math.max(...frames.map((f) => f.length)) + 5);
    }
    assert.deepEqual(got, frames);
  });

  test('many frames in one chunk, and a chunk that ends mid-prefix', () => {
    const many = Array.from({ length: 500 }, (_, i) => encodeServerFrame(msg(i + 1)));
    const bytes = concat(many.map((f) => encodeStreamFrame(f)));
    const r = new StreamFrameReader();
    assert.deepEqual(r.push(bytes), many);

    // A 300-byte frame has a 2-byte prefix: cut between its two bytes.
    const big = new Uint8Array(300).fill(7);
    const framed = encodeStreamFrame(big);
    const chunk1 = concat([encodeStreamFrame(frames[4]), framed.subarray(0, 1)]);
    const r2 = new StreamFrameReader();
    assert.deepEqual(r2.push(chunk1), [frames[4]]);
    assert.equal(r2.buffered, 1);
    assert.deepEqual(r2.push(framed.subarray(1)), [big]);
  });

  test('random chunking round-trips (seeded)', () => {
    const many = Array.from({ length: 200 }, (_, i) => encodeServerFrame(msg(i * 7 + 1)));
    const bytes = concat(many.map((f) => encodeStreamFrame(f)));
    for (let seed = 1; seed <= 50; seed++) {
      const rand = rng(seed);
      const r = new StreamFrameReader();
      const got = [];
      for (let at = 0; at < bytes.length; ) {
        const n = 1 + Math.floor(rand() * 400);
        got.push(...r.push(bytes.slice(at, at + n)));
        at += n;
      }
      assert.equal(got.length, many.length, `seed ${seed}`);
      assert.deepEqual(got, many, `seed ${seed}`);
    }
  });

  test('a 1 MiB frame split in 16 KiB chunks is returned once, after its last chunk', () => {
    const body = new Uint8Array(MAX_SERVER_FRAME);
    for (let i = 0; i < body.length; i++) body[i] = i % 251;
    const framed = encodeStreamFrame(body);
    const r = new StreamFrameReader();
    const got = [];
    for (let at = 0; at < framed.length; at += 16384) {
      got.push(...r.push(framed.subarray(at, at + 16384)));
      if (at + 16384 < framed.length) assert.equal(got.length, 0);
    }
    assert.equal(got.length, 1);
    assert.deepEqual(got[0], body);
    assert.equal(r.buffered, 0);
  });

  test('a zero-length frame is returned as empty bytes (and fails to decode)', () => {
    const r = new StreamFrameReader();
    const got = r.push(new Uint8Array([0, 2, 9, 5]));
    assert.equal(got.length, 2);
    assert.equal(got[0].length, 0);
    assert.throws(() => decodeServerFrame(got[0]), DecodeError);
    assert.deepEqual(decodeServerFrame(got[1]), { type: 'Pong', nonce: 5 });
  });

  test('a length prefix over 1 MiB is fatal, even before the frame arrives', () => {
    // 1 MiB + 1 = 0x100001 → varint 81 80 c0 00
    const r = new StreamFrameReader();
    assert.throws(
      () => r.push(new Uint8Array([0x81, 0x80, 0xc0, 0x00])),
      (err) => err instanceof DecodeError && err.kind === 'too_large' && /exceeds/.test(err.message),
    );
    assert.equal(r.buffered, 0, 'nothing kept');
    assert.throws(() => r.push(encodeStreamFrame(encodeServerFrame({ type: 'Pong', nonce: 1 }))), /exceeds/, 'stays failed');

    // The same prefix split over chunks, after a good frame in the same chunk.
    const r2 = new StreamFrameReader();
    const pong = encodeServerFrame({ type: 'Pong', nonce: 1 });
    assert.deepEqual(r2.push(concat([encodeStreamFrame(pong), new Uint8Array([0x81, 0x80])])), [pong]);
    assert.throws(() => r2.push(new Uint8Array([0xc0, 0x00])), /exceeds/);

    // Exactly 1 MiB is allowed (waits for the bytes).
    const r3 = new StreamFrameReader();
    assert.deepEqual(r3.push(new Uint8Array([0x80, 0x80, 0x40])), []);
    assert.equal(r3.buffered, 3);
  });

  test('a prefix longer than 5 bytes is fatal; the limit is configurable', () => {
    const r = new StreamFrameReader();
    assert.deepEqual(r.push(new Uint8Array([0x80, 0x80, 0x80])), []);
    assert.throws(() => r.push(new Uint8Array([0x80, 0x80, 0x01])), (err) => err instanceof DecodeError && /5 bytes/.test(err.message));
    const small = new StreamFrameReader(MAX_CLIENT_FRAME);
    assert.throws(() => small.push(encodeStreamFrame(new Uint8Array(MAX_CLIENT_FRAME + 1))), /exceeds/);
  });
});

// ---------------------------------------------------------------------------------------------
// Decision logic
// ---------------------------------------------------------------------------------------------

const HASH = Uint8Array.from({ length: 32 }, (_, i) => i * 3);
const HASH_B64 = Buffer.from(HASH).toString('base64');
const INFO = {
  websocket: 'ws://127.0.0.1:8080/ws',
  webtransport: 'https://127.0.0.1:4433/wt',
  cert_hashes: [{ algorithm: 'sha-256', value: HASH_B64 }],
};

describe('chooseTransport', () => {
  const base = { mode: 'auto', info: INFO, hasWebTransport: true, now: 1000, webTransportBlockedUntil: 0 };
  const pick = (over) => chooseTransport({ ...base, ...over }).transport;

  test('WebTransport when offered, available and not recently failed', () => {
    assert.equal(pick({}), 'webtransport');
    assert.equal(pick({ webTransportBlockedUntil: 1000 }), 'webtransport', 'the block has just ended');
  });

  test('WebSocket otherwise', () => {
    assert.equal(pick({ hasWebTransport: false }), 'websocket');
    assert.equal(pick({ info: null }), 'websocket');
    assert.equal(pick({ info: { ...INFO, webtransport: null } }), 'websocket');
    assert.equal(pick({ info: { websocket: INFO.websocket } }), 'websocket');
    assert.equal(pick({ webTransportBlockedUntil: 1001 }), 'websocket');
    assert.equal(pick({ mode: 'websocket' }), 'websocket');
  });

  test("'webtransport' mode ignores a recent failure but not a missing offer", () => {
    assert.equal(pick({ mode: 'webtransport', webTransportBlockedUntil: 99999 }), 'webtransport');
    assert.equal(pick({ mode: 'webtransport', info: { ...INFO, webtransport: null } }), 'websocket');
  });

  test('every decision says why', () => {
    assert.match(chooseTransport({ ...base, webTransportBlockedUntil: 5000 }).why, /failed recently/);
    assert.match(chooseTransport({ ...base, info: null }).why, /unavailable/);
  });

  test('certificate hashes become serverCertificateHashes; none → no option', () => {
    const opts = webTransportOptions(INFO);
    assert.equal(opts.serverCertificateHashes.length, 1);
    assert.equal(opts.serverCertificateHashes[0].algorithm, 'sha-256');
    assert.ok(opts.serverCertificateHashes[0].value instanceof Uint8Array);
    assert.deepEqual(opts.serverCertificateHashes[0].value, HASH);
    assert.deepEqual(webTransportOptions({ ...INFO, cert_hashes: [] }), {});
    assert.deepEqual(webTransportOptions({ ...INFO, cert_hashes: [{ algorithm: 'sha-1', value: 'AAAA' }] }), {});
    assert.deepEqual(base64ToBytes('AAEC/w=='), Uint8Array.from([0, 1, 2, 255]));
  });

  test('the ticket goes into the query', () => {
    assert.equal(webTransportUrl('https://h:1/wt', 'ab12'), 'https://h:1/wt?ticket=ab12');
    assert.equal(webTransportUrl('https://h:1/wt?x=1', 'ab12'), 'https://h:1/wt?x=1&ticket=ab12');
  });
});

let client;
afterEach(() => {
  client?.disconnect();
  FakeWebTransport.onCreate = null;
});

/** A client whose server offers WebTransport; counters record the HTTP calls. */
function newClient(opts = {}, { info = INFO, ticket = async () => 'cafe01' } = {}) {
  FakeWebSocket.instances = [];
  FakeWebTransport.instances = [];
  const calls = { info: 0, ticket: 0 };
  const c = new ChatClient({
    url: 'ws://test/ws',
    WebSocket: FakeWebSocket,
    WebTransport: FakeWebTransport,
    transportInfo: async () => {
      calls.info += 1;
      if (info instanceof Error) throw info;
      return info;
    },
    getTicket: async () => {
      calls.ticket += 1;
      return ticket();
    },
    minDelayMs: 20,
    maxDelayMs: 80,
    webTransportTimeoutMs: 200,
    ...opts,
  });
  c.calls = calls;
  return c;
}

/** Connects over the fake WebTransport and completes Welcome + Joined. */
async function connectWt(c, room = 'general') {
  FakeWebTransport.onCreate = (wt) => queueMicrotask(() => wt.accept());
  c.switchRoom(room);
  c.connect();
  await until(() => FakeWebTransport.last()?.sent.length >= 2, 'Hello + Join on the stream');
  const wt = FakeWebTransport.last();
  wt.deliver(welcome(), { type: 'Joined', room, head_seq: 0, replay_from: 1 });
  await until(() => c.state === 'connected', 'connected');
  return wt;
}

// ---------------------------------------------------------------------------------------------
// ChatClient over WebTransport
// ---------------------------------------------------------------------------------------------

describe('ChatClient transport selection', () => {
  test('uses WebTransport when offered: ticket in the URL, pinned hash, one stream, Hello first', async () => {
    client = newClient();
    const transports = [];
    client.on('transport', (t) => transports.push(t));
    const wt = await connectWt(client);
    assert.equal(wt.url, 'https://127.0.0.1:4433/wt?ticket=cafe01');
    assert.deepEqual(wt.options.serverCertificateHashes[0].value, HASH);
    assert.equal(wt.streams, 1, 'exactly one bidirectional stream');
    assert.deepEqual(wt.sent.map((f) => f.type), ['Hello', 'Join']);
    assert.deepEqual(wt.sent[1], { type: 'Join', room: 'general', after_seq: null });
    assert.equal(client.transport, 'webtransport');
    assert.deepEqual(transports, [{ transport: 'webtransport', previous: null }]);
    assert.equal(FakeWebSocket.instances.length, 0, 'no WebSocket');
    assert.deepEqual(client.calls, { info: 1, ticket: 1 });

    // Frames split across chunks and several per chunk reach the session logic.
    const got = [];
    client.on('message', (m) => got.push(m.seq));
    const bytes = concat([1, 2, 3].map((s) => encodeStreamFrame(encodeServerFrame(msg(s)))));
    for (let i = 0; i < bytes.length; i += 5) wt.deliverBytes(bytes.slice(i, i + 5));
    wt.deliver(msg(4), msg(5), msg(6));
    await until(() => got.length === 6, 'six messages');
    assert.deepEqual(got, [1, 2, 3, 4, 5, 6]);

    const { client_msg_id } = client.send('general', 'over wt');
    await until(() => wt.sent.at(-1).type === 'Send', 'Send on the stream');
    assert.deepEqual(wt.sent.at(-1).client_msg_id, client_msg_id);
  });

  test('no cert hashes → no serverCertificateHashes option', async () => {
    client = newClient({}, { info: { ...INFO, cert_hashes: [] } });
    const wt = await connectWt(client);
    assert.deepEqual(wt.options, {});
  });

  test('ready rejects → WebSocket for this attempt, and for the next ones while blocked', async () => {
    client = newClient({ webTransportRetryAfterMs: 60000 });
    FakeWebTransport.onCreate = (wt) => queueMicrotask(() => wt.refuse());
    const fallback = waitFor(client, 'transport_fallback');
    client.switchRoom('general');
    client.connect();
    const f = await fallback;
    assert.match(f.error, /handshake failed/);
    assert.ok(f.retry_webtransport_at >= Date.now() + 59000);
    await until(() => FakeWebSocket.instances.length === 1, 'WebSocket attempt');
    let ws = FakeWebSocket.instances[0];
    ws.open();
    assert.deepEqual(ws.sent.map((x) => x.type), ['Hello', 'Join']);
    ws.deliver(welcome());
    assert.equal(client.transport, 'websocket');
    assert.equal(client.state, 'connected');

    // Reconnects within the window go straight to WebSocket: no second WebTransport attempt.
    ws.deliver(msg(1));
    ws.serverClose(1006);
    await until(() => FakeWebSocket.instances.length === 2, 'second WebSocket');
    ws = FakeWebSocket.instances[1];
    ws.open();
    assert.deepEqual(ws.sent[1], { type: 'Join', room: 'general', after_seq: 1 });
    assert.equal(FakeWebTransport.instances.length, 1);
    assert.equal(client.calls.ticket, 1, 'no ticket wasted');
    assert.match(client.lastTransportChoice.why, /failed recently/);
  });

  test('WebTransport is tried again once the block has passed', async () => {
    client = newClient({ webTransportRetryAfterMs: 100 });
    let refuse = true;
    FakeWebTransport.onCreate = (wt) => queueMicrotask(() => (refuse ? wt.refuse() : wt.accept()));
    client.switchRoom('general');
    client.connect();
    await until(() => FakeWebSocket.instances.length === 1, 'fallback WebSocket');
    const ws = FakeWebSocket.instances[0];
    ws.open();
    ws.deliver(welcome());
    refuse = false;
    await tick(150);
    const changed = waitFor(client, 'transport', (t) => t.transport === 'webtransport');
    ws.serverClose(4000, 'restart');
    const t = await changed;
    assert.equal(t.previous, 'websocket');
    assert.equal(FakeWebTransport.instances.length, 2);
    assert.equal(FakeWebSocket.instances.length, 1);
  });

  test('a session that is never ready times out and falls back; the attempt is closed', async () => {
    client = newClient({ webTransportTimeoutMs: 60 });
    const fallback = waitFor(client, 'transport_fallback');
    const started = Date.now();
    client.connect();
    const f = await fallback;
    assert.match(f.error, /within 60 ms/);
    assert.ok(Date.now() - started >= 55);
    assert.notEqual(FakeWebTransport.last().closedByClient, null, 'pending session closed');
    await until(() => FakeWebSocket.instances.length === 1, 'WebSocket');
  });

  test('a failed ticket request falls back to WebSocket', async () => {
    client = newClient({}, { ticket: async () => { throw new Error('POST /api/auth/ticket answered 503'); } });
    const fallback = waitFor(client, 'transport_fallback');
    client.connect();
    assert.match((await fallback).error, /503/);
    await until(() => FakeWebSocket.instances.length === 1, 'WebSocket');
    assert.equal(FakeWebTransport.instances.length, 0);
  });

  test('no offer, no info, no API or WebSocket forced: straight to WebSocket, no ticket', async () => {
    const cases = [
      [{}, { info: { ...INFO, webtransport: null } }, 1],
      [{}, { info: new Error('offline') }, 1],
      [{ WebTransport: null }, {}, 0],
      [{ transport: 'websocket' }, {}, 0],
    ];
    for (const [opts, env, infoCalls] of cases) {
      client = newClient(opts, env);
      if (opts.WebTransport === null) client.WebTransportImpl = undefined;
      client.connect();
      await until(() => FakeWebSocket.instances.length === 1, 'WebSocket');
      assert.equal(FakeWebTransport.instances.length, 0);
      assert.equal(client.calls.ticket, 0);
      assert.equal(client.calls.info, infoCalls, JSON.stringify(opts));
      client.disconnect();
    }
  });

  test('disconnect() during a WebTransport attempt abandons it: nothing opens afterwards', async () => {
    client = newClient({ webTransportTimeoutMs: 5000 });
    client.connect();
    await until(() => FakeWebTransport.instances.length === 1, 'attempt');
    client.disconnect();
    await tick(30);
    assert.notEqual(FakeWebTransport.last().closedByClient, null);
    assert.equal(FakeWebSocket.instances.length, 0);
    assert.equal(client.state, 'disconnected');
  });
});

describe('ChatClient session over WebTransport', () => {
  test('a drop without GoAway reconnects and resumes: after_seq, pending re-sent with the same id', async () => {
    client = newClient();
    let wt = await connectWt(client);
    wt.deliver(msg(1), msg(2));
    await until(() => client.highestSeq('general') === 2, 'seq 2');
    const { client_msg_id } = client.send('general', 'in flight');
    await until(() => wt.sent.at(-1).type === 'Send', 'Send');
    const reconnecting = waitFor(client, 'status', (s) => s.state === 'reconnecting');
    wt.connectionClose();
    const r = await reconnecting;
    assert.equal(r.code, 1006, 'a drop');
    await until(() => FakeWebTransport.instances.length === 2 && FakeWebTransport.last().sent.length >= 3, 'resumed');
    wt = FakeWebTransport.last();
    assert.deepEqual(wt.sent.map((f) => f.type), ['Hello', 'Join', 'Send']);
    assert.deepEqual(wt.sent[1], { type: 'Join', room: 'general', after_seq: 2 });
    assert.deepEqual(wt.sent[2].client_msg_id, client_msg_id);
    assert.equal(client.calls.ticket, 2, 'a fresh ticket per connection');
  });

  test('GoAway 4000 then a connection close: reconnect at once (the GoAway code decides)', async () => {
    client = newClient();
    const wt = await connectWt(client);
    const reconnecting = waitFor(client, 'status', (s) => s.state === 'reconnecting');
    wt.deliver({ type: 'GoAway', code: 4000, reason: 'shutting down' });
    wt.connectionClose('Connection lost.');
    const r = await reconnecting;
    assert.equal(r.code, 4000);
    assert.equal(r.reason, 'shutting down');
    assert.ok(r.delay_ms < 20);
  });

  test('GoAway 4505 then a connection close: terminal, unauthorized, no reconnect', async () => {
    client = newClient();
    const wt = await connectWt(client);
    const unauthorized = waitFor(client, 'unauthorized');
    // GoAway and close in the same turn: the GoAway still counts.
    wt.deliver({ type: 'GoAway', code: 4505, reason: 'token revoked' });
    wt.connectionClose();
    assert.equal((await unauthorized).code, 4505);
    assert.equal(client.state, 'disconnected');
    await tick(100);
    assert.equal(FakeWebTransport.instances.length, 1);
    assert.equal(FakeWebSocket.instances.length, 0);
  });

  test('an oversized length prefix from the server is fatal (4501), the session is closed', async () => {
    client = newClient();
    const wt = await connectWt(client);
    const status = waitFor(client, 'status', (s) => s.state === 'disconnected');
    const problems = [];
    client.on('protocol_error', (p) => problems.push(p.message));
    wt.deliverBytes(new Uint8Array([0x81, 0x80, 0xc0, 0x00]));
    const s = await status;
    assert.equal(s.terminal, true);
    assert.equal(s.code, 4501);
    assert.match(problems[0], /exceeds/);
    assert.equal(wt.closedByClient.code, 4501);
    await tick(80);
    assert.equal(FakeWebTransport.instances.length, 1, 'no reconnect');
  });

  test('the stream ending (FIN) is a drop too', async () => {
    client = newClient();
    const wt = await connectWt(client);
    const reconnecting = waitFor(client, 'status', (s) => s.state === 'reconnecting');
    wt.controller.close();
    const r = await reconnecting;
    assert.equal(r.code, 1006);
    assert.notEqual(wt.closedByClient, null, 'the client closes the half-dead session');
  });

  test('dropConnection() ends the session underneath; the client reconnects over WebTransport', async () => {
    client = newClient();
    const wt = await connectWt(client);
    FakeWebTransport.onCreate = (w) => queueMicrotask(() => w.accept());
    assert.equal(client.dropConnection(), true);
    await until(() => FakeWebTransport.instances.length === 2 && FakeWebTransport.last().sent.length >= 2, 'reconnected');
    assert.notEqual(wt.closedByClient, null);
    assert.equal(FakeWebSocket.instances.length, 0);
  });

  test('a session that dies before Welcome blocks WebTransport like a failed attempt', async () => {
    client = newClient();
    FakeWebTransport.onCreate = (wt) => queueMicrotask(() => wt.accept());
    client.connect();
    await until(() => FakeWebTransport.last()?.sent.length >= 1, 'Hello');
    FakeWebTransport.last().connectionClose();
    await until(() => FakeWebSocket.instances.length === 1, 'WebSocket next');
    assert.equal(FakeWebTransport.instances.length, 1);
  });
});
