// SocketChat web UI. No framework, no build step; runs under
// `default-src 'self'; connect-src 'self' <WebTransport origin>; style-src 'self'; img-src 'self' data:`,
// so nothing inline. User-supplied text only ever goes through textContent.
import { ChatClient, ErrorCode, MAX_TEXT_BYTES, idToHex, utf8Length } from './socketchat.js';

const HISTORY_PAGE = 50;
const TYPING_REFRESH_MS = 3000; // send Typing{active:true} at most this often
const TYPING_IDLE_MS = 4000; // send Typing{active:false} after this long without input
const TYPING_EXPIRE_MS = 6000; // others' typing state expires without a refresh
const ERROR_LINE_MS = 8000;
const NEAR_TOP_PX = 48;
const NEAR_BOTTOM_PX = 48;

// Query parameters for tests and debugging: `?transport=websocket` (or `webtransport`, `auto`)
// chooses the transport policy; `?test-hooks` exposes the client as `window.__socketchat.client`.
const params = new URLSearchParams(location.search);
const TRANSPORT_MODES = ['auto', 'websocket', 'webtransport'];
const transportMode = TRANSPORT_MODES.includes(params.get('transport')) ? params.get('transport') : 'auto';
const TRANSPORT_LABELS = { webtransport: 'WebTransport', websocket: 'WebSocket' };

const $ = (sel) => document.querySelector(sel);
const els = {
  status: $('#status'),
  transport: $('#transport'),
  me: $('#me'),
  logout: $('#logout'),
  authView: $('#auth-view'),
  authNotice: $('#auth-notice'),
  loginForm: $('#login-form'),
  registerForm: $('#register-form'),
  chatView: $('#chat-view'),
  channels: $('#channels'),
  roomName: $('#room-name'),
  roomTopic: $('#room-topic'),
  messages: $('#messages'),
  typing: $('#typing'),
  error: $('#error'),
  composer: $('#composer'),
  input: $('#message-input'),
  online: $('#online'),
};

/** Per-room view state. */
class RoomCache {
  constructor(name) {
    this.name = name;
    /** seq → ChatMessage */
    this.messages = new Map();
    /** hex(client_msg_id) → {key, text, failed, reason} (own sends not yet acked) */
    this.pending = new Map();
    /** before_seq of the next older page: undefined = unknown, null = reached seq 1. */
    this.nextBefore = undefined;
    this.initialLoading = false;
    this.loadingOlder = false;
  }
  minSeq() {
    let min;
    for (const seq of this.messages.keys()) if (min === undefined || seq < min) min = seq;
    return min;
  }
}

const state = {
  me: null,
  channels: [],
  room: null,
  rooms: new Map(),
  online: new Map(),
  /** room → Map(user id → {user, timer}) */
  typing: new Map(),
};

let client = null;
let statusTimer = null;
let errorTimer = null;
const typingOut = { active: false, room: null, lastSentAt: 0, idleTimer: null };

// ---------------------------------------------------------------------------------------------
// REST
// ---------------------------------------------------------------------------------------------

async function api(method, path, body) {
  const init = { method, credentials: 'same-origin', headers: { accept: 'application/json' } };
  if (body !== undefined) {
    init.headers['content-type'] = 'application/json';
    init.body = JSON.stringify(body);
  }
  const res = await fetch(path, init);
  let data = null;
  if (res.status !== 204) {
    try {
      data = await res.json();
    } catch {
      data = null;
    }
  }
  return { status: res.status, ok: res.ok, data };
}

// ---------------------------------------------------------------------------------------------
// Views
// ---------------------------------------------------------------------------------------------

function showAuth(notice) {
  els.chatView.hidden = true;
  els.authView.hidden = false;
  els.logout.hidden = true;
  els.me.textContent = '';
  els.authNotice.textContent = notice || '';
  els.authNotice.hidden = !notice;
  setStatusText('idle', '');
  renderTransport(null);
  els.loginForm.querySelector('input')?.focus();
}

function clearFormErrors(form) {
  for (const el of form.querySelectorAll('[data-error-for]')) el.textContent = '';
  for (const el of form.querySelectorAll('[aria-invalid]')) el.removeAttribute('aria-invalid');
}

