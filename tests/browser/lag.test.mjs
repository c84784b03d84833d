// The server's WebSocket Ping (PROTOCOL.md § 1.2): while it writes to a connection it sends a
// Ping with its writes and closes the connection with 4001 if the Pong does not come back within
// the lag limit. Chromium answers on its own as it reads; this checks that a page receiving
// messages for several times the limit stays connected. Run as chat.test.mjs.
import { describe, test, before, after } from 'node:test';
import assert from 'node:assert/strict';

import { Server, launchBrowser, messagesOf, openUser, registerThroughUi, tearDown, waitFor } from './harness.mjs';

// A limit of 1 s (the default is 10 s): a Ping goes out at most every 0.5 s while a page is
// written to, and one unanswered for 1 s cuts the page off.
const server = new Server({ tmpPrefix: 'socketchat-browser-lag-', webTransport: false, args: ['--max-lag-ms', '1000'] });

/** The server's count of connections cut as slow consumers. */
async function slowDisconnects() {
  const text = await (await fetch(`${server.base}/metrics`)).text();
  const line = text.split('\n').find((l) => l.startsWith('socketchat_slow_disconnects_total '));
  assert.ok(line, 'the metric is exported');
  return Number(line.split(' ')[1]);
}

describe('the lag probe in the browser', { timeout: 60_000 }, () => {
  let browser;
  const suffix = Math.random().toString(36).slice(2, 7);
  let alice;
  let bob;

  before(async () => {
    await server.start();
    browser = await launchBrowser();
    alice = await openUser(browser, `alice_${suffix}`, { httpProblems: true });
    bob = await openUser(browser, `bob_${suffix}`, { httpProblems: true });
    await registerThroughUi(alice, server.base);
    await registerThroughUi(bob, server.base);
  });

  after(() => tearDown(browser, server));

  test('pages that receive messages for 4 s (4 times the limit) answer the Pings and stay connected', async () => {
    const texts = Array.from({ length: 16 }, (_, i) => `lag probe ${i}`);
    for (const text of texts) {
      await bob.page.fill('#message-input', text);
      await bob.page.press('#message-input', 'Enter');
      // Spread over 4 s (the send limit is 20/s after a burst of 50): the pages are written
      // to all along, so Pings keep going out.
      await bob.page.waitForTimeout(250);
    }
    for (const u of [alice, bob]) {
      await waitFor(u.page, (want) => want.every((t) => [...document.querySelectorAll('#messages [data-seq] .text')].some((el) => el.textContent === t)), texts);
      const shown = (await messagesOf(u.page)).filter((m) => texts.includes(m.text)).map((m) => m.text);
      assert.deepEqual(shown, texts, `${u.name} has every message once, in order`);
    }
    // A page that had not answered would have been cut within 1.5 s of falling behind.
    await alice.page.waitForTimeout(1500);
    assert.equal(await slowDisconnects(), 0, 'no page was cut as a slow consumer');
    for (const u of [alice, bob]) {
      assert.equal(await u.page.getAttribute('#status', 'data-state'), 'connected', `${u.name} is still connected`);
      assert.deepEqual(u.problems, [], `${u.name}'s console`);
    }
  });
});
