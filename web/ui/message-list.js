// The message list of the current room (#messages): one element per post in seq order, own
// sends not yet acknowledged after them, author and time shown once per group, a separator
// where a day begins, an empty-room notice, and the scroll position: pinned to the newest
// message unless the reader scrolled up, and kept in place when older pages come in. A post
// shows "(edited)" once edited and a placeholder once deleted; its files show as images (the
// types the server serves inline) or as download links. Own posts carry Edit (an inline
// editor: Enter saves, Escape cancels) and Delete (confirmed in place), both from the keyboard.
// User text only ever becomes text nodes and, for http(s) links, <a> elements built here.
import { isSendKey } from './composer.js';
import { attachmentPath, formatSize, isInlineImage } from './files.js';
import { splitLinks } from './links.js';
import { dayLabel, layoutTimeline } from './timeline.js';

/** Closer than this to the bottom counts as "at the newest message". */
const NEAR_BOTTOM_PX = 48;
/** An image that failed to load (503: the node serves many files at once) is asked again this often, 1, 2, 4 s apart. */
const IMAGE_RETRIES = 3;

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

/** The files of a post: images inline (constrained by CSS), other files as download links. */
export function attachmentsEl(attachments, onImageLoad) {
  const box = document.createElement('div');
  box.className = 'attachments';
  for (const a of attachments) {
    const link = document.createElement('a');
    link.href = attachmentPath(a.id);
    if (isInlineImage(a.content_type)) {
      link.className = 'attachment image';
      link.target = '_blank';
      link.rel = 'noopener';
      const img = document.createElement('img');
      img.src = attachmentPath(a.id);
      img.alt = a.name;
      img.title = `${a.name} (${formatSize(a.size)})`;
      img.decoding = 'async';
      if (onImageLoad) img.addEventListener('load', onImageLoad);
      // A node serving many files at once answers 503 for a moment: try again a few times.
      let tries = 0;
      img.addEventListener('error', () => {
        if (tries >= IMAGE_RETRIES) return;
        tries += 1;
        setTimeout(() => img.isConnected && (img.src = `${attachmentPath(a.id)}?try=${tries}`), 1000 * 2 ** (tries - 1));
      });
      link.append(img);
    } else {
      link.className = 'attachment file';
      link.download = a.name;
      const name = document.createElement('span');
      name.className = 'file-name';
      name.textContent = a.name;
      const size = document.createElement('span');
      size.className = 'file-size';
      size.textContent = formatSize(a.size);
      link.append(name, size);
    }
    box.append(link);
  }
  return box;
}

export class MessageList {
  /**
   * @param {HTMLOListElement} el the list
   * @param {HTMLElement} emptyEl shown when the room has no messages at all
   * @param {object} hooks
   * @param {(user: {id: number, username: string}) => HTMLElement} hooks.authorEl an author's name element
   * @param {() => number|undefined} hooks.myId the logged-in user's id
   * @param {() => boolean} hooks.atStart whether the room's first message is loaded (or there is none)
   * @param {(seq: number) => ({kind: 'edit', text: string}|{kind: 'delete'}|undefined)} [hooks.pendingChange]
   *   an own edit or deletion of the post not yet confirmed (shown meanwhile)
   * @param {(m: object, text: string) => boolean} [hooks.onEdit] save an edit; false keeps the editor open
   * @param {(m: object) => void} [hooks.onDelete] delete the post (confirmed)
   * @param {(key: string) => void} [hooks.onRewrite] take a failed send back to the composer
   */
  constructor(el, emptyEl, { authorEl, myId, atStart, pendingChange = () => undefined, onEdit = () => true, onDelete = () => {}, onRewrite = () => {} }) {
    this.el = el;
    this.emptyEl = emptyEl;
    this.authorEl = authorEl;
    this.myId = myId;
    this.atStart = atStart;
    this.pendingChange = pendingChange;
    this.onEdit = onEdit;
    this.onDelete = onDelete;
    this.onRewrite = onRewrite;
    /** seq → the post shown, for its editor and its actions. */
    this.shown = new Map();
    /** Whether the view follows the newest message; false once the reader scrolls up. */
    this.pinned = true;
    el.addEventListener('scroll', () => (this.pinned = this.isNearBottom()), { passive: true });
    // The list's box shrinks when the composer grows, the typing or error line appears, or a
    // phone's keyboard opens: a pinned view stays on the newest message.
    new ResizeObserver(() => this.pinned && this.scrollToEnd()).observe(el);
    el.addEventListener('click', (e) => this.onClick(e));
    el.addEventListener('keydown', (e) => this.onKeydown(e));
  }

