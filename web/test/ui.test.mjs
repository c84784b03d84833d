// The web UI's pure rules: links in message text, grouping and day separators, the composer's
// length budget, send key and typing throttle, room names and unread badges, attachments.
// Run with `node --test web/test/`.
import { test, describe } from 'node:test';
import assert from 'node:assert/strict';

import { splitLinks } from '../ui/links.js';
import { GROUP_GAP_MS, dayKey, dayLabel, layoutTimeline } from '../ui/timeline.js';
import { TYPING_REFRESH_MS, canSend, isSendKey, textBudget, typingWaitMs } from '../ui/composer.js';
import { MAX_FOLLOWED, UnreadCounts, badgeText, otherMembers, roomLabel, roomTitle, roomsToFollow } from '../ui/rooms.js';
import { attachmentPath, composerSendable, formatSize, isInlineImage, uploadName, uploadPath } from '../ui/files.js';

/** `splitLinks` as `['text', {link, href}, …]`, for short assertions. */
const pieces = (text) => splitLinks(text).map((p) => (p.href === undefined ? p.text : { link: p.text, href: p.href }));

describe('splitLinks', () => {
  test('plain text is one piece; empty text none', () => {
    assert.deepEqual(pieces('hello world'), ['hello world']);
    assert.deepEqual(pieces(''), []);
  });

  test('http and https URLs become links, the text around them stays', () => {
    assert.deepEqual(pieces('see https://example.com/a?b=1&c=2#d and http://x.org'), [
      'see ',
      { link: 'https://example.com/a?b=1&c=2#d', href: 'https://example.com/a?b=1&c=2#d' },
      ' and ',
      { link: 'http://x.org', href: 'http://x.org/' },
    ]);
  });

  test('joining the pieces gives the text back exactly', () => {
    for (const text of ['a https://b.c/d. e', 'https://x.y\nline two https://z.w', '(https://en.wikipedia.org/wiki/Foo_(bar))', '<b>x</b> https://q.r']) {
      assert.equal(
        splitLinks(text)
          .map((p) => p.text)
          .join(''),
        text,
      );
    }
  });

  test('trailing punctuation and unbalanced brackets are not part of the link', () => {
    assert.deepEqual(pieces('go to https://example.com/x.'), ['go to ', { link: 'https://example.com/x', href: 'https://example.com/x' }, '.']);
    assert.deepEqual(pieces('(see https://example.com/x)'), ['(see ', { link: 'https://example.com/x', href: 'https://example.com/x' }, ')']);
    assert.deepEqual(pieces('https://en.wikipedia.org/wiki/Foo_(bar), ok'), [
      { link: 'https://en.wikipedia.org/wiki/Foo_(bar)', href: 'https://en.wikipedia.org/wiki/Foo_(bar)' },
      ', ok',
    ]);
    assert.deepEqual(pieces('"https://example.com/q"'), ['"', { link: 'https://example.com/q', href: 'https://example.com/q' }, '"']);
  });

  test('only http(s) with a host: other schemes and broken URLs stay text', () => {
    for (const text of ['javascript:alert(1)', 'data:text/html,<b>x</b>', 'ftp://example.com/f', 'file:///etc/passwd', 'http://', 'https://)', 'mailto:a@b.c']) {
      assert.deepEqual(pieces(text), [text], text);
    }
    assert.deepEqual(pieces('xhttps://example.com'), ['xhttps://example.com'], 'not glued to a word');
  });

  test('the scheme may be in capitals; href is the parsed URL', () => {
    assert.deepEqual(pieces('HTTPS://Example.COM/Path'), [{ link: 'HTTPS://Example.COM/Path', href: 'https://example.com/Path' }]);
  });

  test('markup around a URL is not part of it', () => {
    assert.deepEqual(pieces('<a href="https://evil.example/">x</a>'), ['<a href="', { link: 'https://evil.example/', href: 'https://evil.example/' }, '">x</a>']);
  });
});

