// ChatClient: one SocketChat session that survives reconnects, on top of a transport adapter
// (transport.js). It owns the session logic: Hello, the rooms it follows (joined, and joined
// again with after_seq after every reconnect), the outbox of sends, edits and deletions (resent
// with the same client_msg_id until acknowledged), read marks (coalesced), history requests,
// heartbeats and the reconnect policy (backoff.js). Every rate the server limits per
// connection and does not announce (joins and history, read marks, typing) is kept on this
// side with a token bucket a little below the server's, so the server never has to refuse.
import { reconnectDelay } from './backoff.js';
import { decodeServerFrame, encodeClientFrame } from './codec.js';
import { CloseCode, ErrorCode, closeName, isTerminalClose } from './codes.js';
import { idToHex, newClientMsgId } from './ids.js';
import {
  MARK_READ_BURST,
  MARK_READ_RATE_PER_SEC,
  MAX_ATTACHMENTS,
  PROTOCOL_VERSION,
  READ_BURST,
  READ_RATE_PER_SEC,
  TYPING_BURST,
  TYPING_RATE_PER_SEC,
} from './limits.js';
import { TokenBucket } from './rate.js';
import { abortable, chooseTransport, errorText } from './transport.js';
import { WebSocketConnection } from './transport-websocket.js';
import { WebTransportConnection, WEBTRANSPORT_RETRY_AFTER_MS, WEBTRANSPORT_TIMEOUT_MS, fetchTicket, fetchTransportInfo, webTransportOptions, webTransportUrl } from './transport-webtransport.js';

/** Times a history request is sent before a RateLimited or Unavailable answer fails it. */
const HISTORY_ATTEMPTS = 5;
/** A RateLimited Error's `message` for each limit that is not a send's or a History's (§ 4.1). */
const RATE_KINDS = new Map([
  ['too many joins and history requests', 'join'],
  ['too many typing updates', 'typing'],
  ['too many read marks', 'mark'],
]);

/** Event carrying a payload in `detail` (CustomEvent is not everywhere in Node 20). */
export class ChatEvent extends Event {
  constructor(type, detail) {
    super(type);
    this.detail = detail;
  }
}

function defaultUrl() {
  const loc = globalThis.location;
  if (!loc) throw new Error('ChatClient: no location; pass {url}');
  return `${loc.protocol === 'https:' ? 'wss' : 'ws'}://${loc.host}/ws`;
}

/** Sends transmitted but not yet acknowledged, at most (keeps a long offline queue from flooding). */
const MAX_SENDS_IN_FLIGHT = 32;
/**
 * Typing updates this client sends in a burst: one fewer than the server allows, so that
 * updates sent at the sustained rate but arriving bunched up (network jitter) still fit.
 */
const TYPING_CLIENT_BURST = TYPING_BURST - 1;
/** Read marks in a burst: one fewer than the server allows (burst 10, then 2/s), as for typing. */
const MARK_CLIENT_BURST = MARK_READ_BURST - 1;
/** Joins and history requests in a burst: one fewer than the server allows (20, then 5/s). */
const READ_CLIENT_BURST = READ_BURST - 1;

/**
 * A SocketChat connection that survives reconnects, over WebTransport when the server offers
 * it and the browser can, else over WebSocket.
 *
 * Events (each an EventTarget event with the payload in `event.detail`, also delivered to
 * `client.on(type, fn)` listeners as `fn(detail)`):
 * - `status` `{state: 'idle'|'connecting'|'connected'|'reconnecting'|'disconnected', ...}`;
 *   reconnecting carries `delay_ms`, `retry_at`, `code`, `reason`, `attempt`;
 *   disconnected carries `code`, `reason`, `terminal`.
 * - `welcome`, `joined`, `message`, `ack`, `history`, `typing`, `error`, `pong`, `goaway`:
 *   the decoded server frame. `joined` also carries `after_seq` (what this client asked for),
 *   `first` (after_seq was null) and `stale` (replay_from > after_seq + 1: older missed
 *   messages were not replayed). `message` and `history` frames carry `known_seq`: the seq the
 *   room's stream was known up to when their posts were read (for RoomPosts, posts.js).
 *   A `message` is any event of the stream (kind 'Post', 'Edit' or 'Delete', § 3).
 * - `left` `{type: 'Left', room, unprompted}`: the connection is out of the room; `unprompted`
 *   when this client did not ask for it (the user was removed from a private channel, or left
 *   it from another device, § 3.2): the room is no longer followed.
 * - `join_refused` `{room, code, message}`: a followed room cannot be joined (Error 2: it does
 *   not exist or the user may not see it; Error 6: too many rooms); it is no longer followed.
 * - `read_state` `{type: 'ReadState', room, last_read_seq}`: the user's read mark moved, by
 *   this or another of their connections; `client.readMark(room)` holds the highest.
 * - `room_added` `{type: 'RoomAdded', room}`: the user was added to a private channel or a
 *   direct conversation (fetch the room list to show it).
 * - `room_presence` `{type: 'RoomPresence', room, online, users}`: who is online in a followed
 *   room (§ 6.8): `online` users in all, `users` the first 50 of them by username. Each one
 *   replaces the previous one for the room; `client.roomPresence(room)` holds the latest. The
 *   snapshot is dropped when the client stops following the room and at the room's `left`
 *   (a fresh one follows the next `joined`). Who else is online, and when a user was last
 *   seen, is asked over HTTP (§ 7).
 * - `send_failed` `{kind, room, client_msg_id, text, target_seq, code, message}`: a pending
 *   send, edit or deletion was given up.
 * - `unauthorized` `{code, reason}`: the session ended (4505 or the token is gone); log in again.
 *   Any terminal close (4500–4999, e.g. 4502 when the server speaks another protocol version)
 *   stops reconnecting and ends in `status` `disconnected` with `terminal: true`, its `code`
 *   and the server's `reason` (from its GoAway when it sent one).
 * - `frame`: every decoded server frame, before its specific event.
 * - `transport` `{transport, previous}`: the transport of the open connection changed
 *   (`'webtransport'` | `'websocket'`); `client.transport` holds the current one.
 * - `transport_fallback` `{error, retry_webtransport_at}`: a WebTransport attempt failed and
 *   this attempt goes on over WebSocket (and later ones too until `retry_webtransport_at`).
 */