function showFormErrors(form, result, fallback) {
  const data = result.data || {};
  const fields = data.fields && typeof data.fields === 'object' ? data.fields : {};
  let shownOnField = false;
  for (const [field, message] of Object.entries(fields)) {
    const slot = form.querySelector(`[data-error-for="${CSS.escape(field)}"]`);
    const input = form.querySelector(`[name="${CSS.escape(field)}"]`);
    if (input) input.setAttribute('aria-invalid', 'true');
    if (slot) {
      slot.textContent = String(message);
      shownOnField = true;
    }
  }
  const formSlot = form.querySelector('[data-error-for="form"]');
  const message = typeof data.error === 'string' ? data.error : fallback;
  if (formSlot && !shownOnField) formSlot.textContent = message;
}

async function submitAuth(form, path, body, okStatus) {
  clearFormErrors(form);
  const button = form.querySelector('button[type="submit"]');
  button.disabled = true;
  try {
    const result = await api('POST', path, body);
    if (result.status === okStatus && result.data && result.data.user) {
      form.reset();
      await enterChat(result.data.user);
    } else {
      showFormErrors(form, result, `Request failed (HTTP ${result.status})`);
    }
  } catch (err) {
    showFormErrors(form, { data: null }, `Network error: ${err.message}`);
  } finally {
    button.disabled = false;
  }
}

els.loginForm.addEventListener('submit', (e) => {
  e.preventDefault();
  submitAuth(
    els.loginForm,
    '/api/auth/login',
    { email: $('#login-email').value.trim(), password: $('#login-password').value },
    200,
  );
});

els.registerForm.addEventListener('submit', (e) => {
  e.preventDefault();
  submitAuth(
    els.registerForm,
    '/api/auth/register',
    {
      username: $('#register-username').value.trim(),
      email: $('#register-email').value.trim(),
      password: $('#register-password').value,
    },
    201,
  );
});

els.logout.addEventListener('click', async () => {
  els.logout.disabled = true;
  try {
    await api('POST', '/api/auth/logout');
  } catch {
    /* leave anyway */
  } finally {
    els.logout.disabled = false;
  }
  leaveChat();
  showAuth('You have been logged out.');
});

// ---------------------------------------------------------------------------------------------
// Chat session
// ---------------------------------------------------------------------------------------------

async function enterChat(user) {
  state.me = user;
  els.me.textContent = user.username;
  els.logout.hidden = false;
  els.authView.hidden = true;
  els.authNotice.hidden = true;
  els.chatView.hidden = false;

  let channels = [];
  try {
    const result = await api('GET', '/api/channels');
    if (result.status === 401) {
      leaveChat();
      showAuth('Please log in.');
      return;
    }
    channels = (result.data && Array.isArray(result.data.channels) && result.data.channels) || [];
  } catch (err) {
    showError(`Could not load channels: ${err.message}`);
  }
  state.channels = channels;
  renderChannels();

  client = new ChatClient({
    transport: transportMode,
    checkAuth: async () => {
      const r = await api('GET', '/api/auth/me');
      return r.status !== 401;
    },
  });
  client.on('status', onStatus);
  client.on('transport', (t) => renderTransport(t.transport));
  client.on('transport_fallback', (f) => {
    els.transport.title = `WebTransport failed (${f.error}); using WebSocket`;
  });
  client.on('welcome', (w) => {
    state.me = { ...state.me, id: w.user.id, username: w.user.username };
    els.me.textContent = w.user.username;
  });
  client.on('online', onOnline);
  client.on('presence', onPresence);
  client.on('joined', onJoined);
  client.on('message', onMessage);
  client.on('ack', onAck);
  client.on('typing', onTyping);
  client.on('error', onErrorFrame);
  client.on('send_failed', onSendFailed);
  client.on('unauthorized', () => {
    leaveChat();
    showAuth('Your session has ended. Please log in again.');
  });

  const fromHash = decodeURIComponent(location.hash.slice(1));
  const names = channels.map((c) => c.name);
  const initial = names.includes(fromHash) ? fromHash : names.includes('general') ? 'general' : names[0] || 'general';
  selectRoom(initial);
  client.connect();
}

function leaveChat() {
  stopTyping();
  if (client) {
    client.reset();
    client = null;
  }
  clearInterval(statusTimer);
  for (const perRoom of state.typing.values()) for (const t of perRoom.values()) clearTimeout(t.timer);
  state.me = null;
  state.room = null;
  state.rooms.clear();
  state.online.clear();
  state.typing.clear();
  els.channels.replaceChildren();
  els.messages.replaceChildren();
  els.online.replaceChildren();
  els.typing.textContent = '';
  els.roomName.textContent = '';
  els.roomTopic.textContent = '';
  hideError();
}

