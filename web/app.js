// SocketChat web UI. No framework, no build step; runs under
// `default-src 'self'; connect-src 'self' <WebTransport origin>; style-src 'self'; img-src 'self' data:`,
// so nothing inline. User-supplied text (names, file names, messages) only ever goes through
// textContent and text nodes.
//
// This file wires the page: login, the session, the room list (channels, private channels,
// direct conversations, unread badges), creating channels, invitations, leaving, read marks,
// presence, typing, the composer with its uploads, and the drawers of a narrow screen.
// ui/message-list.js renders the messages (edits and deletions included); ui/rooms.js,
// ui/files.js, ui/links.js, ui/timeline.js and ui/composer.js hold its pure rules (tested in
// web/test/).
//
// Live badges: the connection joins every room of the list (the open one first; 32 at most,
// the protocol's limit per connection) with after_seq = the room's head from the list, so
// nothing is replayed, and counts the posts of other users that come live in rooms not being
// read on top of the list's count (ui/rooms.js UnreadCounts). A room being read is marked read
// (MarkRead, coalesced by ChatClient) while its newest message is in view and the tab visible;
// ReadState, from this tab or any other of the user's, moves the badge.
import { ChatClient, CloseCode, ErrorCode, MAX_TEXT_BYTES, RoomPosts, idToHex } from './socketchat.js';
import { isSendKey, textBudget, typingWaitMs } from './ui/composer.js';
import { composerSendable, formatSize, uploadName, uploadPath } from './ui/files.js';
import { MessageList } from './ui/message-list.js';
import { MAX_FOLLOWED, UnreadCounts, badgeText, roomLabel, roomTitle, roomsToFollow } from './ui/rooms.js';

const HISTORY_PAGE = 50;
// Typing{active:true} goes out at most every 3 s per room while typing goes on (peers expire it
// after 6 s without one; ui/composer.js typingWaitMs). A send needs no Typing{active:false}:
// peers end the author's typing state at the Message. All of it stays within the server's limit
// of a burst of 5, then 1/s (ChatClient.typing drops what would exceed it).
const TYPING_RETRY_MS = 1000; // a Typing{true} dropped by ChatClient's limit is tried again after this
const TYPING_IDLE_MS = 4000; // send Typing{active:false} after this long without input
const TYPING_EXPIRE_MS = 6000; // others' typing state expires without a refresh
const ERROR_LINE_MS = 8000;
const NOTICE_LINE_MS = 8000;
const NEAR_TOP_PX = 48;
const PRESENCE_PAGE = 100; // users per GET /api/presence/rooms/{room} page (the server's maximum)
const MAX_LISTED = 300; // users shown in the online list at most, first page included
const STATUS_TTL_MS = 30000; // a user's online / last-seen answer is reused this long
const STATUS_BATCH_MS = 25; // ids hovered within this window are asked in one request
const STATUS_MAX_IDS = 100; // ids per GET /api/presence/users (the server's maximum)
const STATUS_CACHE_MAX = 1000; // users whose status is remembered, at most
const LIST_REFRESH_MS = 150; // events that call for the room list within this window share one fetch
const MAX_FILES = 10; // attachments per message (§ 5)
/** Uploads sent at once: one fewer than a node receives at once (§ 5), so others fit beside. */
const UPLOADS_AT_ONCE = 3;
/** Wait before a room's first page, refused (store down, rate), is asked for again. */
const HISTORY_RETRY_MS = 5000;
/** Wait before the session is asked for again when the server did not answer about it. */
const BOOT_RETRY_MS = 2000;
/** Times an upload refused for the node's or the user's rate (503, 429) is sent before it fails. */
const UPLOAD_ATTEMPTS = 5;
/** The longest `Retry-After` waited out for an upload; beyond, it fails with the wait shown. */
const UPLOAD_RETRY_MAX_S = 60;

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
  direct: $('#direct'),
  directHint: $('#direct-hint'),
  newChannel: $('#new-channel'),
  createForm: $('#create-channel-form'),
  createCancel: $('#create-channel-cancel'),
  roomName: $('#room-name'),
  roomTopic: $('#room-topic'),
  inviteToggle: $('#invite-toggle'),
  inviteForm: $('#invite-form'),
  inviteCancel: $('#invite-cancel'),
  leaveRoom: $('#leave-room'),
  leaveConfirm: $('#leave-confirm'),
  leaveQuestion: $('#leave-question'),
  leaveYes: $('#leave-confirm-yes'),
  leaveNo: $('#leave-confirm-no'),
  messages: $('#messages'),
  emptyRoom: $('#empty-room'),
  typing: $('#typing'),
  notice: $('#notice'),
  error: $('#error'),
  composer: $('#composer'),
  uploads: $('#uploads'),
  attach: $('#attach'),
  fileInput: $('#file-input'),
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
    /** The room's posts, kept current by its Edit and Delete events. */
    this.posts = new RoomPosts();
    /** hex(client_msg_id) → {key, text, attachments, failed, reason, at} (own sends not yet acked) */
    this.pending = new Map();
    /** post seq → {key, kind: 'edit'|'delete', text} (own changes not yet confirmed) */
    this.changes = new Map();
    /** before_seq of the next older page: undefined = unknown, null = reached seq 1. */
    this.nextBefore = undefined;
    /** Whether the newest page was loaded: from then on every event of the room is kept. */
    this.loaded = false;
    this.initialLoading = false;
    this.loadingOlder = false;
    /** Counts `forget`s: a page asked for before one is not applied after it. */
    this.epoch = 0;
  }
  /** Whether events of the room are kept (a room never opened only counts its unread posts). */
  get keeping() {
    return this.loaded || this.initialLoading;
  }
  forget() {
    this.posts.clear();
    this.nextBefore = undefined;
    this.loaded = false;
    this.initialLoading = false;
    this.epoch += 1;
  }
}

