// ChatClient behaviour against a scripted fake WebSocket: Hello first, resume with after_seq,
// pending sends re-sent with the same client_msg_id, reconnect policy by close code.
import { test, describe, afterEach } from 'node:test';
import assert from 'node:assert/strict';

import { ChatClient, TYPING_BURST, TokenBucket, idToHex } from '../socketchat.js';
import { FakeWebSocket, alice, bob, message as msg, roomPresence, until, waitFor, welcome } from '../test-support/fakes.mjs';

function newClient(opts = {}) {
  FakeWebSocket.instances = [];
  return new ChatClient({ url: 'ws://test/ws', WebSocket: FakeWebSocket, minDelayMs: 20, maxDelayMs: 80, ...opts });
}

let client;
afterEach(() => client?.disconnect());

/** The server closes `ws` with 4001: once the client connects again, its new socket, open. */
async function droppedAndBack(ws) {
  const reconnecting = waitFor(client, 'status', (s) => s.state === 'reconnecting');
  ws.serverClose(4001, 'slow');
  await reconnecting;
  await waitFor(client, 'status', (s) => s.state === 'connecting');
  const next = FakeWebSocket.last();
  next.open();
  return next;
}

/** A fresh client in #general whose socket is open and welcomed; returns the fake socket. */
function connectedInGeneral() {
  client = newClient();
  client.switchRoom('general');
  client.connect();
  const ws = FakeWebSocket.last();
  ws.open();
  ws.deliver(welcome());
  return ws;
}