export class ChatClient extends EventTarget {
  /**
   * @param {object} [opts]
   * @param {string} [opts.url] WebSocket URL (default `ws(s)://<location.host>/ws`)
   * @param {string} [opts.clientName] `Hello.client`
   * @param {Function} [opts.WebSocket] WebSocket constructor (default the global one)
   * @param {number} [opts.minDelayMs] first reconnect delay (500)
   * @param {number} [opts.maxDelayMs] largest reconnect delay (10000)
   * @param {() => Promise<boolean>} [opts.checkAuth] asked before reconnecting when the last
   *   attempt never got a Welcome (a refused upgrade looks like a network error to a browser);
   *   resolve false when the session is gone, and the client stops with `unauthorized`.
   * @param {'auto'|'websocket'|'webtransport'} [opts.transport] 'auto' (default): WebTransport
   *   when offered and available, with WebSocket as the fallback; 'websocket': never
   *   WebTransport; 'webtransport': try WebTransport first even right after a failure
   * @param {() => Promise<object>} [opts.transportInfo] fetches `GET /api/transport`; default
   *   a same-origin fetch in a page (without `url`), none elsewhere (then WebSocket only)
   * @param {() => Promise<string>} [opts.getTicket] `POST /api/auth/ticket` → ticket
   * @param {Function} [opts.WebTransport] WebTransport constructor (default the global one)
   * @param {number} [opts.webTransportTimeoutMs] establishment deadline (5000)
   * @param {number} [opts.webTransportRetryAfterMs] WebSocket only for this long after a
   *   WebTransport failure (60000)
   * @param {Object<string, Function>} [opts.on] event callbacks by type
   */
  constructor(opts = {}) {
    super();
    this.url = opts.url ?? null;
    this.clientName = opts.clientName ?? 'socketchat-web/1.0';
    this.WebSocketImpl = opts.WebSocket ?? globalThis.WebSocket;
    this.minDelayMs = opts.minDelayMs ?? 500;
    this.maxDelayMs = opts.maxDelayMs ?? 10000;
    this.checkAuth = opts.checkAuth ?? null;
    this.random = opts.random ?? Math.random;
    this.transportMode = opts.transport ?? 'auto';
    const inPage = !!globalThis.location && typeof globalThis.fetch === 'function';
    this.transportInfo = opts.transportInfo ?? (inPage && !opts.url ? fetchTransportInfo : null);
    this.getTicket = opts.getTicket ?? fetchTicket;
    this.WebTransportImpl = opts.WebTransport ?? globalThis.WebTransport;
    this.webTransportTimeoutMs = opts.webTransportTimeoutMs ?? WEBTRANSPORT_TIMEOUT_MS;
    this.webTransportRetryAfterMs = opts.webTransportRetryAfterMs ?? WEBTRANSPORT_RETRY_AFTER_MS;
    /** No WebTransport attempt before this time (set by a failure, unless forced). */
    this.webTransportBlockedUntil = 0;
    /** Transport of the open (or last open) connection: 'webtransport' | 'websocket' | null. */
    this.transport = null;
    /** What the last attempt decided and why: {transport, why}. */
    this.lastTransportChoice = null;

    this.state = 'idle';
    /** Adapter of the current connection (opening or open), or null. */
    this.conn = null;
    /** Bumped whenever an attempt in progress must be abandoned. */
    this.openToken = 0;
    this.openAbort = null;
    this.stopped = true;
    this.welcomed = false;
    this.welcome = null;
    this.user = null;
    this.limits = null;
    this.attempt = 0;
    this.connectedAt = 0;
    this.lastRxAt = 0;
    this.reconnectTimer = null;
    this.heartbeatTimer = null;
    this.pingNonce = 0;
    this.lastGoAway = null;

    /** The rooms this client follows, in the order they were joined; re-joined after every reconnect. */
    this.rooms = new Set();
    /** The room shown (or last switched to): joined first after a reconnect. */
    this.currentRoom = null;
    /** Rooms whose Join (or Switch) went out on the current connection and that were not left since. */
    this.live = new Set();
    /** room → highest seq received (Message frames and History pages), or given to joinRoom. */
    this.lastSeq = new Map();
    /** room → head_seq of its latest Joined (the replay up to it reflects every event up to it). */
    this.joinHeads = new Map();
    /**
     * room → Join/Switch requests awaiting their Joined, oldest first: `{after, type, left,
     * before}`. For a Switch, `left` holds the rooms it is to take this connection out of whose
     * `Left` has not come yet (the connection is still in them if it is refused), and `before`
     * what `switchRoom` dropped here: the rooms followed, their snapshots and wanted marks.
     */
    this.joinRequests = new Map();
    /** room → Lefts this client asked for (Leave, or a Switch away) that have not come yet. */
    this.expectedLeft = new Map();
    /**
     * Joins, switches and history requests waiting for the server's rate (burst 20, then 5/s,
     * § 5), oldest first: `{kind: 'join'|'history', room, ...}`.
     */
    this.readQueue = [];
    this.readsPausedUntil = 0;
    this.readsTimer = null;
    /**
     * Outbox, in send order: hex(client_msg_id) → {kind: 'send'|'edit'|'delete', room,
     * client_msg_id, text, attachments, target_seq, state, rejoins}. state 'queued' = to be
     * (re)transmitted, 'sent' = transmitted on the current connection. Sends, edits and
     * deletions share one rate limit and one Ack order (§ 3.1), so they share one queue.
     */
    this.pending = new Map();
    /** room → highest seq the user has read here, from ReadState. */
    this.readMarks = new Map();
    /** room → highest seq markRead was asked for (coalesced: only the highest goes out). */
    this.marksWanted = new Map();
    /** room → highest MarkRead sent on the current connection. */
    this.marksSent = new Map();
    this.marksPausedUntil = 0;
    this.marksTimer = null;
    /** No send is transmitted before this time (after RateLimited / Unavailable). */
    this.sendPausedUntil = 0;
    /** After a RateLimited, sends are paced at the server's rate until this time. */
    this.pacingUntil = 0;
    this.lastSendAt = 0;
    this.pumpTimer = null;
    /** request_id → {resolve, reject, room} */
    this.historyRequests = new Map();
    this.nextRequestId = 1;
    /** room → latest RoomPresence of a joined room, as `{room, online, users}`. */
    this.presence = new Map();
    /** The server's typing limit (burst 5, then 1/s per connection), kept on this side. */
    this.typingBucket = new TokenBucket(TYPING_CLIENT_BURST, TYPING_RATE_PER_SEC, Date.now());
    /** The server's read-mark limit (burst 10, then 2/s per connection). */
    this.marksBucket = new TokenBucket(MARK_CLIENT_BURST, MARK_READ_RATE_PER_SEC, Date.now());
    /** The server's join and history limit (burst 20, then 5/s per connection). */
    this.readsBucket = new TokenBucket(READ_CLIENT_BURST, READ_RATE_PER_SEC, Date.now());
    /** No typing update is sent before this time (after a RateLimited without a send). */
    this.typingPausedUntil = 0;

    if (opts.on) for (const [type, fn] of Object.entries(opts.on)) this.on(type, fn);
    this._onBrowserOnline = () => {
      if (this.state === 'reconnecting') this._reconnectNow();
    };
    this._onPageHide = () => {
      // Unlike a WebSocket, a WebTransport session is not ended by the page going away (the
      // browser may keep its QUIC connection until it idles out), so the server would keep
      // the user online: end it here. Should the page come back (back/forward cache), the
      // client reconnects like after any drop.
      const conn = this.conn;
      if (!conn || conn.kind !== 'webtransport' || this.stopped) return;
      conn.close(1001, 'page closed');
      this._handleClose(1001, 'page closed');
    };
  }