const state = {
  me: null,
  /** The room list (`GET /api/channels`), in its order. */
  channels: [],
  room: null,
  rooms: new Map(),
  unread: new UnreadCounts(),
  /** Rooms this tab is leaving (DELETE …/members/me): their Left is expected. */
  leaving: new Set(),
  /**
   * Who is online in the current room: the latest RoomPresence (`online`, `users` = its first
   * page) and the users listed beyond it from `GET /api/presence/rooms/{room}` (`extra`,
   * after `users` by username), or null before the room's first RoomPresence.
   */
  presence: null,
  /** room → Map(user id → {user, timer}) */
  typing: new Map(),
  /** Files of the message being written: {key, file, name, progress, upload, error, xhr}. */
  files: [],
};

let client = null;
let statusTimer = null;
let errorTimer = null;
let noticeTimer = null;
let fileKeys = 0;
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
  // Seconds to wait before asking again, given with 429 and 503 (PROTOCOL.md § 5).
  const wait = Number(res.headers.get('retry-after'));
  return { status: res.status, ok: res.ok, data, retryAfter: Number.isFinite(wait) && wait > 0 ? wait : null };
}

/** ` (try again in N s)` for an answer that says when, else ''. */
function retryHint(result) {
  return result.retryAfter ? ` (try again in ${result.retryAfter} s)` : '';
}

// ---------------------------------------------------------------------------------------------
// Views
// ---------------------------------------------------------------------------------------------

/** The room named by the URL's hash, or '' when there is none or it does not decode. */
function roomFromHash() {
  try {
    return decodeURIComponent(location.hash.slice(1));
  } catch {
    return '';
  }
}

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
  const message = (typeof data.error === 'string' ? data.error : fallback) + retryHint(result);
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
  let result = null;
  try {
    result = await api('POST', '/api/auth/logout');
  } catch {
    result = null;
  } finally {
    els.logout.disabled = false;
  }
  // Only a 204 revoked the token and cleared the cookie: otherwise the session still holds,
  // and a reload would be logged in again (say so instead of pretending).
  if (!result || result.status !== 204) {
    const why = result ? `the server answered ${result.status}` : 'the server cannot be reached';
    showNotice(`Not logged out: ${why}. Try again.`);
    return;
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
    // Asked again once connected (`onWelcome`); meanwhile the user is told why it is empty.
    if (!result.ok) showError(`Could not load the room list (HTTP ${result.status}); trying again.`);
    channels = (result.data && Array.isArray(result.data.channels) && result.data.channels) || [];
  } catch (err) {
    showError(`Could not load channels: ${err.message}`);
  }

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
  client.on('welcome', onWelcome);
  client.on('room_presence', onRoomPresence);
  client.on('left', onLeft);
  // Error 2: the room is gone or hidden now. (Error 6, too many rooms, leaves it listed.)
  client.on('join_refused', (r) => r.code === ErrorCode.UnknownRoom && roomGone(r.room));
  client.on('room_added', () => refreshChannels());
  client.on('read_state', onReadState);
  client.on('joined', onJoined);
  client.on('message', onMessage);
  client.on('ack', onAck);
  client.on('typing', onTyping);
  client.on('error', onErrorFrame);
  client.on('send_failed', onSendFailed);
  client.on('unauthorized', () => {
    // Messages not yet stored go with the session: the user is told how many.
    const unsent = client.pendingSends().filter((p) => p.kind === 'send').length;
    leaveChat();
    const lost = unsent === 1 ? '1 message you wrote was' : `${unsent} messages you wrote were`;
    showAuth(unsent === 0 ? 'Your session has ended. Please log in again.' : `Your session has ended; ${lost} not sent. Please log in again.`);
  });

  const fromHash = roomFromHash();
  const names = channels.map((c) => c.name);
  const initial = names.includes(fromHash) ? fromHash : names.includes('general') ? 'general' : names[0] || 'general';
  state.room = initial; // followed first
  applyChannels(channels);
  state.room = null;
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
  clearTimeout(refresh.timer);
  for (const perRoom of state.typing.values()) for (const t of perRoom.values()) clearTimeout(t.timer);
  dropUploads();
  state.me = null;
  state.room = null;
  state.channels = [];
  state.rooms.clear();
  state.typing.clear();
  state.unread.clear();
  state.leaving.clear();
  resetPresence();
  statusCache.clear();
  closeDrawer();
  closeRoomPanels();
  closeCreateForm();
  els.channels.replaceChildren();
  els.direct.replaceChildren();
  els.messages.replaceChildren();
  els.emptyRoom.hidden = true;
  els.input.value = '';
  renderComposer();
  els.typing.textContent = '';
  els.roomName.textContent = '';
  els.roomTopic.textContent = '';
  els.inviteToggle.hidden = true;
  els.leaveRoom.hidden = true;
  hideError();
  hideNotice();
}

function roomCache(name) {
  let cache = state.rooms.get(name);
  if (!cache) {
    cache = new RoomCache(name);
    state.rooms.set(name, cache);
  }
  return cache;
}

function channelOf(name) {
  return state.channels.find((c) => c.name === name);
}

function selectRoom(name) {
  if (state.room === name) return;
  stopTyping();
  closeRoomPanels();
  state.room = name;
  for (const btn of els.chatView.querySelectorAll('[data-channel]')) {
    if (btn.dataset.channel === name) btn.setAttribute('aria-current', 'true');
    else btn.removeAttribute('aria-current');
  }
  renderRoomHeader();
  if (roomFromHash() !== name) history.replaceState(null, '', `#${encodeURIComponent(name)}`);
  const channel = channelOf(name);
  // Followed first, leaving the last followed room when all the connection may join are
  // (PROTOCOL.md § 5: a Join beyond them is refused); joined now if it was not yet.
  followRooms();
  client.focusRoom(name, channel ? channel.head_seq : null);
  renderRoom();
  renderTyping();
  // The room's latest RoomPresence, if one came; later ones follow as they come.
  resetPresence();
  const presence = client.roomPresence(name);
  if (presence) onRoomPresence({ type: 'RoomPresence', ...presence });
  ensureLoaded(name);
  maybeMarkRead();
  els.input.focus();
}

