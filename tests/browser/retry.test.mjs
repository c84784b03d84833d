// QUIC Retry (PROTOCOL.md § 1.4): past half of an address's share of QUIC connections, the
// server asks a new connection to prove its source address with a Retry before it counts.
// This checks that Chromium follows it: with a share of 8, seven WebTransport sessions from
// one page all open, and the server counted Retries for those past the fourth.
import { describe, test, before, after } from 'node:test';
import assert from 'node:assert/strict';

import { Server, launchBrowser, tearDown } from './harness.mjs';

const server = new Server({ tmpPrefix: 'socketchat-browser-retry-', webTransport: true, args: ['--max-sockets-per-address', '8'] });

describe('QUIC Retry in the browser', { timeout: 60_000 }, () => {
  let browser;

  before(async () => {
    await server.start();
    browser = await launchBrowser();
  });

  after(() => tearDown(browser, server));

  test('Chromium follows the Retry: sessions past half the share open too', async () => {
    const page = await browser.newPage();
    // A page of the server's origin (a secure context on 127.0.0.1) that opens nothing itself.
    await page.goto(`${server.base}/healthz`);
    const result = await page.evaluate(async () => {
      const name = 'r' + Math.random().toString(36).slice(2, 8);
      const body = JSON.stringify({ username: name, email: `${name}@example.com`, password: 'correct horse battery' });
      const registered = await fetch('/api/auth/register', { method: 'POST', headers: { 'content-type': 'application/json' }, body });
      const info = await (await fetch('/api/transport')).json();
      const hash = Uint8Array.from(atob(info.cert_hashes[0].value), (c) => c.charCodeAt(0));
      const outcomes = [];
      const sessions = [];
      for (let i = 0; i < 7; i++) {
        const { ticket } = await (await fetch('/api/auth/ticket', { method: 'POST' })).json();
        const wt = new WebTransport(`${info.webtransport}?ticket=${ticket}`, {
          serverCertificateHashes: [{ algorithm: 'sha-256', value: hash }],
        });
        try {
          await wt.ready;
          outcomes.push('ready');
          sessions.push(wt);
        } catch (e) {
          outcomes.push(`failed: ${e}`);
        }
      }
      const metrics = await (await fetch('/metrics')).text();
      const line = metrics.split('\n').find((l) => l.startsWith('socketchat_quic_retries_total '));
      for (const wt of sessions) wt.close();
      return { registered: registered.status, outcomes, retries: line ? Number(line.split(' ')[1]) : null };
    });
    assert.equal(result.registered, 201);
    assert.deepEqual(result.outcomes, Array(7).fill('ready'), JSON.stringify(result));
    assert.ok(result.retries >= 3, `Retries past half the share: ${result.retries}`);
  });
});