  /** An image that loaded grew its message: a pinned view stays on the newest one. */
  imageLoaded = () => {
    if (this.pinned) this.scrollToEnd();
  };

  /** Whether the newest post (or pending send) is entirely in the list's visible area. */
  newestInView() {
    const items = this.el.querySelectorAll(':scope > .message');
    const last = items[items.length - 1];
    if (!last) return true;
    const box = this.el.getBoundingClientRect();
    const r = last.getBoundingClientRect();
    return box.height > 0 && r.top >= box.top - 1 && r.bottom <= box.bottom + 1;
  }

  /** Shows the current state of posts already in the list (edited, deleted, newer copy). */
  update(posts) {
    const changed = posts.filter((m) => this.elOf(m.seq));
    if (!changed.length) return;
    this.mutate(() => {
      // The layout classes (continued) come back with the refresh after the change.
      for (const m of changed) this.elOf(m.seq).replaceWith(this.messageEl(m));
    });
  }

  elOf(seq) {
    return this.el.querySelector(`:scope > [data-seq="${seq}"]`);
  }

  onClick(e) {
    const button = e.target instanceof Element ? e.target.closest('button[data-action]') : null;
    const failed = button?.dataset.action === 'rewrite' ? button.closest('.message.failed[data-pending]') : null;
    if (failed && this.el.contains(failed)) {
      this.onRewrite(failed.dataset.pending);
      return;
    }
    const li = e.target instanceof Element ? e.target.closest('.message[data-seq]') : null;
    if (!li || !this.el.contains(li)) return;
    if (!button) {
      // A tap on an own post shows its actions on a touch screen (no hover there).
      if (li.classList.contains('own') && !e.target.closest('a, textarea, input')) li.toggleAttribute('data-show-actions');
      return;
    }
    const m = this.shown.get(Number(li.dataset.seq));
    if (!m) return;
    switch (button.dataset.action) {
      case 'edit':
        this.startEdit(li, m);
        break;
      case 'delete':
        this.askDelete(li);
        break;
      case 'confirm-delete':
        this.closeConfirm(li);
        this.onDelete(m);
        break;
      case 'cancel-delete':
        this.closeConfirm(li, true);
        break;
      case 'save-edit':
        this.saveEdit(li, m);
        break;
      case 'cancel-edit':
        this.closeEditor(li, true);
        break;
      default:
    }
  }

  onKeydown(e) {
    const li = e.target instanceof Element ? e.target.closest('.message[data-seq]') : null;
    if (!li) return;
    if (e.target.classList.contains('edit-input')) {
      if (e.key === 'Escape') {
        e.preventDefault();
        e.stopPropagation();
        this.closeEditor(li, true);
      } else if (isSendKey(e)) {
        e.preventDefault();
        const m = this.shown.get(Number(li.dataset.seq));
        if (m) this.saveEdit(li, m);
      }
    } else if (e.key === 'Escape' && li.querySelector('.confirm')) {
      e.preventDefault();
      e.stopPropagation();
      this.closeConfirm(li, true);
    }
  }

  /** Opens the inline editor of an own post: the text in a textarea, focused. */
  startEdit(li, m) {
    if (li.querySelector('.editor')) return;
    this.closeConfirm(li);
    const editor = document.createElement('div');
    editor.className = 'editor';
    const input = document.createElement('textarea');
    input.className = 'edit-input';
    input.value = m.text;
    input.rows = Math.min(8, m.text.split('\n').length);
    input.setAttribute('aria-label', 'Edit message');
    const hint = document.createElement('span');
    hint.className = 'edit-hint';
    hint.textContent = 'Enter saves, Escape cancels';
    const save = actionButton('save-edit', 'Save', 'Save the edit');
    const cancel = actionButton('cancel-edit', 'Cancel', 'Cancel the edit');
    editor.append(input, hint, save, cancel);
    li.classList.add('editing');
    li.querySelector(':scope > .text').after(editor);
    input.focus();
    input.setSelectionRange(input.value.length, input.value.length);
    if (li === this.el.lastElementChild || !this.el.lastElementChild.dataset.seq) this.scrollToEnd();
  }

