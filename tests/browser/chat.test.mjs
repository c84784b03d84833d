// End-to-end: the real server binary + Chromium (playwright-core), two users in two browser
// contexts: messages, typing, history, reconnects, who is online in the room and when a user
// was last seen, the phone layout. The v3 features (channels, direct conversations, unread
// badges, edits, files) are in rooms.test.mjs. Run with `node --test tests/browser/` after
// `cargo build --bin socketchat`.
//
// Env: SOCKETCHAT_BIN (default target/debug/socketchat), CHROMIUM_PATH (default
// /usr/bin/chromium), SOCKETCHAT_WEB_FROM_DISK=1 serves the web/ files from the work tree
// instead of the copies embedded in the binary (UI work without rebuilding the server).
import { describe, test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { readFile } from 'node:fs/promises';
import path from 'node:path';

import { ASSETS, Server, WAIT_MS, fullyInViewport, launchBrowser, messagesOf, openUser, registerThroughUi, repoRoot, tearDown, waitFor, waitInViewport, webFiles, webFromDisk } from './harness.mjs';

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

/** Resolves once `page` shows a confirmed message whose text is exactly `text`. */
function waitForText(page, text) {
  return waitFor(page, (t) => [...document.querySelectorAll('#messages [data-seq] .text')].some((el) => el.textContent === t), text);
}

/** Records every text the error line shows from now on (`errorsSeen(page)` reads them). */
function watchErrorLine(page) {
  return page.evaluate(() => {
    window.__errorsSeen = [];
    const line = document.querySelector('#error');
    const note = () => !line.hidden && line.textContent && window.__errorsSeen.push(line.textContent);
    new MutationObserver(note).observe(line, { attributes: true, childList: true, characterData: true, subtree: true });
  });
}

const errorsSeen = (page) => page.evaluate(() => window.__errorsSeen);


/** Whether the newest confirmed message lies entirely inside the message list's visible area. */
function newestMessageInView(page) {
  return page.$eval('#messages', (list) => {
    const items = list.querySelectorAll('[data-seq]');
    const last = items[items.length - 1];
    if (!last) return false;
    const box = list.getBoundingClientRect();
    const r = last.getBoundingClientRect();
    return r.top >= box.top - 1 && r.bottom <= box.bottom + 1 && r.height > 0;
  });
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
  /** A third user on a phone-sized screen (the last tests). */
  let phoneUser = null;

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
    // From disk, the binary may predate a module (the page still gets it, from the harness).
    if (webFromDisk) return;
    for (const [asset, file] of Object.entries(ASSETS)) {
      const r = await fetch(server.base + asset);
      assert.equal(r.status, 200, asset);
      const served = await r.text();
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

  test('Shift+Enter starts a new line; the message arrives with its line break and shows it', async () => {
    const input = alice.page.locator('#message-input');
    assert.equal(await input.evaluate((el) => el.tagName), 'TEXTAREA');
    await input.pressSequentially('first line', { delay: 5 });
    await input.press('Shift+Enter');
    await input.pressSequentially('second line', { delay: 5 });
    assert.equal(await input.inputValue(), 'first line\nsecond line', 'Shift+Enter did not send');
    await input.press('Enter');
    await waitForText(bob.page, 'first line\nsecond line');
    const shown = await bob.page.$$eval('#messages [data-seq] .text', (els) => {
      const el = els.find((e) => e.textContent === 'first line\nsecond line');
      const lineHeight = parseFloat(getComputedStyle(el).lineHeight) || 20;
      return { whiteSpace: getComputedStyle(el).whiteSpace, lines: Math.round(el.getBoundingClientRect().height / lineHeight) };
    });
    assert.equal(shown.whiteSpace, 'pre-wrap');
    assert.equal(shown.lines, 2, 'rendered on two lines');
    assert.equal(await input.inputValue(), '', 'composer cleared');
  });

  test('pasted text keeps its line breaks', async () => {
    const text = 'pasted one\npasted two\n\npasted four';
    await alice.context.grantPermissions(['clipboard-read', 'clipboard-write'], { origin: server.base });
    await alice.page.evaluate((t) => navigator.clipboard.writeText(t), text);
    await alice.page.focus('#message-input');
    await alice.page.keyboard.press('ControlOrMeta+V');
    assert.equal(await alice.page.locator('#message-input').inputValue(), text);
    await alice.page.press('#message-input', 'Enter');
    await waitForText(bob.page, text);
  });

  test('a link is an <a> with its href; the rest of the text, markup included, is text', async () => {
    const url = 'https://example.com/docs/page?q=1&r=two#part';
    const text = `read ${url}, then <b>x</b> and javascript:alert(1)`;
    await alice.page.fill('#message-input', text);
    await alice.page.press('#message-input', 'Enter');
    for (const u of [alice, bob]) {
      await waitForText(u.page, text);
      const links = await u.page.$$eval('#messages [data-seq] .text a', (as) =>
        as.map((a) => ({ href: a.getAttribute('href'), text: a.textContent, rel: a.rel, target: a.target })),
      );
      assert.deepEqual(links, [{ href: url, text: url, rel: 'noopener noreferrer', target: '_blank' }], u.name);
      assert.equal(await u.page.locator('#messages b').count(), 0, `${u.name}: no <b> element`);
    }
  });

  test('four messages half a second apart: no rate-limit error, all delivered in order', async () => {
    await watchErrorLine(alice.page);
    const texts = [1, 2, 3, 4].map((i) => `quick message ${i}`);
    for (const text of texts) {
      // Typed key by key, like a person: every keystroke is an input event (typing updates).
      await alice.page.locator('#message-input').pressSequentially(text, { delay: 5 });
      await alice.page.press('#message-input', 'Enter');
      await alice.page.waitForTimeout(500);
    }
    for (const u of [alice, bob]) for (const text of texts) await waitForText(u.page, text);
    await alice.page.waitForTimeout(1500); // an Error frame would have arrived by now
    assert.deepEqual(await errorsSeen(alice.page), [], 'no error line shown');
    assert.equal(await alice.page.isVisible('#error'), false);
    const order = (await messagesOf(bob.page)).filter((m) => texts.includes(m.text)).map((m) => m.text);
    assert.deepEqual(order, texts);
  });

  test('consecutive messages of one author show the name once; the counter counts UTF-8 bytes', async () => {
    // The four quick messages above continue alice's group: her name is not shown again.
    const continued = (page, pattern) =>
      page.$$eval(
        '#messages [data-seq]',
        (els, source) => els.filter((el) => new RegExp(source).test(el.querySelector('.text').textContent)).map((el) => el.classList.contains('continued')),
        pattern.source,
      );
    assert.deepEqual(await continued(bob.page, /^quick message \d$/), [true, true, true, true]);
    const hiddenName = await bob.page.locator('#messages [data-seq].continued .author').first().boundingBox();
    assert.ok(hiddenName.width <= 1 && hiddenName.height <= 1, 'the name is there for screen readers only');
    // Bob's reply came after alice's message: it shows his name.
    assert.deepEqual(await continued(bob.page, new RegExp(`^${fromBob}$`)), [false]);
    assert.equal(await bob.page.locator('#messages .day-separator').count() >= 1, true, 'a day separator above the first message');

    const page = alice.page;
    await page.fill('#message-input', 'héllo 👋');
    assert.equal(await page.textContent('#counter'), '11 / 4000');
    assert.equal(await page.isEnabled('#send'), true);
    await page.fill('#message-input', 'é'.repeat(2001));
    assert.equal(await page.textContent('#counter'), '4002 / 4000');
    assert.equal(await page.getAttribute('#counter', 'data-level'), 'over');
    assert.equal(await page.isEnabled('#send'), false, 'Send disabled over the limit');
    await page.press('#message-input', 'Enter');
    assert.equal((await page.locator('#message-input').inputValue()).length, 2001, 'Enter sends nothing over the limit');
    await page.fill('#message-input', '');
    assert.equal(await page.textContent('#counter'), '0 / 4000');
    assert.equal(await page.isEnabled('#send'), false, 'nothing to send');
  });

  test("the online list is the room's followers: every connection follows every room of its list, so bob's switch keeps him in #general's", async () => {
    await waitForOnline(alice.page, 2, [aliceName, bobName]);
    await bob.page.click('#channels [data-channel="design"]');
    assert.equal(await bob.page.textContent('#room-name'), '# design');
    // #design's list is there at once (its RoomPresence came when the room was joined, at
    // connect), and alice follows #design too.
    await waitForOnline(bob.page, 2, [aliceName, bobName]);
    await waitForOnline(alice.page, 2, [aliceName, bobName]);

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
    assert.match(result.end.reason, /protocol version 1 is not supported; this server speaks 3/);
    assert.deepEqual(result.states, ['connecting', 'disconnected'], 'no reconnect');
  });

  test('an empty channel says so', async () => {
    await alice.page.click('#channels [data-channel="support"]');
    await alice.page.waitForSelector('#empty-room', { state: 'visible', timeout: WAIT_MS });
    assert.match(await alice.page.textContent('#empty-room'), /No messages yet/);
    await alice.page.fill('#message-input', 'first in #support');
    await alice.page.press('#message-input', 'Enter');
    await alice.page.waitForSelector('#empty-room', { state: 'hidden', timeout: WAIT_MS });
    await waitForText(alice.page, 'first in #support');
    await alice.page.click('#channels [data-channel="general"]');
  });

  test('on a 390 px wide phone: Log out on screen, channels and who is online in drawers, the newest message in view', async () => {
    const carol = await openUser(browser, `carol_${suffix}`, {
      webFromDiskFor: webFromDisk ? server : null,
      contextOptions: { viewport: { width: 390, height: 844 }, isMobile: true, hasTouch: true },
    });
    phoneUser = carol;
    const page = carol.page;
    await registerThroughUi(carol, server.base);

    // The top bar fits: Log out is entirely on screen and takes a click.
    assert.equal(await page.isVisible('#logout'), true);
    assert.ok(await fullyInViewport(page, '#logout'), 'Log out inside the viewport');
    await page.locator('#logout').click({ trial: true, timeout: 2000 });
    assert.ok(await page.evaluate(() => document.documentElement.scrollWidth <= window.innerWidth), 'no horizontal scrolling');

    // The channel list is a drawer: closed at first, opened by its button, closed by a choice.
    assert.equal(await page.isVisible('#channels [data-channel="general"]'), false, 'channels drawer closed');
    await page.click('#channels-toggle');
    await page.waitForSelector('#channels [data-channel="design"]', { state: 'visible', timeout: WAIT_MS });
    await waitInViewport(page, '#channels [data-channel="design"]');
    await page.click('#channels [data-channel="design"]');
    await waitFor(page, () => document.querySelector('#room-name')?.textContent === '# design');
    await page.waitForSelector('#channels-panel', { state: 'hidden', timeout: WAIT_MS });
    await page.click('#channels-toggle');
    await page.click('#channels [data-channel="general"]');
    await waitFor(page, () => document.querySelector('#room-name')?.textContent === '# general');

    // Who is online: another drawer, from a button that shows the count.
    await waitFor(page, (n) => document.querySelector('#online')?.dataset.count === '2' && document.querySelector(`#online [data-user="${n}"]`), aliceName);
    assert.equal(await page.textContent('#online-toggle'), '2 online');
    assert.equal(await page.isVisible(`#online [data-user="${aliceName}"]`), false, 'online drawer closed');
    await page.click('#online-toggle');
    await page.waitForSelector(`#online [data-user="${aliceName}"]`, { state: 'visible', timeout: WAIT_MS });
    await waitInViewport(page, `#online [data-user="${carol.name}"]`);
    await page.keyboard.press('Escape');
    await page.waitForSelector('#online-panel', { state: 'hidden', timeout: WAIT_MS });

    // The composer is on screen and wide enough to use.
    assert.ok(await fullyInViewport(page, '#message-input'));
    assert.ok(await fullyInViewport(page, '#send'));
    assert.ok((await page.locator('#message-input').boundingBox()).width > 200);

    // Sending several messages: each time the newest one is in view.
    await waitFor(page, () => document.querySelectorAll('#messages [data-seq]').length > 5);
    for (let i = 1; i <= 6; i++) {
      const text = `from the phone ${i}: ${'a fairly long line that wraps on a narrow screen '.repeat(2)}`;
      await page.fill('#message-input', text);
      await page.press('#message-input', 'Enter');
      await waitForText(page, text);
      await waitFor(page, () => !document.querySelector('#messages .pending'));
      assert.ok(await newestMessageInView(page), `message ${i} in view after sending`);
    }
    // Receiving one: still in view, the typing line and all.
    await alice.page.locator('#message-input').pressSequentially('to the phone', { delay: 5 });
    await waitFor(page, (n) => (document.querySelector('#typing')?.textContent || '').includes(n), aliceName);
    await alice.page.press('#message-input', 'Enter');
    await waitForText(page, 'to the phone');
    await page.waitForTimeout(200);
    assert.ok(await newestMessageInView(page), 'the received message in view');
    assert.equal((await messagesOf(page)).at(-1).text, 'to the phone');
    assert.ok(await fullyInViewport(page, '#logout'), 'Log out still on screen');
  });

  test('no page errors and no CSP violations', () => {
    // A wrong password is answered 401, which Chromium logs as a failed resource load.
    const real = (u) => u.problems.filter((p) => !/status of 401/.test(p));
    assert.deepEqual(real(alice), []);
    assert.deepEqual(real(bob), []);
    if (phoneUser) assert.deepEqual(real(phoneUser), []);
  });
});
