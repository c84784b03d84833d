// SocketChat web UI. No framework, no build step; runs under
// `default-src 'self'; connect-src 'self' <WebTransport origin>; style-src 'self'; img-src 'self' data:`,
// so nothing inline. User-supplied text only ever goes through textContent and text nodes.
//
// This file wires the page: login, the session, rooms, presence, typing, the composer and the
// drawers of a narrow screen. ui/message-list.js renders the messages; ui/links.js,
// ui/timeline.js and ui/composer.js hold its pure rules (tested in web/test/).
import { ChatClient, CloseCode, ErrorCode, MAX_TEXT_BYTES, idToHex } from './socketchat.js';
import { canSend, isSendKey, textBudget, typingWaitMs } from './ui/composer.js';
import { MessageList } from './ui/message-list.js';

const HISTORY_PAGE = 50;
// Typing{active:true} goes out at most every 3 s per room while typing goes on (peers expire it
// after 6 s without one; ui/composer.js typingWaitMs). A send needs no Typing{active:false}:
// peers end the author's typing state at the Message. All of it stays within the server's limit
// of a burst of 5, then 1/s (ChatClient.typing drops what would exceed it).
const TYPING_RETRY_MS = 1000; // a Typing{true} dropped by ChatClient's limit is tried again after this
const TYPING_IDLE_MS = 4000; // send Typing{active:false} after this long without input
const TYPING_EXPIRE_MS = 6000; // others' typing state expires without a refresh
const ERROR_LINE_MS = 8000;
const NEAR_TOP_PX = 48;
const PRESENCE_PAGE = 100; // users per GET /api/presence/rooms/{room} page (the server's maximum)
const MAX_LISTED = 300; // users shown in the online list at most, first page included
const STATUS_TTL_MS = 30000; // a user's online / last-seen answer is reused this long
const STATUS_BATCH_MS = 25; // ids hovered within this window are asked in one request
const STATUS_MAX_IDS = 100; // ids per GET /api/presence/users (the server's maximum)
const STATUS_CACHE_MAX = 1000; // users whose status is remembered, at most

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
  room: $('#room'),
  channelsPanel: $('#channels-panel'),
  channelsToggle: $('#channels-toggle'),
  channels: $('#channels'),
  roomName: $('#room-name'),
  roomTopic: $('#room-topic'),
  messages: $('#messages'),
  emptyRoom: $('#empty-room'),
  typing: $('#typing'),
  error: $('#error'),
  composer: $('#composer'),
  input: $('#message-input'),
  send: $('#send'),
  counter: $('#counter'),
  onlinePanel: $('#online-panel'),
  onlineToggle: $('#online-toggle'),
  drawerBackdrop: $('#drawer-backdrop'),
  online: $('#online'),
  onlineHeading: $('#online-heading'),
  onlineMore: $('#online-more'),
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
  /**
   * Who is online in the current room: the latest RoomPresence (`online`, `users` = its first
   * page) and the users listed beyond it from `GET /api/presence/rooms/{room}` (`extra`,
   * after `users` by username), or null before the room's first RoomPresence.
   */
  presence: null,
  /** room → Map(user id → {user, timer}) */
  typing: new Map(),
};

let client = null;
let statusTimer = null;
let errorTimer = null;
/**
 * Peers see us typing in `room` while `active`; the last Typing{true} went to `lastRoom` at
 * `lastSentAt`; `announceTimer` sends one once it is due.
 */
const typingOut = { active: false, room: null, lastRoom: null, lastSentAt: 0, idleTimer: null, announceTimer: null };

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
    renderComposer(); // the server's text limit
  });
  client.on('room_presence', onRoomPresence);
  client.on('left', onLeft);
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
  state.typing.clear();
  resetPresence();
  statusCache.clear();
  closeDrawer();
  els.channels.replaceChildren();
  els.messages.replaceChildren();
  els.emptyRoom.hidden = true;
  els.input.value = '';
  renderComposer();
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
  // The new room's list comes with its first RoomPresence, right after its Joined.
  resetPresence();
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
  if (!btn || !client) return;
  closeDrawer();
  selectRoom(btn.dataset.channel);
});

// ---------------------------------------------------------------------------------------------
// Drawers: on a narrow screen the channel list and the online list slide over the conversation
// (style.css shows both columns and hides the toggles on a wide one)
// ---------------------------------------------------------------------------------------------

const drawers = {
  channels: { panel: els.channelsPanel, toggle: els.channelsToggle },
  online: { panel: els.onlinePanel, toggle: els.onlineToggle },
};

