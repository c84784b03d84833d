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
import { spawn } from 'node:child_process';
import { mkdtemp, rm, access, readFile } from 'node:fs/promises';
import { constants as fsConstants } from 'node:fs';
import dgram from 'node:dgram';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { chromium } from 'playwright-core';

const repoRoot = fileURLToPath(new URL('../../', import.meta.url));
const serverBin = path.resolve(repoRoot, process.env.SOCKETCHAT_BIN || 'target/debug/socketchat');
const chromiumPath = process.env.CHROMIUM_PATH || '/usr/bin/chromium';
const WAIT_MS = 15_000;
const delay = (ms) => new Promise((r) => setTimeout(r, ms));

function freeTcpPort() {
  return new Promise((resolve, reject) => {
    const srv = net.createServer();
    srv.unref();
    srv.on('error', reject);
    srv.listen(0, '127.0.0.1', () => {
      const { port } = srv.address();
      srv.close(() => resolve(port));
    });
  });
}

function freeUdpPort() {
  return new Promise((resolve, reject) => {
    const sock = dgram.createSocket('udp4');
    sock.unref();
    sock.on('error', reject);
    sock.bind(0, '127.0.0.1', () => {
      const { port } = sock.address();
      sock.close(() => resolve(port));
    });
  });
}

const server = { proc: null, port: null, base: null, wtPort: null, dataDir: null, output: '', exited: null };

function serverLogTail(n = 6000) {
  return server.output.slice(-n);
}

let killOnExitInstalled = false;

/** Starts the server; a restart reuses its ports and data dir. */
async function startServer() {
  await access(serverBin, fsConstants.X_OK).catch(() => {
    throw new Error(`server binary not found at ${serverBin}: run \`cargo build --bin socketchat\` or set SOCKETCHAT_BIN`);
  });
  if (!server.dataDir) server.dataDir = await mkdtemp(path.join(os.tmpdir(), 'socketchat-wt-browser-'));
  if (!server.port) server.port = await freeTcpPort();
  if (!server.wtPort) server.wtPort = await freeUdpPort();
  const port = server.port;
  server.base = `http://127.0.0.1:${port}`;
  const env = { ...process.env, RUST_LOG: process.env.RUST_LOG || 'info' };
  for (const k of Object.keys(env)) if (k.startsWith('SOCKETCHAT_')) delete env[k];
  for (const k of ['DATABASE_URL', 'REDIS_URL', 'JWT_SECRET']) delete env[k];
  const args = ['serve', '--listen', `127.0.0.1:${port}`, '--wt-listen', `127.0.0.1:${server.wtPort}`, '--data-dir', server.dataDir];
  const proc = spawn(serverBin, args, { env, stdio: ['ignore', 'pipe', 'pipe'] });
  server.proc = proc;
  const keep = (chunk) => {
    server.output += chunk.toString();
    if (server.output.length > 200_000) server.output = server.output.slice(-100_000);
  };
  proc.stdout.on('data', keep);
  proc.stderr.on('data', keep);
  server.exited = new Promise((resolve) => proc.on('exit', (code, signal) => resolve({ code, signal })));
  if (!killOnExitInstalled) {
    process.on('exit', () => server.proc && server.proc.exitCode === null && server.proc.kill('SIGKILL'));
    killOnExitInstalled = true;
  }
  let exitInfo = null;
  server.exited.then((info) => {
    exitInfo = info;
  });
  const deadline = Date.now() + 30_000;
  let lastError = null;
  while (Date.now() < deadline) {
    if (exitInfo) throw new Error(`server exited early (${JSON.stringify(exitInfo)}):\n${server.output}`);
    try {
      const res = await fetch(`${server.base}/healthz`, { signal: AbortSignal.timeout(1000) });
      await res.arrayBuffer();
      if (res.status === 200) return;
      lastError = new Error(`/healthz answered ${res.status}`);
    } catch (err) {
      lastError = err;
    }
    await delay(100);
  }
  throw new Error(`server did not become healthy within 30 s (${lastError && lastError.message}):\n${server.output}`);
}

/** Stops the server process (SIGTERM, then SIGKILL after 5 s). */
async function killServer() {
  const proc = server.proc;
  if (proc && proc.exitCode === null && proc.signalCode === null) {
    proc.kill('SIGTERM');
    const done = await Promise.race([server.exited, delay(5000).then(() => null)]);
    if (!done) {
      proc.kill('SIGKILL');
      await server.exited;
    }
  }
}

async function stopServer() {
  await killServer();
  if (server.dataDir) await rm(server.dataDir, { recursive: true, force: true });
}