/** The title, topic and actions of the open room. */
function renderRoomHeader() {
  const channel = channelOf(state.room);
  els.roomName.textContent = channel ? roomTitle(channel, state.me) : `# ${state.room}`;
  els.roomTopic.textContent = channel && channel.topic ? channel.topic : '';
  const kind = channel ? channel.kind : 'public';
  els.inviteToggle.hidden = !(kind === 'private' && channel.role === 'owner');
  els.leaveRoom.hidden = !((kind === 'private' && channel.role !== 'owner') || kind === 'direct');
}

/** One room of the list: its mark, its name and its unread badge. */
function channelButton(ch) {
  const btn = document.createElement('button');
  btn.type = 'button';
  btn.className = 'channel';
  btn.dataset.channel = ch.name;
  btn.dataset.kind = ch.kind || 'public';
  const mark = document.createElement('span');
  mark.className = 'mark';
  mark.setAttribute('aria-hidden', 'true');
  mark.textContent = ch.kind === 'private' ? '🔒' : ch.kind === 'direct' ? '@' : '#';
  const name = document.createElement('span');
  name.className = 'name';
  name.textContent = roomLabel(ch, state.me);
  btn.append(mark, name);
  if (ch.kind === 'private') {
    const hidden = document.createElement('span');
    hidden.className = 'visually-hidden';
    hidden.textContent = ' (private)';
    btn.append(hidden);
  }
  const badge = document.createElement('span');
  badge.className = 'badge';
  const unreadText = document.createElement('span');
  unreadText.className = 'visually-hidden';
  btn.append(badge, unreadText);
  if (ch.topic) btn.title = ch.topic;
  if (ch.name === state.room) btn.setAttribute('aria-current', 'true');
  return btn;
}

function renderChannels() {
  const focused = document.activeElement?.closest?.('[data-channel]')?.dataset.channel;
  const lists = { channels: document.createDocumentFragment(), direct: document.createDocumentFragment() };
  for (const ch of state.channels) {
    const li = document.createElement('li');
    li.append(channelButton(ch));
    lists[ch.kind === 'direct' ? 'direct' : 'channels'].append(li);
  }
  els.channels.replaceChildren(lists.channels);
  els.direct.replaceChildren(lists.direct);
  els.directHint.hidden = els.direct.children.length > 0;
  renderBadges();
  if (focused) els.chatView.querySelector(`[data-channel="${CSS.escape(focused)}"]`)?.focus();
}

/** Every room's unread badge (`data-unread` holds the count). */
function renderBadges() {
  for (const btn of els.chatView.querySelectorAll('.channels [data-channel]')) {
    const n = state.unread.count(btn.dataset.channel);
    const badge = btn.querySelector('.badge');
    const text = badgeText(n);
    if (badge.textContent !== text) badge.textContent = text;
    badge.hidden = text === '';
    badge.nextElementSibling.textContent = text ? ` ${text} unread` : '';
    btn.dataset.unread = String(n);
  }
}

for (const list of [els.channels, els.direct]) {
  list.addEventListener('click', (e) => {
    const btn = e.target.closest('[data-channel]');
    if (!btn || !client) return;
    closeDrawer();
    selectRoom(btn.dataset.channel);
  });
}

// ---------------------------------------------------------------------------------------------
// The room list (GET /api/channels, § 8.1): fetched again on RoomAdded, a ReadState the
// badges cannot follow alone, an unprompted Left, a reconnect and when the window comes back
// ---------------------------------------------------------------------------------------------

/**
 * The room list's fetches. `changes` counts the changes made here (a room created, opened or
 * left): a list asked for before one of them and answered after it does not show it, and is
 * not taken (another is asked for).
 */
const refresh = { timer: null, running: false, again: false, changes: 0 };

/** Applies a change of the room list made here (see `refresh.changes`). */
function changeChannels(channels) {
  refresh.changes += 1;
  applyChannels(channels);
}

/** Fetches the room list soon (calls within LIST_REFRESH_MS share one request). */
function refreshChannels() {
  if (!client || refresh.timer !== null) return;
  refresh.timer = setTimeout(runRefresh, LIST_REFRESH_MS);
}

async function runRefresh() {
  refresh.timer = null;
  if (!client) return;
  if (refresh.running) {
    refresh.again = true;
    return;
  }
  refresh.running = true;
  const owner = client;
  const changes = refresh.changes;
  try {
    const result = await api('GET', '/api/channels');
    if (refresh.changes !== changes) refresh.again = true;
    else if (client === owner && result.ok && result.data && Array.isArray(result.data.channels)) applyChannels(result.data.channels);
  } catch {
    /* the next event or focus tries again */
  } finally {
    refresh.running = false;
    if (refresh.again) {
      refresh.again = false;
      refreshChannels();
    }
  }
}

/** Takes a fresh room list: badges, rooms followed, rooms gone (the open one goes to general). */
function applyChannels(channels) {
  const before = state.channels;
  state.channels = channels;
  const now = new Set(channels.map((c) => c.name));
  for (const ch of channels) state.unread.fromList(ch);
  renderChannels();
  for (const old of before) if (!now.has(old.name)) roomGone(old.name, old);
  followRooms();
  if (state.room !== null && now.has(state.room)) renderRoomHeader();
}

/** Joins the rooms whose badges should move live, and leaves those no longer listed. */
function followRooms() {
  if (!client) return;
  const wanted = roomsToFollow(state.channels, state.room, client.limits?.max_rooms || MAX_FOLLOWED);
  const keep = new Set(wanted);
  for (const name of client.joinedRooms()) {
    if (keep.has(name)) continue;
    client.leaveRoom(name);
    // Its posts are no longer kept current. Opened again, it is joined from the room list's
    // head and loaded anew: what it kept would end before that head, with a gap after it.
    state.rooms.get(name)?.forget();
  }
  for (const name of wanted) client.joinRoom(name, channelOf(name)?.head_seq ?? null);
}

/**
 * A room the user can no longer see (removed, left from another tab, or gone): out of the list;
 * the open one goes to #general with a notice.
 */