  /** Subscribes `fn(detail)` to an event type; returns an unsubscribe function. */
  on(type, fn) {
    const listener = (e) => fn(e.detail);
    this.addEventListener(type, listener);
    return () => this.removeEventListener(type, listener);
  }

  _emit(type, detail) {
    this.dispatchEvent(new ChatEvent(type, detail));
  }

  _setStatus(state, extra = {}) {
    this.state = state;
    this._emit('status', { state, ...extra });
  }

  get connected() {
    return this.state === 'connected';
  }

  /** Opens the connection (and keeps it open until `disconnect()` or a terminal close). */
  connect() {
    if (!this.stopped) return;
    this.stopped = false;
    this.attempt = 0;
    if (typeof globalThis.addEventListener === 'function') {
      globalThis.addEventListener('online', this._onBrowserOnline);
      globalThis.addEventListener('pagehide', this._onPageHide);
    }
    this._open();
  }

  /** Closes the connection and stops reconnecting. Pending sends are kept. */
  disconnect(reason = 'closed by client') {
    this.stopped = true;
    clearTimeout(this.reconnectTimer);
    this.reconnectTimer = null;
    if (typeof globalThis.removeEventListener === 'function') {
      globalThis.removeEventListener('online', this._onBrowserOnline);
      globalThis.removeEventListener('pagehide', this._onPageHide);
    }
    const conn = this.conn;
    this._teardown('disconnected');
    if (conn) conn.close(1000, reason);
    this._setStatus('disconnected', { reason, code: 1000, terminal: false });
  }

  /** Forgets everything about the session (for logout). */
  reset() {
    this.disconnect('logged out');
    this.pending.clear();
    this.lastSeq.clear();
    this.joinHeads.clear();
    this.joinRequests.clear();
    this.presence.clear();
    this.rooms.clear();
    this.readMarks.clear();
    this.marksWanted.clear();
    this.currentRoom = null;
    this.user = null;
    this.welcome = null;
  }

  _open() {
    this.welcomed = false;
    this.lastGoAway = null;
    this._setStatus('connecting', { attempt: this.attempt });
    const token = ++this.openToken;
    const canTryWebTransport =
      this.transportMode !== 'websocket' && typeof this.transportInfo === 'function' && typeof this.WebTransportImpl === 'function';
    if (!canTryWebTransport) {
      this.lastTransportChoice = chooseTransport({
        mode: this.transportMode,
        info: null,
        hasWebTransport: typeof this.WebTransportImpl === 'function',
        now: Date.now(),
      });
      this._openWebSocket();
      return;
    }
    this._openPreferred(token);
  }

  /** Asks the server what it offers, tries WebTransport when it should, else WebSocket. */
  async _openPreferred(token) {
    const stale = () => this.stopped || token !== this.openToken;
    const abort = new AbortController();
    this.openAbort = abort;
    let info = null;
    try {
      info = await abortable(this.transportInfo(), abort.signal);
    } catch {
      info = null; // the WebSocket attempt will tell whether the server is there at all
    }
    if (stale()) return;
    const choice = chooseTransport({
      mode: this.transportMode,
      info,
      hasWebTransport: true,
      now: Date.now(),
      webTransportBlockedUntil: this.webTransportBlockedUntil,
    });
    this.lastTransportChoice = choice;
    if (choice.transport === 'webtransport') {
      try {
        const ticket = await abortable(this.getTicket(), abort.signal);
        if (stale()) return;
        const conn = await WebTransportConnection.establish(
          this.WebTransportImpl,
          webTransportUrl(info.webtransport, ticket),
          webTransportOptions(info),
          this.webTransportTimeoutMs,
          abort.signal,
        );
        if (stale()) {
          conn.close(1000, 'superseded');
          return;
        }
        this.openAbort = null;
        this._attach(conn);
        return;
      } catch (err) {
        if (stale()) return;
        this.webTransportBlockedUntil = Date.now() + this.webTransportRetryAfterMs;
        this.lastTransportChoice = { transport: 'websocket', why: `WebTransport failed: ${errorText(err)}` };
        this._emit('transport_fallback', { error: errorText(err), retry_webtransport_at: this.webTransportBlockedUntil });
      }
    }
    this.openAbort = null;
    this._openWebSocket();
  }

  _openWebSocket() {
    let conn;
    try {
      conn = new WebSocketConnection(this.WebSocketImpl, this.url ?? defaultUrl());
    } catch (err) {
      this._handleClose(1006, errorText(err));
      return;
    }
    this._attach(conn);
  }

  /** Makes `conn` the current connection and wires its callbacks to the session logic. */
  _attach(conn) {
    this.conn = conn;
    const current = () => this.conn === conn;
    conn.start({
      open: () => current() && this._onTransportOpen(conn),
      frame: (bytes) => current() && this._onFrameBytes(bytes),
      text: (message) => current() && this._emit('protocol_error', { message }),
      fatal: (message, code = 4500) => {
        if (!current()) return;
        this._emit('protocol_error', { message });
        this._fail(code, message);
      },
      close: (code, reason) => current() && this._handleClose(code, reason),
    });
  }

  _onTransportOpen(conn) {
    this.lastRxAt = Date.now();
    this.connectedAt = Date.now();
    // The server's buckets are per connection: a new one starts full.
    const now = Date.now();
    this.typingBucket = new TokenBucket(TYPING_CLIENT_BURST, TYPING_RATE_PER_SEC, now);
    this.marksBucket = new TokenBucket(MARK_CLIENT_BURST, MARK_READ_RATE_PER_SEC, now);
    this.readsBucket = new TokenBucket(READ_CLIENT_BURST, READ_RATE_PER_SEC, now);
    this.typingPausedUntil = 0;
    this.marksPausedUntil = 0;
    this.readsPausedUntil = 0;
    if (this.transport !== conn.kind) {
      const previous = this.transport;
      this.transport = conn.kind;
      this._emit('transport', { transport: conn.kind, previous });
    }
    this._sendFrame({ type: 'Hello', version: PROTOCOL_VERSION, client: this.clientName });
    // Frames sent right after Hello are processed in order (§ 1.2): re-join (the room shown
    // first) and resend now; each room's sends and read marks follow its Join.
    const order = [...this.rooms];
    if (this.currentRoom !== null && this.rooms.has(this.currentRoom)) {
      order.splice(order.indexOf(this.currentRoom), 1);
      order.unshift(this.currentRoom);
    }
    this.readQueue = this.readQueue.filter((r) => r.kind !== 'join');
    for (const room of order) this._queueJoin(room);
  }

