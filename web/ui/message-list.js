// The message list of the current room (#messages): one element per message in seq order,
// own sends not yet acknowledged after them, author and time shown once per group, a
// separator where a day begins, an empty-room notice, and the scroll position: pinned to the
// newest message unless the reader scrolled up, and kept in place when older pages come in.
// User text only ever becomes text nodes and, for http(s) links, <a> elements built here.
import { splitLinks } from './links.js';
import { dayLabel, layoutTimeline } from './timeline.js';

/** Closer than this to the bottom counts as "at the newest message". */
const NEAR_BOTTOM_PX = 48;

const timeFormat = new Intl.DateTimeFormat(undefined, { hour: '2-digit', minute: '2-digit' });
const dateTimeFormat = new Intl.DateTimeFormat(undefined, { month: 'short', day: 'numeric', hour: '2-digit', minute: '2-digit' });

/** The time of a message; with its date unless it is today's (the top of a page may lack a separator). */
function formatTime(ms) {
  const d = new Date(ms);
  return d.toDateString() === new Date().toDateString() ? timeFormat.format(d) : dateTimeFormat.format(d);
}

/** A message text as text nodes and links; `white-space: pre-wrap` shows its line breaks. */
export function messageTextEl(text) {
  const el = document.createElement('div');
  el.className = 'text';
  for (const piece of splitLinks(text)) {
    if (piece.href === undefined) {
      el.append(document.createTextNode(piece.text));
      continue;
    }
    const a = document.createElement('a');
    a.href = piece.href;
    a.textContent = piece.text;
    a.target = '_blank';
    a.rel = 'noopener noreferrer';
    el.append(a);
  }
  return el;
}

export class MessageList {
  /**
   * @param {HTMLOListElement} el the list
   * @param {HTMLElement} emptyEl shown when the room has no messages at all
   * @param {object} hooks
   * @param {(user: {id: number, username: string}) => HTMLElement} hooks.authorEl an author's name element
   * @param {() => number|undefined} hooks.myId the logged-in user's id
   * @param {() => boolean} hooks.atStart whether the room's first message is loaded (or there is none)
   */
  constructor(el, emptyEl, { authorEl, myId, atStart }) {
    this.el = el;
    this.emptyEl = emptyEl;
    this.authorEl = authorEl;
    this.myId = myId;
    this.atStart = atStart;
    /** Whether the view follows the newest message; false once the reader scrolls up. */
    this.pinned = true;
    el.addEventListener('scroll', () => (this.pinned = this.isNearBottom()), { passive: true });
    // The list's box shrinks when the composer grows, the typing or error line appears, or a
    // phone's keyboard opens: a pinned view stays on the newest message.
    new ResizeObserver(() => this.pinned && this.scrollToEnd()).observe(el);
  }

  isNearBottom() {
    const el = this.el;
    return el.scrollHeight - el.scrollTop - el.clientHeight < NEAR_BOTTOM_PX;
  }

  scrollToEnd() {
    this.el.scrollTop = this.el.scrollHeight;
  }

  /** Replaces the list with `messages` (seq order) and `pending` sends, at the newest one. */
  reset(messages, pending) {
    const frag = document.createDocumentFragment();
    for (const m of messages) frag.append(this.messageEl(m));
    for (const p of pending) frag.append(this.pendingEl(p));
    this.el.replaceChildren(frag);
    this.refresh();
    this.pinned = true;
    this.scrollToEnd();
  }

  /** Shows confirmed messages; an older-than-everything batch is prepended at once. */
  show(messages) {
    if (!messages.length) return;
    messages.sort((a, b) => a.seq - b.seq);
    this.mutate(() => {
      const first = this.el.querySelector(':scope > [data-seq]');
      if (first && messages[messages.length - 1].seq < Number(first.dataset.seq)) {
        const frag = document.createDocumentFragment();
        for (const m of messages) frag.append(this.messageEl(m));
        this.el.prepend(frag);
      } else {
        for (const m of messages) this.insert(m);
      }
    });
  }

  /** Adds an own send that is not acknowledged yet, and brings the view to it. */
  appendPending(p) {
    this.el.append(this.pendingEl(p));
    this.refresh();
    this.pinned = true;
    this.scrollToEnd();
  }

  /** Shows a pending send again (it failed). */
  replacePending(p) {
    const old = this.pendingElOf(p.key);
    if (old) this.mutate(() => old.replaceWith(this.pendingEl(p)));
  }

  removePending(key) {
    const el = this.pendingElOf(key);
    if (el) this.mutate(() => el.remove());
  }