function roomCache(name) {
  let cache = state.rooms.get(name);
  if (!cache) {
    cache = new RoomCache(name);
    state.rooms.set(name, cache);
  }
  return cache;
}

function selectRoom(name) {
  if (state.room === name) return;
  stopTyping();
  state.room = name;
  for (const btn of els.channels.querySelectorAll('[data-channel]')) {
    if (btn.dataset.channel === name) btn.setAttribute('aria-current', 'true');
    else btn.removeAttribute('aria-current');
  }
  const channel = state.channels.find((c) => c.name === name);
  els.roomName.textContent = `# ${name}`;
  els.roomTopic.textContent = channel && channel.topic ? channel.topic : '';
  if (location.hash.slice(1) !== name) history.replaceState(null, '', `#${encodeURIComponent(name)}`);
  renderRoom();
  renderTyping();
  // Switch{room, after_seq}: after_seq is the highest seq we have (null the first time).
  client.switchRoom(name);
  els.input.focus();
}

function renderChannels() {
  const frag = document.createDocumentFragment();
  for (const ch of state.channels) {
    const li = document.createElement('li');
    const btn = document.createElement('button');
    btn.type = 'button';
    btn.className = 'channel';
    btn.dataset.channel = ch.name;
    btn.textContent = `# ${ch.name}`;
    if (ch.topic) btn.title = ch.topic;
    if (ch.name === state.room) btn.setAttribute('aria-current', 'true');
    li.append(btn);
    frag.append(li);
  }
  els.channels.replaceChildren(frag);
}

els.channels.addEventListener('click', (e) => {
  const btn = e.target.closest('[data-channel]');
  if (btn && client) selectRoom(btn.dataset.channel);
});

window.addEventListener('hashchange', () => {
  const name = decodeURIComponent(location.hash.slice(1));
  if (client && state.channels.some((c) => c.name === name)) selectRoom(name);
});

// ---------------------------------------------------------------------------------------------
// Connection status
// ---------------------------------------------------------------------------------------------

function setStatusText(stateName, text, title = '') {
  els.status.dataset.state = stateName;
  els.status.textContent = text;
  els.status.title = title;
}

/** Shows the transport of the connection next to the status ('webtransport' | 'websocket'). */
function renderTransport(kind) {
  const label = kind ? TRANSPORT_LABELS[kind] : '';
  els.transport.textContent = label || '';
  els.transport.dataset.transport = kind || '';
  els.transport.hidden = !label;
  if (kind === 'webtransport') els.transport.title = 'Connected over WebTransport (HTTP/3)';
  else if (kind === 'websocket' && !els.transport.title.startsWith('WebTransport failed')) els.transport.title = 'Connected over WebSocket';
}

function onStatus(s) {
  clearInterval(statusTimer);
  statusTimer = null;
  // The transport badge stays, dimmed, while not connected (it names the last transport).
  if (s.state === 'connected') delete els.transport.dataset.stale;
  else els.transport.dataset.stale = '';
  switch (s.state) {
    case 'connecting':
      setStatusText('connecting', s.attempt ? 'Reconnecting…' : 'Connecting…');
      break;
    case 'connected':
      setStatusText('connected', 'Connected');
      els.online.classList.remove('stale');
      break;
    case 'reconnecting': {
      const title = s.reason ? `Connection closed: ${s.reason}` : '';
      const tick = () => {
        const secs = Math.max(0, Math.ceil((s.retry_at - Date.now()) / 1000));
        setStatusText('reconnecting', `Reconnecting in ${secs}s`, title);
      };
      tick();
      statusTimer = setInterval(tick, 250);
      els.online.classList.add('stale');
      break;
    }
    case 'disconnected':
      setStatusText('disconnected', `Disconnected: ${s.reason || 'closed'}`);
      els.online.classList.add('stale');
      break;
    default:
      setStatusText(s.state, '');
  }
}

// ---------------------------------------------------------------------------------------------
// Messages
// ---------------------------------------------------------------------------------------------

const timeFormat = new Intl.DateTimeFormat(undefined, { hour: '2-digit', minute: '2-digit' });
const dateTimeFormat = new Intl.DateTimeFormat(undefined, { month: 'short', day: 'numeric', hour: '2-digit', minute: '2-digit' });

function formatTime(ms) {
  const d = new Date(ms);
  const now = new Date();
  return d.toDateString() === now.toDateString() ? timeFormat.format(d) : dateTimeFormat.format(d);
}

function isOwn(m) {
  return state.me && m.sender && m.sender.id === state.me.id;
}