describe('ChatClient', () => {
  test('sends Hello first, then joins the current room; connected on Welcome', async () => {
    client = newClient();
    const statuses = [];
    client.on('status', (s) => statuses.push(s.state));
    client.switchRoom('general');
    client.connect();
    const ws = FakeWebSocket.last();
    assert.equal(ws.url, 'ws://test/ws');
    assert.equal(ws.binaryType, 'arraybuffer');
    ws.open();
    assert.deepEqual(ws.sent.map((f) => f.type), ['Hello', 'Join']);
    assert.deepEqual(ws.sent[0], { type: 'Hello', version: 3, client: 'socketchat-web/1.0' });
    assert.deepEqual(ws.sent[1], { type: 'Join', room: 'general', after_seq: null });
    ws.deliver(welcome());
    assert.deepEqual(statuses, ['connecting', 'connected']);
    assert.deepEqual(client.user, alice);

    const joined = waitFor(client, 'joined');
    ws.deliver({ type: 'Joined', room: 'general', head_seq: 12, replay_from: 13 });
    assert.deepEqual(await joined, { type: 'Joined', room: 'general', head_seq: 12, replay_from: 13, after_seq: null, first: true, stale: false, reset: false });
  });

  test('switchRoom sends Switch with the highest seq received, marks gaps as stale', async () => {
    const ws = connectedInGeneral();
    ws.deliver({ type: 'Joined', room: 'general', head_seq: 3, replay_from: 4 });
    ws.deliver({ type: 'History', request_id: 1, room: 'general', messages: [msg(1), msg(2), msg(3)], next_before: null });
    ws.deliver(msg(4));
    assert.equal(client.highestSeq('general'), 4);
    assert.equal(client.switchRoom('design'), null);
    assert.deepEqual(ws.sent.at(-1), { type: 'Switch', room: 'design', after_seq: null });
    assert.equal(client.switchRoom('general'), 4);
    assert.deepEqual(ws.sent.at(-1), { type: 'Switch', room: 'general', after_seq: 4 });
    const joined = waitFor(client, 'joined', (j) => j.room === 'general');
    ws.deliver({ type: 'Joined', room: 'design', head_seq: 0, replay_from: 1 });
    ws.deliver({ type: 'Joined', room: 'general', head_seq: 900, replay_from: 400 });
    const j = await joined;
    assert.equal(j.after_seq, 4);
    assert.equal(j.first, false);
    assert.equal(j.stale, true);
    assert.equal(j.reset, false);
  });

  test('a head below after_seq (history reset on the server) is stale and forgets the old seq', async () => {
    let ws = connectedInGeneral();
    ws.deliver({ type: 'Joined', room: 'general', head_seq: 0, replay_from: 1 });
    ws.deliver(msg(1));
    ws.deliver(msg(2));
    ws.serverClose(4000, 'restart');
    await waitFor(client, 'status', (s) => s.state === 'connecting');
    ws = FakeWebSocket.last();
    ws.open();
    assert.deepEqual(ws.sent[1], { type: 'Join', room: 'general', after_seq: 2 });
    ws.deliver(welcome());
    const joined = waitFor(client, 'joined');
    ws.deliver({ type: 'Joined', room: 'general', head_seq: 1, replay_from: 2 });
    const j = await joined;
    assert.equal(j.stale, true);
    assert.equal(j.reset, true);
    assert.equal(client.highestSeq('general'), null);
  });

  test('history() refused for the rate or an unavailable store is asked again after retry_after_ms', async () => {
    const ws = connectedInGeneral();
    const page = client.history('general', null, 50);
    const first = ws.sent.at(-1);
    assert.equal(first.type, 'History');
    const refusedAt = Date.now();
    ws.deliver({ type: 'Error', code: 7, message: 'store unavailable', room: 'general', client_msg_id: null, request_id: first.request_id, retry_after_ms: 40 });
    await until(() => ws.sent.at(-1) !== first && ws.sent.at(-1).type === 'History');
    assert.ok(Date.now() - refusedAt >= 35, 'not before retry_after_ms');
    const second = ws.sent.at(-1);
    assert.deepEqual({ ...second, request_id: 0 }, { ...first, request_id: 0 }, 'the same request');
    ws.deliver({ type: 'Error', code: 5, message: 'too many joins and history requests', room: 'general', client_msg_id: null, request_id: second.request_id, retry_after_ms: 20 });
    await until(() => ws.sent.at(-1) !== second && ws.sent.at(-1).type === 'History');
    const third = ws.sent.at(-1);
    ws.deliver({ type: 'History', request_id: third.request_id, room: 'general', messages: [msg(3)], next_before: 3 });
    assert.equal((await page).next_before, 3);
  });

  test('history() resolves with the matching page and rejects on Error', async () => {
    const ws = connectedInGeneral();
    const p1 = client.history('general', 13, 50);
    const p2 = client.history('general', 1, 0);
    const [req1, req2] = ws.sent.slice(-2);
    assert.deepEqual(req1, { type: 'History', request_id: req1.request_id, room: 'general', before_seq: 13, limit: 50 });
    ws.deliver({ type: 'Error', code: 1, message: 'limit 0', room: 'general', client_msg_id: null, request_id: req2.request_id, retry_after_ms: null });
    ws.deliver({ type: 'History', request_id: req1.request_id, room: 'general', messages: [msg(12)], next_before: 12 });
    assert.equal((await p1).next_before, 12);
    await assert.rejects(p2, /limit 0/);
    await assert.rejects(newClient().history('general'), /not connected/);
  });

  test('resume: reconnects after 4001, re-joins with after_seq and re-sends pending with the same id', async () => {
    let ws = connectedInGeneral();
    ws.deliver({ type: 'Joined', room: 'general', head_seq: 0, replay_from: 1 });
    ws.deliver(msg(1));
    ws.deliver(msg(2));
    const { client_msg_id, key } = client.send('general', 'hello');
    const firstSend = ws.sent.at(-1);
    assert.equal(firstSend.type, 'Send');
    assert.equal(idToHex(firstSend.client_msg_id), key);
    assert.equal(client.pendingSends().length, 1);

    const reconnecting = waitFor(client, 'status', (s) => s.state === 'reconnecting');
    ws.serverClose(4001, 'slow');
    const r = await reconnecting;
    assert.equal(r.code, 4001);
    assert.ok(r.delay_ms >= 10 && r.delay_ms <= 20, `delay ${r.delay_ms}`);

    // Sending while disconnected keeps the message pending.
    const second = client.send('general', 'while offline');

    await waitFor(client, 'status', (s) => s.state === 'connecting');
    ws = FakeWebSocket.last();
    assert.equal(FakeWebSocket.instances.length, 2);
    ws.open();
    assert.deepEqual(ws.sent.map((f) => f.type), ['Hello', 'Join', 'Send', 'Send']);
    assert.deepEqual(ws.sent[1], { type: 'Join', room: 'general', after_seq: 2 });
    assert.deepEqual(ws.sent[2].client_msg_id, client_msg_id);
    assert.equal(ws.sent[2].text, 'hello');
    assert.equal(idToHex(ws.sent[3].client_msg_id), second.key);

    ws.deliver(welcome());
    ws.deliver({ type: 'Ack', room: 'general', client_msg_id, seq: 3, message_id: 103, sent_at_ms: 1 });
    assert.equal(client.pendingSends().length, 1);
    ws.deliver(msg(4, alice, { client_msg_id: second.client_msg_id }));
    assert.equal(client.pendingSends().length, 0);
  });

  test('a connection lost in the middle of a replay resumes after the last message received', async () => {
    let ws = connectedInGeneral();
    ws.deliver({ type: 'Joined', room: 'general', head_seq: 2, replay_from: 3 });
    // Away, then back: the replay of 3..=10 stops after 4.
    ws = await droppedAndBack(ws);
    assert.deepEqual(ws.sent[1], { type: 'Join', room: 'general', after_seq: 2 });
    ws.deliver(welcome());
    ws.deliver({ type: 'Joined', room: 'general', head_seq: 10, replay_from: 3 });
    ws.deliver(msg(3));
    ws.deliver(msg(4));
    assert.equal(client.highestSeq('general'), 4, 'not the head: 5..=10 were never received');
    // A head from the room list does not move a followed room's resume point either.
    assert.equal(client.joinRoom('general', 10), false);
    ws = await droppedAndBack(ws);
    assert.deepEqual(ws.sent[1], { type: 'Join', room: 'general', after_seq: 4 });
  });

  test('rate-limited send is retried after retry_after_ms with the same id; InvalidText gives up', async () => {
    const ws = connectedInGeneral();
    const { client_msg_id } = client.send('general', 'x');
    const errors = [];
    client.on('error', (e) => errors.push(e));
    ws.deliver({ type: 'Error', code: 5, message: 'too many sends', room: 'general', client_msg_id, request_id: null, retry_after_ms: 30 });
    assert.equal(errors[0].retrying, true);
    const before = ws.sent.length;
    await new Promise((r) => setTimeout(r, 80));
    assert.equal(ws.sent.length, before + 1);
    assert.deepEqual(ws.sent.at(-1).client_msg_id, client_msg_id);

    const bad = client.send('general', 'y');
    const failed = waitFor(client, 'send_failed');
    ws.deliver({ type: 'Error', code: 4, message: 'too long', room: 'general', client_msg_id: bad.client_msg_id, request_id: null, retry_after_ms: null });
    assert.equal((await failed).code, 4);
    assert.equal(client.pendingSends().length, 1);
  });

  test('a text with a lone surrogate goes as U+FFFD and does not stop the sends after it', () => {
    const ws = connectedInGeneral();
    ws.deliver({ type: 'Joined', room: 'general', head_seq: 0, replay_from: 1 });
    client.send('general', 'broken \ud800 paste');
    client.send('general', 'next');
    const sends = ws.sent.filter((f) => f.type === 'Send');
    assert.deepEqual(
      sends.map((f) => f.text),
      ['broken \ufffd paste', 'next'],
    );
  });

  test('sends queued for a room the user can no longer see fail; left for the cap, they wait', async () => {
    const ws = connectedInGeneral();
    ws.deliver({ type: 'Joined', room: 'general', head_seq: 0, replay_from: 1 });
    client.joinRoom('design');
    client.send('design', 'kept for later'); // design's Join has not been answered: queued
    client.leaveRoom('design');
    assert.equal(client.pendingSends().length, 1, 'left to make space: still queued');
    client.joinRoom('secret');
    client.send('secret', 'on its way'); // sent: the server answers it
    const refused = client.send('secret', 'never to be sent');
    ws.deliver({ type: 'Error', code: 5, message: 'too many sends', room: 'secret', client_msg_id: refused.client_msg_id, request_id: null, retry_after_ms: 5000 });
    const failed = waitFor(client, 'send_failed');
    client.leaveRoom('secret', { gone: 'no longer a member of the room' });
    const f = await failed;
    assert.deepEqual([f.room, f.text, f.code, f.message], ['secret', 'never to be sent', 3, 'no longer a member of the room']);
    assert.deepEqual(client.pendingSends().map((p) => p.text).sort(), ['kept for later', 'on its way']);
  });

  test('sends refused for good free their places in flight: the next ones go out', () => {
    const ws = connectedInGeneral();
    ws.deliver({ type: 'Joined', room: 'general', head_seq: 0, replay_from: 1 });
    const ids = [];
    for (let i = 0; i < 33; i++) ids.push(client.send('general', `m${i}`).client_msg_id);
    const sent = () => ws.sent.filter((f) => f.type === 'Send').map((f) => f.text);
    assert.equal(sent().length, 32, 'at most 32 in flight');
    for (const client_msg_id of ids.slice(0, 32)) {
      ws.deliver({ type: 'Error', code: 4, message: 'bad text', room: 'general', client_msg_id, request_id: null, retry_after_ms: null });
    }
    assert.equal(sent().at(-1), 'm32', 'the 33rd went out once places were free');
  });

  test('at most 32 sends are in flight; acks release the next ones in order', () => {
    const ws = connectedInGeneral();
    const ids = [];
    for (let i = 0; i < 40; i++) ids.push(client.send('general', `n${i}`).client_msg_id);
    const sends = () => ws.sent.filter((f) => f.type === 'Send');
    assert.equal(sends().length, 32);
    ws.deliver({ type: 'Ack', room: 'general', client_msg_id: ids[0], seq: 1, message_id: 1, sent_at_ms: 1 });
    ws.deliver({ type: 'Ack', room: 'general', client_msg_id: ids[1], seq: 2, message_id: 2, sent_at_ms: 1 });
    assert.deepEqual(sends().map((f) => f.text), Array.from({ length: 34 }, (_, i) => `n${i}`));
  });

  test('sends after a RateLimited go out again in send order', async () => {
    const ws = connectedInGeneral();
    const ids = [0, 1, 2].map((i) => client.send('general', `r${i}`).client_msg_id);
    const n = ws.sent.length;
    for (const id of ids.slice(1)) {
      ws.deliver({ type: 'Error', code: 5, message: 'slow down', room: 'general', client_msg_id: id, request_id: null, retry_after_ms: 20 });
    }
    assert.equal(ws.sent.length, n, 'nothing is sent while paused');
    await new Promise((r) => setTimeout(r, 200));
    assert.deepEqual(ws.sent.slice(n).map((f) => f.text), ['r1', 'r2']);
  });

  test('terminal close 4505: no reconnect, unauthorized event', async () => {
    client = newClient();
    client.connect();
    const ws = FakeWebSocket.last();
    ws.open();
    ws.deliver(welcome());
    const unauthorized = waitFor(client, 'unauthorized');
    const statuses = [];
    client.on('status', (s) => statuses.push(s));
    ws.deliver({ type: 'GoAway', code: 4505, reason: 'token revoked' });
    ws.serverClose(4505, 'token revoked');
    assert.equal((await unauthorized).code, 4505);
    assert.equal(statuses.length, 1);
    assert.equal(statuses[0].state, 'disconnected');
    assert.equal(statuses[0].terminal, true);
    await new Promise((r) => setTimeout(r, 120));
    assert.equal(FakeWebSocket.instances.length, 1);
  });

  test('close 1002 (the server found a malformed WebSocket frame): terminal, no reconnect', async () => {
    client = newClient();
    client.connect();
    const ws = FakeWebSocket.last();
    ws.open();
    ws.deliver(welcome());
    const statuses = [];
    client.on('status', (s) => statuses.push(s));
    ws.serverClose(1002, 'protocol error');
    assert.deepEqual(statuses.map((s) => [s.state, s.terminal]), [['disconnected', true]]);
    await new Promise((r) => setTimeout(r, 120));
    assert.equal(FakeWebSocket.instances.length, 1);
  });

  test('GoAway 4502 (unsupported version) before Welcome: terminal with the server\'s reason, no reconnect', async () => {
    const reason = 'protocol version 1 is not supported; this server speaks 2';
    let asked = 0;
    client = newClient({
      checkAuth: async () => {
        asked += 1;
        return true;
      },
    });
    const statuses = [];
    client.on('status', (s) => statuses.push(s));
    client.switchRoom('general');
    client.connect();
    const ws = FakeWebSocket.last();
    ws.open();
    ws.deliver({ type: 'GoAway', code: 4502, reason });
    ws.serverClose(4502, reason);
    await new Promise((r) => setTimeout(r, 150));
    assert.equal(FakeWebSocket.instances.length, 1, 'no reconnect');
    assert.equal(asked, 0, 'a terminal code needs no auth check');
    assert.deepEqual(statuses.map((s) => s.state), ['connecting', 'disconnected']);
    assert.deepEqual(statuses[1], { state: 'disconnected', code: 4502, reason, terminal: true });
    assert.equal(client.state, 'disconnected');
  });

  test('GoAway 4502 followed by a close without a code or with a cut reason: the GoAway decides', async () => {
    const reason = 'protocol version 1 is not supported; this server speaks 2';
    for (const [code, closeReason] of [
      [1006, ''],
      [4502, reason.slice(0, 10)],
    ]) {
      client = newClient();
      client.connect();
      const ws = FakeWebSocket.last();
      ws.open();
      const st = waitFor(client, 'status', (s) => s.state !== 'connecting');
      ws.deliver({ type: 'GoAway', code: 4502, reason });
      ws.serverClose(code, closeReason);
      assert.deepEqual(await st, { state: 'disconnected', code: 4502, reason, terminal: true }, `close ${code}`);
      await new Promise((r) => setTimeout(r, 60));
      assert.equal(FakeWebSocket.instances.length, 1, `close ${code}: no reconnect`);
    }
  });

  test('every 4500-4999 code is terminal, every other code reconnects', async () => {
    for (const code of [4500, 4501, 4502, 4503, 4504, 4999]) {
      client = newClient();
      client.connect();
      const ws = FakeWebSocket.last();
      ws.open();
      ws.deliver(welcome());
      const st = waitFor(client, 'status');
      ws.serverClose(code, 'x');
      assert.equal((await st).state, 'disconnected', `code ${code}`);
    }
    for (const code of [1000, 1001, 1006, 1011, 4000, 4002, 4003, 4499]) {
      client = newClient();
      client.connect();
      const ws = FakeWebSocket.last();
      ws.open();
      ws.deliver(welcome());
      const st = waitFor(client, 'status');
      ws.serverClose(code, '');
      const s = await st;
      assert.equal(s.state, 'reconnecting', `code ${code}`);
      if (code === 4000) assert.ok(s.delay_ms < 20, 'shutdown: reconnect at once with jitter');
      client.disconnect();
    }
  });

  test('backoff grows up to the maximum while connections keep failing', async () => {
    client = newClient({ random: () => 1 });
    const delays = [];
    client.on('status', (s) => {
      if (s.state === 'reconnecting') delays.push(s.delay_ms);
      if (s.state === 'connecting' && delays.length < 5) {
        queueMicrotask(() => FakeWebSocket.last().serverClose(1006));
      }
    });
    client.connect();
    await waitFor(client, 'status', () => delays.length >= 5, 2000);
    assert.deepEqual(delays, [20, 40, 80, 80, 80]);
  });

  test('checkAuth false after a failed upgrade stops with unauthorized', async () => {
    let asked = 0;
    client = newClient({
      checkAuth: async () => {
        asked += 1;
        return false;
      },
    });
    client.connect();
    const unauthorized = waitFor(client, 'unauthorized');
    FakeWebSocket.last().serverClose(1006);
    await unauthorized;
    assert.equal(asked, 1);
    assert.equal(client.state, 'disconnected');
  });

  test('the network coming back brings a reconnect forward, but not the wait after a flood close', async () => {
    let ws = connectedInGeneral();
    let reconnecting = waitFor(client, 'status', (s) => s.state === 'reconnecting');
    ws.serverClose(4001, 'slow');
    await reconnecting;
    const opened = FakeWebSocket.instances.length;
    client._onBrowserOnline();
    assert.equal(FakeWebSocket.instances.length, opened + 1, 'reconnected at once');
    ws = FakeWebSocket.last();
    ws.open();
    ws.deliver(welcome());
    reconnecting = waitFor(client, 'status', (s) => s.state === 'reconnecting');
    ws.serverClose(4004, 'flood');
    const status = await reconnecting;
    assert.ok(status.delay_ms >= 10000, `waits ${status.delay_ms} ms`);
    client._onBrowserOnline();
    assert.equal(FakeWebSocket.instances.length, opened + 1, 'no reconnect within the 10 s');
  });

  test('pings every heartbeat_ms while connected', async () => {
    client = newClient();
    client.connect();
    const ws = FakeWebSocket.last();
    ws.open();
    ws.deliver(welcome(100));
    await new Promise((r) => setTimeout(r, 350));
    const pings = ws.sent.filter((f) => f.type === 'Ping');
    assert.ok(pings.length >= 2 && pings.length <= 4, `${pings.length} pings`);
    assert.ok(pings.every((p, i) => i === 0 || p.nonce > pings[i - 1].nonce));
    client.disconnect();
    const n = ws.sent.length;
    await new Promise((r) => setTimeout(r, 150));
    assert.equal(ws.sent.length, n, 'no pings after disconnect');
  });

  test('a live connection whose heartbeats run a minute apart (a hidden tab) is not taken for dead; a silent one is', async () => {
    // The clock jumps 60 s at every heartbeat, as when a hidden tab's timers are throttled.
    const realNow = Date.now;
    let skew = 0;
    Date.now = () => realNow() + skew;
    try {
      client = newClient();
      client.connect();
      const ws = FakeWebSocket.last();
      ws.open();
      ws.deliver(welcome(100));
      const closes = [];
      client.on('status', (s) => s.state === 'reconnecting' && closes.push(s));
      const pings = () => ws.sent.filter((f) => f.type === 'Ping');
      for (let i = 1; i <= 4; i++) {
        await until(() => pings().length >= i, `ping ${i}`);
        ws.deliver({ type: 'Pong', nonce: pings().at(-1).nonce }); // answered at once
        skew += 60_000; // and the next heartbeat a minute later
      }
      await until(() => pings().length >= 5, 'ping 5');
      assert.equal(closes.length, 0, 'every Ping was answered');
      // Now the server goes silent: a minute after the unanswered Ping, the connection is dead.
      skew += 60_000;
      await until(() => closes.length > 0, 'taken for dead');
    } finally {
      Date.now = realNow;
    }
  });

  test('an unknown frame type is skipped; a malformed frame ends the session', async () => {
    client = newClient();
    client.connect();
    const ws = FakeWebSocket.last();
    ws.open();
    ws.deliver(welcome());
    const problems = [];
    client.on('protocol_error', (p) => problems.push(p.message));
    ws.onmessage({ data: new Uint8Array([42, 1, 2]).buffer });
    assert.equal(client.state, 'connected');
    const pong = waitFor(client, 'pong');
    ws.deliver({ type: 'Pong', nonce: 9 });
    assert.equal((await pong).nonce, 9);
    ws.onmessage({ data: new Uint8Array([9, 1, 0]).buffer }); // Pong with a trailing byte
    assert.equal(problems.length, 2);
    assert.equal(client.state, 'disconnected');
    assert.equal(ws.closedByClient.code, 4500);
    await new Promise((r) => setTimeout(r, 100));
    assert.equal(FakeWebSocket.instances.length, 1, 'no reconnect');
  });

  test('a retired v1 frame (Online #1, Presence #8) is skipped like any unknown frame', async () => {
    const ws = connectedInGeneral();
    const problems = [];
    const events = [];
    client.on('protocol_error', (p) => problems.push(p.message));
    for (const type of ['online', 'presence', 'room_presence']) client.on(type, () => events.push(type));
    ws.onmessage({ data: new Uint8Array([0x01, 0x00]).buffer }); // v1 Online{users: []}
    ws.onmessage({ data: new Uint8Array([0x08, 0x01, 0x01, 0x61, 0x01]).buffer }); // v1 Presence{a, true}
    assert.equal(problems.length, 2);
    assert.match(problems[0], /discriminant 1 \(retired/);
    assert.match(problems[1], /discriminant 8 \(retired/);
    assert.deepEqual(events, []);
    assert.equal(client.state, 'connected');
    ws.deliver({ type: 'Pong', nonce: 1 });
    assert.equal(client.state, 'connected');
  });

  test('disconnect() stops reconnecting', async () => {
    client = newClient();
    client.connect();
    FakeWebSocket.last().serverClose(1006);
    client.disconnect();
    await new Promise((r) => setTimeout(r, 150));
    assert.equal(FakeWebSocket.instances.length, 1);
    assert.equal(client.state, 'disconnected');
  });
});

describe('typing updates stay within the server limit (burst 5, then 1/s, § 5)', () => {
  test('TokenBucket: starts full, refills at its rate, never above its burst', () => {
    const b = new TokenBucket(4, 1, 0);
    for (let i = 0; i < 4; i++) assert.equal(b.take(0), true, `token ${i + 1}`);
    assert.equal(b.take(0), false, 'empty');
    assert.equal(b.waitMs(0), 1000);
    assert.equal(b.take(999), false, 'not yet a whole token');
    assert.ok(b.waitMs(999) <= 2, 'about 1 ms to go');
    assert.equal(b.take(1000), true);
    assert.equal(b.take(60_000), true, 'refilled');
    assert.equal(b.tokens, 3, 'capped at the burst, then one taken');
    assert.equal(b.take(30_000), true, 'a clock going back adds nothing');
    assert.equal(b.tokens, 2);
  });

  test('a burst of typing calls sends one fewer than the server allows and drops the rest', () => {
    const ws = connectedInGeneral();
    const results = [];
    for (let i = 0; i < 10; i++) results.push(client.typing('general', i % 2 === 0));
    const typing = ws.sent.filter((f) => f.type === 'Typing');
    assert.equal(typing.length, TYPING_BURST - 1);
    assert.deepEqual(results, [true, true, true, true, false, false, false, false, false, false]);
    assert.deepEqual(typing[0], { type: 'Typing', room: 'general', active: true });
  });

  test('a new connection starts with a full bucket, like the server', async () => {
    let ws = connectedInGeneral();
    for (let i = 0; i < 10; i++) client.typing('general', true);
    ws.serverClose(1006);
    await waitFor(client, 'status', (s) => s.state === 'connecting');
    ws = FakeWebSocket.last();
    ws.open();
    ws.deliver(welcome());
    for (let i = 0; i < 10; i++) client.typing('general', true);
    assert.equal(ws.sent.filter((f) => f.type === 'Typing').length, TYPING_BURST - 1);
  });

  test('a RateLimited without a send or request pauses typing updates for retry_after_ms', async () => {
    const ws = connectedInGeneral();
    assert.equal(client.typing('general', true), true);
    ws.deliver({ type: 'Error', code: 5, message: 'too many typing updates', room: 'general', client_msg_id: null, request_id: null, retry_after_ms: 40 });
    assert.equal(client.typing('general', true), false, 'paused');
    await new Promise((r) => setTimeout(r, 60));
    assert.equal(client.typing('general', true), true, 'resumed after retry_after_ms');
    assert.equal(ws.sent.filter((f) => f.type === 'Typing').length, 2);
  });

  test('typing is dropped, not queued, while not connected', () => {
    client = newClient();
    client.switchRoom('general');
    assert.equal(client.typing('general', true), false);
  });
});

describe('ChatClient room presence', () => {
  test('RoomPresence of the current room: event and snapshot, each frame replaces the last', () => {
    const ws = connectedInGeneral();
    const seen = [];
    client.on('room_presence', (p) => seen.push(p));
    assert.equal(client.roomPresence('general'), null, 'nothing before the first frame');
    ws.deliver({ type: 'Joined', room: 'general', head_seq: 0, replay_from: 1 });
    ws.deliver(roomPresence('general', [alice, bob], 130));
    assert.deepEqual(seen, [{ type: 'RoomPresence', room: 'general', online: 130, users: [alice, bob] }]);
    assert.deepEqual(client.roomPresence('general'), { room: 'general', online: 130, users: [alice, bob] });
    ws.deliver(roomPresence('general', [alice], 1));
    assert.deepEqual(client.roomPresence('general'), { room: 'general', online: 1, users: [alice] }, 'replaced, not merged');
    ws.deliver(roomPresence('general', [], 0));
    assert.deepEqual(client.roomPresence('general'), { room: 'general', online: 0, users: [] });
    assert.equal(seen.length, 3);
  });

  test('switching drops the old room\'s snapshot; a late frame for it is ignored; the new room\'s follows its Joined', () => {
    const ws = connectedInGeneral();
    ws.deliver({ type: 'Joined', room: 'general', head_seq: 0, replay_from: 1 });
    ws.deliver(roomPresence('general', [alice, bob]));
    const seen = [];
    client.on('room_presence', (p) => seen.push(p.room));
    client.switchRoom('design');
    assert.equal(client.roomPresence('general'), null, 'dropped at the switch');
    // Sent by the server before it handled the Switch.
    ws.deliver(roomPresence('general', [alice, bob], 3));
    assert.equal(client.roomPresence('general'), null, 'a late frame of the old room is ignored');
    ws.deliver({ type: 'Left', room: 'general' });
    ws.deliver({ type: 'Joined', room: 'design', head_seq: 0, replay_from: 1 });
    ws.deliver(roomPresence('design', [alice]));
    assert.deepEqual(client.roomPresence('design'), { room: 'design', online: 1, users: [alice] });
    assert.deepEqual(seen, ['design']);
  });

  test('Left clears the room\'s snapshot, also when the client switched straight back to it', () => {
    const ws = connectedInGeneral();
    ws.deliver({ type: 'Joined', room: 'general', head_seq: 0, replay_from: 1 });
    ws.deliver(roomPresence('general', [alice, bob]));
    const left = [];
    client.on('left', (l) => left.push(l.room));
    client.switchRoom('design');
    client.switchRoom('general');
    // The server answers both Switches in order: Left general, Joined design, RoomPresence
    // design, Left design, Joined general, RoomPresence general.
    ws.deliver({ type: 'Left', room: 'general' });
    assert.equal(client.roomPresence('general'), null, 'the old membership is over');
    ws.deliver({ type: 'Joined', room: 'design', head_seq: 0, replay_from: 1 });
    ws.deliver(roomPresence('design', [alice]));
    assert.equal(client.roomPresence('design'), null, 'not the current room any more');
    ws.deliver({ type: 'Left', room: 'design' });
    ws.deliver({ type: 'Joined', room: 'general', head_seq: 0, replay_from: 1 });
    ws.deliver(roomPresence('general', [alice]));
    assert.deepEqual(client.roomPresence('general'), { room: 'general', online: 1, users: [alice] });
    assert.deepEqual(left, ['general', 'design']);
  });

  test('the snapshot survives a reconnect until the next frame; reset() forgets it', async () => {
    let ws = connectedInGeneral();
    ws.deliver({ type: 'Joined', room: 'general', head_seq: 0, replay_from: 1 });
    ws.deliver(roomPresence('general', [alice, bob]));
    ws.serverClose(4000, 'restart');
    await waitFor(client, 'status', (s) => s.state === 'connecting');
    assert.equal(client.roomPresence('general').online, 2, 'kept (shown as stale) while reconnecting');
    ws = FakeWebSocket.last();
    ws.open();
    ws.deliver(welcome());
    ws.deliver({ type: 'Joined', room: 'general', head_seq: 0, replay_from: 1 });
    ws.deliver(roomPresence('general', [alice]));
    assert.equal(client.roomPresence('general').online, 1);
    client.reset();
    assert.equal(client.roomPresence('general'), null);
  });
});

// ---------------------------------------------------------------------------------------------
// Protocol v3: attachments, edits and deletions, read marks, several rooms, RoomAdded, Left
// ---------------------------------------------------------------------------------------------

const joined = (room, head_seq, replay_from = head_seq + 1) => ({ type: 'Joined', room, head_seq, replay_from });
const errorFrame = (code, extra = {}) => ({ type: 'Error', code, message: `error ${code}`, room: 'general', client_msg_id: null, request_id: null, retry_after_ms: null, ...extra });
const delay = (ms) => new Promise((r) => setTimeout(r, ms));

describe('ChatClient sends, edits and deletions (v3)', () => {
  test('send carries attachment ids; more than 10 is refused before anything goes out', () => {
    const ws = connectedInGeneral();
    client.send('general', '', { attachments: [12, 300] });
    const sent = ws.sent.at(-1);
    assert.equal(sent.type, 'Send');
    assert.deepEqual(sent.attachments, [12, 300]);
    assert.equal(sent.text, '');
    client.send('general', 'plain');
    assert.deepEqual(ws.sent.at(-1).attachments, []);
    const n = ws.sent.length;
    assert.throws(() => client.send('general', 'x', { attachments: Array.from({ length: 11 }, (_, i) => i + 1) }), RangeError);
    assert.equal(ws.sent.length, n);
  });

  test('edit and delete are frames #8 and #9 with their own client_msg_id, in order with sends', () => {
    const ws = connectedInGeneral();
    const a = client.send('general', 'first');
    const e = client.edit('general', 5, 'fixed');
    const d = client.delete('general', 6);
    const out = ws.sent.slice(-3);
    assert.deepEqual(out.map((f) => f.type), ['Send', 'Edit', 'Delete']);
    assert.deepEqual(out[1], { type: 'Edit', room: 'general', client_msg_id: e.client_msg_id, target_seq: 5, text: 'fixed' });
    assert.deepEqual(out[2], { type: 'Delete', room: 'general', client_msg_id: d.client_msg_id, target_seq: 6 });
    assert.notEqual(a.key, e.key);
    assert.deepEqual(client.pendingSends().map((p) => p.kind), ['send', 'edit', 'delete']);
    // Acked (or seen as their own event) one by one.
    ws.deliver({ type: 'Ack', room: 'general', client_msg_id: e.client_msg_id, seq: 8, message_id: 8, sent_at_ms: 1 });
    ws.deliver(msg(9, alice, { kind: 'Delete', target_seq: 6, text: '', client_msg_id: d.client_msg_id }));
    assert.deepEqual(client.pendingSends().map((p) => p.kind), ['send']);
  });

  test('an unacknowledged edit and delete are resent after a reconnect with the same ids, in order', async () => {
    let ws = connectedInGeneral();
    ws.deliver(joined('general', 6));
    const s = client.send('general', 'new');
    const e = client.edit('general', 5, 'fixed');
    const d = client.delete('general', 6);
    ws.serverClose(1006);
    await waitFor(client, 'status', (st) => st.state === 'connecting');
    ws = FakeWebSocket.last();
    ws.open();
    assert.deepEqual(ws.sent.map((f) => f.type), ['Hello', 'Join', 'Send', 'Edit', 'Delete']);
    assert.deepEqual(ws.sent.slice(2).map((f) => idToHex(f.client_msg_id)), [s.key, e.key, d.key]);
    assert.equal(ws.sent[3].target_seq, 5);
    assert.equal(ws.sent[3].text, 'fixed');
  });

  test('a rate-limited edit waits retry_after_ms and goes again with the same id; a refused one fails with its kind', async () => {
    const ws = connectedInGeneral();
    const e = client.edit('general', 5, 'fixed');
    ws.deliver(errorFrame(5, { client_msg_id: e.client_msg_id, retry_after_ms: 30 }));
    const n = ws.sent.length;
    await delay(80);
    assert.equal(ws.sent.length, n + 1);
    assert.deepEqual(ws.sent.at(-1), { type: 'Edit', room: 'general', client_msg_id: e.client_msg_id, target_seq: 5, text: 'fixed' });

    const d = client.delete('general', 4);
    const failed = waitFor(client, 'send_failed');
    ws.deliver(errorFrame(1, { message: 'not your message', client_msg_id: d.client_msg_id }));
    const f = await failed;
    assert.equal(f.kind, 'delete');
    assert.equal(f.target_seq, 4);
    assert.equal(f.code, 1);
    assert.equal(f.message, 'not your message');
  });

  test('message and history frames carry known_seq: the join\'s head for a replay, the seq had for a page', async () => {
    const ws = connectedInGeneral();
    ws.deliver(joined('general', 10, 9));
    const seen = [];
    client.on('message', (m) => seen.push([m.seq, m.known_seq]));
    ws.deliver(msg(9));
    ws.deliver(msg(10));
    ws.deliver(msg(11));
    assert.deepEqual(seen, [[9, 10], [10, 10], [11, 10]]);
    const page = client.history('general', 9, 50);
    ws.deliver({ type: 'History', request_id: ws.sent.at(-1).request_id, room: 'general', messages: [msg(7), msg(8)], next_before: 7 });
    assert.equal((await page).known_seq, 11);
    // A page of a room not joined counts its own events (it was read after them).
    const other = client.history('random', null, 50);
    ws.deliver({ type: 'History', request_id: ws.sent.at(-1).request_id, room: 'random', messages: [msg(5, bob, { room: 'random' }), msg(7, bob, { room: 'random' })], next_before: null });
    assert.equal((await other).known_seq, 7);
  });
});

describe('ChatClient read marks (v3)', () => {
  test('markRead coalesces to the highest seq and stays within burst 10, then 2/s', async () => {
    const ws = connectedInGeneral();
    for (let seq = 1; seq <= 30; seq++) client.markRead('general', seq);
    const marks = () => ws.sent.filter((f) => f.type === 'MarkRead');
    assert.equal(marks().length, 9, 'one fewer than the server\'s burst');
    assert.deepEqual(marks().map((f) => f.seq), [1, 2, 3, 4, 5, 6, 7, 8, 9]);
    await delay(560);
    assert.deepEqual(marks().slice(9).map((f) => f.seq), [30], 'then only the highest, one token later');
    assert.deepEqual(marks().at(-1), { type: 'MarkRead', room: 'general', seq: 30 });
    await delay(100);
    assert.equal(marks().length, 10);
  });

  test('ReadState sets the mark (event, readMark); nothing at or below it goes out', () => {
    const ws = connectedInGeneral();
    const states = [];
    client.on('read_state', (r) => states.push(r));
    ws.deliver({ type: 'ReadState', room: 'general', last_read_seq: 40 });
    assert.deepEqual(states, [{ type: 'ReadState', room: 'general', last_read_seq: 40 }]);
    assert.equal(client.readMark('general'), 40);
    assert.equal(client.markRead('general', 40), false);
    assert.equal(client.markRead('general', 12), false);
    assert.equal(ws.sent.filter((f) => f.type === 'MarkRead').length, 0);
    assert.equal(client.markRead('general', 41), true);
    assert.equal(ws.sent.filter((f) => f.type === 'MarkRead').length, 1);
    // From another device, a lower one never moves the mark down here.
    ws.deliver({ type: 'ReadState', room: 'general', last_read_seq: 41 });
    ws.deliver({ type: 'ReadState', room: 'general', last_read_seq: 20 });
    assert.equal(client.readMark('general'), 41);
    assert.equal(client.markRead('design', 0), false, 'seq 0 is nothing read');
  });

  test('a mark waits for its room\'s Join, and one not confirmed goes out again after a reconnect', async () => {
    client = newClient();
    client.focusRoom('general', 5);
    client.markRead('general', 6);
    client.connect();
    let ws = FakeWebSocket.last();
    ws.open();
    assert.deepEqual(ws.sent.map((f) => f.type), ['Hello', 'Join', 'MarkRead']);
    assert.deepEqual(ws.sent[1], { type: 'Join', room: 'general', after_seq: 5 });
    ws.serverClose(1006);
    await waitFor(client, 'status', (s) => s.state === 'connecting');
    ws = FakeWebSocket.last();
    ws.open();
    assert.deepEqual(ws.sent.map((f) => f.type), ['Hello', 'Join', 'MarkRead'], 'no ReadState came: sent again');
    ws.deliver({ type: 'ReadState', room: 'general', last_read_seq: 6 });
    ws.serverClose(1006);
    await waitFor(client, 'status', (s) => s.state === 'connecting');
    ws = FakeWebSocket.last();
    ws.open();
    assert.deepEqual(ws.sent.map((f) => f.type), ['Hello', 'Join'], 'confirmed: not again');
  });

  test('a RateLimited read mark pauses marks and sends the mark again after retry_after_ms', async () => {
    const ws = connectedInGeneral();
    client.markRead('general', 3);
    ws.deliver(errorFrame(5, { message: 'too many read marks', retry_after_ms: 40 }));
    client.markRead('general', 4);
    assert.equal(ws.sent.filter((f) => f.type === 'MarkRead').length, 1, 'paused');
    await delay(80);
    assert.deepEqual(ws.sent.filter((f) => f.type === 'MarkRead').map((f) => f.seq), [3, 4]);
  });
});

describe('ChatClient in several rooms (v3)', () => {
  test('joinRoom follows rooms with their after_seq; a reconnect joins them all again, the shown room first', async () => {
    client = newClient();
    client.joinRoom('design', 7);
    client.focusRoom('general');
    client.joinRoom('support');
    assert.equal(client.joinRoom('design', 3), false, 'followed already');
    client.connect();
    let ws = FakeWebSocket.last();
    ws.open();
    assert.deepEqual(ws.sent.slice(1), [
      { type: 'Join', room: 'general', after_seq: null },
      { type: 'Join', room: 'design', after_seq: 7 },
      { type: 'Join', room: 'support', after_seq: null },
    ]);
    ws.deliver(welcome());
    for (const [room, head] of [['general', 2], ['design', 8], ['support', 0]]) ws.deliver(joined(room, head, room === 'design' ? 8 : head + 1));
    ws.deliver(msg(8, bob, { room: 'design' }));
    ws.deliver(roomPresence('design', [bob]));
    ws.deliver(roomPresence('general', [alice, bob]));
    assert.deepEqual(client.roomPresence('design'), { room: 'design', online: 1, users: [bob] }, 'kept for every followed room');
    assert.equal(client.roomPresence('general').online, 2);
    // Send to a background room: it is joined, so it goes out at once.
    client.send('design', 'hi design');
    assert.equal(ws.sent.at(-1).room, 'design');
    ws.serverClose(4000);
    await waitFor(client, 'status', (s) => s.state === 'connecting');
    ws = FakeWebSocket.last();
    ws.open();
    // The unacknowledged send goes again right after its room's Join.
    assert.deepEqual(
      ws.sent.slice(1).map((f) => `${f.type} ${f.room} ${f.after_seq ?? f.text}`),
      ['Join general 2', 'Join design 8', 'Send design hi design', 'Join support 0'],
    );
  });

  test("the shown room's history page goes before joins of other rooms still waiting for the rate", async () => {
    const ws = connectedInGeneral();
    for (let i = 0; i < 30; i++) client.joinRoom(`room-${i}`);
    const joinsOut = ws.sent.filter((f) => f.type === 'Join').length;
    assert.ok(joinsOut < 31, 'some joins wait for the rate');
    client.history('general', null, 50).catch(() => {}); // never answered here
    client.history('room-29', null, 50).catch(() => {});
    await until(() => ws.sent.some((f) => f.type === 'History'), 'the shown room page');
    const sent = ws.sent.map((f) => `${f.type}:${f.room}`);
    const page = sent.indexOf('History:general');
    assert.ok(sent.slice(0, page).filter((f) => f.startsWith('Join:')).length < 31, 'it went before joins still waiting');
    assert.ok(!sent.includes('History:room-29'), 'another room waits its turn behind the joins');
  });

  test('joins and history requests stay within burst 20, then 5/s: the rest wait their turn', async () => {
    client = newClient();
    const rooms = Array.from({ length: 25 }, (_, i) => `room-${i}`);
    for (const r of rooms) client.joinRoom(r, 0);
    client.connect();
    const ws = FakeWebSocket.last();
    ws.open();
    ws.deliver(welcome());
    const joins = () => ws.sent.filter((f) => f.type === 'Join');
    assert.equal(joins().length, 19, 'one fewer than the server\'s burst');
    const page = client.history('room-0', null, 10);
    await delay(230);
    assert.equal(joins().length, 20, 'one more after 200 ms');
    await until(() => ws.sent.some((f) => f.type === 'History'), 'the history request after the joins', 2000);
    assert.deepEqual(joins().map((f) => f.room), rooms, 'in order');
    const h = ws.sent.find((f) => f.type === 'History');
    ws.deliver({ type: 'History', request_id: h.request_id, room: 'room-0', messages: [], next_before: null });
    assert.equal((await page).next_before, null);
  });

  test('leaveRoom sends Leave; its Left is expected. An unprompted Left unfollows the room and fails its sends', async () => {
    const ws = connectedInGeneral();
    client.joinRoom('design', 0);
    client.joinRoom('secret', 0);
    ws.deliver(joined('general', 0));
    ws.deliver(joined('design', 0));
    ws.deliver(joined('secret', 0));
    const lefts = [];
    client.on('left', (l) => lefts.push(l));
    client.leaveRoom('design');
    assert.deepEqual(ws.sent.at(-1), { type: 'Leave', room: 'design' });
    ws.deliver({ type: 'Left', room: 'design' });

    ws.deliver({ type: 'Pong', nonce: 1 });
    const failed = waitFor(client, 'send_failed');
    // The server holds the send: the owner removed the user before it was stored.
    client.send('secret', 'too late');
    ws.deliver({ type: 'Left', room: 'secret' });
    assert.deepEqual(lefts, [
      { type: 'Left', room: 'design', unprompted: false },
      { type: 'Left', room: 'secret', unprompted: true },
    ]);
    assert.equal((await failed).room, 'secret');
    assert.deepEqual(client.joinedRooms(), ['general']);
    assert.equal(client.markRead('secret', 3), true);
    assert.equal(ws.sent.filter((f) => f.type === 'MarkRead').length, 0, 'no mark for a room not joined');
  });

  test('a Join refused with UnknownRoom unfollows the room (join_refused); RoomAdded is an event', async () => {
    const ws = connectedInGeneral();
    client.joinRoom('secret', 0);
    const refused = waitFor(client, 'join_refused');
    ws.deliver(errorFrame(2, { room: 'secret', message: 'no such room' }));
    assert.deepEqual(await refused, { room: 'secret', code: 2, message: 'no such room' });
    assert.deepEqual(client.joinedRooms(), ['general']);
    const added = waitFor(client, 'room_added');
    ws.deliver({ type: 'RoomAdded', room: '@1-2' });
    assert.deepEqual(await added, { type: 'RoomAdded', room: '@1-2' });
  });

  test('a Join refused with UnknownRoom after the room was left takes its request along: a later Join is answered as itself', async () => {
    const ws = connectedInGeneral();
    client.joinRoom('secret', 0);
    client.leaveRoom('secret');
    ws.deliver(errorFrame(2, { room: 'secret', message: 'no such room' }));
    client.joinRoom('secret', 5);
    assert.deepEqual(ws.sent.at(-1), { type: 'Join', room: 'secret', after_seq: 5 });
    const joined = waitFor(client, 'joined');
    ws.deliver({ type: 'Joined', room: 'secret', head_seq: 9, replay_from: 6 });
    const j = await joined;
    assert.equal(j.after_seq, 5, 'the Joined answers the second Join');
    assert.equal(j.stale, false, 'nothing is missing before the replay');
  });

  test('a RateLimited typing update pauses typing only: no Join again, no pause of joins or read marks', async () => {
    const ws = connectedInGeneral();
    client.joinRoom('design', 4);
    client.markRead('general', 3);
    ws.deliver(errorFrame(5, { room: 'design', message: 'too many typing updates', retry_after_ms: 200 }));
    assert.equal(client.typing('design', true), false, 'typing paused');
    client.markRead('general', 4);
    client.joinRoom('random');
    client.history('general', null, 10).catch(() => {}); // never answered here
    await delay(50);
    const sent = ws.sent.map((f) => `${f.type}:${f.room}`);
    assert.equal(sent.filter((f) => f === 'Join:design').length, 1, 'the Join of design is not sent again');
    assert.ok(sent.includes('Join:random'), 'joins are not paused');
    assert.ok(sent.includes('History:general'), 'history requests are not paused');
    assert.deepEqual(ws.sent.filter((f) => f.type === 'MarkRead').map((f) => f.seq), [3, 4], 'read marks are not paused');
  });

  test('a RateLimited read mark pauses read marks only: no Join again, no pause of joins', async () => {
    const ws = connectedInGeneral();
    client.joinRoom('design', 4);
    client.markRead('general', 3);
    ws.deliver(errorFrame(5, { room: 'design', message: 'too many read marks', retry_after_ms: 200 }));
    client.markRead('general', 4);
    client.joinRoom('random');
    await delay(50);
    const sent = ws.sent.map((f) => `${f.type}:${f.room}`);
    assert.equal(sent.filter((f) => f === 'Join:design').length, 1, 'the Join of design is not sent again');
    assert.ok(sent.includes('Join:random'), 'joins are not paused');
    assert.equal(client.typing('general', true), true, 'typing is not paused');
    assert.deepEqual(ws.sent.filter((f) => f.type === 'MarkRead').map((f) => f.seq), [3], 'read marks are paused');
  });

  test('a read mark refused with NotMember goes out again after the room is joined again', async () => {
    const ws = connectedInGeneral();
    ws.deliver({ type: 'Joined', room: 'general', head_seq: 3, replay_from: 4 });
    client.markRead('general', 3);
    assert.deepEqual(ws.sent.at(-1), { type: 'MarkRead', room: 'general', seq: 3 });
    ws.deliver(errorFrame(3, { room: 'general', message: 'not a member of this room' }));
    await until(() => ws.sent.filter((f) => f.type === 'MarkRead').length === 2, 'the mark again');
    assert.deepEqual(ws.sent.slice(-2), [
      { type: 'Join', room: 'general', after_seq: 3 },
      { type: 'MarkRead', room: 'general', seq: 3 },
    ]);
  });

  test('a Switch refused with UnknownRoom changes nothing: the rooms it was to leave are still followed and live', async () => {
    const ws = connectedInGeneral();
    client.joinRoom('design', 4);
    ws.deliver({ type: 'Joined', room: 'general', head_seq: 0, replay_from: 1 });
    ws.deliver({ type: 'Joined', room: 'design', head_seq: 4, replay_from: 5 });
    client.switchRoom('secret');
    assert.deepEqual(ws.sent.at(-1), { type: 'Switch', room: 'secret', after_seq: null });
    const refused = waitFor(client, 'join_refused');
    ws.deliver(errorFrame(2, { room: 'secret', message: 'unknown room' }));
    await refused;
    assert.deepEqual(client.joinedRooms().sort(), ['design', 'general']);
    client.send('design', 'still here');
    assert.equal(ws.sent.at(-1).type, 'Send', 'design is live: a send goes out at once');
    // No Left is expected for them any more: one that comes is the server's own, and unfollows.
    const left = waitFor(client, 'left');
    ws.deliver({ type: 'Left', room: 'general' });
    assert.equal((await left).unprompted, true);
    assert.deepEqual(client.joinedRooms(), ['design']);
  });

  test('a Switch refused for the rate goes again as a Switch after retry_after_ms', async () => {
    const ws = connectedInGeneral();
    ws.deliver({ type: 'Joined', room: 'general', head_seq: 0, replay_from: 1 });
    client.switchRoom('design');
    ws.deliver(errorFrame(5, { room: 'design', message: 'too many joins and history requests', retry_after_ms: 40 }));
    await delay(90);
    assert.deepEqual(ws.sent.slice(-2), [
      { type: 'Switch', room: 'design', after_seq: null },
      { type: 'Switch', room: 'design', after_seq: null },
    ]);
    const left = waitFor(client, 'left');
    ws.deliver({ type: 'Left', room: 'general' });
    assert.equal((await left).unprompted, false, 'the Left of the second Switch was expected');
    assert.deepEqual(client.joinedRooms(), ['design']);
  });

  test('a Switch whose room lookup fails (Error 7, no Left) goes again as a Switch, and a room joined meanwhile is joined after it', async () => {
    const ws = connectedInGeneral();
    ws.deliver({ type: 'Joined', room: 'general', head_seq: 0, replay_from: 1 });
    client.switchRoom('secret');
    client.joinRoom('random');
    ws.deliver(errorFrame(7, { room: 'secret', message: 'room lookup failed: down', retry_after_ms: 40 }));
    await delay(90);
    const joins = ws.sent.filter((f) => f.type === 'Join' || f.type === 'Switch').map((f) => `${f.type}:${f.room}`);
    assert.deepEqual(joins.slice(-4), ['Switch:secret', 'Join:random', 'Switch:secret', 'Join:random']);
    // The second Switch leaves general and random (joined after the first): both expected once.
    const lefts = [];
    client.on('left', (l) => lefts.push([l.room, l.unprompted]));
    ws.deliver({ type: 'Left', room: 'general' });
    ws.deliver({ type: 'Left', room: 'random' });
    assert.deepEqual(lefts, [['general', false], ['random', false]]);
    assert.equal(client.expectedLeft.size, 0);
    assert.deepEqual(client.joinedRooms().sort(), ['random', 'secret']);
  });

  test('a Switch whose join fails after it left the other rooms (Error 7 after the Lefts) goes again as a Join', async () => {
    const ws = connectedInGeneral();
    ws.deliver({ type: 'Joined', room: 'general', head_seq: 0, replay_from: 1 });
    client.switchRoom('design');
    ws.deliver({ type: 'Left', room: 'general' });
    ws.deliver(errorFrame(7, { room: 'design', message: 'join failed: down', retry_after_ms: 40 }));
    await delay(90);
    assert.deepEqual(ws.sent.at(-1), { type: 'Join', room: 'design', after_seq: null });
    assert.deepEqual(client.joinedRooms(), ['design']);
  });

  test('a Switch refused with UnknownRoom gives back the rooms, snapshots and wanted read marks it dropped', async () => {
    const ws = connectedInGeneral();
    ws.deliver({ type: 'Joined', room: 'general', head_seq: 9, replay_from: 10 });
    ws.deliver(roomPresence('general', [alice]));
    client.markRead('general', 9);
    client.markRead('general', 12); // above what was sent: waits for the ReadState
    client.switchRoom('secret');
    ws.deliver(errorFrame(2, { room: 'secret', message: 'unknown room' }));
    assert.deepEqual(client.joinedRooms(), ['general']);
    assert.deepEqual(client.roomPresence('general')?.users, [alice]);
    await until(() => ws.sent.filter((f) => f.type === 'MarkRead').at(-1)?.seq === 12, 'the wanted mark goes out');
  });

  test('a RateLimited answer to a Join joins the room again after retry_after_ms', async () => {
    const ws = connectedInGeneral();
    client.joinRoom('design', 4);
    ws.deliver(errorFrame(5, { room: 'design', message: 'too many joins and history requests', retry_after_ms: 40 }));
    const n = ws.sent.filter((f) => f.type === 'Join').length;
    await delay(90);
    const joins = ws.sent.filter((f) => f.type === 'Join');
    assert.equal(joins.length, n + 1);
    assert.deepEqual(joins.at(-1), { type: 'Join', room: 'design', after_seq: 4 });
  });
});