  saveEdit(li, m) {
    const input = li.querySelector('.edit-input');
    if (!input) return;
    if (input.value === m.text) {
      this.closeEditor(li, true);
      return;
    }
    if (this.onEdit(m, input.value) !== false) this.closeEditor(li, true);
  }

  closeEditor(li, refocus = false) {
    const editor = li.querySelector(':scope > .editor');
    if (!editor) return;
    editor.remove();
    li.classList.remove('editing');
    if (refocus) li.querySelector('button[data-action="edit"]')?.focus();
  }

  /** Asks in place whether to delete an own post; Cancel has the focus. */
  askDelete(li) {
    if (li.querySelector('.confirm')) return;
    this.closeEditor(li);
    const box = document.createElement('div');
    box.className = 'confirm';
    box.setAttribute('role', 'group');
    box.setAttribute('aria-label', 'Delete this message?');
    const q = document.createElement('span');
    q.textContent = 'Delete this message?';
    const yes = actionButton('confirm-delete', 'Delete', 'Delete the message for everyone');
    yes.classList.add('danger');
    const no = actionButton('cancel-delete', 'Cancel', 'Keep the message');
    box.append(q, yes, no);
    li.append(box);
    no.focus();
  }

  closeConfirm(li, refocus = false) {
    const box = li.querySelector(':scope > .confirm');
    if (!box) return;
    box.remove();
    if (refocus) li.querySelector('button[data-action="delete"]')?.focus();
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
    this.shown.clear();
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
    const change = m.deleted ? undefined : this.pendingChange(m.seq);
    const li = document.createElement('li');
    li.className = 'message';
    if (own) li.classList.add('own');
    if (m.deleted) li.classList.add('deleted');
    li.dataset.seq = String(m.seq);
    li.dataset.at = String(m.sent_at_ms);
    if (m.sender && Number.isSafeInteger(m.sender.id)) li.dataset.authorId = String(m.sender.id);
    this.shown.set(m.seq, m);

    const meta = document.createElement('span');
    meta.className = 'meta';
    const time = document.createElement('time');
    time.className = 'time';
    const d = new Date(m.sent_at_ms);
    time.dateTime = d.toISOString();
    time.title = d.toLocaleString();
    time.textContent = formatTime(m.sent_at_ms);
    meta.append(time);
    if (change) {
      meta.append(marker('change', change.kind === 'delete' ? 'deleting…' : 'saving…'));
    } else if (m.edited_at_ms !== null && m.edited_at_ms !== undefined && !m.deleted) {
      const edited = marker('edited', '(edited)');
      edited.title = `edited ${new Date(m.edited_at_ms).toLocaleString()}`;
      meta.append(edited);
    }
    li.append(this.authorEl(m.sender), meta);

    if (own && !m.deleted && !change) {
      const actions = document.createElement('span');
      actions.className = 'actions';
      actions.append(actionButton('edit', 'Edit', 'Edit your message'), actionButton('delete', 'Delete', 'Delete your message'));
      li.append(actions);
    }
    if (m.deleted) {
      const text = document.createElement('div');
      text.className = 'text placeholder';
      text.textContent = 'message deleted';
      li.append(text);
      return li;
    }
    li.append(messageTextEl(change && change.kind === 'edit' ? change.text : m.text));
    if (m.attachments && m.attachments.length) li.append(attachmentsEl(m.attachments, this.imageLoaded));
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
    status.className = 'meta';
    const label = document.createElement('span');
    label.className = 'time';
    label.textContent = p.failed ? `not sent: ${p.reason}` : 'sending…';
    status.append(label);
    // A failed send goes back to the composer, to be changed and sent again (or dropped).
    if (p.failed) status.append(actionButton('rewrite', 'Edit', 'Back to the composer, to change it and send it again'));
    li.append(this.authorEl(p.author), status, messageTextEl(p.text));
    if (p.attachments && p.attachments.length) li.append(attachmentsEl(p.attachments, this.imageLoaded));
    return li;
  }
}

/** A small button of a post's actions, its editor or its confirmation. */
function actionButton(action, label, title) {
  const b = document.createElement('button');
  b.type = 'button';
  b.dataset.action = action;
  b.textContent = label;
  b.title = title;
  return b;
}

function marker(className, text) {
  const span = document.createElement('span');
  span.className = className;
  span.textContent = text;
  return span;
}