function messageEl(m) {
  const li = document.createElement('li');
  li.className = isOwn(m) ? 'message own' : 'message';
  li.dataset.seq = String(m.seq);
  const author = document.createElement('span');
  author.className = 'author';
  author.textContent = m.sender.username;
  const time = document.createElement('time');
  time.className = 'time';
  const d = new Date(m.sent_at_ms);
  time.dateTime = d.toISOString();
  time.title = d.toLocaleString();
  time.textContent = formatTime(m.sent_at_ms);
  const text = document.createElement('div');
  text.className = 'text';
  text.textContent = m.text;
  li.append(author, time, text);
  return li;
}

function pendingEl(p) {
  const li = document.createElement('li');
  li.className = p.failed ? 'message own pending failed' : 'message own pending';
  li.dataset.pending = p.key;
  const author = document.createElement('span');
  author.className = 'author';
  author.textContent = state.me ? state.me.username : '';
  const time = document.createElement('span');
  time.className = 'time';
  time.textContent = p.failed ? `not sent: ${p.reason}` : 'sending…';
  const text = document.createElement('div');
  text.className = 'text';
  text.textContent = p.text;
  li.append(author, time, text);
  return li;
}

function isNearBottom() {
  const list = els.messages;
  return list.scrollHeight - list.scrollTop - list.clientHeight < NEAR_BOTTOM_PX;
}

/**
 * Runs a DOM mutation of the message list without moving what the reader sees: stays pinned
 * to the bottom when it was there, otherwise keeps the first visible message where it was
 * (so prepending an older page does not jump).
 */
function mutateMessages(fn) {
  const list = els.messages;
  const pinned = isNearBottom();
  let anchor = null;
  let anchorOffset = 0;
  if (!pinned) {
    for (const el of list.children) {
      if (el.offsetTop + el.offsetHeight > list.scrollTop) {
        anchor = el;
        anchorOffset = el.offsetTop - list.scrollTop;
        break;
      }
    }
  }
  fn();
  if (pinned) list.scrollTop = list.scrollHeight;
  else if (anchor && anchor.isConnected) list.scrollTop = anchor.offsetTop - anchorOffset;
}

/** Inserts an element for `m` at its seq position (pending sends stay last). */
function insertMessageEl(m) {
  const list = els.messages;
  const li = messageEl(m);
  for (let el = list.lastElementChild; el; el = el.previousElementSibling) {
    if (el.dataset.seq === undefined) continue; // pending
    const seq = Number(el.dataset.seq);
    if (seq === m.seq) return; // already shown
    if (seq < m.seq) {
      el.after(li);
      return;
    }
  }
  list.prepend(li);
}

function firstSeqEl() {
  for (const el of els.messages.children) if (el.dataset.seq !== undefined) return el;
  return null;
}

/** Shows messages of the current room; older-than-everything batches are prepended at once. */
function showMessages(msgs) {
  if (!msgs.length) return;
  msgs.sort((a, b) => a.seq - b.seq);
  mutateMessages(() => {
    const first = firstSeqEl();
    if (first && msgs[msgs.length - 1].seq < Number(first.dataset.seq)) {
      const frag = document.createDocumentFragment();
      for (const m of msgs) frag.append(messageEl(m));
      els.messages.prepend(frag);
    } else {
      for (const m of msgs) insertMessageEl(m);
    }
  });
}

function renderRoom() {
  const cache = roomCache(state.room);
  const frag = document.createDocumentFragment();
  const msgs = [...cache.messages.values()].sort((a, b) => a.seq - b.seq);
  for (const m of msgs) frag.append(messageEl(m));
  for (const p of cache.pending.values()) frag.append(pendingEl(p));
  els.messages.replaceChildren(frag);
  els.messages.scrollTop = els.messages.scrollHeight;
  fillViewport();
}

function removePendingEl(key) {
  const el = els.messages.querySelector(`[data-pending="${CSS.escape(key)}"]`);
  if (el) el.remove();
}

/** Adds messages to a room's cache (deduplicated by seq) and shows the new ones. */
function addMessages(room, msgs) {
  const cache = roomCache(room);
  const fresh = [];
  for (const m of msgs) {
    if (cache.messages.has(m.seq)) continue;
    cache.messages.set(m.seq, m);
    fresh.push(m);
    if (isOwn(m)) {
      const key = idToHex(m.client_msg_id);
      if (cache.pending.delete(key) && room === state.room) removePendingEl(key);
    }
  }
  if (room === state.room) showMessages(fresh);
  return fresh;
}