  pendingElOf(key) {
    return this.el.querySelector(`:scope > [data-pending="${CSS.escape(key)}"]`);
  }

  /**
   * Runs a change of the list without moving what the reader sees: stays at the newest
   * message when the view was pinned there, otherwise keeps the first visible message where
   * it was (so prepending an older page does not jump).
   */
  mutate(change) {
    const el = this.el;
    const pinned = this.pinned || this.isNearBottom();
    let anchor = null;
    let anchorOffset = 0;
    if (!pinned) {
      for (const item of el.children) {
        if (item.classList.contains('message') && item.offsetTop + item.offsetHeight > el.scrollTop) {
          anchor = item;
          anchorOffset = item.offsetTop - el.scrollTop;
          break;
        }
      }
    }
    change();
    this.refresh();
    if (pinned) this.scrollToEnd();
    else if (anchor && anchor.isConnected) el.scrollTop = anchor.offsetTop - anchorOffset;
  }

  /** Inserts an element for `m` at its seq position (pending sends stay last). */
  insert(m) {
    const li = this.messageEl(m);
    for (let el = this.el.lastElementChild; el; el = el.previousElementSibling) {
      if (el.dataset.seq === undefined) continue; // a pending send or a day separator
      const seq = Number(el.dataset.seq);
      if (seq === m.seq) return; // already shown
      if (seq < m.seq) {
        el.after(li);
        return;
      }
    }
    this.el.prepend(li);
  }

  /**
   * Recomputes the layout after a change: which messages continue their author's group, the
   * day separators, and the empty-room notice.
   */
  refresh() {
    const items = [...this.el.children].filter((el) => el.classList.contains('message'));
    const entries = items.map((el) => ({
      authorId: el.dataset.authorId === undefined ? undefined : Number(el.dataset.authorId),
      at: Number(el.dataset.at),
      standalone: el.classList.contains('failed'),
    }));
    const atStart = this.atStart();
    const layout = layoutTimeline(entries, { fromStart: atStart });
    const now = Date.now();
    items.forEach((item, i) => {
      const { day, continued } = layout[i];
      item.classList.toggle('continued', continued);
      // A hidden author name is no tab stop (it is still read out).
      const author = item.querySelector('.author');
      if (author && author.dataset.userId !== undefined) author.tabIndex = continued ? -1 : 0;
      let separator = item.previousElementSibling;
      if (separator && !separator.classList.contains('day-separator')) separator = null;
      if (day === null) {
        separator?.remove();
        return;
      }
      if (!separator) {
        separator = document.createElement('li');
        separator.className = 'day-separator';
        separator.setAttribute('role', 'separator');
        separator.append(document.createElement('span'));
        item.before(separator);
      }
      separator.dataset.day = day;
      const label = dayLabel(Number(item.dataset.at), now);
      if (separator.firstChild.textContent !== label) separator.firstChild.textContent = label;
    });
    for (const separator of this.el.querySelectorAll(':scope > .day-separator')) {
      if (!separator.nextElementSibling?.classList.contains('message')) separator.remove();
    }
    this.emptyEl.hidden = !(items.length === 0 && atStart);
  }

  messageEl(m) {
    const own = m.sender && m.sender.id === this.myId();
    const li = document.createElement('li');
    li.className = own ? 'message own' : 'message';
    li.dataset.seq = String(m.seq);
    li.dataset.at = String(m.sent_at_ms);
    if (m.sender && Number.isSafeInteger(m.sender.id)) li.dataset.authorId = String(m.sender.id);
    const time = document.createElement('time');
    time.className = 'time';
    const d = new Date(m.sent_at_ms);
    time.dateTime = d.toISOString();
    time.title = d.toLocaleString();
    time.textContent = formatTime(m.sent_at_ms);
    li.append(this.authorEl(m.sender), time, messageTextEl(m.text));
    return li;
  }

  /** `p`: `{key, text, failed, reason, at}` with `at` when it was sent. */
  pendingEl(p) {
    const li = document.createElement('li');
    li.className = p.failed ? 'message own pending failed' : 'message own pending';
    li.dataset.pending = p.key;
    li.dataset.at = String(p.at);
    const me = this.myId();
    if (Number.isSafeInteger(me)) li.dataset.authorId = String(me);
    const status = document.createElement('span');
    status.className = 'time';
    status.textContent = p.failed ? `not sent: ${p.reason}` : 'sending…';
    li.append(this.authorEl(p.author), status, messageTextEl(p.text));
    return li;
  }
}
