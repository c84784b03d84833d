// End-to-end, protocol v3 in the browser: the real server binary + Chromium (playwright-core),
// two users (one of them with a second tab) and a third on a phone-sized screen. Live unread
// badges cleared by a read mark in every tab, edits and deletions seen live, a PNG and a text
// file uploaded and shown (the image decoded by the other user's browser), a direct
// conversation started by clicking a name, a private channel created, joined by invitation,
// left, and taken away (an unprompted Left), and the new controls on a 390 × 844 screen.
//
// Run with `node --test tests/browser/` after `cargo build --bin socketchat`. Env as for
// chat.test.mjs (SOCKETCHAT_BIN, CHROMIUM_PATH, SOCKETCHAT_WEB_FROM_DISK=1).
import { describe, test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { deflateSync } from 'node:zlib';

import { Server, WAIT_MS, fullyInViewport, launchBrowser, messagesOf, openUser, registerThroughUi, tearDown, waitFor, waitInViewport, webFromDisk } from './harness.mjs';

const server = new Server({ tmpPrefix: 'socketchat-rooms-browser-', webTransport: false });

// ---------------------------------------------------------------------------------------------
// A real PNG, made here: 2 × 2 pixels, RGB, with correct CRCs
// ---------------------------------------------------------------------------------------------

const CRC_TABLE = Array.from({ length: 256 }, (_, n) => {
  let c = n;
  for (let k = 0; k < 8; k++) c = c & 1 ? 0xedb88320 ^ (c >>> 1) : c >>> 1;
  return c >>> 0;
});

function crc32(bytes) {
  let c = 0xffffffff;
  for (const b of bytes) c = CRC_TABLE[(c ^ b) & 0xff] ^ (c >>> 8);
  return (c ^ 0xffffffff) >>> 0;
}

function pngChunk(type, data) {
  const body = Buffer.concat([Buffer.from(type, 'ascii'), data]);
  const len = Buffer.alloc(4);
  len.writeUInt32BE(data.length);
  const crc = Buffer.alloc(4);
  crc.writeUInt32BE(crc32(body));
  return Buffer.concat([len, body, crc]);
}

/** A 2 × 2 RGB PNG: red, green / blue, white. */
function tinyPng() {
  const ihdr = Buffer.alloc(13);
  ihdr.writeUInt32BE(2, 0); // width
  ihdr.writeUInt32BE(2, 4); // height
  ihdr[8] = 8; // bit depth
  ihdr[9] = 2; // colour type: RGB
  // compression, filter, interlace: 0
  const rows = Buffer.from([0, 255, 0, 0, 0, 255, 0, 0, 0, 0, 255, 255, 255, 255]); // filter byte + 2 pixels per row
  return Buffer.concat([
    Buffer.from([0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a]),
    pngChunk('IHDR', ihdr),
    pngChunk('IDAT', deflateSync(rows)),
    pngChunk('IEND', Buffer.alloc(0)),
  ]);
}

// ---------------------------------------------------------------------------------------------
// Page helpers
// ---------------------------------------------------------------------------------------------

/** The badge text of a room in `page`'s list ('' when none). */
function badge(page, room) {
  return page.$eval(`[data-channel="${room}"] .badge`, (el) => (el.hidden ? '' : el.textContent));
}

function waitForBadge(page, room, text) {
  return waitFor(
    page,
    ([room, text]) => {
      const el = document.querySelector(`.channels [data-channel="${room}"] .badge`);
      return !!el && (el.hidden ? '' : el.textContent) === text;
    },
    [room, text],
  );
}

/** Resolves once `page` shows a confirmed post whose text is exactly `text`. */
function waitForText(page, text) {
  return waitFor(page, (t) => [...document.querySelectorAll('#messages [data-seq] .text')].some((el) => el.textContent === t), text);
}

async function say(page, text) {
  await page.fill('#message-input', text);
  await page.press('#message-input', 'Enter');
  await waitForText(page, text);
  await waitFor(page, () => !document.querySelector('#messages .pending'));
}

async function openRoom(page, room) {
  await page.click(`.channels [data-channel="${room}"]`);
  await page.waitForSelector(`.channels [data-channel="${room}"][aria-current="true"]`, { timeout: WAIT_MS });
}

/** The seq of the post whose text is `text` in `page`. */
async function seqOf(page, text) {
  const m = (await messagesOf(page)).find((x) => x.text === text);
  assert.ok(m, `a post "${text}"`);
  return m.seq;
}


/** Collects console problems of a page opened in an existing user's context. */
function watchPage(page, problems) {
  page.on('pageerror', (err) => problems.push(`pageerror: ${err.message}`));
  page.on('console', (msg) => {
    const text = msg.text();
    if (msg.type() === 'error' || /Content Security Policy|Refused to/i.test(text)) problems.push(`console ${msg.type()}: ${text}`);
  });
}

describe('SocketChat v3 in the browser: rooms, badges, edits, files', { timeout: 180_000 }, () => {
  let browser;
  const suffix = Math.random().toString(36).slice(2, 7);
  const aliceName = `alice_${suffix}`;
  const bobName = `bob_${suffix}`;
  const secret = `secret-${suffix}`;
  let alice;
  let bob;
  /** bob's second tab (same cookie, its own connection). */
  let bob2;
  const bob2Problems = [];
  let phone = null;
  /** The name of alice and bob's direct conversation (`@…`). */
  let dm = null;

  before(async () => {
    await server.start();
    browser = await launchBrowser(webFromDisk ? ['--disable-features=LocalNetworkAccessChecks'] : []);
    alice = await openUser(browser, aliceName, { webFromDiskFor: webFromDisk ? server : null, httpProblems: true });
    bob = await openUser(browser, bobName, { webFromDiskFor: webFromDisk ? server : null, httpProblems: true });
    await registerThroughUi(alice, server.base);
    await registerThroughUi(bob, server.base);
    bob2 = await bob.context.newPage();
    watchPage(bob2, bob2Problems);
    await bob2.goto(`${server.base}/`);
    await bob2.waitForSelector('#status[data-state="connected"]', { timeout: WAIT_MS });
  });

  after(() => tearDown(browser, server));

  test('the room list: channels with their mark, no badge at first, the DM list empty with a hint', async () => {
    for (const page of [alice.page, bob.page, bob2]) {
      await page.waitForSelector('#channels [data-channel="general"][aria-current="true"]', { timeout: WAIT_MS });
      for (const ch of ['general', 'engineering', 'design', 'support']) {
        assert.equal(await page.textContent(`#channels [data-channel="${ch}"] .mark`), '#');
        assert.equal(await badge(page, ch), '');
      }
      assert.equal(await page.locator('#direct [data-channel]').count(), 0);
      assert.equal(await page.isVisible('#direct-hint'), true);
    }
  });

  test("a badge appears live in bob's list (both tabs) and clears when he opens the room, in both", async () => {
    await openRoom(alice.page, 'design');
    await say(alice.page, 'design news 1');
    // Live: no timer, no reload. Both of bob's tabs follow #design.
    for (const page of [bob.page, bob2]) await waitForBadge(page, 'design', '1');
    await say(alice.page, 'design news 2');
    for (const page of [bob.page, bob2]) await waitForBadge(page, 'design', '2');
    assert.equal(await badge(alice.page, 'design'), '', 'own posts are not unread');
    assert.equal(await bob.page.getAttribute('#channels [data-channel="design"]', 'data-unread'), '2');

    // bob opens #design in his first tab: read (MarkRead), and ReadState clears the second.
    await openRoom(bob.page, 'design');
    await waitForText(bob.page, 'design news 2');
    await waitForBadge(bob.page, 'design', '');
    await waitForBadge(bob2, 'design', '');
    // The second tab still shows #general and stays cleared, also after fetching the list
    // again (as when its window regains focus).
    assert.equal(await bob2.textContent('#room-name'), '# general');
    await bob2.evaluate(() => window.dispatchEvent(new Event('focus')));
    await bob2.waitForTimeout(600);
    assert.equal(await badge(bob2, 'design'), '');
    assert.equal(await badge(bob.page, 'design'), '');

    // A post to the room bob is reading gets no badge; one elsewhere does.
    await say(alice.page, 'seen at once');
    await waitForText(bob.page, 'seen at once');
    await bob.page.waitForTimeout(300);
    assert.equal(await badge(bob.page, 'design'), '');
    await waitForBadge(bob2, 'design', '');
  });

  test('edit and delete of an own post, from the keyboard, seen live by the other user', async () => {
    await say(alice.page, 'typo in this mesage');
    await waitForText(bob.page, 'typo in this mesage');
    const seq = await seqOf(alice.page, 'typo in this mesage');
    const item = `#messages [data-seq="${seq}"]`;
    assert.equal(await bob.page.locator(`${item} button[data-action="edit"]`).count(), 0, 'no Edit on posts of others');

    // Escape cancels: nothing changes.
    await alice.page.focus(`${item} button[data-action="edit"]`);
    await alice.page.keyboard.press('Enter');
    await alice.page.waitForSelector(`${item} .edit-input`, { timeout: WAIT_MS });
    assert.equal(await alice.page.evaluate(() => document.activeElement.className), 'edit-input', 'the editor has the focus');
    await alice.page.keyboard.type(' and more');
    await alice.page.keyboard.press('Escape');
    await alice.page.waitForSelector(`${item} .edit-input`, { state: 'detached', timeout: WAIT_MS });
    assert.equal(await alice.page.textContent(`${item} .text`), 'typo in this mesage');
    assert.equal(await alice.page.evaluate(() => document.activeElement.dataset.action), 'edit', 'focus back on Edit');

    // Enter saves.
    await alice.page.keyboard.press('Enter');
    await alice.page.waitForSelector(`${item} .edit-input`, { timeout: WAIT_MS });
    await alice.page.fill(`${item} .edit-input`, 'no typo in this message');
    await alice.page.press(`${item} .edit-input`, 'Enter');
    for (const page of [alice.page, bob.page]) {
      await waitFor(page, (sel) => document.querySelector(`${sel} .text`)?.textContent === 'no typo in this message', item);
      await waitFor(page, (sel) => document.querySelector(`${sel} .edited`)?.textContent === '(edited)', item);
    }
    // The edit is an event of the stream, not a post: nothing new is listed.
    assert.equal((await messagesOf(bob.page)).filter((m) => m.text.includes('typo')).length, 1);

    // Delete, confirmed in place.
    await alice.page.focus(`${item} button[data-action="delete"]`);
    await alice.page.keyboard.press('Enter');
    await alice.page.waitForSelector(`${item} .confirm`, { timeout: WAIT_MS });
    assert.equal(await alice.page.evaluate(() => document.activeElement.dataset.action), 'cancel-delete', 'Cancel has the focus');
    await alice.page.click(`${item} button[data-action="confirm-delete"]`);
    for (const page of [alice.page, bob.page]) {
      await waitFor(page, (sel) => document.querySelector(`${sel} .text.placeholder`)?.textContent === 'message deleted', item);
      assert.equal(await page.locator(`${item}.deleted .edited`).count(), 0);
      assert.equal(await page.locator(`${item} button[data-action]`).count(), 0, 'a deleted post has no actions');
    }
    // After a reload bob sees the same (the post comes in its current state).
    await bob.page.reload();
    await bob.page.waitForSelector('#status[data-state="connected"]', { timeout: WAIT_MS });
    await waitFor(bob.page, (sel) => document.querySelector(`${sel} .text.placeholder`)?.textContent === 'message deleted', item);
    assert.equal(await bob.page.textContent('#room-name'), '# design', 'the room from the URL');
  });

  test('a PNG uploaded with a progress bar is shown inline to the other user; a text file is a download link', async () => {
    const page = alice.page;
    await page.evaluate(() => {
      window.__sawProgress = false;
      new MutationObserver(() => {
        if (document.querySelector('#uploads progress')) window.__sawProgress = true;
      }).observe(document.querySelector('#uploads'), { childList: true, subtree: true });
    });
    const png = tinyPng();
    await page.setInputFiles('#file-input', { name: 'dot.png', mimeType: 'image/png', buffer: png });
    await page.waitForSelector('#uploads [data-state="done"]', { timeout: WAIT_MS });
    assert.equal(await page.evaluate(() => window.__sawProgress), true, 'a progress bar while uploading');
    assert.equal(await page.textContent('#uploads .file-name'), 'dot.png');
    assert.equal(await page.isEnabled('#send'), true, 'a file alone may be sent');
    await page.fill('#message-input', 'a tiny picture');
    await page.press('#message-input', 'Enter');
    await page.waitForSelector('#uploads', { state: 'hidden', timeout: WAIT_MS });

    for (const u of [alice, bob]) {
      await waitForText(u.page, 'a tiny picture');
      const img = u.page.locator('#messages [data-seq] .attachment.image img[alt="dot.png"]');
      await img.waitFor({ timeout: WAIT_MS });
      await waitFor(u.page, () => {
        const el = document.querySelector('#messages .attachment.image img[alt="dot.png"]');
        return el && el.complete && el.naturalWidth > 0;
      });
      const info = await img.evaluate((el) => ({ w: el.naturalWidth, h: el.naturalHeight, src: el.getAttribute('src'), box: el.getBoundingClientRect().width }));
      assert.deepEqual([info.w, info.h], [2, 2], `${u.name}: the browser decoded the PNG`);
      assert.match(info.src, /^\/api\/uploads\/\d+$/);
      assert.ok(info.box > 0 && info.box <= 320, 'constrained size');
    }

    // A pasted image is attached like a chosen file; × takes it out again.
    await page.evaluate((bytes) => {
      const dt = new DataTransfer();
      dt.items.add(new File([new Uint8Array(bytes)], 'image.png', { type: 'image/png' }));
      document.querySelector('#message-input').dispatchEvent(new ClipboardEvent('paste', { clipboardData: dt, bubbles: true, cancelable: true }));
    }, [...png]);
    await page.waitForSelector('#uploads [data-state="done"]', { timeout: WAIT_MS });
    assert.equal(await page.textContent('#uploads .file-name'), 'image.png');
    assert.equal(await page.inputValue('#message-input'), '', 'nothing pasted as text');
    await page.click('#uploads .remove-file');
    await page.waitForSelector('#uploads', { state: 'hidden', timeout: WAIT_MS });
    assert.equal(await page.isEnabled('#send'), false, 'nothing to send');

    // A text file, with no text: a download link with its name and size.
    await page.setInputFiles('#file-input', { name: 'notes <img src=x onerror=alert(1)>.txt', mimeType: 'text/plain', buffer: Buffer.from('hello notes') });
    await page.waitForSelector('#uploads [data-state="done"]', { timeout: WAIT_MS });
    await page.click('#send');
    for (const u of [alice, bob]) {
      const link = u.page.locator('#messages .attachment.file').filter({ hasText: 'notes <img src=x onerror=alert(1)>.txt' });
      await link.waitFor({ timeout: WAIT_MS });
      assert.equal(await link.locator('.file-name').textContent(), 'notes <img src=x onerror=alert(1)>.txt', 'the name as text');
      assert.equal(await link.locator('.file-size').textContent(), '11 B');
      assert.match(await link.getAttribute('href'), /^\/api\/uploads\/\d+$/);
      assert.equal(await u.page.locator('#messages img[src="x"]').count(), 0, 'no markup from the file name');
    }
    const href = await bob.page.locator('#messages .attachment.file').last().getAttribute('href');
    const served = await bob.page.evaluate(async (h) => {
      const r = await fetch(h);
      return { status: r.status, disposition: r.headers.get('content-disposition'), body: await r.text() };
    }, href);
    assert.equal(served.status, 200);
    assert.match(served.disposition, /^attachment/);
    assert.equal(served.body, 'hello notes');
  });

  test("a DM started by clicking bob's name appears live in his list and carries a message", async () => {
    // Alice clicks bob's name in the online list (everyone online follows #design).
    await alice.page.click(`#online [data-user="${bobName}"]`);
    await waitFor(alice.page, (n) => document.querySelector('#room-name')?.textContent === `@ ${n}`, bobName);
    dm = await alice.page.$eval('#direct [aria-current="true"]', (el) => el.dataset.channel);
    assert.match(dm, /^@/);
    assert.equal(await alice.page.textContent(`#direct [data-channel="${dm}"] .name`), bobName);
    assert.equal(await alice.page.isVisible('#direct-hint'), false);

    // It appears in both of bob's tabs (RoomAdded), labelled with alice's name.
    for (const page of [bob.page, bob2]) {
      await page.waitForSelector(`#direct [data-channel="${dm}"]`, { timeout: WAIT_MS });
      assert.equal(await page.textContent(`#direct [data-channel="${dm}"] .name`), aliceName);
    }
    await say(alice.page, 'hello bob, just between us');
    for (const page of [bob.page, bob2]) await waitForBadge(page, dm, '1');
    await openRoom(bob.page, dm);
    await waitForText(bob.page, 'hello bob, just between us');
    assert.equal(await bob.page.textContent('#room-name'), `@ ${aliceName}`);
    await waitForBadge(bob2, dm, '');

    // From the other side, a click on alice's name on a post finds the same conversation.
    await openRoom(bob.page, 'design');
    await bob.page.locator('#messages [data-seq] .author').filter({ hasText: new RegExp(`^${aliceName}$`) }).first().click();
    await waitFor(bob.page, (room) => document.querySelector('#direct [aria-current="true"]')?.dataset.channel === room, dm);
    assert.equal(await bob.page.locator('#direct [data-channel]').count(), 1, 'one conversation, found again');
    await say(bob.page, 'hi alice');
    await waitForText(alice.page, 'hi alice');
  });

  test('a private channel: created (field errors shown), invited to live, left, invited again, removed (unprompted Left)', async () => {
    const page = alice.page;
    await page.click('#new-channel');
    await page.waitForSelector('#create-channel-form', { state: 'visible', timeout: WAIT_MS });
    await page.fill('#new-channel-name', 'Bad Name!');
    await page.click('#create-channel-form button[type="submit"]');
    await waitFor(page, () => (document.querySelector('#create-channel-form [data-error-for="name"]')?.textContent || '') !== '');
    assert.match(await page.textContent('#create-channel-form [data-error-for="name"]'), /a-z 0-9/);
    assert.equal(await page.getAttribute('#new-channel-name', 'aria-invalid'), 'true');
    // A taken name: the server's message.
    await page.fill('#new-channel-name', 'general');
    await page.click('#create-channel-form button[type="submit"]');
    await waitFor(page, () => /exists/.test(document.querySelector('#create-channel-form [data-error-for="form"]')?.textContent || ''));

    await page.fill('#new-channel-name', secret);
    await page.fill('#new-channel-topic', 'plans <i>only</i>');
    await page.check('#new-channel-private');
    await page.click('#create-channel-form button[type="submit"]');
    await waitFor(page, (name) => document.querySelector('#room-name')?.textContent === `🔒 ${name}`, secret);
    assert.equal(await page.isVisible('#create-channel-form'), false);
    assert.equal(await page.textContent('#room-topic'), 'plans <i>only</i>');
    assert.equal(await page.getAttribute(`#channels [data-channel="${secret}"]`, 'data-kind'), 'private');
    assert.equal(await page.textContent(`#channels [data-channel="${secret}"] .mark`), '🔒');
    assert.equal(await page.isVisible('#invite-toggle'), true, 'the owner invites');
    assert.equal(await page.isVisible('#leave-room'), false, 'the owner does not leave');
    assert.equal(await bob.page.locator(`[data-channel="${secret}"]`).count(), 0, 'bob does not see it');
    await say(page, 'before bob came');

    // Invite: a user who does not exist, then bob.
    await page.click('#invite-toggle');
    await page.fill('#invite-username', `nobody_${suffix}`);
    await page.click('#invite-form button[type="submit"]');
    await waitFor(page, () => /no such user/.test(document.querySelector('#invite-form [data-error-for="form"]')?.textContent || ''));
    await page.fill('#invite-username', bobName);
    await page.click('#invite-form button[type="submit"]');
    await waitFor(page, (n) => (document.querySelector('#notice')?.textContent || '').includes(n), bobName);
    for (const p of [bob.page, bob2]) {
      await p.waitForSelector(`#channels [data-channel="${secret}"][data-kind="private"]`, { timeout: WAIT_MS });
      await waitForBadge(p, secret, '1');
    }
    await openRoom(bob.page, secret);
    await waitForText(bob.page, 'before bob came');
    assert.equal(await bob.page.isVisible('#leave-room'), true, 'a member may leave');
    assert.equal(await bob.page.isVisible('#invite-toggle'), false);

    // bob leaves through the UI (asked first).
    await bob.page.click('#leave-room');
    await bob.page.waitForSelector('#leave-confirm', { state: 'visible', timeout: WAIT_MS });
    assert.equal(await bob.page.textContent('#leave-question'), `Leave 🔒 ${secret}?`);
    await bob.page.click('#leave-confirm-yes');
    await waitFor(bob.page, () => document.querySelector('#room-name')?.textContent === '# general');
    await waitFor(bob.page, () => /^You left /.test(document.querySelector('#notice')?.textContent || ''));
    for (const p of [bob.page, bob2]) await p.waitForSelector(`[data-channel="${secret}"]`, { state: 'detached', timeout: WAIT_MS });

    // Invited again, then removed by the owner while he has it open: the server's Left.
    await page.click('#invite-toggle');
    await page.fill('#invite-username', bobName);
    await page.click('#invite-form button[type="submit"]');
    await bob.page.waitForSelector(`#channels [data-channel="${secret}"]`, { timeout: WAIT_MS });
    await openRoom(bob.page, secret);
    await waitForText(bob.page, 'before bob came');
    // Something typed and not sent yet stays with the room: never posted to #general.
    await bob.page.fill('#message-input', 'meant for the secret room only');
    const status = await page.evaluate(
      async ([room, user]) => (await fetch(`/api/channels/${encodeURIComponent(room)}/members/${encodeURIComponent(user)}`, { method: 'DELETE' })).status,
      [secret, bobName],
    );
    assert.equal(status, 204);
    await waitFor(bob.page, () => document.querySelector('#room-name')?.textContent === '# general');
    await waitFor(
      bob.page,
      (name) => document.querySelector('#notice')?.textContent === `You are no longer a member of 🔒 ${name}; what you were writing there was not sent.`,
      secret,
    );
    assert.equal(await bob.page.inputValue('#message-input'), '', 'the composer was emptied before the room changed');
    await bob.page.press('#message-input', 'Enter');
    for (const p of [bob.page, bob2]) await p.waitForSelector(`[data-channel="${secret}"]`, { state: 'detached', timeout: WAIT_MS });
    assert.equal(await bob.page.locator('#messages [data-seq] .text').filter({ hasText: 'before bob came' }).count(), 0, 'its posts are not shown');
    assert.equal(await bob.page.locator('#messages .text').filter({ hasText: 'meant for the secret room only' }).count(), 0, 'not posted');
  });

  test('on a 390 px wide phone: the new controls fit and work (create, invite, attach, edit)', async () => {
    phone = await openUser(browser, `dave_${suffix}`, {
      webFromDiskFor: webFromDisk ? server : null,
      httpProblems: true,
      contextOptions: { viewport: { width: 390, height: 844 }, isMobile: true, hasTouch: true },
    });
    const page = phone.page;
    await registerThroughUi(phone, server.base);
    const noHorizontalScroll = () => page.evaluate(() => document.documentElement.scrollWidth <= window.innerWidth);
    assert.ok(await noHorizontalScroll());

    // The channel drawer holds the + and the DM list.
    await page.click('#channels-toggle');
    await waitInViewport(page, '#new-channel');
    await page.click('#new-channel');
    await waitInViewport(page, '#create-channel-form button[type="submit"]');
    await page.fill('#new-channel-name', `phone-${suffix}`);
    await page.check('#new-channel-private');
    await page.click('#create-channel-form button[type="submit"]');
    await waitFor(page, (n) => document.querySelector('#room-name')?.textContent === `🔒 ${n}`, `phone-${suffix}`);
    await page.waitForSelector('#channels-panel', { state: 'hidden', timeout: WAIT_MS });

    // The header: drawers, title, Invite, who is online: all on screen.
    for (const sel of ['#channels-toggle', '#invite-toggle', '#online-toggle', '#logout']) assert.ok(await fullyInViewport(page, sel), `${sel} on screen`);
    await page.click('#invite-toggle');
    await waitInViewport(page, '#invite-form button[type="submit"]');
    assert.ok(await fullyInViewport(page, '#invite-username'));
    await page.fill('#invite-username', aliceName);
    await page.click('#invite-form button[type="submit"]');
    await alice.page.waitForSelector(`#channels [data-channel="phone-${suffix}"]`, { timeout: WAIT_MS });

    // The composer: attach, text and send on one line, the text wide enough.
    for (const sel of ['#attach', '#message-input', '#send']) assert.ok(await fullyInViewport(page, sel), `${sel} on screen`);
    assert.ok((await page.locator('#message-input').boundingBox()).width > 180);
    await page.setInputFiles('#file-input', { name: 'dot.png', mimeType: 'image/png', buffer: tinyPng() });
    await page.waitForSelector('#uploads [data-state="done"]', { timeout: WAIT_MS });
    assert.ok(await fullyInViewport(page, '#uploads .remove-file'));
    assert.ok(await fullyInViewport(page, '#send'), 'Send still on screen with a file');
    await page.fill('#message-input', 'from the phone, with a picture');
    await page.press('#message-input', 'Enter');
    await waitForText(page, 'from the phone, with a picture');
    await waitFor(page, () => document.querySelector('#messages .attachment.image img')?.naturalWidth > 0);
    assert.ok(await noHorizontalScroll(), 'no horizontal scrolling');

    // An own post's actions: a tap shows them, on screen.
    const seq = await seqOf(page, 'from the phone, with a picture');
    await page.tap(`#messages [data-seq="${seq}"] .text`);
    await waitInViewport(page, `#messages [data-seq="${seq}"] button[data-action="edit"]`);
    await page.tap(`#messages [data-seq="${seq}"] button[data-action="edit"]`);
    await page.waitForSelector(`#messages [data-seq="${seq}"] .edit-input`, { timeout: WAIT_MS });
    await waitInViewport(page, `#messages [data-seq="${seq}"] button[data-action="save-edit"]`);
    await page.fill(`#messages [data-seq="${seq}"] .edit-input`, 'from the phone, edited');
    await page.tap(`#messages [data-seq="${seq}"] button[data-action="save-edit"]`);
    await openRoom(alice.page, `phone-${suffix}`);
    await waitForText(alice.page, 'from the phone, edited');
    assert.ok(await noHorizontalScroll());
  });

  test('a room opened beyond the 32 a connection may join is joined (the last followed one is left for it) and works', async () => {
    // 31 more public channels, made by 4 users over the API (10 creations each in a burst).
    const made = [];
    for (let u = 0; u < 4; u++) {
      const name = `maker${u}_${suffix}`;
      const res = await fetch(`${server.base}/api/auth/register`, {
        method: 'POST',
        headers: { 'content-type': 'application/json' },
        body: JSON.stringify({ username: name, email: `${name}@example.test`, password: 'correct horse battery' }),
      });
      assert.equal(res.status, 201, `register ${name}`);
      const cookie = res.headers.get('set-cookie').split(';')[0];
      for (let i = 0; i < 10 && made.length < 31; i++) {
        const room = `zz-many-${suffix}-${String(made.length).padStart(2, '0')}`;
        const created = await fetch(`${server.base}/api/channels`, {
          method: 'POST',
          headers: { 'content-type': 'application/json', cookie },
          body: JSON.stringify({ name: room }),
        });
        assert.equal(created.status, 201, `create ${room}`);
        made.push(room);
      }
    }
    const page = alice.page;
    // `Joined` frames (server frame #2) the page's connection receives.
    let joined = 0;
    let allJoined;
    const all = new Promise((resolve) => {
      allJoined = resolve;
    });
    page.on('websocket', (ws) =>
      ws.on('framereceived', (f) => {
        if (typeof f.payload !== 'string' && f.payload[0] === 2 && ++joined === 32) allJoined();
      }),
    );
    await page.reload();
    await page.waitForSelector('#status[data-state="connected"]', { timeout: WAIT_MS });
    // Every room the connection may join is joined (the joins go out at the server's rate).
    await Promise.race([all, new Promise((_, reject) => setTimeout(() => reject(new Error(`${joined} rooms joined`)), WAIT_MS))]);
    // The room list's order is the order rooms are followed in (the open one first): its last
    // room is beyond what a connection may join. Opened, it must be joined and live.
    const order = await page.evaluate(async () => (await (await fetch('/api/channels')).json()).channels.map((c) => c.name));
    assert.ok(order.length > 32, `more rooms than a connection may join (${order.length})`);
    const last = order.at(-1);
    assert.notEqual(last, 'general');
    await openRoom(page, last);
    await say(page, 'in the 33rd room and beyond');
    assert.ok((await seqOf(page, 'in the 33rd room and beyond')) >= 1);
    await openRoom(page, 'general');
    // It is left again for #general. bob posts there meanwhile, and alice's list is fetched
    // again (as when the window regains focus) with the room's new head: reopened, the room
    // shows bob's post, not a gap between what it showed and that head.
    await bob.page.evaluate(() => window.dispatchEvent(new Event('focus')));
    await bob.page.waitForSelector(`.channels [data-channel="${last}"]`, { timeout: WAIT_MS });
    await openRoom(bob.page, last);
    await say(bob.page, 'while alice was in #general');
    await openRoom(bob.page, 'general');
    await page.evaluate(() => window.dispatchEvent(new Event('focus')));
    await waitForBadge(page, last, '1');
    await openRoom(page, last);
    await waitForText(page, 'while alice was in #general');
    assert.ok((await seqOf(page, 'in the 33rd room and beyond')) >= 1, 'and what came before it');
    await openRoom(page, 'general');
  });

  test('six files attached at once: at most 3 are sent at a time, and one refused for the node\'s load (503) is sent again', async () => {
    const frank = await openUser(browser, `frank_${suffix}`, { webFromDiskFor: webFromDisk ? server : null });
    const page = frank.page;
    await registerThroughUi(frank, server.base);
    let sending = 0;
    let most = 0;
    let refused = 0;
    await page.route(
      (url) => url.pathname === '/api/uploads',
      async (route) => {
        if (route.request().method() !== 'POST') return route.continue();
        if (refused === 0) {
          refused += 1;
          return route.fulfill({ status: 503, headers: { 'retry-after': '1', 'content-type': 'application/json' }, body: '{"error":"too many uploads in progress, retry shortly"}' });
        }
        sending += 1;
        most = Math.max(most, sending);
        try {
          const response = await route.fetch();
          await new Promise((r) => setTimeout(r, 100)); // a slower network: requests overlap
          await route.fulfill({ response });
        } finally {
          sending -= 1;
        }
      },
    );
    const files = Array.from({ length: 6 }, (_, i) => ({ name: `note-${i}.txt`, mimeType: 'text/plain', buffer: Buffer.from(`note ${i}`) }));
    await page.setInputFiles('#file-input', files);
    await waitFor(page, () => document.querySelectorAll('#uploads [data-state="done"]').length === 6);
    assert.equal(await page.locator('#uploads [data-state="failed"]').count(), 0);
    assert.equal(refused, 1);
    assert.ok(most <= 3 && most >= 2, `uploads sent at once: ${most}`);
    await page.fill('#message-input', 'six notes');
    await page.press('#message-input', 'Enter');
    await waitForText(page, 'six notes');
    await waitFor(page, () => [...document.querySelectorAll('#messages [data-seq]')].some((el) => el.querySelectorAll('.attachment').length === 6));
    await frank.context.close();
  });

  test('the server unavailable at load: asked again; a bad URL hash opens #general; a logout the server does not confirm says so and keeps the session; a confirmed one ends it', async () => {
    const erin = await openUser(browser, `erin_${suffix}`, { webFromDiskFor: webFromDisk ? server : null });
    const page = erin.page;
    await registerThroughUi(erin, server.base);
    // The server unavailable when the page asks for the session: said so, and asked again
    // (the session is valid: the chat opens, not the login form).
    let unavailable = 0;
    await page.route(
      (url) => url.pathname === '/api/auth/me',
      (route) => (unavailable++ === 0 ? route.fulfill({ status: 503, contentType: 'application/json', body: '{"error":"unavailable"}' }) : route.continue()),
    );
    await page.reload();
    await waitFor(page, () => /^The server is unavailable \(503\); trying again/.test(document.querySelector('#auth-notice')?.textContent || ''));
    await page.waitForSelector('#status[data-state="connected"]', { timeout: WAIT_MS });
    assert.equal(unavailable, 2);
    await page.unroute((url) => url.pathname === '/api/auth/me');
    // The room list unavailable at the start: said so, and the list comes once connected.
    let listRefused = 0;
    await page.route(
      (url) => url.pathname === '/api/channels',
      (route) => (listRefused++ === 0 ? route.fulfill({ status: 503, contentType: 'application/json', body: '{"error":"unavailable"}' }) : route.continue()),
    );
    await page.reload();
    await waitFor(page, () => /^Could not load the room list \(HTTP 503\); trying again/.test(document.querySelector('#error')?.textContent || ''));
    await page.waitForSelector('#channels [data-channel="design"]', { timeout: WAIT_MS });
    await page.unroute((url) => url.pathname === '/api/channels');
    // A room list asked for before a channel is created here, and answered after: it does not
    // show the new channel, and is not taken (the channel stays open and listed).
    let gotRequest;
    const asked = new Promise((resolve) => {
      gotRequest = resolve;
    });
    let release;
    const held = new Promise((resolve) => {
      release = resolve;
    });
    let holding = true;
    await page.route(
      (url) => url.pathname === '/api/channels',
      async (route) => {
        if (route.request().method() !== 'GET' || !holding) return route.continue();
        holding = false;
        const response = await route.fetch(); // the list as it is before the creation
        gotRequest();
        await held;
        await route.fulfill({ response });
      },
    );
    await page.evaluate(() => window.dispatchEvent(new Event('focus'))); // a refresh of the list
    await asked;
    const fresh = `fresh-${suffix}`;
    await page.click('#new-channel');
    await page.fill('#new-channel-name', fresh);
    await page.click('#create-channel-form button[type="submit"]');
    await waitFor(page, (n) => document.querySelector('#room-name')?.textContent === `# ${n}`, fresh);
    let lists = 0;
    const answered = page.waitForResponse((r) => new URL(r.url()).pathname === '/api/channels' && r.request().method() === 'GET' && ++lists === 2);
    release();
    await answered; // the held list, then the one asked for after it
    await page.waitForSelector(`#channels [data-channel="${fresh}"]`, { timeout: WAIT_MS });
    assert.equal(await page.textContent('#room-name'), `# ${fresh}`, 'still open');
    assert.ok(!/no longer a member/.test((await page.textContent('#notice')) || ''), 'not taken for gone');
    await page.unroute((url) => url.pathname === '/api/channels');
    // A hash that does not decode names no room: the chat opens #general.
    await page.goto(`${server.base}/#general%`); // (only the hash changes: no load)
    await page.reload();
    await page.waitForSelector('#status[data-state="connected"]', { timeout: WAIT_MS });
    await page.waitForSelector('#channels [data-channel="general"][aria-current="true"]', { timeout: WAIT_MS });
    await page.route('**/api/auth/logout', (route) => route.fulfill({ status: 503, contentType: 'application/json', body: '{"error":"unavailable"}' }));
    await page.click('#logout');
    await waitFor(page, () => /^Not logged out: the server answered 503/.test(document.querySelector('#notice')?.textContent || ''));
    assert.equal(await page.isVisible('#chat-view'), true, 'still in the chat');
    await page.unroute('**/api/auth/logout');
    await page.click('#logout');
    await page.waitForSelector('#auth-view', { state: 'visible', timeout: WAIT_MS });
    await page.reload();
    await page.waitForSelector('#login-form', { state: 'visible', timeout: WAIT_MS });
    assert.equal(await page.isVisible('#chat-view'), false, 'logged out for real');
    // A login refused for the rate says when to try again (`Retry-After`).
    await page.route(
      (url) => url.pathname === '/api/auth/login',
      (route) => route.fulfill({ status: 429, headers: { 'retry-after': '30', 'content-type': 'application/json' }, body: '{"error":"too many login attempts, retry later"}' }),
    );
    await page.fill('#login-email', `erin_${suffix}@example.test`);
    await page.fill('#login-password', 'correct horse battery');
    await page.click('#login-form button[type="submit"]');
    await waitFor(page, () => document.querySelector('#login-form [data-error-for="form"]')?.textContent === 'too many login attempts, retry later (try again in 30 s)');
    await erin.context.close();
  });

  test('a send the server refuses (text of only U+0085, whitespace to it) can be taken back to the composer', async () => {
    const page = alice.page;
    await openRoom(page, 'design');
    await page.fill('#message-input', '\u0085');
    await page.press('#message-input', 'Enter');
    const failed = '#messages .message.failed button[data-action="rewrite"]';
    await page.waitForSelector(failed, { timeout: WAIT_MS });
    await page.click(failed);
    await page.waitForSelector('#messages .message.failed', { state: 'detached', timeout: WAIT_MS });
    assert.equal(await page.inputValue('#message-input'), '\u0085', 'its text is back in the composer');
    await page.fill('#message-input', '');
    await openRoom(page, 'general');
  });

  test('no page errors, no CSP violations, no failed requests but the refusals the tests asked for', () => {
    // Alice's bad channel name, taken name and unknown invitee.
    const asked = [
      'HTTP 400 for POST /api/channels',
      'HTTP 409 for POST /api/channels',
      `HTTP 404 for POST /api/channels/${secret}/members`,
    ];
    assert.deepEqual(
      alice.problems.filter((p) => !asked.includes(p)),
      [],
    );
    assert.deepEqual(alice.problems.filter((p) => asked.includes(p)).sort(), [...asked].sort());
    assert.deepEqual(bob.problems, []);
    assert.deepEqual(bob2Problems, []);
    if (phone) assert.deepEqual(phone.problems, []);
    assert.ok(dm, 'the DM test ran');
  });
});