  _onFrameBytes(bytes) {
    this.lastRxAt = Date.now();
    let frame;
    try {
      frame = decodeServerFrame(bytes);
    } catch (err) {
      this._emit('protocol_error', { message: err.message });
      // A frame type from a newer server is skipped (frames are delimited by the transport,
      // so nothing else is lost); any other undecodable frame means we cannot trust the stream.
      if (err.kind !== 'unknown_frame') this._fail(4500, `undecodable frame from server: ${err.message}`);
      return;
    }
    this._handleFrame(frame);
  }

  /**
   * Ends the current connection as if the network had dropped it (for tests and debugging):
   * the client reconnects and resumes like after any drop. Returns false when not connected.
   */
  dropConnection() {
    const conn = this.conn;
    if (!conn || this.stopped) return false;
    conn.drop();
    return true;
  }

  /** Ends the session for good from the client side (terminal, no reconnect). */
  _fail(code, reason) {
    const conn = this.conn;
    this.stopped = true;
    this._teardown('failed');
    if (conn) conn.close(code, reason.slice(0, 120));
    this._setStatus('disconnected', { code, reason, terminal: true });
  }

  _teardown(_why) {
    const conn = this.conn;
    this.conn = null;
    if (conn) conn.detach();
    this.openToken += 1;
    if (this.openAbort) {
      this.openAbort.abort();
      this.openAbort = null;
    }
    clearInterval(this.heartbeatTimer);
    this.heartbeatTimer = null;
    clearTimeout(this.pumpTimer);
    this.pumpTimer = null;
    clearTimeout(this.readsTimer);
    this.readsTimer = null;
    clearTimeout(this.marksTimer);
    this.marksTimer = null;
    // Whatever was transmitted but not acknowledged is sent again (same id) after reconnect.
    for (const p of this.pending.values()) p.state = 'queued';
    this.joinRequests.clear();
    this.expectedLeft.clear();
    this.live.clear();
    this.marksSent.clear();
    // Joins are queued again on the next connection; history requests fail now.
    const queued = this.readQueue;
    this.readQueue = [];
    for (const req of queued) if (req.kind === 'history') req.reject(new Error('connection closed'));
    for (const [id, req] of this.historyRequests) {
      req.reject(new Error('connection closed'));
      this.historyRequests.delete(id);
    }
  }

  _handleClose(code, reason) {
    const welcomed = this.welcomed;
    const uptime = Date.now() - this.connectedAt;
    if (!welcomed && this.conn && this.conn.kind === 'webtransport' && this.transportMode === 'auto') {
      // The session opened but died before Welcome: as good as a failed attempt.
      this.webTransportBlockedUntil = Date.now() + this.webTransportRetryAfterMs;
    }
    // The GoAway names the code to act on when the close carries none (1006), and its reason is
    // the server's full text (a close reason is cut at 123 bytes).
    if (this.lastGoAway && (!reason || code === 1006 || code === this.lastGoAway.code)) {
      code = this.lastGoAway.code;
      reason = this.lastGoAway.reason;
    }
    this._teardown('closed');
    if (this.stopped) return;
    if (isTerminalClose(code)) {
      this.stopped = true;
      this._setStatus('disconnected', { code, reason: reason || closeName(code), terminal: true });
      if (code === CloseCode.Unauthorized) this._emit('unauthorized', { code, reason });
      return;
    }
    if (welcomed && uptime > 5000) this.attempt = 0;
    const schedule = () => {
      if (this.stopped) return;
      const delay = this._delayFor(code);
      this.attempt += 1;
      const retryAt = Date.now() + delay;
      // After a flood close the server wants at least 10 s (§ 4.2): not even the network coming
      // back brings the reconnect forward.
      this.reconnectFloor = code === CloseCode.Flood ? retryAt : 0;
      this._setStatus('reconnecting', { delay_ms: delay, retry_at: retryAt, code, reason: reason || closeName(code), attempt: this.attempt });
      this.reconnectTimer = setTimeout(() => {
        this.reconnectTimer = null;
        if (!this.stopped) this._open();
      }, delay);
    };
    if (!welcomed && this.checkAuth) {
      // A refused upgrade (401) is indistinguishable from a network error in a browser.
      Promise.resolve()
        .then(() => this.checkAuth())
        .catch(() => true)
        .then((ok) => {
          if (this.stopped) return;
          if (ok === false) {
            this.stopped = true;
            this._setStatus('disconnected', { code, reason: 'not logged in', terminal: true });
            this._emit('unauthorized', { code, reason: 'not logged in' });
          } else {
            schedule();
          }
        });
    } else {
      schedule();
    }
  }

  _delayFor(code) {
    return reconnectDelay(code, this.attempt, { minDelayMs: this.minDelayMs, maxDelayMs: this.maxDelayMs, random: this.random });
  }

  _reconnectNow() {
    if (this.stopped || this.state !== 'reconnecting' || Date.now() < (this.reconnectFloor ?? 0)) return;
    clearTimeout(this.reconnectTimer);
    this.reconnectTimer = null;
    this._open();
  }

  _sendFrame(frame) {
    const conn = this.conn;
    if (!conn || !conn.isOpen) return false;
    conn.send(encodeClientFrame(frame));
    return true;
  }

  /**
   * Queues a Join (or Switch) of `room` behind the joins and history requests waiting for the
   * server's rate; its after_seq is the highest seq had when it goes out. A Join already
   * waiting for the room is not queued twice.
   */
  _queueJoin(room, type = 'Join', before = null) {
    if (type === 'Switch') {
      // A Switch leaves every other room: joins of them still waiting would undo it.
      this.readQueue = this.readQueue.filter((r) => r.kind !== 'join');
    } else if (this.readQueue.some((r) => r.kind === 'join' && r.room === room)) {
      this._drainReads();
      return;
    }
    this.readQueue.push({ kind: 'join', room, type, before });
    this._drainReads();
  }