async function openUser(browser, name, query) {
  const context = await browser.newContext();
  const page = await context.newPage();
  const problems = [];
  page.on('pageerror', (err) => problems.push(`pageerror: ${err.message}`));
  page.on('console', (msg) => {
    const text = msg.text();
    // Failed HTTP requests are judged by URL below (the console line does not name it).
    if (/^Failed to load resource: the server responded with a status of/.test(text)) return;
    if (msg.type() === 'error' || /Content Security Policy|Refused to/i.test(text)) problems.push(`console ${msg.type()}: ${text}`);
  });
  page.on('response', (res) => {
    const url = new URL(res.url());
    // Before logging in, the page asks /api/auth/me and is answered 401: expected.
    if (res.status() >= 400 && !(url.pathname === '/api/auth/me' && res.status() === 401)) {
      problems.push(`HTTP ${res.status()} for ${res.request().method()} ${url.pathname}`);
    }
  });
  return { name, context, page, problems, query };
}

function waitFor(page, fn, arg, timeout = WAIT_MS) {
  return page.waitForFunction(fn, arg, { timeout, polling: 50 });
}

/** [{seq, author, text}] of the confirmed messages in #messages, in DOM order. */
function messagesOf(page) {
  return page.$$eval('#messages [data-seq]', (els) =>
    els.map((el) => ({
      seq: Number(el.dataset.seq),
      author: el.querySelector('.author').textContent,
      text: el.querySelector('.text').textContent,
    })),
  );
}

async function register(user) {
  const { page, name } = user;
  await page.goto(`${server.base}/${user.query}`);
  await page.waitForSelector('#register-form', { state: 'visible', timeout: WAIT_MS });
  await page.fill('#register-username', name);
  await page.fill('#register-email', `${name}@example.test`);
  await page.fill('#register-password', 'correct horse battery');
  await page.click('#register-form button[type="submit"]');
  await waitFor(page, (u) => document.querySelector('#me')?.textContent === u, name);
  await page.waitForSelector('#status[data-state="connected"]', { timeout: WAIT_MS });
  await page.waitForSelector('#channels [data-channel="general"][aria-current="true"]', { timeout: WAIT_MS });
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
    await startServer();
    browser = await chromium.launch({
      executablePath: chromiumPath,
      // QUIC stays on: WebTransport runs over HTTP/3.
      args: ['--no-sandbox', '--disable-gpu', '--no-first-run', '--disable-background-networking', '--disable-component-update', '--disable-sync'],
    });
    a = await openUser(browser, `wta_${suffix}`, '?test-hooks');
    b = await openUser(browser, `wsb_${suffix}`, '?transport=websocket&test-hooks');
  });

  after(async () => {
    try {
      if (browser) await browser.close();
    } finally {
      await stopServer();
    }
  });

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
      throw new Error(`A is not on WebTransport (#transport: ${await a.page.textContent('#transport')}, choice ${why}): ${err.message}\n${serverLogTail()}`);
    });
    assert.equal(await a.page.isVisible('#transport'), true);
    assert.equal(await a.page.evaluate(() => window.__socketchat.client.transport), 'webtransport');
    await waitFor(b.page, () => document.querySelector('#transport')?.textContent === 'WebSocket');
    assert.deepEqual(await b.page.evaluate(() => window.__socketchat.client.lastTransportChoice), { transport: 'websocket', why: 'WebSocket forced' });
    // Each sees the other online.
    await a.page.waitForSelector(`#online [data-user="${b.name}"]`, { timeout: WAIT_MS });
    await b.page.waitForSelector(`#online [data-user="${a.name}"]`, { timeout: WAIT_MS });
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
    assert.deepEqual(after.joins, [{ room: 'general', after_seq: before.highest, first: false, stale: false }], 'resumed with after_seq');

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
    const c = await openUser(browser, `fbc_${suffix}`, '?test-hooks');
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
    await killServer();
    await a.page.waitForSelector('#status[data-state="reconnecting"]', { timeout: WAIT_MS });
    const text = 'a while the server was down';
    await say(a, text);
    await a.page.waitForSelector('#messages .pending', { timeout: WAIT_MS });
    await startServer();
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
    });
    // Log out behind the UI's back: the server revokes the token and closes its connections.
    assert.equal(await page.evaluate(() => fetch('/api/auth/logout', { method: 'POST' }).then((r) => r.status)), 204);
    await page.waitForSelector('#login-form', { state: 'visible', timeout: WAIT_MS });
    assert.match(await page.textContent('#auth-notice'), /session has ended/);
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
  });

  test('no page errors and no CSP violations for A and B', () => {
    assert.deepEqual(a.problems, []);
    assert.deepEqual(b.problems, []);
  });
});