function onJoined(j) {
  const cache = roomCache(j.room);
  if (!(j.first || j.stale)) return; // resumed: the missed messages follow as Message frames
  // First visit, or the replay could not cover the gap: refetch the newest page.
  cache.messages.clear();
  cache.nextBefore = undefined;
  if (j.room === state.room) renderRoom();
  if (j.head_seq === 0) {
    cache.nextBefore = null;
    return;
  }
  cache.initialLoading = true;
  client
    .history(j.room, j.head_seq + 1, HISTORY_PAGE)
    .then((page) => applyPage(j.room, page))
    .catch((err) => {
      if (err.code !== undefined) showError(`Could not load history: ${err.message}`);
    })
    .finally(() => {
      cache.initialLoading = false;
      if (j.room === state.room) fillViewport();
    });
}

function applyPage(room, page) {
  const cache = roomCache(room);
  addMessages(room, page.messages);
  cache.nextBefore = page.messages.length ? page.next_before : null;
}

function loadOlder() {
  const room = state.room;
  if (!room || !client || !client.connected) return;
  const cache = roomCache(room);
  if (cache.initialLoading || cache.loadingOlder || cache.nextBefore === null) return;
  const before = cache.nextBefore !== undefined ? cache.nextBefore : cache.minSeq();
  if (before === undefined) return;
  if (before <= 1) {
    cache.nextBefore = null;
    return;
  }
  cache.loadingOlder = true;
  els.messages.classList.add('loading');
  client
    .history(room, before, HISTORY_PAGE)
    .then((page) => applyPage(room, page))
    .catch((err) => {
      if (err.code !== undefined) showError(`Could not load history: ${err.message}`);
    })
    .finally(() => {
      cache.loadingOlder = false;
      els.messages.classList.remove('loading');
      if (room === state.room) fillViewport();
    });
}

/** Keeps loading older pages while the list does not fill its box (no scrollbar yet). */
function fillViewport() {
  const list = els.messages;
  if (list.scrollHeight <= list.clientHeight + NEAR_TOP_PX) loadOlder();
}

els.messages.addEventListener(
  'scroll',
  () => {
    if (els.messages.scrollTop < NEAR_TOP_PX) loadOlder();
  },
  { passive: true },
);

function onMessage(m) {
  addMessages(m.room, [m]);
  // A message ends its author's typing state.
  const perRoom = state.typing.get(m.room);
  const t = perRoom && perRoom.get(m.sender.id);
  if (t) {
    clearTimeout(t.timer);
    perRoom.delete(m.sender.id);
    if (m.room === state.room) renderTyping();
  }
}

function onAck(a) {
  const cache = roomCache(a.room);
  const key = idToHex(a.client_msg_id);
  const p = cache.pending.get(key);
  if (!p) return; // its Message came first
  cache.pending.delete(key);
  if (a.room === state.room) removePendingEl(key);
  const me = client.user || state.me;
  addMessages(a.room, [
    {
      room: a.room,
      seq: a.seq,
      message_id: a.message_id,
      sender: { id: me.id, username: me.username },
      client_msg_id: a.client_msg_id,
      sent_at_ms: a.sent_at_ms,
      text: p.text,
    },
  ]);
}

function onSendFailed(f) {
  const cache = roomCache(f.room);
  const key = idToHex(f.client_msg_id);
  const p = cache.pending.get(key);
  if (!p) return;
  p.failed = true;
  p.reason = f.message;
  if (f.room === state.room) {
    const el = els.messages.querySelector(`[data-pending="${CSS.escape(key)}"]`);
    if (el) el.replaceWith(pendingEl(p));
  }
}

els.composer.addEventListener('submit', (e) => {
  e.preventDefault();
  if (!client || !state.room) return;
  const text = els.input.value;
  if (text.trim() === '') return;
  const max = (client.limits && client.limits.max_text_bytes) || MAX_TEXT_BYTES;
  const bytes = utf8Length(text);
  if (bytes > max) {
    showError(`Message too long: ${bytes} bytes, at most ${max}.`);
    return;
  }
  stopTyping();
  const room = state.room;
  const { key } = client.send(room, text);
  const p = { key, text, failed: false, reason: '' };
  roomCache(room).pending.set(key, p);
  els.messages.append(pendingEl(p));
  els.messages.scrollTop = els.messages.scrollHeight;
  els.input.value = '';
});

// ---------------------------------------------------------------------------------------------
// Errors
// ---------------------------------------------------------------------------------------------