describe('layoutTimeline', () => {
  const day1 = new Date(2026, 10, 28, 23, 50).getTime();
  const day2 = new Date(2026, 10, 29, 0, 5).getTime();
  const minute = 60_000;

  test('one author within a few minutes is one group; a gap or another author starts a new one', () => {
    const layout = layoutTimeline([
      { authorId: 1, at: day2 },
      { authorId: 1, at: day2 + minute },
      { authorId: 1, at: day2 + minute + GROUP_GAP_MS - 1 },
      { authorId: 1, at: day2 + 2 * minute + 2 * GROUP_GAP_MS },
      { authorId: 2, at: day2 + 2 * minute + 2 * GROUP_GAP_MS + 1 },
      { authorId: 1, at: day2 + 2 * minute + 2 * GROUP_GAP_MS + 2 },
    ]);
    assert.deepEqual(
      layout.map((l) => l.continued),
      [false, true, true, false, false, false],
    );
  });

  test('a day separator goes before the first message of each day', () => {
    const layout = layoutTimeline(
      [
        { authorId: 1, at: day1 },
        { authorId: 1, at: day1 + minute },
        { authorId: 1, at: day2 }, // 15 min later, same author, but the next day
        { authorId: 2, at: day2 + minute },
      ],
      { fromStart: true },
    );
    assert.deepEqual(layout, [
      { day: dayKey(day1), continued: false },
      { day: null, continued: true },
      { day: dayKey(day2), continued: false },
      { day: null, continued: false },
    ]);
  });

  test('no separator above the first message until the history is loaded from the start', () => {
    const entries = [{ authorId: 1, at: day2 }];
    assert.deepEqual(layoutTimeline(entries), [{ day: null, continued: false }]);
    assert.deepEqual(layoutTimeline(entries, { fromStart: true }), [{ day: dayKey(day2), continued: false }]);
    assert.deepEqual(layoutTimeline([]), []);
  });

  test('a standalone entry (a failed send) and the one after it show their own header', () => {
    const layout = layoutTimeline([
      { authorId: 1, at: day2 },
      { authorId: 1, at: day2 + 1, standalone: true },
      { authorId: 1, at: day2 + 2 },
    ]);
    assert.deepEqual(
      layout.map((l) => l.continued),
      [false, false, false],
    );
  });

  test('slightly out-of-order times (clocks of two servers) still group; unknown authors never do', () => {
    const layout = layoutTimeline([
      { authorId: 1, at: day2 + 1000 },
      { authorId: 1, at: day2 },
      { authorId: undefined, at: day2 },
      { authorId: undefined, at: day2 },
    ]);
    assert.deepEqual(
      layout.map((l) => l.continued),
      [false, true, false, false],
    );
  });
});

describe('dayKey and dayLabel', () => {
  const now = new Date(2026, 10, 29, 15, 0).getTime();

  test('local calendar days', () => {
    assert.equal(dayKey(new Date(2026, 0, 5, 0, 0).getTime()), '2026-01-05');
    assert.equal(dayKey(new Date(2026, 11, 31, 23, 59).getTime()), '2026-12-31');
  });

  test('today, yesterday, a date this year, a date with its year', () => {
    assert.equal(dayLabel(new Date(2026, 10, 29, 0, 1).getTime(), now), 'Today');
    assert.equal(dayLabel(new Date(2026, 10, 28, 23, 59).getTime(), now), 'Yesterday');
    const thisYear = dayLabel(new Date(2026, 10, 20, 12, 0).getTime(), now);
    assert.ok(!/2026/.test(thisYear) && thisYear.length > 0, thisYear);
    assert.match(dayLabel(new Date(2025, 10, 20, 12, 0).getTime(), now), /2025/);
  });

  test('yesterday across a month and a year boundary', () => {
    assert.equal(dayLabel(new Date(2026, 11, 31, 8, 0).getTime(), new Date(2027, 0, 1, 9, 0).getTime()), 'Yesterday');
  });
});