  /** Sends waiting joins and history requests as the read bucket allows. */
  _drainReads() {
    clearTimeout(this.readsTimer);
    this.readsTimer = null;
    if (!this.conn || !this.conn.isOpen) return;
    while (this.readQueue.length) {
      const now = Date.now();
      const wait = now < this.readsPausedUntil ? this.readsPausedUntil - now : this.readsBucket.take(now) ? 0 : this.readsBucket.waitMs(now);
      if (wait > 0) {
        this.readsTimer = setTimeout(() => this._drainReads(), wait);
        return;
      }
      const req = this.readQueue.shift();
      if (req.kind === 'history') {
        this.historyRequests.set(req.frame.request_id, req);
        this._sendFrame(req.frame);
        continue;
      }
      const after = this.lastSeq.get(req.room) ?? null;
      if (!this._sendFrame({ type: req.type, room: req.room, after_seq: after })) return;
      const left = req.type === 'Switch' ? [...this.live].filter((other) => other !== req.room) : [];
      if (!this.joinRequests.has(req.room)) this.joinRequests.set(req.room, []);
      this.joinRequests.get(req.room).push({ after, type: req.type, left, before: req.before });
      for (const other of left) this._expectLeft(other);
      if (req.type === 'Switch') this.live.clear();
      this.live.add(req.room);
      // Sends and read marks of the room may follow its Join now (frames are read in order).
      this._pump();
      this._flushMarks();
    }
  }

  _expectLeft(room) {
    this.expectedLeft.set(room, (this.expectedLeft.get(room) ?? 0) + 1);
  }

  /** Joins `room` again unless a Join of it is out or waiting (after a NotMember). */
  _ensureJoined(room) {
    if (this.live.has(room) || this.readQueue.some((r) => r.kind === 'join' && r.room === room)) return;
    this._queueJoin(room);
  }

  /** The frame that (re)transmits an outbox entry. */
  static _outboxFrame(p) {
    const { room, client_msg_id } = p;
    if (p.kind === 'edit') return { type: 'Edit', room, client_msg_id, target_seq: p.target_seq, text: p.text };
    if (p.kind === 'delete') return { type: 'Delete', room, client_msg_id, target_seq: p.target_seq };
    return { type: 'Send', room, client_msg_id, text: p.text, attachments: p.attachments };
  }

  /**
   * Transmits queued sends, edits and deletions of joined rooms in their order. Normally all
   * at once; while paused after a RateLimited/Unavailable error nothing, and for a while after
   * a RateLimited one at a time at the server's sustained rate, so retries neither reorder much
   * nor flood. An entry of a room whose Join has not gone out yet waits for it.
   */
  _pump() {
    clearTimeout(this.pumpTimer);
    this.pumpTimer = null;
    if (!this.conn || !this.conn.isOpen) return;
    const now = Date.now();
    if (now < this.sendPausedUntil) {
      this.pumpTimer = setTimeout(() => this._pump(), this.sendPausedUntil - now);
      return;
    }
    const pacing = now < this.pacingUntil;
    const rate = (this.limits && this.limits.sends_per_sec) || 20;
    const interval = Math.ceil(1000 / rate) + 5;
    let inFlight = 0;
    for (const p of this.pending.values()) if (p.state === 'sent') inFlight += 1;
    for (const p of this.pending.values()) {
      if (p.state !== 'queued' || !this.live.has(p.room)) continue;
      if (inFlight >= MAX_SENDS_IN_FLIGHT) return; // continued when an Ack arrives
      if (pacing && now - this.lastSendAt < interval) {
        this.pumpTimer = setTimeout(() => this._pump(), interval - (now - this.lastSendAt));
        return;
      }
      if (!this._sendFrame(ChatClient._outboxFrame(p))) return;
      p.state = 'sent';
      inFlight += 1;
      this.lastSendAt = now;
    }
  }

  /**
   * Sends the highest wanted read mark of each joined room that is above what the server has
   * and what went out on this connection, as the read-mark bucket allows.
   */
  _flushMarks() {
    clearTimeout(this.marksTimer);
    this.marksTimer = null;
    if (!this.conn || !this.conn.isOpen) return;
    for (const [room, seq] of this.marksWanted) {
      if (seq <= (this.readMarks.get(room) ?? 0)) {
        this.marksWanted.delete(room);
        continue;
      }
      if (!this.live.has(room) || seq <= (this.marksSent.get(room) ?? 0)) continue;
      const now = Date.now();
      const wait = now < this.marksPausedUntil ? this.marksPausedUntil - now : this.marksBucket.take(now) ? 0 : this.marksBucket.waitMs(now);
      if (wait > 0) {
        this.marksTimer = setTimeout(() => this._flushMarks(), wait);
        return;
      }
      if (!this._sendFrame({ type: 'MarkRead', room, seq })) return;
      this.marksSent.set(room, seq);
    }
  }

  _startHeartbeat(ms) {
    clearInterval(this.heartbeatTimer);
    const interval = Math.max(100, ms || 25000);
    // When the first Ping not yet followed by anything from the server went out (null: none).
    let unanswered = null;
    this.heartbeatTimer = setInterval(() => {
      const conn = this.conn;
      if (!conn) return;
      const now = Date.now();
      if (unanswered !== null && this.lastRxAt >= unanswered) unanswered = null;
      // Nothing (not even a Pong) since a Ping two heartbeats ago: the connection is dead. Not
      // judged by the time since the last frame alone: a hidden tab's timers may run once a
      // minute, and a live connection then looks silent between them.
      if (unanswered !== null && now - unanswered > 2 * interval + 5000) {
        conn.close(4000, 'heartbeat timeout');
        this._handleClose(1006, 'heartbeat timeout');
        return;
      }
      if (unanswered === null) unanswered = now;
      this.pingNonce += 1;
      this._sendFrame({ type: 'Ping', nonce: this.pingNonce });
    }, interval);
  }

