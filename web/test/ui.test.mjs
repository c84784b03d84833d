// The web UI's pure rules: links in message text, grouping and day separators, the composer's
// length budget, send key and typing throttle. Run with `node --test web/test/`.
import { test, describe } from 'node:test';
import assert from 'node:assert/strict';

import { splitLinks } from '../ui/links.js';
import { GROUP_GAP_MS, dayKey, dayLabel, layoutTimeline } from '../ui/timeline.js';
import { TYPING_REFRESH_MS, canSend, isSendKey, textBudget, typingWaitMs } from '../ui/composer.js';

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