function showError(text) {
  els.error.textContent = text;
  els.error.hidden = false;
  clearTimeout(errorTimer);
  errorTimer = setTimeout(hideError, ERROR_LINE_MS);
}

function hideError() {
  clearTimeout(errorTimer);
  els.error.hidden = true;
  els.error.textContent = '';
}

function onErrorFrame(err) {
  let text;
  switch (err.code) {
    case ErrorCode.RateLimited:
      text = `Rate limited: ${err.message}`;
      if (err.retrying && err.retry_after_ms !== null) text += ` (retrying in ${err.retry_after_ms} ms)`;
      break;
    case ErrorCode.Unavailable:
      text = `Server unavailable: ${err.message}${err.retrying ? ' (retrying)' : ''}`;
      break;
    default:
      text = `Error ${err.code}: ${err.message}`;
  }
  if (err.room) text += ` [#${err.room}]`;
  showError(text);
}

// ---------------------------------------------------------------------------------------------
// Online list
// ---------------------------------------------------------------------------------------------

function onOnline(o) {
  state.online = new Map(o.users.map((u) => [u.id, u]));
  renderOnline();
}

function onPresence(p) {
  if (p.online) state.online.set(p.user.id, p.user);
  else state.online.delete(p.user.id);
  renderOnline();
}

function renderOnline() {
  const users = [...state.online.values()].sort((a, b) => a.username.localeCompare(b.username));
  const frag = document.createDocumentFragment();
  for (const u of users) {
    const li = document.createElement('li');
    li.className = state.me && u.id === state.me.id ? 'user me' : 'user';
    li.dataset.user = u.username;
    li.textContent = u.username;
    frag.append(li);
  }
  els.online.replaceChildren(frag);
}

// ---------------------------------------------------------------------------------------------
// Typing
// ---------------------------------------------------------------------------------------------

function onTyping(t) {
  if (state.me && t.user.id === state.me.id) return;
  let perRoom = state.typing.get(t.room);
  if (!perRoom) {
    perRoom = new Map();
    state.typing.set(t.room, perRoom);
  }
  const prev = perRoom.get(t.user.id);
  if (prev) clearTimeout(prev.timer);
  if (t.active) {
    const timer = setTimeout(() => {
      perRoom.delete(t.user.id);
      if (t.room === state.room) renderTyping();
    }, TYPING_EXPIRE_MS);
    perRoom.set(t.user.id, { user: t.user, timer });
  } else {
    perRoom.delete(t.user.id);
  }
  if (t.room === state.room) renderTyping();
}

function renderTyping() {
  const perRoom = state.typing.get(state.room);
  const names = perRoom ? [...perRoom.values()].map((t) => t.user.username).sort() : [];
  let text = '';
  if (names.length === 1) text = `${names[0]} is typing…`;
  else if (names.length === 2) text = `${names[0]} and ${names[1]} are typing…`;
  else if (names.length === 3) text = `${names[0]}, ${names[1]} and ${names[2]} are typing…`;
  else if (names.length > 3) text = `${names[0]}, ${names[1]} and ${names.length - 2} others are typing…`;
  els.typing.textContent = text;
}

function stopTyping() {
  clearTimeout(typingOut.idleTimer);
  typingOut.idleTimer = null;
  if (typingOut.active && client) client.typing(typingOut.room, false);
  typingOut.active = false;
  typingOut.room = null;
}

els.input.addEventListener('input', () => {
  if (!client || !state.room) return;
  if (els.input.value.trim() === '') {
    stopTyping();
    return;
  }
  const now = Date.now();
  if (!typingOut.active || typingOut.room !== state.room || now - typingOut.lastSentAt >= TYPING_REFRESH_MS) {
    if (client.typing(state.room, true)) {
      typingOut.active = true;
      typingOut.room = state.room;
      typingOut.lastSentAt = now;
    }
  }
  clearTimeout(typingOut.idleTimer);
  typingOut.idleTimer = setTimeout(stopTyping, TYPING_IDLE_MS);
});

// ---------------------------------------------------------------------------------------------
// Start
// ---------------------------------------------------------------------------------------------

if (params.has('test-hooks')) {
  window.__socketchat = {
    get client() {
      return client;
    },
  };
}

async function boot() {
  let result = null;
  try {
    result = await api('GET', '/api/auth/me');
  } catch {
    result = null;
  }
  if (result && result.ok && result.data && result.data.user) {
    await enterChat(result.data.user);
  } else {
    showAuth(result ? '' : 'Cannot reach the server.');
  }
}

boot();