function roomGone(name, channel = channelOf(name)) {
  const label = channel ? roomTitle(channel, state.me) : name;
  const asked = state.leaving.delete(name);
  state.channels = state.channels.filter((c) => c.name !== name);
  state.unread.forget(name);
  // Its sends still queued fail (while its cache still holds them), not sent if it comes back;
  // a history page still on its way is dropped (forget).
  client?.leaveRoom(name, { gone: 'no longer a member of the room' });
  state.rooms.get(name)?.forget();
  state.rooms.delete(name);
  state.typing.delete(name);
  renderChannels();
  if (state.room === name) {
    // What was being written there is not sent elsewhere by accident: the composer is emptied
    // (its files too) before the room changes under the user.
    const draft = els.input.value;
    els.input.value = '';
    dropUploads();
    renderComposer();
    selectRoom(state.channels.some((c) => c.name === 'general') ? 'general' : state.channels[0]?.name || 'general');
    if (!asked && draft.trim()) {
      showNotice(`You are no longer a member of ${label}; what you were writing there was not sent.`);
      return;
    }
  }
  if (asked) showNotice(`You left ${label}.`);
  else if (channel) showNotice(`You are no longer a member of ${label}.`);
}

function onLeft(l) {
  if (l.room === state.room && !l.unprompted) resetPresence();
  if (!l.unprompted) return;
  roomGone(l.room);
  refreshChannels();
}

// The window comes back: badges may have moved while it was away (rooms beyond the 32
// followed, or a connection that was down), and the open room may be read now.
window.addEventListener('focus', () => {
  refreshChannels();
  maybeMarkRead();
});
document.addEventListener('visibilitychange', () => {
  if (document.visibilityState !== 'visible') return;
  refreshChannels();
  maybeMarkRead();
});

// ---------------------------------------------------------------------------------------------
// Creating a channel (POST /api/channels, § 8.2)
// ---------------------------------------------------------------------------------------------

function openCreateForm() {
  els.createForm.hidden = false;
  els.newChannel.setAttribute('aria-expanded', 'true');
  clearFormErrors(els.createForm);
  els.createForm.querySelector('input').focus();
}

function closeCreateForm({ restoreFocus = false } = {}) {
  if (els.createForm.hidden) return;
  els.createForm.hidden = true;
  els.newChannel.setAttribute('aria-expanded', 'false');
  els.createForm.reset();
  clearFormErrors(els.createForm);
  if (restoreFocus) els.newChannel.focus();
}

els.newChannel.addEventListener('click', () => (els.createForm.hidden ? openCreateForm() : closeCreateForm({ restoreFocus: true })));
els.createCancel.addEventListener('click', () => closeCreateForm({ restoreFocus: true }));
els.createForm.addEventListener('keydown', (e) => {
  if (e.key !== 'Escape') return;
  e.stopPropagation();
  closeCreateForm({ restoreFocus: true });
});

els.createForm.addEventListener('submit', async (e) => {
  e.preventDefault();
  if (!client) return;
  const form = els.createForm;
  clearFormErrors(form);
  const body = {
    name: $('#new-channel-name').value.trim(),
    topic: $('#new-channel-topic').value.trim(),
    private: $('#new-channel-private').checked,
  };
  const button = form.querySelector('button[type="submit"]');
  button.disabled = true;
  try {
    const result = await api('POST', '/api/channels', body);
    if (result.status === 201 && result.data && result.data.channel) {
      const channel = result.data.channel;
      closeCreateForm();
      if (!channelOf(channel.name)) changeChannels([...state.channels, channel]);
      closeDrawer();
      selectRoom(channel.name);
      refreshChannels();
    } else {
      const fallback = result.status === 429 ? 'Too many channels created; try again later.' : `Could not create the channel (HTTP ${result.status})`;
      showFormErrors(form, result, fallback);
    }
  } catch (err) {
    showFormErrors(form, { data: null }, `Network error: ${err.message}`);
  } finally {
    button.disabled = false;
  }
});

// ---------------------------------------------------------------------------------------------
// Inviting to a private channel and leaving a room (§ 8.2)
// ---------------------------------------------------------------------------------------------

function closeRoomPanels() {
  els.inviteForm.hidden = true;
  els.inviteToggle.setAttribute('aria-expanded', 'false');
  els.inviteForm.reset();
  clearFormErrors(els.inviteForm);
  els.leaveConfirm.hidden = true;
}

els.inviteToggle.addEventListener('click', () => {
  if (!els.inviteForm.hidden) {
    closeRoomPanels();
    els.inviteToggle.focus();
    return;
  }
  closeRoomPanels();
  els.inviteForm.hidden = false;
  els.inviteToggle.setAttribute('aria-expanded', 'true');
  $('#invite-username').focus();
});

els.inviteCancel.addEventListener('click', () => {
  closeRoomPanels();
  els.inviteToggle.focus();
});

els.inviteForm.addEventListener('keydown', (e) => {
  if (e.key !== 'Escape') return;
  e.stopPropagation();
  closeRoomPanels();
  els.inviteToggle.focus();
});

els.inviteForm.addEventListener('submit', async (e) => {
  e.preventDefault();
  const room = state.room;
  const input = $('#invite-username');
  const username = input.value.trim();
  clearFormErrors(els.inviteForm);
  if (!room || username === '') return;
  const button = els.inviteForm.querySelector('button[type="submit"]');
  button.disabled = true;
  try {
    const result = await api('POST', `/api/channels/${encodeURIComponent(room)}/members`, { username });
    if (result.status === 201 || result.status === 200) {
      const name = result.data?.member?.username || username;
      showNotice(result.status === 201 ? `${name} was added to ${roomTitle(channelOf(room), state.me)}.` : `${name} is a member already.`);
      closeRoomPanels();
      els.inviteToggle.focus();
    } else {
      showFormErrors(els.inviteForm, result, `Could not invite ${username} (HTTP ${result.status})`);
    }
  } catch (err) {
    showFormErrors(els.inviteForm, { data: null }, `Network error: ${err.message}`);
  } finally {
    button.disabled = false;
  }
});