/** The layout that has drawers (keep in step with style.css). */
const narrowScreen = window.matchMedia('(max-width: 760px)');

function openDrawer(name) {
  els.chatView.dataset.drawer = name;
  els.drawerBackdrop.hidden = false;
  // What the drawer covers takes no focus or clicks until it closes (Escape or the backdrop).
  els.room.inert = true;
  for (const [other, d] of Object.entries(drawers)) {
    d.toggle.setAttribute('aria-expanded', String(other === name));
    d.panel.inert = other !== name;
  }
  drawers[name].panel.focus();
}

function closeDrawer({ restoreFocus = false } = {}) {
  const name = els.chatView.dataset.drawer;
  if (!name) return;
  delete els.chatView.dataset.drawer;
  els.drawerBackdrop.hidden = true;
  els.room.inert = false;
  for (const d of Object.values(drawers)) {
    d.toggle.setAttribute('aria-expanded', 'false');
    d.panel.inert = false;
  }
  if (restoreFocus) drawers[name].toggle.focus();
}

// A screen turned or resized to the wide layout shows both lists in place: no drawer is open.
narrowScreen.addEventListener('change', () => narrowScreen.matches || closeDrawer());

for (const [name, d] of Object.entries(drawers)) {
  d.toggle.addEventListener('click', () => {
    if (els.chatView.dataset.drawer === name) closeDrawer({ restoreFocus: true });
    else openDrawer(name);
  });
}

els.drawerBackdrop.addEventListener('click', () => closeDrawer({ restoreFocus: true }));

document.addEventListener('keydown', (e) => {
  if (e.key === 'Escape' && els.chatView.dataset.drawer) closeDrawer({ restoreFocus: true });
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
      setStatusText('disconnected', `Disconnected: ${s.reason || 'closed'}`, s.code ? `close code ${s.code}` : '');
      els.online.classList.add('stale');
      if (s.terminal && s.code === CloseCode.UnsupportedVersion) {
        showError(`This page is out of date: the server said "${s.reason}". Reload the page to update it.`, { sticky: true });
      }
      break;
    default:
      setStatusText(s.state, '');
  }
}

// ---------------------------------------------------------------------------------------------
// Messages
// ---------------------------------------------------------------------------------------------

function isOwn(m) {
  return state.me && m.sender && m.sender.id === state.me.id;
}

const messageList = new MessageList(els.messages, els.emptyRoom, {
  authorEl: (user) => userNameEl('span', 'author', user || { username: '' }),
  myId: () => state.me?.id,
  atStart: () => state.room !== null && roomCache(state.room).nextBefore === null,
});

function renderRoom() {
  const cache = roomCache(state.room);
  const msgs = [...cache.messages.values()].sort((a, b) => a.seq - b.seq);
  messageList.reset(msgs, cache.pending.values());
  fillViewport();
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
      if (cache.pending.delete(key) && room === state.room) messageList.removePending(key);
    }
  }
  if (room === state.room) messageList.show(fresh);
  return fresh;
}

function onJoined(j) {
  const cache = roomCache(j.room);
  if (!(j.first || j.stale)) return; // resumed: the missed messages follow as Message frames
  // First visit, or the replay could not cover the gap: refetch the newest page.
  cache.messages.clear();
  // An empty room has nothing older to load: it shows its empty-room notice.
  cache.nextBefore = j.head_seq === 0 ? null : undefined;
  if (j.room === state.room) renderRoom();
  if (j.head_seq === 0) return;
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
  // Reaching the first message puts its day separator above it (or the empty-room notice).
  if (room === state.room) messageList.refresh();
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
  if (a.room === state.room) messageList.removePending(key);
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
  if (f.room === state.room) messageList.replacePending(p);
}

// ---------------------------------------------------------------------------------------------
// Composer: a textarea; Enter sends, Shift+Enter starts a new line
// ---------------------------------------------------------------------------------------------

/** Largest message text in UTF-8 bytes: the server's (Welcome), or the spec's before it. */
function maxTextBytes() {
  return (client && client.limits && client.limits.max_text_bytes) || MAX_TEXT_BYTES;
}

/** Updates the length counter, the Send button and the textarea's height to the text. */
function renderComposer() {
  const text = els.input.value;
  const budget = textBudget(text, maxTextBytes());
  els.counter.textContent = budget.label;
  els.counter.dataset.level = budget.over ? 'over' : budget.near ? 'near' : '';
  els.counter.title = budget.over ? `Too long: at most ${budget.max} bytes (UTF-8)` : `${budget.bytes} of ${budget.max} bytes (UTF-8)`;
  if (budget.over) els.input.setAttribute('aria-invalid', 'true');
  else els.input.removeAttribute('aria-invalid');
  els.send.disabled = !canSend(text, budget.max);
  // Grow with the text up to the CSS max-height, then scroll inside (CSSOM, allowed by the CSP).
  els.input.style.height = '';
  if (els.input.offsetParent === null || els.input.value === '') return; // not laid out, or one line
  const border = els.input.offsetHeight - els.input.clientHeight;
  els.input.style.height = `${els.input.scrollHeight + border}px`;
}

