// End-to-end over WebTransport: the real server binary with `--wt-listen`, Chromium with QUIC
// on (no `--disable-quic`). User A connects over WebTransport (HTTP/3, self-signed certificate
// pinned by hash), user B is forced to WebSocket (`?transport=websocket`); they talk both ways
// and see the same messages in the same order. Then A's WebTransport session is dropped from
// the page and A resumes (Join with after_seq) and receives what B sent meanwhile, without gaps
// or duplicates. A third user whose browser is given a wrong certificate hash falls back to
// WebSocket. Then a server restart (a send made meanwhile is delivered once, A comes back over
// WebTransport), a revoked token (GoAway 4505 over WebTransport) sends A back to the login form,
// and closing A's page takes A offline.
//
// Run with `node --test tests/browser/` after `cargo build --bin socketchat`.
// Env: SOCKETCHAT_BIN (default target/debug/socketchat), CHROMIUM_PATH (default
// /usr/bin/chromium).
import { describe, test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { readFile } from 'node:fs/promises';
import path from 'node:path';

import { Server, WAIT_MS, launchBrowser, messagesOf, openUser, registerThroughUi, repoRoot, tearDown, waitFor } from './harness.mjs';

const server = new Server({ tmpPrefix: 'socketchat-wt-browser-', webTransport: true });

/** Failed HTTP requests are judged by URL (the console line does not name it). */
const userOptions = (query) => ({ query, httpProblems: true });

async function register(user) {
  await registerThroughUi(user, server.base);
  await user.page.waitForSelector('#channels [data-channel="general"][aria-current="true"]', { timeout: WAIT_MS });
}

async function say(user, text) {
  await user.page.fill('#message-input', text);
  await user.page.press('#message-input', 'Enter');
}

/** Waits until every text is shown as a confirmed message and nothing is pending. */
function waitForTexts(user, texts, timeout = WAIT_MS) {
  return waitFor(
    user.page,
    (want) => {
      const shown = new Set([...document.querySelectorAll('#messages [data-seq] .text')].map((el) => el.textContent));
      return want.every((t) => shown.has(t)) && !document.querySelector('#messages .pending');
    },
    texts,
    timeout,
  );
}

function assertContiguous(msgs, what) {
  const seqs = msgs.map((m) => m.seq);
  assert.equal(new Set(seqs).size, seqs.length, `${what}: no duplicates (${seqs})`);
  for (let i = 1; i < seqs.length; i++) assert.equal(seqs[i], seqs[i - 1] + 1, `${what}: no gap after seq ${seqs[i - 1]} (${seqs})`);
}

describe('SocketChat over WebTransport in the browser', { timeout: 120_000 }, () => {
  let browser;
  const suffix = Math.random().toString(36).slice(2, 7);
  let a; // WebTransport
  let b; // WebSocket (forced)
  const sent = [];

  before(async () => {
    await server.start();
    // QUIC stays on: WebTransport runs over HTTP/3.
    browser = await launchBrowser();
    a = await openUser(browser, `wta_${suffix}`, userOptions('?test-hooks'));
    b = await openUser(browser, `wsb_${suffix}`, userOptions('?transport=websocket&test-hooks'));
  });

  after(() => tearDown(browser, server));

  test('the server offers WebTransport with a pinned certificate and allows it in the CSP', async () => {
    const res = await fetch(`${server.base}/api/transport`);
    assert.equal(res.status, 200);
    const info = await res.json();
    assert.equal(info.webtransport, `https://127.0.0.1:${server.wtPort}/wt`, `server answered ${JSON.stringify(info)}`);
    assert.equal(info.cert_hashes.length, 1);
    assert.equal(info.cert_hashes[0].algorithm, 'sha-256');
    assert.equal(Buffer.from(info.cert_hashes[0].value, 'base64').length, 32);
    const page = await fetch(`${server.base}/`);
    await page.arrayBuffer();
    const csp = page.headers.get('content-security-policy') || '';
    assert.match(csp, new RegExp(`connect-src 'self' https://127\\.0\\.0\\.1:${server.wtPort}[; ]`));
    // The assets served are the ones in web/ (the binary embeds them at build time).
    for (const file of ['socketchat.js', 'app.js', 'index.html']) {
      const r = await fetch(`${server.base}/${file === 'index.html' ? '' : file}`);
      const onDisk = await readFile(path.join(repoRoot, 'web', file), 'utf8');
      assert.equal(await r.text(), onDisk, `web/${file} differs from the copy embedded in the binary: rebuild it`);
    }
  });

  test('A connects over WebTransport, B over WebSocket', async () => {
    await register(a);
    await register(b);
    await waitFor(a.page, () => document.querySelector('#transport')?.textContent === 'WebTransport').catch(async (err) => {
      const why = await a.page.evaluate(() => JSON.stringify(window.__socketchat.client.lastTransportChoice));
      throw new Error(`A is not on WebTransport (#transport: ${await a.page.textContent('#transport')}, choice ${why}): ${err.message}\n${server.logTail()}`);
    });
    assert.equal(await a.page.isVisible('#transport'), true);
    assert.equal(await a.page.evaluate(() => window.__socketchat.client.transport), 'webtransport');
    await waitFor(b.page, () => document.querySelector('#transport')?.textContent === 'WebSocket');
    assert.deepEqual(await b.page.evaluate(() => window.__socketchat.client.lastTransportChoice), { transport: 'websocket', why: 'WebSocket forced' });
    // Each sees both online in #general (RoomPresence over either transport).
    for (const u of [a, b]) {
      await waitFor(
        u.page,
        (names) => document.querySelector('#online')?.dataset.count === '2' && names.every((n) => document.querySelector(`#online [data-user="${n}"]`)),
        [a.name, b.name],
      );
    }
  });

  test('messages go both ways and both see the same order', async () => {
    for (const [user, text] of [
      [a, 'a1 over WebTransport'],
      [b, 'b1 over WebSocket'],
      [a, 'a2 <i>still</i> WebTransport'],
      [b, 'b2 héllo 👋'],
    ]) {
      await say(user, text);
      sent.push(text);
      await waitForTexts(a, [text]);
      await waitForTexts(b, [text]);
    }
    // A burst from both sides at once.
    const burst = [];
    for (let i = 1; i <= 5; i++) burst.push([a, `a burst ${i}`], [b, `b burst ${i}`]);
    await Promise.all([
      (async () => {
        for (const [u, t] of burst.filter(([u]) => u === a)) await say(u, t);
      })(),
      (async () => {
        for (const [u, t] of burst.filter(([u]) => u === b)) await say(u, t);
      })(),
    ]);
    sent.push(...burst.map(([, t]) => t));
    await waitForTexts(a, sent);
    await waitForTexts(b, sent);
    const ma = await messagesOf(a.page);
    const mb = await messagesOf(b.page);
    assert.deepEqual(ma, mb, 'same messages, same order');
    assertContiguous(ma, 'A');
    assert.deepEqual(ma.map((m) => m.text), sent.slice(0, 4).concat(ma.slice(4).map((m) => m.text)));
    assert.deepEqual([...ma.slice(4).map((m) => m.text)].sort(), burst.map(([, t]) => t).sort());
    assert.equal(ma.find((m) => m.text === 'a1 over WebTransport').author, a.name);
    assert.equal(ma.find((m) => m.text === 'b1 over WebSocket').author, b.name);
    assert.equal(await a.page.locator('#messages i').count(), 0, 'markup shown as text');
  });

  test("A's WebTransport session drops; A resumes over WebTransport and gets what B sent meanwhile", async () => {
    const page = a.page;
    const before = await page.evaluate(() => {
      const c = window.__socketchat.client;
      window.__joins = [];
      window.__welcomes = 0;
      c.on('joined', (j) => window.__joins.push({ room: j.room, after_seq: j.after_seq, first: j.first, stale: j.stale }));
      c.on('welcome', () => (window.__welcomes += 1));
      return { highest: c.highestSeq('general'), connection: c.welcome.connection_id };
    });

    // Hold A's reconnect (its GET /api/transport) until B's messages are stored.
    let release;
    const gate = new Promise((r) => (release = r));
    await a.context.route('**/api/transport', async (route) => {
      await gate;
      await route.continue();
    });

    assert.equal(await page.evaluate(() => window.__socketchat.client.dropConnection()), true);
    await page.waitForSelector('#status:not([data-state="connected"])', { timeout: WAIT_MS });
    await waitFor(page, () => document.querySelector('#transport')?.dataset.stale !== undefined);

    const meanwhile = ['b while A was away 1', 'b while A was away 2', 'b while A was away 3'];
    for (const t of meanwhile) await say(b, t);
    await waitForTexts(b, meanwhile);
    release();

    await page.waitForSelector('#status[data-state="connected"]', { timeout: WAIT_MS });
    await waitForTexts(a, meanwhile);
    await a.context.unroute('**/api/transport');

    const after = await page.evaluate(() => ({
      transport: window.__socketchat.client.transport,
      connection: window.__socketchat.client.welcome.connection_id,
      joins: window.__joins,
      welcomes: window.__welcomes,
    }));
    assert.equal(after.transport, 'webtransport', 'reconnected over WebTransport');
    assert.equal(await page.textContent('#transport'), 'WebTransport');
    assert.notEqual(after.connection, before.connection, 'a new connection');
    assert.equal(after.welcomes, 1);
    // Every room of A's list is joined again (for its badge), the open one first; #general
    // resumes from the highest seq A had.
    assert.deepEqual(after.joins[0], { room: 'general', after_seq: before.highest, first: false, stale: false }, 'resumed with after_seq');
    assert.deepEqual(after.joins.map((j) => j.room).sort(), ['design', 'engineering', 'general', 'support']);
    assert.ok(after.joins.every((j) => !j.first && !j.stale), 'each from the seq it had');

    const ma = await messagesOf(page);
    const mb = await messagesOf(b.page);
    assert.deepEqual(ma, mb, 'A and B agree after the resume');
    assertContiguous(ma, 'A after resume');
    assert.deepEqual(ma.slice(-3).map((m) => m.text), meanwhile);
    assert.equal(ma.filter((m) => meanwhile.includes(m.text)).length, 3, 'each once');

    // And the resumed session works both ways.
    await say(a, 'a after resume');
    await waitForTexts(b, ['a after resume']);
    await waitForTexts(a, ['a after resume']);
  });

  test('a browser given a wrong certificate hash falls back to WebSocket', async () => {
    const c = await openUser(browser, `fbc_${suffix}`, userOptions('?test-hooks'));
    try {
      await c.context.route('**/api/transport', async (route) => {
        const response = await route.fetch();
        const info = await response.json();
        const wrong = Buffer.alloc(32, 7).toString('base64');
        await route.fulfill({ response, json: { ...info, cert_hashes: [{ algorithm: 'sha-256', value: wrong }] } });
      });
      const started = Date.now();
      await register(c);
      await waitFor(c.page, () => document.querySelector('#transport')?.textContent === 'WebSocket');
      const choice = await c.page.evaluate(() => window.__socketchat.client.lastTransportChoice);
      assert.equal(choice.transport, 'websocket');
      assert.match(choice.why, /WebTransport failed/);
      assert.ok(Date.now() - started < 12_000, 'the fallback does not wait long');
      await waitForTexts(c, ['a after resume']);
      assert.match(await c.page.getAttribute('#transport', 'title'), /WebTransport failed/);
    } finally {
      await c.context.close();
    }
  });

  test('a server restart: a send made while it is down is delivered once; A is back on WebTransport', async () => {
    const marks = [a.problems.length, b.problems.length];
    await server.kill();
    await a.page.waitForSelector('#status[data-state="reconnecting"]', { timeout: WAIT_MS });
    const text = 'a while the server was down';
    await say(a, text);
    await a.page.waitForSelector('#messages .pending', { timeout: WAIT_MS });
    await server.start();
    for (const u of [a, b]) {
      await u.page.waitForSelector('#status[data-state="connected"]', { timeout: 30_000 });
      await waitForTexts(u, [text], 30_000);
    }
    const ma = await messagesOf(a.page);
    assert.equal(ma.filter((m) => m.text === text).length, 1, 'stored once, shown once');
    assert.deepEqual(await messagesOf(b.page), ma);
    assertContiguous(ma, 'A after the restart');
    const choice = await a.page.evaluate(() => window.__socketchat.client.lastTransportChoice);
    assert.equal(await a.page.textContent('#transport'), 'WebTransport', `A reconnected over ${JSON.stringify(choice)}`);
    assert.equal(await b.page.textContent('#transport'), 'WebSocket');
    // Failed connection attempts while the server was down are expected console noise.
    a.problems.splice(marks[0]);
    b.problems.splice(marks[1]);
  });

  test("revoking A's token ends the WebTransport session with GoAway 4505: A must log in again", async () => {
    const page = a.page;
    await page.evaluate(() => {
      window.__unauthorized = null;
      window.__socketchat.client.on('unauthorized', (u) => (window.__unauthorized = u));
      // A message written while sends wait (as after a RateLimited): still unsent at the end.
      window.__socketchat.client.sendPausedUntil = Date.now() + 60_000;
    });
    await page.fill('#message-input', 'written as the session ends');
    await page.press('#message-input', 'Enter');
    // Log out behind the UI's back: the server revokes the token and closes its connections.
    assert.equal(await page.evaluate(() => fetch('/api/auth/logout', { method: 'POST' }).then((r) => r.status)), 204);
    await page.waitForSelector('#login-form', { state: 'visible', timeout: WAIT_MS });
    assert.match(await page.textContent('#auth-notice'), /session has ended; 1 message you wrote was not sent/);
    // A room-list fetch the page had under way (it fetches the list after every reconnect)
    // may be answered 401 once the token is revoked: expected, not a problem of the page.
    for (let i = a.problems.length - 1; i >= 0; i--) if (a.problems[i] === 'HTTP 401 for GET /api/channels') a.problems.splice(i, 1);
    assert.deepEqual(
      await page.evaluate(() => window.__unauthorized),
      { code: 4505, reason: 'token revoked' },
      'the GoAway code, read before the session closed',
    );

    await page.fill('#login-email', `${a.name}@example.test`);
    await page.fill('#login-password', 'correct horse battery');
    await page.click('#login-form button[type="submit"]');
    await page.waitForSelector('#status[data-state="connected"]', { timeout: WAIT_MS });
    await waitFor(page, () => document.querySelector('#transport')?.textContent === 'WebTransport');
    await waitForTexts(a, ['a while the server was down']);
  });

  test("closing A's page takes A out of B's online list", async () => {
    await b.page.waitForSelector(`#online [data-user="${a.name}"]`, { timeout: WAIT_MS });
    await a.page.close();
    await b.page.waitForSelector(`#online [data-user="${a.name}"]`, { state: 'detached', timeout: WAIT_MS });
    await waitFor(b.page, () => document.querySelector('#online')?.dataset.count === '1');
  });

  test('no page errors and no CSP violations for A and B', () => {
    assert.deepEqual(a.problems, []);
    assert.deepEqual(b.problems, []);
  });
});