els.leaveRoom.addEventListener('click', () => {
  const channel = channelOf(state.room);
  if (!channel) return;
  closeRoomPanels();
  els.leaveQuestion.textContent = `Leave ${roomTitle(channel, state.me)}?`;
  els.leaveConfirm.hidden = false;
  els.leaveNo.focus();
});

els.leaveNo.addEventListener('click', () => {
  closeRoomPanels();
  els.leaveRoom.focus();
});

els.leaveConfirm.addEventListener('keydown', (e) => {
  if (e.key !== 'Escape') return;
  e.stopPropagation();
  closeRoomPanels();
  els.leaveRoom.focus();
});

els.leaveYes.addEventListener('click', async () => {
  const room = state.room;
  if (!room || !state.me) return;
  els.leaveYes.disabled = true;
  state.leaving.add(room);
  try {
    const result = await api('DELETE', `/api/channels/${encodeURIComponent(room)}/members/${encodeURIComponent(state.me.username)}`);
    if (result.status === 204 || result.status === 404) {
      // 404: not a member any more already. The server's Left may have come first.
      closeRoomPanels();
      refresh.changes += 1;
      if (channelOf(room)) roomGone(room);
      refreshChannels();
    } else {
      state.leaving.delete(room);
      showError(result.data?.error ? `Could not leave: ${result.data.error}` : `Could not leave (HTTP ${result.status})`);
    }
  } catch (err) {
    state.leaving.delete(room);
    showError(`Could not leave: ${err.message}`);
  } finally {
    els.leaveYes.disabled = false;
  }
});

// ---------------------------------------------------------------------------------------------
// Direct conversations (POST /api/dms, § 8.3): a click on someone's name opens the one with them
// ---------------------------------------------------------------------------------------------

async function openDirect(username) {
  if (!client || !state.me || username === state.me.username) return;
  try {
    const result = await api('POST', '/api/dms', { usernames: [username] });
    if ((result.status === 201 || result.status === 200) && result.data && result.data.channel) {
      const channel = result.data.channel;
      if (!channelOf(channel.name)) changeChannels([...state.channels, channel]);
      closeDrawer();
      selectRoom(channel.name);
      refreshChannels();
    } else {
      showError((result.data?.error ? `Could not open a conversation with ${username}: ${result.data.error}` : `Could not open a conversation (HTTP ${result.status})`) + retryHint(result));
    }
  } catch (err) {
    showError(`Could not open a conversation: ${err.message}`);
  }
}

/** A name that opens a direct conversation: another user's, in the online list or on a post. */
function directTarget(e) {
  const el = e.target instanceof Element ? e.target.closest('[data-user-id][data-username]') : null;
  if (!el || !e.currentTarget.contains(el)) return null;
  if (state.me && Number(el.dataset.userId) === state.me.id) return null;
  return el.dataset.username;
}

for (const container of [els.messages, els.online]) {
  container.addEventListener('click', (e) => {
    const name = directTarget(e);
    if (name) openDirect(name);
  });
  container.addEventListener('keydown', (e) => {
    if (e.key !== 'Enter' && e.key !== ' ') return;
    const name = directTarget(e);
    if (!name) return;
    e.preventDefault();
    openDirect(name);
  });
}

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
  const name = roomFromHash();
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
  return !!state.me && !!m.sender && m.sender.id === state.me.id;
}

const messageList = new MessageList(els.messages, els.emptyRoom, {
  authorEl: (user) => userNameEl('span', 'author', user || { username: '' }),
  myId: () => state.me?.id,
  atStart: () => state.room !== null && roomCache(state.room).nextBefore === null,
  pendingChange: (seq) => (state.room !== null ? roomCache(state.room).changes.get(seq) : undefined),
  onEdit: editPost,
  onDelete: deletePost,
  onRewrite: rewriteFailed,
});

/** A failed send goes back to the composer (its text; files are attached again by hand). */
function rewriteFailed(key) {
  if (state.room === null) return;
  const cache = roomCache(state.room);
  const p = cache.pending.get(key);
  if (!p || !p.failed) return;
  cache.pending.delete(key);
  messageList.removePending(key);
  if (els.input.value.trim() === '') els.input.value = p.text;
  else els.input.value = `${els.input.value}\n${p.text}`;
  renderComposer();
  els.input.focus();
}

function renderRoom() {
  const cache = roomCache(state.room);
  messageList.reset(cache.posts.sorted(), cache.pending.values());
  // A room whose newest page is not here yet is not empty: it is loading.
  if (!cache.loaded) els.emptyRoom.hidden = true;
  if (cache.loaded) fillViewport();
}

/** Applies events of a room (ascending seq) to its posts and shows what changed. */
function applyEvents(room, events, knownSeq) {
  const cache = roomCache(room);
  const { added, changed } = cache.posts.apply(events, knownSeq);
  for (const m of events) {
    if (!isOwn(m)) continue;
    const key = idToHex(m.client_msg_id);
    if (m.kind === 'Post') {
      if (cache.pending.delete(key) && room === state.room) messageList.removePending(key);
    } else {
      settleChange(cache, key);
    }
  }
  if (room === state.room) {
    messageList.show(added);
    messageList.update(changed);
  }
}

/** An own edit or deletion was confirmed (or gave up): the post shows its state again. */
function settleChange(cache, key) {
  for (const [seq, c] of cache.changes) {
    if (c.key !== key) continue;
    cache.changes.delete(seq);
    const post = cache.posts.get(seq);
    if (post && cache.name === state.room) messageList.update([post]);
  }
}

/** Loads the newest page of a room that is shown and not loaded yet. */
function ensureLoaded(room) {
  const cache = roomCache(room);
  if (cache.loaded || cache.initialLoading || !client || !client.connected) return;
  cache.initialLoading = true;
  const epoch = cache.epoch;
  client
    .history(room, null, HISTORY_PAGE)
    .then((page) => {
      // Forgotten meanwhile (the room was left, or found reset): this page is not its state.
      if (cache.epoch !== epoch) return;
      // Live events that came meanwhile are kept: the page joins them without a gap.
      cache.loaded = true;
      applyPage(room, page);
      if (room === state.room) renderRoom();
    })
    .catch((err) => {
      if (cache.epoch !== epoch) return;
      if (err.code !== undefined) showError(`Could not load history: ${err.message}`);
      // The room would stay blank: asked again while it is open (the library already waited
      // out the server's retry hints), at a pace that cannot weigh on a struggling store.
      setTimeout(() => room === state.room && ensureLoaded(room), HISTORY_RETRY_MS);
    })
    .finally(() => {
      if (cache.epoch !== epoch) return;
      cache.initialLoading = false;
      if (room === state.room) {
        messageList.refresh();
        fillViewport();
        maybeMarkRead();
      }
    });
}