describe('composer', () => {
  test('textBudget counts UTF-8 bytes, not characters', () => {
    assert.deepEqual(textBudget('', 4000), { bytes: 0, max: 4000, over: false, near: false, label: '0 / 4000' });
    assert.equal(textBudget('abc', 4000).bytes, 3);
    assert.equal(textBudget('é', 4000).bytes, 2);
    assert.equal(textBudget('€', 4000).bytes, 3);
    assert.equal(textBudget('👋', 4000).bytes, 4, 'a surrogate pair is one 4-byte character');
    assert.equal(textBudget('a\nb', 4000).bytes, 3, 'a line break is one byte');
    assert.equal(textBudget('👨‍👩‍👧', 4000).bytes, 18, 'a family emoji: three emoji and two joiners');
  });

  test('over the limit by one byte is over; 90 % is near', () => {
    assert.equal(textBudget('x'.repeat(4000), 4000).over, false);
    assert.equal(textBudget('x'.repeat(3999) + 'é', 4000).over, true, '4001 bytes in 4000 characters');
    assert.equal(textBudget('x'.repeat(3599), 4000).near, false);
    assert.equal(textBudget('x'.repeat(3600), 4000).near, true);
    assert.equal(textBudget('€'.repeat(1334), 4000).label, '4002 / 4000');
  });

  test('canSend: something besides whitespace, within the limit', () => {
    assert.equal(canSend('', 4000), false);
    assert.equal(canSend(' \n\t', 4000), false);
    assert.equal(canSend('hi', 4000), true);
    assert.equal(canSend('é'.repeat(2001), 4000), false);
  });

  test('Enter sends; Shift+Enter and an IME confirmation do not', () => {
    const key = (extra) => ({ key: 'Enter', shiftKey: false, isComposing: false, keyCode: 13, ...extra });
    assert.equal(isSendKey(key({})), true);
    assert.equal(isSendKey(key({ ctrlKey: true })), true);
    assert.equal(isSendKey(key({ shiftKey: true })), false);
    assert.equal(isSendKey(key({ isComposing: true })), false);
    assert.equal(isSendKey(key({ keyCode: 229 })), false);
    assert.equal(isSendKey(key({ key: 'a' })), false);
  });

  test('typingWaitMs: at most one Typing{true} per 3 s per room', () => {
    const last = { lastRoom: 'general', lastSentAt: 10_000 };
    assert.equal(typingWaitMs({ room: 'general', now: 10_500, ...last }), TYPING_REFRESH_MS - 500);
    assert.equal(typingWaitMs({ room: 'general', now: 10_000 + TYPING_REFRESH_MS, ...last }), 0);
    assert.equal(typingWaitMs({ room: 'design', now: 10_500, ...last }), 0, 'another room');
    assert.equal(typingWaitMs({ room: 'general', now: 0, lastRoom: null, lastSentAt: 0 }), 0, 'first one');
  });
});

describe('rooms', () => {
  const me = { id: 1, username: 'alice' };
  const bob = { id: 2, username: 'bob' };
  const carol = { id: 3, username: 'carol' };
  const general = { name: 'general', kind: 'public', topic: '' };
  const secret = { name: 'secret', kind: 'private', topic: '' };
  const dm = { name: '@1-2', kind: 'direct', members: [me, bob] };
  const group = { name: '@g-00ff', kind: 'direct', members: [carol, me, bob] };

  test('a direct conversation is named by the other members, a channel by its name', () => {
    assert.equal(roomLabel(general, me), 'general');
    assert.equal(roomLabel(dm, me), 'bob');
    assert.equal(roomLabel(dm, bob), 'alice');
    assert.equal(roomLabel(group, me), 'carol, bob');
    assert.deepEqual(otherMembers({ ...dm, members: [me] }, me), []);
    assert.equal(roomLabel({ ...dm, members: [me] }, me), 'only you', 'the others left it');
    assert.equal(roomLabel({ name: '@1-9', kind: 'direct' }, me), '@1-9', 'no members: its name');
  });

  test('titles mark the kind: # public, 🔒 private, @ direct', () => {
    assert.equal(roomTitle(general, me), '# general');
    assert.equal(roomTitle(secret, me), '🔒 secret');
    assert.equal(roomTitle(dm, me), '@ bob');
    assert.equal(roomTitle(undefined, me), '');
  });

  test('badges: nothing at 0, the count, "99+" at the server\'s cap of 100', () => {
    assert.equal(badgeText(0), '');
    assert.equal(badgeText(1), '1');
    assert.equal(badgeText(99), '99');
    assert.equal(badgeText(100), '99+');
    assert.equal(badgeText(250), '99+');
    assert.equal(badgeText(NaN), '');
  });

  test('the rooms to follow: the open one first, then the list, at most 32', () => {
    const list = Array.from({ length: 40 }, (_, i) => ({ name: `r${i}` }));
    const follow = roomsToFollow(list, 'r35');
    assert.equal(follow.length, MAX_FOLLOWED);
    assert.equal(follow[0], 'r35');
    assert.deepEqual(follow.slice(1, 4), ['r0', 'r1', 'r2']);
    assert.deepEqual(roomsToFollow([general, secret], 'gone'), ['general', 'secret'], 'an open room not in the list is not followed');
    assert.deepEqual(roomsToFollow([general, secret], null, 1), ['general']);
  });
});

