// How the message list is laid out: which messages start a group (author and time shown) and
// where a day begins. Pure: entries and times in, decisions out; days are the viewer's local
// calendar days.

/** Messages of one author closer together than this share one author line. */
export const GROUP_GAP_MS = 5 * 60_000;

const pad2 = (n) => String(n).padStart(2, '0');

/** The local calendar day of a time, as 'YYYY-MM-DD'. */
export function dayKey(ms) {
  const d = new Date(ms);
  return `${d.getFullYear()}-${pad2(d.getMonth() + 1)}-${pad2(d.getDate())}`;
}

const weekdayDate = new Intl.DateTimeFormat(undefined, { weekday: 'long', month: 'long', day: 'numeric' });
const fullDate = new Intl.DateTimeFormat(undefined, { weekday: 'long', year: 'numeric', month: 'long', day: 'numeric' });

/** "Today", "Yesterday", a weekday and date this year, or a full date. */
export function dayLabel(ms, now = Date.now()) {
  const key = dayKey(ms);
  if (key === dayKey(now)) return 'Today';
  const yesterday = new Date(now);
  yesterday.setDate(yesterday.getDate() - 1);
  if (key === dayKey(yesterday.getTime())) return 'Yesterday';
  const d = new Date(ms);
  return d.getFullYear() === new Date(now).getFullYear() ? weekdayDate.format(d) : fullDate.format(d);
}

/**
 * Lays out a list of messages in display order.
 *
 * Each entry is `{authorId, at, standalone}` (`at` in ms; `standalone` for one that must show
 * its own header, like a failed send). A message continues the group of the one before when
 * both have the same author, fall on the same day and are less than `gapMs` apart (either way:
 * clocks of different servers may disagree a little). A day separator goes before the first
 * message of each day, except before the very first entry unless `fromStart` (the list begins
 * with the channel's first message): older messages of that day may still be loaded above it.
 * @param {Array<{authorId: number|undefined, at: number, standalone?: boolean}>} entries
 * @param {{fromStart?: boolean, gapMs?: number}} [opts]
 * @returns {Array<{day: string|null, continued: boolean}>} per entry: the day key of a
 *   separator to show before it (or null), and whether it continues the previous group
 */
export function layoutTimeline(entries, { fromStart = false, gapMs = GROUP_GAP_MS } = {}) {
  const out = [];
  let prev = null;
  let prevDay = null;
  for (const entry of entries) {
    const day = dayKey(entry.at);
    const newDay = prev === null ? fromStart : day !== prevDay;
    const continued =
      prev !== null &&
      !entry.standalone &&
      !prev.standalone &&
      day === prevDay &&
      entry.authorId !== undefined &&
      entry.authorId === prev.authorId &&
      Math.abs(entry.at - prev.at) < gapMs;
    out.push({ day: newDay ? day : null, continued });
    prev = entry;
    prevDay = day;
  }
  return out;
}