  _handleFrame(frame) {
    this._emit('frame', frame);
    switch (frame.type) {
      case 'Welcome':
        this.welcomed = true;
        this.welcome = frame;
        this.user = frame.user;
        this.limits = frame.limits;
        this.connectedAt = Date.now();
        this._startHeartbeat(frame.heartbeat_ms);
        this._setStatus('connected', { user: frame.user, transport: this.transport });
        this._emit('welcome', frame);
        return;
      case 'Joined': {
        const queue = this.joinRequests.get(frame.room);
        const after = queue && queue.length ? queue.shift().after : (this.lastSeq.get(frame.room) ?? null);
        this.joinHeads.set(frame.room, frame.head_seq);
        const first = after === null;
        // A head below what we already have means the room's history was reset on the server:
        // our seqs are meaningless there, so start over like a first visit.
        const reset = !first && frame.head_seq < after;
        if (reset) this.lastSeq.delete(frame.room);
        const stale = !first && (reset || frame.replay_from > after + 1);
        // With nothing to replay, the room is followed live from its head on: a reconnect
        // resumes there (§ 6.5). A replay moves the resume point as its messages arrive, so a
        // connection lost in the middle of one resumes after the last message received.
        if (!reset && frame.replay_from > frame.head_seq) this._noteSeq(frame.room, frame.head_seq);
        this._emit('joined', { ...frame, after_seq: after, first, stale, reset });
        return;
      }
      case 'Left': {
        // Nothing more comes for this membership; a later Joined brings a fresh RoomPresence.
        this.presence.delete(frame.room);
        const expected = this.expectedLeft.get(frame.room) ?? 0;
        if (expected > 1) this.expectedLeft.set(frame.room, expected - 1);
        else this.expectedLeft.delete(frame.room);
        if (expected > 0) this._leftBySwitch(frame.room);
        const unprompted = expected === 0 && this.rooms.has(frame.room);
        if (unprompted) this._unfollow(frame.room, 'removed from the room');
        this._emit('left', { ...frame, unprompted });
        return;
      }
      case 'ReadState': {
        const prev = this.readMarks.get(frame.room) ?? 0;
        if (frame.last_read_seq > prev) this.readMarks.set(frame.room, frame.last_read_seq);
        // The server answered: what this connection sent is in (or above the room's head).
        const sent = this.marksSent.get(frame.room) ?? 0;
        if (sent >= (this.marksWanted.get(frame.room) ?? Infinity)) this.marksWanted.delete(frame.room);
        this._emit('read_state', frame);
        return;
      }
      case 'RoomAdded':
        this._emit('room_added', frame);
        return;
      case 'RoomPresence':
        // A frame for a room this client no longer follows was sent before the server handled
        // the Leave (or Switch), and its Left is on the way.
        if (!this.rooms.has(frame.room)) return;
        this.presence.set(frame.room, { room: frame.room, online: frame.online, users: frame.users });
        this._emit('room_presence', frame);
        return;
      case 'Ack':
        this._settle(frame.client_msg_id);
        this._emit('ack', frame);
        return;
      case 'Message': {
        frame.known_seq = this.joinHeads.get(frame.room) ?? 0;
        this._noteSeq(frame.room, frame.seq);
        if (this.user && frame.sender.id === this.user.id) this._settle(frame.client_msg_id);
        this._emit('message', frame);
        return;
      }
      case 'History': {
        // The page was read after all of its own events too (§ 3): they count.
        for (const m of frame.messages) this._noteSeq(m.room, m.seq);
        frame.known_seq = this.lastSeq.get(frame.room) ?? 0;
        const req = this.historyRequests.get(frame.request_id);
        if (req) {
          this.historyRequests.delete(frame.request_id);
          req.resolve(frame);
        }
        this._emit('history', frame);
        return;
      }
      case 'Typing':
        this._emit('typing', frame);
        return;
      case 'Pong':
        this._emit('pong', frame);
        return;
      case 'Error':
        this._handleError(frame);
        return;
      case 'GoAway':
        this.lastGoAway = { code: frame.code, reason: frame.reason };
        this._emit('goaway', frame);
        return;
      default:
        return;
    }
  }

  _noteSeq(room, seq) {
    const prev = this.lastSeq.get(room);
    if (prev === undefined || seq > prev) this.lastSeq.set(room, seq);
  }

  _settle(id) {
    const key = idToHex(id);
    const p = this.pending.get(key);
    if (!p) return;
    this.pending.delete(key);
    if (this.pending.size === 0) this.pacingUntil = 0;
    else if (p.state === 'sent' && !this.pumpTimer) this._pump();
  }

  _handleError(frame) {
    if (frame.request_id !== null) {
      const req = this.historyRequests.get(frame.request_id);
      if (req) {
        this.historyRequests.delete(frame.request_id);
        req.attempts = (req.attempts ?? 0) + 1;
        const retry = frame.code === ErrorCode.RateLimited || frame.code === ErrorCode.Unavailable;
        if (retry && req.attempts < HISTORY_ATTEMPTS) {
          // § 4.1: asked again after retry_after_ms, and no join or history request before.
          const wait = frame.retry_after_ms ?? 1000;
          this.readsPausedUntil = Math.max(this.readsPausedUntil, Date.now() + wait);
          this.readQueue.unshift(req);
          this._drainReads();
        } else {
          const err = new Error(frame.message);
          err.code = frame.code;
          req.reject(err);
        }
      }
    }
    if (frame.client_msg_id === null && frame.request_id === null) this._roomError(frame);
    let retrying = false;
    const key = frame.client_msg_id !== null ? idToHex(frame.client_msg_id) : null;
    const p = key !== null ? this.pending.get(key) : undefined;
    if (p) {
      const now = Date.now();
      if (frame.code === ErrorCode.RateLimited || frame.code === ErrorCode.Unavailable) {
        // Retry with the same client_msg_id after retry_after_ms (§ 4.1).
        retrying = true;
        p.state = 'queued';
        const wait = frame.retry_after_ms ?? 1000;
        this.sendPausedUntil = Math.max(this.sendPausedUntil, now + wait);
        if (frame.code === ErrorCode.RateLimited) this.pacingUntil = now + wait + 5000;
        this._pump();
      } else if (frame.code === ErrorCode.NotMember && this.rooms.has(p.room) && p.rejoins < 3) {
        // Join first, then retry with the same client_msg_id (§ 4.1).
        retrying = true;
        p.rejoins += 1;
        p.state = 'queued';
        this.live.delete(p.room);
        this._ensureJoined(p.room);
        this._pump();
      } else if (frame.code === ErrorCode.NotMember && !this.rooms.has(p.room)) {
        // Sent just before the room was left: stays queued and goes out if it is joined again.
        p.state = 'queued';
        retrying = true;
      } else {
        this.pending.delete(key);
        this._emitFailed(p, frame.code, frame.message);
        this._pump(); // its place in flight is free
      }
    }
    this._emit('error', { ...frame, retrying });
  }

  _emitFailed(p, code, message) {
    this._emit('send_failed', { kind: p.kind, room: p.room, client_msg_id: p.client_msg_id, text: p.text, target_seq: p.target_seq, code, message });
  }