describe('UnreadCounts', () => {
  test('the server\'s count at the list\'s head plus live posts above it and above the mark', () => {
    const u = new UnreadCounts();
    u.fromList({ name: 'design', unread: 3, head_seq: 10, last_read_seq: 7 });
    assert.equal(u.count('design'), 3);
    assert.equal(u.post('design', 9), false, 'at or below the head: counted by the server');
    assert.equal(u.post('design', 11), true);
    assert.equal(u.post('design', 11), false, 'once');
    assert.equal(u.count('design'), 4);
    assert.equal(u.deleted('design', 11), true);
    assert.equal(u.count('design'), 3);
    assert.equal(u.count('nowhere'), 0);
  });

  test('a read mark at or above the head clears it; below the head the list must be fetched again', () => {
    const u = new UnreadCounts();
    u.fromList({ name: 'design', unread: 3, head_seq: 10, last_read_seq: 7 });
    u.post('design', 11);
    u.post('design', 12);
    assert.equal(u.read('design', 8), true, 'cannot tell how many of the 3 are left');
    assert.equal(u.read('design', 8), false, 'not a move');
    assert.equal(u.read('design', 11), false);
    assert.equal(u.count('design'), 1, 'only 12 left');
    assert.equal(u.lastRead('design'), 11);
    // A list fetched before the mark moved: its count is read already.
    u.fromList({ name: 'design', unread: 3, head_seq: 10, last_read_seq: 7 });
    assert.equal(u.count('design'), 1);
    // A fresher list covers the live post.
    u.fromList({ name: 'design', unread: 1, head_seq: 12, last_read_seq: 11 });
    assert.equal(u.count('design'), 1);
    assert.equal(u.post('design', 12), false);
    assert.equal(u.read('design', 12), false);
    assert.equal(u.count('design'), 0);
  });

  test('counts stop at 100, like the server\'s', () => {
    const u = new UnreadCounts();
    u.fromList({ name: 'busy', unread: 100, head_seq: 500, last_read_seq: 1 });
    u.post('busy', 501);
    assert.equal(u.count('busy'), 100);
    assert.equal(badgeText(u.count('busy')), '99+');
    u.forget('busy');
    assert.equal(u.count('busy'), 0);
  });
});

describe('files', () => {
  test('only the four types the server shows inline are images', () => {
    for (const t of ['image/png', 'image/jpeg', 'image/gif', 'image/webp', 'IMAGE/PNG']) assert.equal(isInlineImage(t), true, t);
    for (const t of ['image/svg+xml', 'text/html', 'application/pdf', 'application/octet-stream', '']) assert.equal(isInlineImage(t), false, t);
  });

  test('paths: the name in the query, the id in the path', () => {
    assert.equal(uploadPath('a b&c.png'), '/api/uploads?name=a+b%26c.png');
    assert.equal(new URLSearchParams(uploadPath('résumé #1.pdf').split('?')[1]).get('name'), 'résumé #1.pdf');
    assert.equal(attachmentPath(12), '/api/uploads/12');
  });

  test('sizes read in B, KB and MB', () => {
    assert.equal(formatSize(0), '0 B');
    assert.equal(formatSize(1023), '1023 B');
    assert.equal(formatSize(1536), '1.5 KB');
    assert.equal(formatSize(48213), '47 KB');
    assert.equal(formatSize(10 * 1024 * 1024), '10 MB');
    assert.equal(formatSize(-1), '');
  });

  test('upload names the server takes: no path, no control characters, 255 bytes at most, never empty', () => {
    assert.equal(uploadName('C:\\fakepath\\cat.png'), 'cat.png');
    assert.equal(uploadName('a/b/c.txt'), 'c.txt');
    assert.equal(uploadName('line\nbreak.txt'), 'linebreak.txt');
    assert.equal(uploadName('', 'image/png'), 'pasted.png');
    assert.equal(uploadName('..'), 'pasted');
    const long = uploadName('é'.repeat(200));
    assert.equal(new TextEncoder().encode(long).length, 254, 'cut at a character boundary');
  });

  test('the composer sends text, or files with or without text, never while a file uploads', () => {
    const base = { text: '', bytes: 0, max: 4000, ready: 0, busy: 0 };
    assert.equal(composerSendable(base), false);
    assert.equal(composerSendable({ ...base, text: 'hi', bytes: 2 }), true);
    assert.equal(composerSendable({ ...base, text: '  ', bytes: 2, ready: 1 }), true, 'a file alone');
    assert.equal(composerSendable({ ...base, ready: 1, busy: 1 }), false, 'one still uploading');
    assert.equal(composerSendable({ ...base, text: 'hi', bytes: 2, failed: 1 }), false, 'a failed one to remove first');
    assert.equal(composerSendable({ ...base, text: 'x', bytes: 4001, ready: 1 }), false, 'too long');
  });
});