function onWelcome(w) {
  if (state.me && state.me.id !== undefined && state.me.id !== w.user.id) {
    // The cookie now belongs to someone else (a logout and a login in another tab while this
    // one was reconnecting): nothing of this session may go on under their name.
    const user = w.user;
    leaveChat();
    enterChat(user);
    return;
  }
  state.me = { ...state.me, id: w.user.id, username: w.user.username };
  els.me.textContent = w.user.username;
  renderComposer(); // the server's text limit
  if (state.room !== null) ensureLoaded(state.room);
  // Counts of rooms not followed, or missed while the connection was down.
  refreshChannels();
}

function onJoined(j) {
  const cache = roomCache(j.room);
  // Resumed: the missed events follow as Message frames. Otherwise (the replay could not cover
  // the gap, or the server's history is not the one we had) start the room over.
  if (!(j.stale || j.reset)) return;
  if (cache.keeping) {
    cache.forget();
    if (j.room === state.room) {
      renderRoom();
      ensureLoaded(j.room);
    }
  }
  refreshChannels(); // its unread count, too
}

function applyPage(room, page) {
  const cache = roomCache(room);
  applyEvents(room, page.messages, page.known_seq);
  if (cache.loaded) cache.nextBefore = page.messages.length ? page.next_before : null;
  // Reaching the first message puts its day separator above it (or the empty-room notice).
  if (room === state.room) messageList.refresh();
}

function loadOlder() {
  const room = state.room;
  if (!room || !client || !client.connected) return;
  const cache = roomCache(room);
  if (!cache.loaded || cache.initialLoading || cache.loadingOlder || cache.nextBefore === null) return;
  const before = cache.nextBefore !== undefined ? cache.nextBefore : cache.posts.minSeq();
  if (before === undefined) return;
  if (before <= 1) {
    cache.nextBefore = null;
    return;
  }
  cache.loadingOlder = true;
  els.messages.classList.add('loading');
  let loaded = false;
  const epoch = cache.epoch;
  client
    .history(room, before, HISTORY_PAGE)
    .then((page) => {
      if (cache.epoch !== epoch) return;
      applyPage(room, page);
      loaded = true;
    })
    .catch((err) => {
      if (err.code !== undefined) showError(`Could not load history: ${err.message}`);
    })
    .finally(() => {
      cache.loadingOlder = false;
      els.messages.classList.remove('loading');
      // After a failure the next page is asked for when the user scrolls up again, not at
      // once: a store that is down would otherwise be asked without end.
      if (loaded && room === state.room) fillViewport();
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
    maybeMarkRead();
  },
  { passive: true },
);

function onMessage(m) {
  const cache = roomCache(m.room);
  if (cache.keeping) applyEvents(m.room, [m], m.known_seq);
  if (m.kind === 'Post' && !isOwn(m) && !m.deleted) {
    // Seen at once when it is shown in view; otherwise one more unread.
    if (!(m.room === state.room && maybeMarkRead()) && state.unread.post(m.room, m.seq)) renderBadges();
  } else if (m.kind === 'Delete' && state.unread.deleted(m.room, m.target_seq)) {
    renderBadges();
  }
  // A message ends its author's typing state.
  const perRoom = state.typing.get(m.room);
  const t = perRoom && perRoom.get(m.sender.id);
  if (t && m.kind === 'Post') {
    clearTimeout(t.timer);
    perRoom.delete(m.sender.id);
    if (m.room === state.room) renderTyping();
  }
}

function onAck(a) {
  const cache = roomCache(a.room);
  const key = idToHex(a.client_msg_id);
  const me = client.user || state.me;
  const p = cache.pending.get(key);
  if (p) {
    cache.pending.delete(key);
    if (a.room === state.room) messageList.removePending(key);
    applyEvents(a.room, [post(a, me, { text: p.text, attachments: p.attachments })], a.seq);
    return;
  }
  // An own edit or deletion stored: shown now, the same as its event will say.
  for (const [seq, c] of cache.changes) {
    if (c.key !== key) continue;
    const kind = c.kind === 'edit' ? 'Edit' : 'Delete';
    applyEvents(a.room, [post(a, me, { kind, target_seq: seq, text: c.kind === 'edit' ? c.text : '' })], 0);
  }
}

/** A ChatMessage for an acknowledged frame of ours (its Message may come later, or came first). */
function post(a, me, extra) {
  return {
    room: a.room,
    seq: a.seq,
    message_id: a.message_id,
    sender: { id: me.id, username: me.username },
    client_msg_id: a.client_msg_id,
    sent_at_ms: a.sent_at_ms,
    text: '',
    kind: 'Post',
    target_seq: null,
    edited_at_ms: null,
    deleted: false,
    attachments: [],
    ...extra,
  };
}

function onSendFailed(f) {
  const cache = roomCache(f.room);
  const key = idToHex(f.client_msg_id);
  if (f.kind === 'edit' || f.kind === 'delete') {
    settleChange(cache, key);
    showError(`Could not ${f.kind} the message: ${f.message}`);
    return;
  }
  const p = cache.pending.get(key);
  if (!p) return;
  p.failed = true;
  p.reason = f.message;
  if (f.room === state.room) messageList.replacePending(p);
}

/** The editor of an own post saved `text`. Returns false to keep the editor open. */
function editPost(m, text) {
  if (!client) return false;
  const max = maxTextBytes();
  const { bytes } = textBudget(text, max);
  if (text.trim() === '') {
    showError('A message cannot be empty: delete it instead.');
    return false;
  }
  if (bytes > max) {
    showError(`Message too long: ${bytes} bytes, at most ${max}.`);
    return false;
  }
  const { key } = client.edit(m.room, m.seq, text);
  const cache = roomCache(m.room);
  cache.changes.set(m.seq, { key, kind: 'edit', text });
  if (m.room === state.room) messageList.update([cache.posts.get(m.seq) || m]);
  return true;
}

function deletePost(m) {
  if (!client) return;
  const { key } = client.delete(m.room, m.seq);
  const cache = roomCache(m.room);
  cache.changes.set(m.seq, { key, kind: 'delete' });
  if (m.room === state.room) messageList.update([cache.posts.get(m.seq) || m]);
}

// ---------------------------------------------------------------------------------------------
// Read marks (MarkRead, § 6.13): the open room is read while its newest message is in view
// and the tab is visible; badges follow ReadState, from this tab or any other of the user's
// ---------------------------------------------------------------------------------------------

/** Marks the open room read up to its newest event if it is being read now; returns whether it is. */
function maybeMarkRead() {
  const room = state.room;
  if (!client || room === null || document.visibilityState !== 'visible') return false;
  const cache = roomCache(room);
  if (!cache.loaded || !messageList.newestInView()) return false;
  const seq = client.highestSeq(room);
  if (seq !== null && seq > state.unread.lastRead(room)) {
    client.markRead(room, seq);
    if (state.unread.read(room, seq)) refreshChannels();
    renderBadges();
  }
  return true;
}

function onReadState(r) {
  // The count follows here when the mark is at or above the list's head and the room is
  // followed (every post above that head came live); otherwise the list says.
  const unknown = state.unread.read(r.room, r.last_read_seq);
  if (unknown || !client.joinedRooms().includes(r.room)) refreshChannels();
  const channel = channelOf(r.room);
  if (channel) channel.last_read_seq = Math.max(channel.last_read_seq || 0, r.last_read_seq);
  renderBadges();
}

// ---------------------------------------------------------------------------------------------
// Composer: a textarea (Enter sends, Shift+Enter starts a new line) and the files to send with
// the message, uploaded as soon as they are chosen or pasted
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
  els.send.disabled = !composerSendable({ text, bytes: budget.bytes, max: budget.max, ...fileCounts() });
  // Grow with the text up to the CSS max-height, then scroll inside (CSSOM, allowed by the CSP).
  els.input.style.height = '';
  if (els.input.offsetParent === null || els.input.value === '') return; // not laid out, or one line
  const border = els.input.offsetHeight - els.input.clientHeight;
  els.input.style.height = `${els.input.scrollHeight + border}px`;
}