  /**
   * An Error about a room with neither client_msg_id nor request_id: a Join or Switch, a
   * Typing or a MarkRead. A RateLimited one says which by its `message` (§ 4.1), and only that
   * kind pauses; an Unavailable one (a Join or a MarkRead, § 4.1) may be either.
   */
  _roomError(frame) {
    const room = frame.room;
    const now = Date.now();
    const wait = frame.retry_after_ms ?? 1000;
    const joinOut = room !== null && (this.joinRequests.get(room)?.length ?? 0) > 0;
    if (frame.code === ErrorCode.RateLimited || frame.code === ErrorCode.Unavailable) {
      const kind = frame.code === ErrorCode.RateLimited ? RATE_KINDS.get(frame.message) : undefined;
      if (kind === 'typing') {
        this.typingPausedUntil = Math.max(this.typingPausedUntil, now + wait);
        return;
      }
      const mark = kind === undefined || kind === 'mark';
      const join = kind === undefined || kind === 'join';
      if (mark) this.marksPausedUntil = Math.max(this.marksPausedUntil, now + wait);
      if (join) this.readsPausedUntil = Math.max(this.readsPausedUntil, now + wait);
      if (room === null) return;
      // A read mark that may have been refused goes out again (marks only move up).
      if (mark) {
        this.marksSent.delete(room);
        if (this.marksWanted.has(room)) this._flushMarks();
      }
      // A join of the room waiting for its Joined may be what was refused: join again after
      // the wait. Should the refused frame have been a read mark, the second Join is harmless
      // (it continues from what was sent, § 6.2).
      if (join && joinOut && this.rooms.has(room)) {
        // Requests of a room are answered in order: the refused one is the oldest.
        const req = this.joinRequests.get(room).shift();
        this.live.delete(room);
        if (req.type === 'Switch' && req.left.length > 0) {
          // Refused before it left anything (the rate, or its room lookup): still in the
          // rooms it was to leave, and it goes again as a Switch (a Join would keep them),
          // followed by the joins it would otherwise drop.
          this._unswitch(req, false);
          this._queueJoin(room, 'Switch', req.before);
          // (A room joined after the refused Switch is left by the new one: joined again.)
          for (const other of this.rooms) if (other !== room) this._queueJoin(other);
        } else {
          this._ensureJoined(room);
        }
      }
      return;
    }
    if (frame.code === ErrorCode.NotMember && room !== null) {
      // A read mark (or typing update) the server found no membership for: Join first, then
      // the mark again (§ 4.1). With a Join of the room out, the mark follows that one.
      this.marksSent.delete(room);
      if (this.rooms.has(room) && !joinOut) {
        this.live.delete(room);
        this._ensureJoined(room);
      }
      return;
    }
    if ((frame.code === ErrorCode.UnknownRoom || frame.code === ErrorCode.TooManyRooms) && room !== null) {
      // Only a Join or Switch (History carries its request_id) is answered so: the room
      // cannot be joined (removed, or never visible) and is no longer followed. A refused
      // Switch changes nothing (§ 3.1): the rooms it was to leave are followed again.
      const req = this.joinRequests.get(room)?.shift();
      if (!this.rooms.has(room)) {
        // Left before the answer came: only the request goes (a later Joined of the room
        // answers a later Join), and a refused Switch still left nothing.
        if (req?.type === 'Switch') this._unswitch(req, false);
        return;
      }
      if (req?.type === 'Switch') this._unswitch(req, true);
      this._unfollow(room, frame.message);
      this._emit('join_refused', { room, code: frame.code, message: frame.message });
    }
  }

  /**
   * Undoes what a refused Switch did here: the connection is still in the rooms it was to
   * leave and whose `Left` did not come (none will). With `restore` (the Switch is over), what
   * `switchRoom` dropped is followed again: rooms, snapshots and wanted read marks.
   */
  _unswitch(req, restore) {
    for (const other of req.left) {
      const expected = this.expectedLeft.get(other) ?? 0;
      if (expected > 1) this.expectedLeft.set(other, expected - 1);
      else this.expectedLeft.delete(other);
      this.live.add(other);
    }
    req.left = [];
    if (!restore || !req.before) return;
    for (const other of req.before.rooms) {
      this.rooms.add(other);
      if (!this.live.has(other)) this._queueJoin(other);
    }
    for (const [other, snapshot] of req.before.presence) if (!this.presence.has(other)) this.presence.set(other, snapshot);
    for (const [other, seq] of req.before.marks) this.marksWanted.set(other, Math.max(seq, this.marksWanted.get(other) ?? 0));
    this._flushMarks();
  }

  /** A `Left` asked for by a Switch came: the oldest Switch still waiting for it has it. */
  _leftBySwitch(room) {
    for (const requests of this.joinRequests.values()) {
      for (const req of requests) {
        const at = req.type === 'Switch' ? req.left.indexOf(room) : -1;
        if (at >= 0) {
          req.left.splice(at, 1);
          return;
        }
      }
    }
  }

  /** Stops following `room` without a Leave (the server took this connection out already). */
  _unfollow(room, reason) {
    this.rooms.delete(room);
    this.live.delete(room);
    this.presence.delete(room);
    this.marksWanted.delete(room);
    this.marksSent.delete(room);
    this.readQueue = this.readQueue.filter((r) => !(r.kind === 'join' && r.room === room));
    if (this.currentRoom === room) this.currentRoom = null;
    this._failPending(room, reason);
  }

  /** Fails the room's pending entries that `pick` accepts (`send_failed`, code 3, `reason`). */
  _failPending(room, reason, pick = () => true) {
    for (const [key, p] of this.pending) {
      if (p.room !== room || !pick(p)) continue;
      this.pending.delete(key);
      this._emitFailed(p, ErrorCode.NotMember, reason);
    }
  }

  /**
   * Follows `room`: joins it now (or on connect) and again after every reconnect, with
   * after_seq = the highest seq had. `afterSeq` says the client already accounts for the
   * room up to that seq (say the room's head from the room list: nothing older is replayed).
   * Returns false when the room was followed already: then `afterSeq` is ignored, since the
   * resume point of a followed room is the highest seq received (§ 6.5), which a head read
   * from the room list may be past.
   */
  joinRoom(room, afterSeq = null) {
    if (this.rooms.has(room)) return false;
    if (afterSeq !== null && afterSeq !== undefined) this._noteSeq(room, afterSeq);
    this.rooms.add(room);
    this._queueJoin(room);
    return true;
  }

  /**
   * Stops following `room`: a Leave (when its Join went out), no rejoin after reconnects. Its
   * sends still queued wait for it to be followed again, unless `opts.gone` (the user may no
   * longer see the room): then they fail (`send_failed`, code 3, with `opts.gone` as message).
   */
  leaveRoom(room, opts = {}) {
    // Those already sent are answered by the server (an Ack if it stored them).
    if (opts.gone) this._failPending(room, opts.gone, (p) => p.state === 'queued');
    if (!this.rooms.has(room)) return false;
    this.rooms.delete(room);
    this.presence.delete(room);
    this.marksWanted.delete(room);
    this.readQueue = this.readQueue.filter((r) => !(r.kind === 'join' && r.room === room));
    if (this.currentRoom === room) this.currentRoom = null;
    if (this.live.delete(room) && this._sendFrame({ type: 'Leave', room })) this._expectLeft(room);
    return true;
  }

