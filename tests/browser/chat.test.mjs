// End-to-end: the real server binary + Chromium (playwright-core), two users in two browser
// contexts: messages, typing, history, reconnects, who is online in the room and when a user
// was last seen (protocol v2 presence). Run with `node --test tests/browser/` after
// `cargo build --bin socketchat`.
//
// Env: SOCKETCHAT_BIN (default target/debug/socketchat), CHROMIUM_PATH (default
// /usr/bin/chromium), SOCKETCHAT_WEB_FROM_DISK=1 serves the web/ files from the work tree
// instead of the copies embedded in the binary (UI work without rebuilding the server).
import { describe, test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { readFile } from 'node:fs/promises';
import path from 'node:path';

import { ASSETS, Server, WAIT_MS, launchBrowser, messagesOf, openUser, registerThroughUi, repoRoot, tearDown, waitFor, webFiles, webFromDisk } from './harness.mjs';

// This suite is the WebSocket one (webtransport.test.mjs covers WebTransport): the server runs
// with `--wt-listen off`.
const server = new Server({ tmpPrefix: 'socketchat-browser-', webTransport: false });

/** Resolves once `page`'s online list shows `count` and exactly `names` (in any order). */
function waitForOnline(page, count, names) {
  return waitFor(
    page,
    ([count, names]) => {
      const list = document.querySelector('#online');
      const shown = [...list.querySelectorAll('[data-user]')].map((el) => el.dataset.user).sort();
      return (
        list.dataset.count === String(count) &&
        document.querySelector('#online-heading')?.textContent === `Online — ${count}` &&
        JSON.stringify(shown) === JSON.stringify([...names].sort()) &&
        document.querySelector('#online-more').hidden
      );
    },
    [count, names],
  );
}

/** Hovers the first message author named `name` and resolves with the title it then shows. */
async function hoverAuthor(page, name, pattern) {
  const author = page.locator('#messages [data-seq] .author').filter({ hasText: new RegExp(`^${name}$`) }).first();
  await author.hover();
  await waitFor(
    page,
    ([name, source]) =>
      [...document.querySelectorAll('#messages [data-seq] .author')].some((el) => el.textContent === name && new RegExp(source).test(el.title)),
    [name, pattern.source],
  );
  return author.getAttribute('title');
}

describe('SocketChat in the browser', { timeout: 120_000 }, () => {
  let browser;
  const suffix = Math.random().toString(36).slice(2, 7);
  const aliceName = `alice_${suffix}`;
  const bobName = `bob_${suffix}`;
  const fromAlice = '<b>not bold</b> & <img src=x> from alice';
  const fromBob = 'hi alice, this is bob';
  let alice;
  let bob;

  before(async () => {
    await server.start();
    // A routed (fulfilled) page has no IP address and counts as public: let it reach 127.0.0.1.
    browser = await launchBrowser(webFromDisk ? ['--disable-features=LocalNetworkAccessChecks'] : []);
    alice = await openUser(browser, aliceName, { webFromDiskFor: webFromDisk ? server : null });
    bob = await openUser(browser, bobName, { webFromDiskFor: webFromDisk ? server : null });
  });

  after(() => tearDown(browser, server));

  test('the page is served with a CSP, and every file it loads with its type and no-cache', async () => {
    const res = await fetch(server.base + '/');
    assert.equal(res.status, 200);
    assert.match(res.headers.get('content-security-policy') || '', /default-src 'self'/);
    await res.arrayBuffer();
    assert.deepEqual(Object.values(ASSETS).sort(), await webFiles(), 'ASSETS (harness.mjs) lists every file of web/ the page loads');
    const types = { html: 'text/html; charset=utf-8', js: 'text/javascript; charset=utf-8', css: 'text/css; charset=utf-8' };
    for (const [asset, file] of Object.entries(ASSETS)) {
      const r = await fetch(server.base + asset);
      assert.equal(r.status, 200, asset);
      const served = await r.text();
      if (webFromDisk) continue;
      assert.equal(r.headers.get('content-type'), types[file.split('.').pop()], asset);
      assert.equal(r.headers.get('cache-control'), 'no-cache', asset);
      const onDisk = await readFile(path.join(repoRoot, 'web', file), 'utf8');
      assert.equal(served, onDisk, `${asset} differs from web/${file}: the binary embeds an old copy, rebuild it`);
    }
  });

  test('two users register through the UI and land in #general', async () => {
    await registerThroughUi(alice, server.base);
    await registerThroughUi(bob, server.base);
    for (const u of [alice, bob]) {
      await u.page.waitForSelector('#channels [data-channel="general"][aria-current="true"]', { timeout: WAIT_MS });
      assert.equal(await u.page.textContent('#transport'), 'WebSocket', `${u.name}: the server offers no WebTransport here`);
      for (const ch of ['general', 'engineering', 'design', 'support']) {
        assert.equal(await u.page.locator(`#channels [data-channel="${ch}"]`).count(), 1, `${u.name} sees #${ch}`);
      }
    }
  });

  test("each sees both in #general's online list, with the count", async () => {
    for (const u of [alice, bob]) await waitForOnline(u.page, 2, [aliceName, bobName]);
    assert.equal(await alice.page.getAttribute(`#online [data-user="${aliceName}"]`, 'class'), 'user me');
  });

  test('markup in a message is shown as literal text', async () => {
    await alice.page.fill('#message-input', fromAlice);
    await alice.page.press('#message-input', 'Enter');
    await waitFor(bob.page, (t) => [...document.querySelectorAll('#messages [data-seq] .text')].some((el) => el.textContent === t), fromAlice);
    for (const u of [alice, bob]) {
      await waitFor(u.page, (t) => [...document.querySelectorAll('#messages [data-seq] .text')].some((el) => el.textContent === t), fromAlice);
      assert.equal(await u.page.locator('#messages b').count(), 0, `${u.name}: no <b> element`);
      assert.equal(await u.page.locator('#messages img').count(), 0, `${u.name}: no <img> element`);
      const msgs = await messagesOf(u.page);
      const m = msgs.find((x) => x.text === fromAlice);
      assert.equal(m.author, aliceName);
    }
    assert.equal(await alice.page.locator('#message-input').inputValue(), '', 'composer cleared');
  });

  test('bob replies and both windows show the same messages in seq order', async () => {
    await bob.page.fill('#message-input', fromBob);
    await bob.page.press('#message-input', 'Enter');
    for (const u of [alice, bob]) {
      await waitFor(
        u.page,
        ([a, b]) => {
          const texts = [...document.querySelectorAll('#messages [data-seq] .text')].map((el) => el.textContent);
          return texts.includes(a) && texts.includes(b) && !document.querySelector('#messages .pending');
        },
        [fromAlice, fromBob],
      );
    }
    const a = await messagesOf(alice.page);
    const b = await messagesOf(bob.page);
    assert.deepEqual(a, b);
    const seqs = a.map((m) => m.seq);
    assert.deepEqual(seqs, [...seqs].sort((x, y) => x - y), 'ascending seq');
    assert.equal(new Set(seqs).size, seqs.length, 'no duplicates');
    const ia = a.findIndex((m) => m.text === fromAlice);
    const ib = a.findIndex((m) => m.text === fromBob);
    assert.ok(ia >= 0 && ib > ia, 'alice before bob');
    assert.deepEqual(
      a.slice(ia, ib + 1).map((m) => m.author),
      [aliceName, bobName],
    );
  });

  test("the online list is the room's: bob's switch takes him out of #general's list, and back", async () => {
    await waitForOnline(alice.page, 2, [aliceName, bobName]);
    await bob.page.click('#channels [data-channel="design"]');
    // No fixed sleep: RoomPresence comes within 1 s of the change (§ 6.8).
    await waitForOnline(alice.page, 1, [aliceName]);
    await waitForOnline(bob.page, 1, [bobName]);
    assert.equal(await bob.page.textContent('#room-name'), '# design');

    // Hovering a name in the list: alice is online (she is listed).
    await alice.page.hover(`#online [data-user="${aliceName}"]`);
    await waitFor(alice.page, (n) => document.querySelector(`#online [data-user="${n}"]`)?.title === 'online', aliceName);
    // Hovering bob's name on his message: online (in #design), asked over HTTP.
    assert.equal(await hoverAuthor(alice.page, bobName, /^online$/), 'online');

    await bob.page.click('#channels [data-channel="general"]');
    for (const u of [alice, bob]) await waitForOnline(u.page, 2, [aliceName, bobName]);
  });

  test("typing in alice's composer shows her name in bob's typing line", async () => {
    await alice.page.locator('#message-input').pressSequentially('still typ', { delay: 20 });
    await waitFor(bob.page, (n) => (document.querySelector('#typing')?.textContent || '').includes(n), aliceName);
    assert.ok(!(await alice.page.textContent('#typing')).includes(aliceName), 'no own typing indicator');
  });

  test('a reload fills the view from history', async () => {
    const before = await messagesOf(bob.page);
    await bob.page.reload();
    await bob.page.waitForSelector('#status[data-state="connected"]', { timeout: WAIT_MS });
    await waitFor(bob.page, (n) => document.querySelectorAll('#messages [data-seq]').length >= n, before.length);
    assert.deepEqual(await messagesOf(bob.page), before);
    await alice.page.waitForSelector(`#online [data-user="${bobName}"]`, { timeout: WAIT_MS });
  });

  test('scroll-back loads older pages without jumping, in seq order, without gaps', async () => {
    const page = alice.page;
    // Seed #engineering with 120 messages through a second connection of alice, using the
    // library itself (its RateLimited handling retries past the burst of 50).
    const seeded = await page.evaluate(async (n) => {
      const { ChatClient } = await import('/socketchat.js');
      const c = new ChatClient({ clientName: 'browser-test-seeder' });
      await new Promise((resolve, reject) => {
        c.on('welcome', resolve);
        c.on('status', (s) => s.state === 'disconnected' && reject(new Error(s.reason)));
        c.switchRoom('engineering');
        c.connect();
      });
      for (let i = 1; i <= n; i++) c.send('engineering', `seed ${i}`);
      const deadline = Date.now() + 30000;
      while (c.pendingSends().length && Date.now() < deadline) await new Promise((r) => setTimeout(r, 50));
      const left = c.pendingSends().length;
      c.disconnect();
      return left;
    }, 120);
    assert.equal(seeded, 0, 'all seed messages acknowledged');

    await page.click('#channels [data-channel="engineering"]');
    await page.waitForSelector('#channels [data-channel="engineering"][aria-current="true"]', { timeout: WAIT_MS });
    await waitFor(page, () => document.querySelectorAll('#messages [data-seq]').length >= 50);
    let msgs = await messagesOf(page);
    assert.equal(msgs.at(-1).seq, 120);
    assert.ok(
      await page.$eval('#messages', (el) => el.scrollHeight - el.scrollTop - el.clientHeight < 50),
      'a fresh view is scrolled to the newest message',
    );

    for (let round = 0; round < 5 && msgs.length < 120; round++) {
      const before = msgs.length;
      // Scroll to the top and remember where the first message sits.
      const firstSeq = await page.$eval('#messages', (el) => {
        el.scrollTop = 0;
        el.dispatchEvent(new Event('scroll'));
        return Number(el.querySelector('[data-seq]').dataset.seq);
      });
      await waitFor(page, (n) => document.querySelectorAll('#messages [data-seq]').length > n, before);
      await waitFor(page, () => !document.querySelector('#messages.loading'));
      // The message that was at the top is still where the reader left it.
      const offset = await page.$eval(
        '#messages',
        (el, seq) => el.querySelector(`[data-seq="${seq}"]`).getBoundingClientRect().top - el.getBoundingClientRect().top,
        firstSeq,
      );
      assert.ok(Math.abs(offset - (await page.$eval('#messages', (el) => parseFloat(getComputedStyle(el).paddingTop)))) < 30, `no jump (offset ${offset})`);
      msgs = await messagesOf(page);
    }
    assert.deepEqual(
      msgs.map((m) => m.seq),
      Array.from({ length: 120 }, (_, i) => i + 1),
    );
    // Rate-limited retries may store a few seeds out of send order; each is there exactly once.
    assert.deepEqual(
      msgs.map((m) => m.text).sort(),
      Array.from({ length: 120 }, (_, i) => `seed ${i + 1}`).sort(),
    );

    // Back to #general: Switch with after_seq; the cached view comes back without duplicates.
    await page.click('#channels [data-channel="general"]');
    await waitFor(page, (t) => [...document.querySelectorAll('#messages [data-seq] .text')].some((el) => el.textContent === t), fromBob);
    const general = await messagesOf(page);
    assert.equal(new Set(general.map((m) => m.seq)).size, general.length);
  });

  test('a send during a server outage stays pending and is delivered after the reconnect', async () => {
    const marks = [alice.problems.length, bob.problems.length];
    await server.kill();
    await alice.page.waitForSelector('#status[data-state="reconnecting"]', { timeout: WAIT_MS });
    assert.match(await alice.page.textContent('#status'), /Reconnecting in \d+s/);
    const text = 'sent while the server was down';
    await alice.page.fill('#message-input', text);
    await alice.page.press('#message-input', 'Enter');
    await alice.page.waitForSelector('#messages .pending', { timeout: WAIT_MS });
    await server.start();
    for (const u of [alice, bob]) {
      await u.page.waitForSelector('#status[data-state="connected"]', { timeout: 30_000 });
      await waitFor(u.page, (t) => [...document.querySelectorAll('#messages [data-seq] .text')].some((el) => el.textContent === t), text);
    }
    assert.equal(await alice.page.locator('#messages .pending').count(), 0);
    const a = await messagesOf(alice.page);
    assert.equal(a.filter((m) => m.text === text).length, 1, 'stored once, shown once');
    assert.deepEqual(await messagesOf(bob.page), a);
    // Connection failures while the server was down are expected console noise.
    alice.problems.splice(marks[0]);
    bob.problems.splice(marks[1]);
  });

  test("closing bob's page removes him from alice's online list; his name then says when he was last seen", async () => {
    await waitForOnline(alice.page, 2, [aliceName, bobName]);
    await bob.page.close();
    await waitForOnline(alice.page, 1, [aliceName]);
    const title = await hoverAuthor(alice.page, bobName, /^last seen /);
    assert.match(title, /^last seen (just now|\d+ min ago)$/);
  });

  test('logout returns to the login form; logging in again restores the session', async () => {
    await alice.page.click('#logout');
    await alice.page.waitForSelector('#login-form', { state: 'visible', timeout: WAIT_MS });
    assert.equal(await alice.page.textContent('#me'), '');
    await alice.page.fill('#login-email', `${aliceName}@example.test`);
    await alice.page.fill('#login-password', 'wrong password!');
    await alice.page.click('#login-form button[type="submit"]');
    await waitFor(alice.page, () => (document.querySelector('#login-form [data-error-for="form"]')?.textContent || '') !== '');
    await alice.page.fill('#login-password', 'correct horse battery');
    await alice.page.click('#login-form button[type="submit"]');
    await waitFor(alice.page, (u) => document.querySelector('#me')?.textContent === u, aliceName);
    await alice.page.waitForSelector('#status[data-state="connected"]', { timeout: WAIT_MS });
    await waitFor(alice.page, (t) => [...document.querySelectorAll('#messages [data-seq] .text')].some((el) => el.textContent === t), fromBob);
  });

  test('a client speaking protocol v1 is refused with GoAway 4502 and does not reconnect', async () => {
    const result = await alice.page.evaluate(async () => {
      const { ChatClient } = await import('/socketchat.js');
      // The library itself, but saying version 1 in its Hello.
      class OldClient extends ChatClient {
        _sendFrame(frame) {
          return super._sendFrame(frame.type === 'Hello' ? { ...frame, version: 1 } : frame);
        }
      }
      const c = new OldClient({ clientName: 'browser-test-v1', minDelayMs: 50, maxDelayMs: 100 });
      const states = [];
      const done = new Promise((resolve) => {
        c.on('status', (s) => {
          states.push(s.state);
          if (s.state === 'disconnected') resolve(s);
        });
      });
      c.connect();
      const end = await done;
      await new Promise((r) => setTimeout(r, 500));
      return { end, states };
    });
    assert.equal(result.end.code, 4502);
    assert.equal(result.end.terminal, true);
    assert.match(result.end.reason, /protocol version 1 is not supported; this server speaks 2/);
    assert.deepEqual(result.states, ['connecting', 'disconnected'], 'no reconnect');
  });

  test('no page errors and no CSP violations', () => {
    // A wrong password is answered 401, which Chromium logs as a failed resource load.
    const real = (u) => u.problems.filter((p) => !/status of 401/.test(p));
    assert.deepEqual(real(alice), []);
    assert.deepEqual(real(bob), []);
  });
});