function fileCounts() {
  let ready = 0;
  let busy = 0;
  let failed = 0;
  for (const f of state.files) {
    if (f.upload) ready += 1;
    else if (f.error) failed += 1;
    else busy += 1;
  }
  return { ready, busy, failed };
}

function sendFromComposer() {
  if (!client || !state.room) return;
  const text = els.input.value;
  const max = maxTextBytes();
  const { bytes } = textBudget(text, max);
  const counts = fileCounts();
  if (!composerSendable({ text, bytes, max, ...counts })) {
    if (bytes > max) showError(`Message too long: ${bytes} bytes, at most ${max}.`);
    else if (counts.busy) showError('Wait for the files to finish uploading.');
    else if (counts.failed) showError('Remove the files that could not be uploaded first.');
    return;
  }
  // No Typing{active:false}: the Message ends this user's typing state at every peer.
  clearTimeout(typingOut.idleTimer);
  clearTimeout(typingOut.announceTimer);
  typingOut.idleTimer = typingOut.announceTimer = null;
  typingOut.active = false;
  const room = state.room;
  const attachments = state.files.map((f) => f.upload);
  const { key } = client.send(room, text, { attachments: attachments.map((a) => a.id) });
  const p = { key, text, attachments, failed: false, reason: '', at: Date.now(), author: state.me };
  roomCache(room).pending.set(key, p);
  messageList.appendPending(p);
  els.input.value = '';
  state.files = [];
  renderUploads();
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

// Uploads (POST /api/uploads, § 8.5): XMLHttpRequest for its upload progress.

els.attach.addEventListener('click', () => els.fileInput.click());

els.fileInput.addEventListener('change', () => {
  addFiles([...els.fileInput.files]);
  els.fileInput.value = '';
  els.input.focus();
});

// A pasted image (a screenshot) is attached like a chosen file; pasted text stays text.
els.input.addEventListener('paste', (e) => {
  const files = [...(e.clipboardData?.files || [])];
  if (!files.length) return;
  e.preventDefault();
  addFiles(files);
});

function addFiles(files) {
  if (!client || !state.room) return;
  const space = MAX_FILES - state.files.length;
  if (files.length > space) showError(`At most ${MAX_FILES} files per message.`);
  for (const file of files.slice(0, Math.max(0, space))) {
    const entry = { key: ++fileKeys, file, name: uploadName(file.name, file.type), progress: 0, upload: null, error: null, xhr: null, attempts: 0, retry: null };
    state.files.push(entry);
  }
  pumpUploads();
  renderUploads();
  renderComposer();
}

/** Starts waiting uploads, oldest first, while fewer than `UPLOADS_AT_ONCE` are being sent. */
function pumpUploads() {
  let sending = state.files.filter((f) => f.xhr).length;
  for (const f of state.files) {
    if (sending >= UPLOADS_AT_ONCE) break;
    if (f.xhr || f.upload || f.error || f.retry) continue;
    startUpload(f);
    sending += 1;
  }
}

/** Drops every file of the composer, stopping their uploads. */
function dropUploads() {
  for (const f of state.files) dropUpload(f);
  state.files = [];
  renderUploads();
}

/** Stops an upload's request or its wait for a retry (removed, sent, or the chat left). */
function dropUpload(f) {
  f.xhr?.abort();
  f.xhr = null;
  clearTimeout(f.retry);
  f.retry = null;
}

function startUpload(entry) {
  const xhr = new XMLHttpRequest();
  entry.xhr = xhr;
  xhr.open('POST', uploadPath(entry.name));
  xhr.setRequestHeader('Content-Type', entry.file.type || 'application/octet-stream');
  xhr.setRequestHeader('Accept', 'application/json');
  xhr.responseType = 'json';
  xhr.upload.addEventListener('progress', (e) => {
    if (!e.lengthComputable) return;
    entry.progress = e.loaded / e.total;
    renderUploadProgress(entry);
  });
  xhr.addEventListener('load', () => {
    entry.xhr = null;
    const data = xhr.response;
    if (xhr.status === 201 && data && data.upload) {
      entry.upload = data.upload;
      entry.progress = 1;
    } else if (xhr.status === 413) {
      entry.error = 'too large';
    } else if (xhr.status === 429 || xhr.status === 503) {
      // Too many at once on the node (503) or for this user (429): sent again after the wait.
      const header = Number(xhr.getResponseHeader('Retry-After'));
      const wait = Number.isFinite(header) && header > 0 ? header : 1;
      entry.attempts += 1;
      if (entry.attempts < UPLOAD_ATTEMPTS && wait <= UPLOAD_RETRY_MAX_S) {
        entry.progress = 0;
        entry.retry = setTimeout(() => {
          entry.retry = null;
          pumpUploads();
        }, wait * 1000);
      } else {
        entry.error = `too many uploads, retry in ${wait} s`;
      }
    } else {
      entry.error = (data && data.error) || `HTTP ${xhr.status}`;
    }
    pumpUploads();
    renderUploads();
    renderComposer();
  });
  xhr.addEventListener('error', () => {
    entry.xhr = null;
    entry.error = 'network error';
    pumpUploads();
    renderUploads();
    renderComposer();
  });
  xhr.send(entry.file);
}

function removeFile(key) {
  const i = state.files.findIndex((f) => f.key === key);
  if (i < 0) return;
  dropUpload(state.files[i]);
  state.files.splice(i, 1);
  pumpUploads();
  renderUploads();
  renderComposer();
  els.input.focus();
}

function renderUploadProgress(entry) {
  const li = els.uploads.querySelector(`[data-file="${entry.key}"]`);
  const bar = li && li.querySelector('progress');
  if (bar) bar.value = Math.round(entry.progress * 100);
}

/** The files of the message being written: name, size, progress or state, and a remove button. */
function renderUploads() {
  const frag = document.createDocumentFragment();
  for (const f of state.files) {
    const li = document.createElement('li');
    li.className = 'upload';
    li.dataset.file = String(f.key);
    li.dataset.state = f.upload ? 'done' : f.error ? 'failed' : 'uploading';
    const name = document.createElement('span');
    name.className = 'file-name';
    name.textContent = f.name;
    const size = document.createElement('span');
    size.className = 'file-size';
    size.textContent = formatSize(f.file.size);
    li.append(name, size);
    if (!f.upload && !f.error) {
      const bar = document.createElement('progress');
      bar.max = 100;
      bar.value = Math.round(f.progress * 100);
      bar.setAttribute('aria-label', `Uploading ${f.name}`);
      li.append(bar);
    } else if (f.error) {
      const err = document.createElement('span');
      err.className = 'upload-error';
      err.textContent = `not uploaded: ${f.error}`;
      li.append(err);
    }
    const remove = document.createElement('button');
    remove.type = 'button';
    remove.className = 'remove-file';
    remove.textContent = '×';
    remove.setAttribute('aria-label', `Remove ${f.name}`);
    remove.title = 'Remove';
    remove.addEventListener('click', () => removeFile(f.key));
    li.append(remove);
    frag.append(li);
  }
  els.uploads.replaceChildren(frag);
  els.uploads.hidden = state.files.length === 0;
}

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

/** Shows a line of news (a room left, an invitation made) for a while. */
function showNotice(text) {
  els.notice.textContent = text;
  els.notice.hidden = false;
  clearTimeout(noticeTimer);
  noticeTimer = setTimeout(hideNotice, NOTICE_LINE_MS);
}

function hideNotice() {
  clearTimeout(noticeTimer);
  els.notice.hidden = true;
  els.notice.textContent = '';
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
    case ErrorCode.UnknownRoom:
      // A room that went away (it is taken out of the list): not an error of the user's.
      if (err.request_id === null) return;
      text = `Error ${err.code}: ${err.message}`;
      break;
    case ErrorCode.NotMember:
      // A typing update or read mark that crossed the room's Left: nothing the user did.
      if (err.client_msg_id === null || err.retrying) return;
      text = `Error ${err.code}: ${err.message}`;
      break;
    default:
      text = `Error ${err.code}: ${err.message}`;
  }
  if (err.room) text += ` [#${err.room}]`;
  showError(text);
}