  /** The rooms this client follows. */
  joinedRooms() {
    return [...this.rooms];
  }

  /**
   * Makes `room` the room shown: it is joined first after a reconnect. Joins it (with
   * `afterSeq` as for joinRoom) when it is not followed yet.
   */
  focusRoom(room, afterSeq = null) {
    this.currentRoom = room;
    this.joinRoom(room, afterSeq);
  }

  /**
   * Makes `room` the only room followed: sends `Switch{room, after_seq}` where after_seq is
   * the highest seq received for it (null the first time), which leaves every other room.
   * Returns that after_seq. When not connected, the room is joined on (re)connect.
   */
  switchRoom(room) {
    this.currentRoom = room;
    const before = { rooms: [], presence: new Map(), marks: new Map() };
    for (const other of this.rooms) {
      if (other === room) continue;
      before.rooms.push(other);
      if (this.presence.has(other)) before.presence.set(other, this.presence.get(other));
      if (this.marksWanted.has(other)) before.marks.set(other, this.marksWanted.get(other));
      this.presence.delete(other);
      this.marksWanted.delete(other);
    }
    this.rooms = new Set([room]);
    const after = this.lastSeq.get(room) ?? null;
    if (this.conn && this.conn.isOpen) this._queueJoin(room, 'Switch', before);
    return after;
  }

  /**
   * Latest `{room, online, users}` of a joined room (§ 6.8), or null before its first
   * RoomPresence and after the client left it.
   */
  roomPresence(room) {
    return this.presence.get(room) ?? null;
  }

  /** Highest seq received for a room, or null. */
  highestSeq(room) {
    return this.lastSeq.get(room) ?? null;
  }

  _enqueue(entry) {
    // A lone surrogate (malformed UTF-16, say from a paste) cannot be encoded: one left in the
    // outbox would stop every send after it. It goes as U+FFFD.
    if (typeof entry.text === 'string' && typeof entry.text.toWellFormed === 'function') {
      entry = { ...entry, text: entry.text.toWellFormed() };
    }
    const client_msg_id = newClientMsgId();
    const key = idToHex(client_msg_id);
    this.pending.set(key, { attachments: [], target_seq: null, ...entry, client_msg_id, state: 'queued', rejoins: 0 });
    this._pump();
    return { client_msg_id, key };
  }

  /**
   * Sends a message to a followed room, with the ids of uploaded files (§ 8.5) in
   * `opts.attachments` (text may then be empty). It stays pending (and is re-sent with the
   * same client_msg_id after a reconnect) until its Ack or its own Message arrives. Returns
   * `{client_msg_id, key}`.
   */
  send(room, text, { attachments = [] } = {}) {
    if (!Array.isArray(attachments) || attachments.length > MAX_ATTACHMENTS) {
      throw new RangeError(`at most ${MAX_ATTACHMENTS} attachments`);
    }
    return this._enqueue({ kind: 'send', room, text, attachments: [...attachments] });
  }

  /**
   * Replaces the text of one's own post at `seq`: an `Edit`, acknowledged and retried like a
   * send and kept in order with sends (§ 3.1). The change shows when its event comes back
   * (a `message` of kind 'Edit'). Returns `{client_msg_id, key}`.
   */
  edit(room, seq, text) {
    return this._enqueue({ kind: 'edit', room, text, target_seq: seq });
  }

  /** Deletes one's own post at `seq`: a `Delete`, handled like `edit`. */
  delete(room, seq) {
    return this._enqueue({ kind: 'delete', room, text: '', target_seq: seq });
  }

  /**
   * The user has read `room` up to `seq`. Coalesced: only the highest seq asked for goes out,
   * once the room is joined, and never faster than the server's limit (burst 10, then 2/s per
   * connection, § 5); nothing goes out for a seq at or below the mark the server reported.
   * Returns whether the mark is above what is known.
   */
  markRead(room, seq) {
    if (!Number.isSafeInteger(seq) || seq <= 0) return false;
    if (seq <= Math.max(this.readMarks.get(room) ?? 0, this.marksWanted.get(room) ?? 0)) return false;
    this.marksWanted.set(room, seq);
    this._flushMarks();
    return true;
  }

  /** The highest read mark the server reported for `room` (ReadState), or 0. */
  readMark(room) {
    return this.readMarks.get(room) ?? 0;
  }

  /** Pending sends, edits and deletions, oldest first. */
  pendingSends(room) {
    return [...this.pending.values()].filter((p) => room === undefined || p.room === room);
  }

  /**
   * Requests a history page; resolves with the History frame (which carries `known_seq`).
   * Refused for the rate or an unavailable store (Error 5 or 7), it is asked again after the
   * server's `retry_after_ms`, 5 times in all; it rejects on any other Error, on the fifth
   * refusal, or on disconnect. Waits its turn behind joins when the server's rate of joins and
   * history requests is used up.
   */
  history(room, before_seq = null, limit = 50) {
    const request_id = this.nextRequestId;
    this.nextRequestId = this.nextRequestId >= 0xffffffff ? 1 : this.nextRequestId + 1;
    return new Promise((resolve, reject) => {
      if (!this.conn || !this.conn.isOpen) {
        reject(new Error('not connected'));
        return;
      }
      const req = { kind: 'history', room, frame: { type: 'History', request_id, room, before_seq, limit }, resolve, reject };
      // The shown room's page goes before the joins of the other rooms still waiting for the
      // rate (after a connect, up to 31 of them: seconds at 5 a second).
      const at = room === this.currentRoom ? this.readQueue.findIndex((r) => r.kind === 'join' && r.room !== room) : -1;
      if (at >= 0) this.readQueue.splice(at, 0, req);
      else this.readQueue.push(req);
      this._drainReads();
    });
  }

  /**
   * Sends a typing state for a joined room. Returns false when it was dropped: not connected,
   * or over the server's typing limit (burst 5, then 1/s per connection, § 5), which this
   * client never exceeds; a caller that wants its peers to see the state tries again later.
   */
  typing(room, active) {
    if (!this.conn || !this.conn.isOpen || !this.live.has(room)) return false;
    const now = Date.now();
    if (now < this.typingPausedUntil || !this.typingBucket.take(now)) return false;
    return this._sendFrame({ type: 'Typing', room, active });
  }
}
