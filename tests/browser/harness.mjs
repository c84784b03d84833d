// Shared harness of the browser suites (chat.test.mjs, webtransport.test.mjs): the real server
// binary on free ports with a throwaway data dir, headless Chromium, users in their own browser
// contexts with their console problems collected, and a few page helpers. Not a test file itself
// (its name matches none of node's test patterns, so `node --test tests/browser/` skips it).
//
// Env: SOCKETCHAT_BIN (default target/debug/socketchat), CHROMIUM_PATH (default
// /usr/bin/chromium), SOCKETCHAT_WEB_FROM_DISK=1 (read by the suites that support it: serve
// web/*.{html,js,css} from the work tree instead of the copies embedded in the binary).
import { spawn } from 'node:child_process';
import { mkdtemp, rm, access, readFile, readdir } from 'node:fs/promises';
import { constants as fsConstants } from 'node:fs';
import dgram from 'node:dgram';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { chromium } from 'playwright-core';

export const repoRoot = fileURLToPath(new URL('../../', import.meta.url));
export const serverBin = path.resolve(repoRoot, process.env.SOCKETCHAT_BIN || 'target/debug/socketchat');
export const chromiumPath = process.env.CHROMIUM_PATH || '/usr/bin/chromium';
export const WAIT_MS = 15_000;
export const webFromDisk = process.env.SOCKETCHAT_WEB_FROM_DISK === '1';
/**
 * The assets the server embeds (src/http/web.rs ASSETS): URL path → file in web/. The server's
 * unit test fails when a file of web/ is not embedded; chat.test.mjs fails when it is not here.
 */
export const ASSETS = {
  '/': 'index.html',
  '/style.css': 'style.css',
  '/app.js': 'app.js',
  '/socketchat.js': 'socketchat.js',
  '/socketchat/backoff.js': 'socketchat/backoff.js',
  '/socketchat/client.js': 'socketchat/client.js',
  '/socketchat/codec.js': 'socketchat/codec.js',
  '/socketchat/codes.js': 'socketchat/codes.js',
  '/socketchat/frames.js': 'socketchat/frames.js',
  '/socketchat/framing.js': 'socketchat/framing.js',
  '/socketchat/ids.js': 'socketchat/ids.js',
  '/socketchat/limits.js': 'socketchat/limits.js',
  '/socketchat/posts.js': 'socketchat/posts.js',
  '/socketchat/rate.js': 'socketchat/rate.js',
  '/socketchat/transport.js': 'socketchat/transport.js',
  '/socketchat/transport-websocket.js': 'socketchat/transport-websocket.js',
  '/socketchat/transport-webtransport.js': 'socketchat/transport-webtransport.js',
  '/ui/composer.js': 'ui/composer.js',
  '/ui/files.js': 'ui/files.js',
  '/ui/links.js': 'ui/links.js',
  '/ui/message-list.js': 'ui/message-list.js',
  '/ui/rooms.js': 'ui/rooms.js',
  '/ui/timeline.js': 'ui/timeline.js',
};

const CONTENT_TYPES = { '.html': 'text/html; charset=utf-8', '.js': 'text/javascript; charset=utf-8', '.css': 'text/css; charset=utf-8' };

/** Files under web/ that the page loads (all but the Node-only test/ and test-support/), sorted. */
export async function webFiles(dir = '') {
  const out = [];
  for (const entry of await readdir(path.join(repoRoot, 'web', dir), { withFileTypes: true })) {
    const rel = dir ? `${dir}/${entry.name}` : entry.name;
    if (entry.isDirectory()) {
      if (rel !== 'test' && rel !== 'test-support') out.push(...(await webFiles(rel)));
    } else if (Object.hasOwn(CONTENT_TYPES, path.extname(entry.name))) {
      out.push(rel);
    }
  }
  return out.sort();
}

export const delay = (ms) => new Promise((r) => setTimeout(r, ms));