// ---------------------------------------------------------------------------------------------
// Online in the current room (RoomPresence, § 6.8; more over HTTP, § 7): the users online
// with the room joined. Every connection joins every room of its list (for live badges), so
// in a public channel that is everyone online; in a private channel or a direct conversation,
// its members who are online.
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

/**
 * An element showing a user's name, focusable, that shows their last-seen state on hover and
 * opens a direct conversation with them on a click or Enter (not one's own name).
 */
function userNameEl(tag, className, user) {
  const el = document.createElement(tag);
  el.className = className;
  el.textContent = user.username;
  if (Number.isSafeInteger(user.id)) {
    el.dataset.userId = String(user.id);
    el.dataset.username = user.username;
    el.tabIndex = 0;
    if (!state.me || user.id !== state.me.id) {
      el.setAttribute('role', 'button');
      el.setAttribute('aria-description', 'opens a direct conversation');
    }
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
  } else if (!result || result.status >= 500) {
    // Not an answer about the session (a 401 is): it may well be valid, so ask again rather
    // than send the user to the login form for good.
    showAuth(result ? `The server is unavailable (${result.status}); trying again…` : 'Cannot reach the server; trying again…');
    setTimeout(() => state.me === null && boot(), BOOT_RETRY_MS);
  } else {
    showAuth('');
  }
}

boot();