function sendFromComposer() {
  if (!client || !state.room) return;
  const text = els.input.value;
  if (text.trim() === '') return;
  const max = maxTextBytes();
  const { bytes } = textBudget(text, max);
  if (bytes > max) {
    showError(`Message too long: ${bytes} bytes, at most ${max}.`);
    return;
  }
  // No Typing{active:false}: the Message ends this user's typing state at every peer.
  clearTimeout(typingOut.idleTimer);
  clearTimeout(typingOut.announceTimer);
  typingOut.idleTimer = typingOut.announceTimer = null;
  typingOut.active = false;
  const room = state.room;
  const { key } = client.send(room, text);
  const p = { key, text, failed: false, reason: '', at: Date.now(), author: state.me };
  roomCache(room).pending.set(key, p);
  messageList.appendPending(p);
  els.input.value = '';
  renderComposer();
}

els.composer.addEventListener('submit', (e) => {
  e.preventDefault();
  sendFromComposer();
});

els.input.addEventListener('keydown', (e) => {
  if (!isSendKey(e)) return;
  e.preventDefault();
  sendFromComposer();
});

// ---------------------------------------------------------------------------------------------
// Errors
// ---------------------------------------------------------------------------------------------

/** Shows an error line for a while (until the next one or a logout, when `sticky`). */
function showError(text, { sticky = false } = {}) {
  els.error.textContent = text;
  els.error.hidden = false;
  clearTimeout(errorTimer);
  errorTimer = sticky ? null : setTimeout(hideError, ERROR_LINE_MS);
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
// Online in the current room (RoomPresence, § 6.8; more over HTTP, § 7)
// ---------------------------------------------------------------------------------------------

const utf8 = new TextEncoder();

/** Orders usernames the way the server does: by their UTF-8 bytes. */
function compareUsernames(a, b) {
  const x = utf8.encode(a);
  const y = utf8.encode(b);
  const n = Math.min(x.length, y.length);
  for (let i = 0; i < n; i++) if (x[i] !== y[i]) return x[i] - y[i];
  return x.length - y.length;
}

/** Bumped whenever the list starts over (room change, leave): late page answers are dropped. */
let presenceEpoch = 0;
let presenceLoading = false;

function resetPresence() {
  state.presence = null;
  presenceEpoch += 1;
  presenceLoading = false;
  renderOnline();
}

/** Users of `extra` that still belong after a new first page: sorted after it, not in it. */
function extrasAfter(users, extra) {
  const last = users.at(-1);
  if (!last) return [];
  const ids = new Set(users.map((u) => u.id));
  return extra.filter((u) => !ids.has(u.id) && compareUsernames(u.username, last.username) > 0);
}

function onRoomPresence(p) {
  if (p.room !== state.room) return;
  const prev = state.presence;
  // Who the frame lists is online now; whoever left its first page may have gone offline.
  const now = Date.now();
  const ids = new Set(p.users.map((u) => u.id));
  if (prev) for (const u of prev.users) if (!ids.has(u.id)) statusCache.delete(u.id);
  for (const u of p.users) rememberStatus(u.id, { online: true, last_seen_ms: null }, now);
  // The frame replaces the first page and the count; users listed beyond it over HTTP stay
  // (they sort after it) until the room changes, unless the first page now holds everyone.
  // More names than the count means some of those extra ones left: drop them all ("and N
  // more" fetches them again).
  const complete = p.users.length >= p.online;
  let extra = prev && !complete ? extrasAfter(p.users, prev.extra) : [];
  if (p.users.length + extra.length > p.online) extra = [];
  state.presence = { room: p.room, online: p.online, users: p.users, extra };
  renderOnline();
}

function onLeft(l) {
  if (l.room === state.room) resetPresence();
}

/** Fetches the next page of the room's online users after the last one listed. */
async function loadMorePresence() {
  const p = state.presence;
  if (!p || presenceLoading) return;
  const shown = p.users.length + p.extra.length;
  const limit = Math.min(PRESENCE_PAGE, MAX_LISTED - shown);
  if (limit <= 0 || shown >= p.online) return;
  const last = p.extra.at(-1) || p.users.at(-1);
  const query = new URLSearchParams({ limit: String(limit) });
  if (last) query.set('after', last.username);
  const room = p.room;
  const epoch = presenceEpoch;
  presenceLoading = true;
  renderOnline();
  let result = null;
  let failure = null;
  try {
    result = await api('GET', `/api/presence/rooms/${encodeURIComponent(room)}?${query}`);
    if (!result.ok) failure = (result.data && result.data.error) || `HTTP ${result.status}`;
  } catch (err) {
    failure = err.message;
  }
  if (epoch !== presenceEpoch || !state.presence || state.presence.room !== room) return;
  presenceLoading = false;
  if (failure !== null) {
    showError(`Could not load who is online in #${room}: ${failure}`);
  } else {
    const cur = state.presence;
    const users = Array.isArray(result.data && result.data.users) ? result.data.users : [];
    const now = Date.now();
    for (const u of users) rememberStatus(u.id, { online: true, last_seen_ms: null }, now);
    const have = new Set(cur.extra.map((u) => u.id));
    const fresh = extrasAfter(cur.users, users).filter((u) => !have.has(u.id));
    const slots = MAX_LISTED - cur.users.length;
    cur.extra = cur.extra.concat(fresh).sort((a, b) => compareUsernames(a.username, b.username)).slice(0, Math.max(0, slots));
  }
  renderOnline();
}

els.onlineMore.addEventListener('click', () => {
  loadMorePresence();
});

/** An element showing a user's name, focusable, that shows their last-seen state on hover. */
function userNameEl(tag, className, user) {
  const el = document.createElement(tag);
  el.className = className;
  el.textContent = user.username;
  if (Number.isSafeInteger(user.id)) {
    el.dataset.userId = String(user.id);
    el.tabIndex = 0;
    const st = freshStatus(user.id);
    if (st) applyStatus(el, st);
  }
  return el;
}

function renderOnline() {
  const p = state.presence;
  els.onlineHeading.textContent = p ? `Online — ${p.online}` : 'Online';
  els.onlineToggle.textContent = p ? `${p.online} online` : 'Online';
  if (p) els.online.dataset.count = String(p.online);
  else delete els.online.dataset.count;
  const users = p ? p.users.concat(p.extra) : [];
  // Reuse the existing items so a hovered or focused name stays in place across updates.
  const existing = new Map();
  for (const li of els.online.children) existing.set(li.dataset.userId, li);
  let cursor = els.online.firstElementChild;
  for (const u of users) {
    let li = existing.get(String(u.id));
    if (li && li.dataset.user !== u.username) li = undefined;
    if (!li) {
      li = userNameEl('li', 'user', u);
      li.dataset.user = u.username;
    }
    existing.delete(String(u.id));
    li.classList.toggle('me', !!state.me && u.id === state.me.id);
    if (li === cursor) cursor = cursor.nextElementSibling;
    else els.online.insertBefore(li, cursor);
  }
  for (const li of existing.values()) li.remove();

  const more = p ? p.online - users.length : 0;
  els.onlineMore.hidden = more <= 0;
  if (more > 0) {
    const capped = users.length >= MAX_LISTED;
    els.onlineMore.textContent = presenceLoading ? `and ${more} more (loading…)` : `and ${more} more`;
    els.onlineMore.disabled = presenceLoading || capped;
    els.onlineMore.title = capped ? `Only the first ${MAX_LISTED} are listed` : 'Show more of who is online here';
  }
}

// ---------------------------------------------------------------------------------------------
// Last seen (GET /api/presence/users, § 7)
// ---------------------------------------------------------------------------------------------

/** user id → {online, last_seen_ms, at} */
const statusCache = new Map();
/** user id → [resolve] of hovers waiting for the batch in flight or being collected */
const statusWaiters = new Map();
let statusBatchTimer = null;

function rememberStatus(id, st, at = Date.now()) {
  statusCache.delete(id); // re-insert: the Map's order is the age order pruned below
  statusCache.set(id, { online: !!st.online, last_seen_ms: st.last_seen_ms ?? null, at });
  while (statusCache.size > STATUS_CACHE_MAX) statusCache.delete(statusCache.keys().next().value);
}

function freshStatus(id) {
  const st = statusCache.get(id);
  return st && Date.now() - st.at < STATUS_TTL_MS ? st : null;
}

/** Resolves with `{online, last_seen_ms}` of a user (null when it cannot be had), batched. */
function userStatus(id) {
  const st = freshStatus(id);
  if (st) return Promise.resolve(st);
  return new Promise((resolve) => {
    const waiting = statusWaiters.get(id);
    if (waiting) {
      waiting.push(resolve);
      return;
    }
    statusWaiters.set(id, [resolve]);
    if (statusBatchTimer === null) statusBatchTimer = setTimeout(flushStatusBatch, STATUS_BATCH_MS);
  });
}

async function flushStatusBatch() {
  statusBatchTimer = null;
  const batch = new Map(statusWaiters);
  statusWaiters.clear();
  const ids = [...batch.keys()];
  for (let i = 0; i < ids.length; i += STATUS_MAX_IDS) {
    const chunk = ids.slice(i, i + STATUS_MAX_IDS);
    let answers = new Map();
    try {
      const result = await api('GET', `/api/presence/users?ids=${chunk.join(',')}`);
      const users = result.ok && result.data && Array.isArray(result.data.users) ? result.data.users : [];
      const at = Date.now();
      answers = new Map(users.filter((u) => u && Number.isSafeInteger(u.id)).map((u) => [u.id, u]));
      for (const u of answers.values()) rememberStatus(u.id, u, at);
    } catch {
      /* answered null below: the name shows no status */
    }
    for (const id of chunk) {
      const st = answers.has(id) ? freshStatus(id) : null;
      for (const resolve of batch.get(id)) resolve(st);
    }
  }
}

const pad2 = (n) => String(n).padStart(2, '0');

/** "online", "last seen 5 min ago", "last seen 2026-11-28 14:03" (local time) or "never seen". */
function lastSeenText(st, now = Date.now()) {
  if (st.online) return 'online';
  if (st.last_seen_ms === null) return 'never seen';
  const ago = now - st.last_seen_ms;
  if (ago < 60_000) return 'last seen just now';
  if (ago < 3_600_000) return `last seen ${Math.floor(ago / 60_000)} min ago`;
  const d = new Date(st.last_seen_ms);
  return `last seen ${d.getFullYear()}-${pad2(d.getMonth() + 1)}-${pad2(d.getDate())} ${pad2(d.getHours())}:${pad2(d.getMinutes())}`;
}

function applyStatus(el, st) {
  el.title = lastSeenText(st);
  el.dataset.presence = st.online ? 'online' : st.last_seen_ms === null ? 'never' : 'offline';
}

function showLastSeen(el) {
  const id = Number(el.dataset.userId);
  if (!Number.isSafeInteger(id)) return;
  const st = freshStatus(id);
  if (st) {
    applyStatus(el, st);
    return;
  }
  userStatus(id).then((answer) => {
    if (!el.isConnected) return;
    if (answer) applyStatus(el, answer);
    else {
      el.title = 'status unavailable';
      delete el.dataset.presence;
    }
  });
}

function onUserHover(e) {
  const el = e.target instanceof Element ? e.target.closest('[data-user-id]') : null;
  if (el && e.currentTarget.contains(el)) showLastSeen(el);
}

for (const container of [els.messages, els.online]) {
  container.addEventListener('mouseover', onUserHover);
  container.addEventListener('focusin', onUserHover);
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
  clearTimeout(typingOut.announceTimer);
  typingOut.idleTimer = typingOut.announceTimer = null;
  if (typingOut.active && client) client.typing(typingOut.room, false);
  typingOut.active = false;
  typingOut.room = null;
}

/** Sends Typing{active:true} for the current room if it is due, else once it is (while typing goes on). */
function announceTyping() {
  clearTimeout(typingOut.announceTimer);
  typingOut.announceTimer = null;
  if (!client || !state.room || els.input.value.trim() === '') return;
  const now = Date.now();
  const wait = typingWaitMs({ room: state.room, now, lastRoom: typingOut.lastRoom, lastSentAt: typingOut.lastSentAt });
  if (wait === 0 && client.typing(state.room, true)) {
    Object.assign(typingOut, { lastRoom: state.room, lastSentAt: now, active: true, room: state.room });
    return;
  }
  typingOut.announceTimer = setTimeout(announceTyping, wait || TYPING_RETRY_MS);
}

els.input.addEventListener('input', () => {
  renderComposer();
  if (!client || !state.room) return;
  if (els.input.value.trim() === '') {
    stopTyping();
    return;
  }
  // Peers that see us typing get a refresh when it is due; peers that do not (a message was
  // just sent) get an announcement as soon as one may go out.
  const due = typingWaitMs({ room: state.room, now: Date.now(), lastRoom: typingOut.lastRoom, lastSentAt: typingOut.lastSentAt }) === 0;
  if (due || (!typingOut.active && typingOut.announceTimer === null)) announceTyping();
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