export function freeTcpPort() {
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

export function freeUdpPort() {
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

/**
 * The server process, its base URL and its output (printed when something fails).
 *
 * `tmpPrefix` names its data dir under the OS temp dir. `webTransport`: false starts it with
 * `--wt-listen off` (otherwise it would take the fixed default UDP port 4433); true gives it a
 * free UDP port (`wtPort`) on 127.0.0.1.
 */
export class Server {
  /** `args`: more command-line options for the server (e.g. a tighter limit to test). */
  constructor({ tmpPrefix, webTransport = false, args = [] }) {
    this.tmpPrefix = tmpPrefix;
    this.webTransport = webTransport;
    this.args = args;
    this.proc = null;
    this.port = null;
    this.base = null;
    this.wtPort = null;
    this.dataDir = null;
    this.output = '';
    this.exited = null;
    this.killOnExitInstalled = false;
  }

  logTail(n = 6000) {
    return this.output.slice(-n);
  }

  /** Starts the server; a restart reuses its ports and data dir. */
  async start() {
    await access(serverBin, fsConstants.X_OK).catch(() => {
      throw new Error(`server binary not found at ${serverBin}: run \`cargo build --bin socketchat\` or set SOCKETCHAT_BIN`);
    });
    if (!this.dataDir) this.dataDir = await mkdtemp(path.join(os.tmpdir(), this.tmpPrefix));
    if (!this.port) this.port = await freeTcpPort();
    if (this.webTransport && !this.wtPort) this.wtPort = await freeUdpPort();
    const port = this.port;
    this.base = `http://127.0.0.1:${port}`;
    // Nothing from the caller's environment configures the server but the arguments below.
    const env = { ...process.env, RUST_LOG: process.env.RUST_LOG || 'info' };
    for (const k of Object.keys(env)) if (k.startsWith('SOCKETCHAT_')) delete env[k];
    for (const k of ['DATABASE_URL', 'REDIS_URL', 'JWT_SECRET']) delete env[k];
    const wtListen = this.webTransport ? `127.0.0.1:${this.wtPort}` : 'off';
    const args = ['serve', '--listen', `127.0.0.1:${port}`, '--wt-listen', wtListen, '--data-dir', this.dataDir, ...this.args];
    const proc = spawn(serverBin, args, { env, stdio: ['ignore', 'pipe', 'pipe'] });
    this.proc = proc;
    const keep = (chunk) => {
      this.output += chunk.toString();
      if (this.output.length > 200_000) this.output = this.output.slice(-100_000);
    };
    proc.stdout.on('data', keep);
    proc.stderr.on('data', keep);
    this.exited = new Promise((resolve) => proc.on('exit', (code, signal) => resolve({ code, signal })));
    if (!this.killOnExitInstalled) {
      // Should the test process end without running `after` (Ctrl-C), take the server along.
      process.on('exit', () => this.proc && this.proc.exitCode === null && this.proc.kill('SIGKILL'));
      this.killOnExitInstalled = true;
    }
    let exitInfo = null;
    this.exited.then((info) => {
      exitInfo = info;
    });

    const deadline = Date.now() + 30_000;
    let lastError = null;
    while (Date.now() < deadline) {
      if (exitInfo) throw new Error(`server exited early (${JSON.stringify(exitInfo)}):\n${this.output}`);
      try {
        const res = await fetch(`${this.base}/healthz`, { signal: AbortSignal.timeout(1000) });
        await res.arrayBuffer();
        if (res.status === 200) return;
        lastError = new Error(`/healthz answered ${res.status}`);
      } catch (err) {
        lastError = err;
      }
      await delay(100);
    }
    throw new Error(`server did not become healthy within 30 s (${lastError && lastError.message}):\n${this.output}`);
  }

  /** Stops the server process (SIGTERM, then SIGKILL after 5 s). */
  async kill() {
    const proc = this.proc;
    if (proc && proc.exitCode === null && proc.signalCode === null) {
      proc.kill('SIGTERM');
      const done = await Promise.race([this.exited, delay(5000).then(() => null)]);
      if (!done) {
        proc.kill('SIGKILL');
        await this.exited;
      }
    }
  }

  /** Stops the server and removes its data dir. */
  async stop() {
    try {
      await this.kill();
    } finally {
      if (this.dataDir) await rm(this.dataDir, { recursive: true, force: true });
    }
  }
}

/** Headless Chromium with the flags both suites use, plus `extraArgs`. */
export function launchBrowser(extraArgs = []) {
  return chromium.launch({
    executablePath: chromiumPath,
    args: ['--no-sandbox', '--disable-gpu', '--no-first-run', '--disable-background-networking', '--disable-component-update', '--disable-sync', ...extraArgs],
  });
}

/** The `after` hook of a suite: closes the browser (if any), then stops the server, whatever fails. */
export async function tearDown(browser, server) {
  try {
    if (browser) await browser.close();
  } finally {
    await server.stop();
  }
}

/**
 * A user in its own browser context, with its console problems collected.
 *
 * Options: `query` is kept on the user for `registerThroughUi` (e.g. '?transport=websocket');
 * `webFromDiskFor` (a Server) serves the ASSETS of that server from web/ on disk;
 * `httpProblems` judges failed HTTP requests by URL (a 401 for /api/auth/me before logging in is
 * expected) instead of by Chromium's console line, which does not name the URL;
 * `contextOptions` go to `browser.newContext` (e.g. a phone's viewport).
 */
export async function openUser(browser, name, { query = '', webFromDiskFor = null, httpProblems = false, contextOptions = {} } = {}) {
  const context = await browser.newContext(contextOptions);
  if (webFromDiskFor) {
    const server = webFromDiskFor;
    await context.route(
      (url) => url.origin === server.base && Object.hasOwn(ASSETS, url.pathname),
      async (route) => {
        const pathname = new URL(route.request().url()).pathname;
        const file = ASSETS[pathname];
        const body = await readFile(path.join(repoRoot, 'web', file), 'utf8');
        const response = await route.fetch(); // keep the server's headers (CSP)
        if (response.ok()) {
          await route.fulfill({ response, body });
        } else {
          // A binary older than web/ has no route for a newly added module: serve it anyway,
          // with the headers the server gives its assets (the page's CSP is the document's).
          await response.dispose();
          const headers = { 'content-type': CONTENT_TYPES[path.extname(file)], 'cache-control': 'no-cache' };
          await route.fulfill({ status: 200, headers, body });
        }
      },
    );
  }
  const page = await context.newPage();
  const problems = [];
  page.on('pageerror', (err) => problems.push(`pageerror: ${err.message}`));
  page.on('console', (msg) => {
    const text = msg.text();
    if (httpProblems && /^Failed to load resource: the server responded with a status of/.test(text)) return;
    if (msg.type() === 'error' || /Content Security Policy|Refused to/i.test(text)) problems.push(`console ${msg.type()}: ${text}`);
  });
  if (httpProblems) {
    page.on('response', (res) => {
      const url = new URL(res.url());
      if (res.status() >= 400 && !(url.pathname === '/api/auth/me' && res.status() === 401)) {
        problems.push(`HTTP ${res.status()} for ${res.request().method()} ${url.pathname}`);
      }
    });
  }
  return { name, context, page, problems, query };
}

export function waitFor(page, fn, arg, timeout = WAIT_MS) {
  return page.waitForFunction(fn, arg, { timeout, polling: 50 });
}

/** [{seq, author, text}] of the confirmed messages in #messages, in DOM order. */
export function messagesOf(page) {
  return page.$$eval('#messages [data-seq]', (els) =>
    els.map((el) => ({
      seq: Number(el.dataset.seq),
      author: el.querySelector('.author').textContent,
      text: el.querySelector('.text').textContent,
    })),
  );
}

/** Registers `user` (as `user.name`) through the form on `${base}/${user.query}`; waits until connected. */
export async function registerThroughUi(user, base) {
  const { page, name } = user;
  await page.goto(`${base}/${user.query}`);
  await page.waitForSelector('#register-form', { state: 'visible', timeout: WAIT_MS });
  await page.fill('#register-username', name);
  await page.fill('#register-email', `${name}@example.test`);
  await page.fill('#register-password', 'correct horse battery');
  await page.click('#register-form button[type="submit"]');
  await waitFor(page, (u) => document.querySelector('#me')?.textContent === u, name);
  await page.waitForSelector('#status[data-state="connected"]', { timeout: WAIT_MS });
}

/** Whether `selector`'s box lies entirely inside the viewport (and is not empty). */
export function fullyInViewport(page, selector) {
  return page.$eval(selector, (el) => {
    const r = el.getBoundingClientRect();
    return r.width > 0 && r.height > 0 && r.left >= 0 && r.top >= 0 && r.right <= window.innerWidth && r.bottom <= window.innerHeight;
  });
}

/** Resolves once `selector`'s box lies entirely inside the viewport (a drawer slides in). */
export function waitInViewport(page, selector) {
  return waitFor(
    page,
    (sel) => {
      const el = document.querySelector(sel);
      const r = el && el.getBoundingClientRect();
      return !!r && r.width > 0 && r.height > 0 && r.left >= 0 && r.top >= 0 && r.right <= window.innerWidth && r.bottom <= window.innerHeight;
    },
    selector,
  );
}
