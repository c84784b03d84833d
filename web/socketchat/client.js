// ChatClient: one SocketChat session that survives reconnects, on top of a transport adapter
// (transport.js). It owns the session logic: Hello, joins and resumes, the outbox of sends
// (resent with the same client_msg_id until acknowledged), history requests, heartbeats and
// the reconnect policy (backoff.js).
import { reconnectDelay } from './backoff.js';
import { decodeServerFrame, encodeClientFrame } from './codec.js';
import { CloseCode, ErrorCode, closeName, isTerminalClose } from './codes.js';
import { idToHex, newClientMsgId } from './ids.js';
import { PROTOCOL_VERSION, TYPING_BURST, TYPING_RATE_PER_SEC } from './limits.js';
import { TokenBucket } from './rate.js';
import { abortable, chooseTransport, errorText } from './transport.js';
import { WebSocketConnection } from './transport-websocket.js';
import { WebTransportConnection, WEBTRANSPORT_RETRY_AFTER_MS, WEBTRANSPORT_TIMEOUT_MS, fetchTicket, fetchTransportInfo, webTransportOptions, webTransportUrl } from './transport-webtransport.js';

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

/**
 * A SocketChat connection that survives reconnects, over WebTransport when the server offers
 * it and the browser can, else over WebSocket.
 *
 * Events (each an EventTarget event with the payload in `event.detail`, also delivered to
 * `client.on(type, fn)` listeners as `fn(detail)`):
 * - `status` `{state: 'idle'|'connecting'|'connected'|'reconnecting'|'disconnected', ...}`;
 *   reconnecting carries `delay_ms`, `retry_at`, `code`, `reason`, `attempt`;
 *   disconnected carries `code`, `reason`, `terminal`.
 * - `welcome`, `joined`, `left`, `message`, `ack`, `history`, `typing`, `error`, `pong`,
 *   `goaway`: the decoded server frame. `joined` also carries `after_seq` (what this client
 *   asked for), `first` (after_seq was null) and `stale` (replay_from > after_seq + 1: older
 *   missed messages were not replayed).
 * - `room_presence` `{type: 'RoomPresence', room, online, users}`: who is online in the current
 *   room (§ 6.8): `online` users in all, `users` the first 50 of them by username. Each one
 *   replaces the previous one for the room; `client.roomPresence(room)` holds the latest. The
 *   snapshot is dropped when the client switches to another room and at the room's `left`
 *   (a fresh one follows the next `joined`). Who else is online, and when a user was last
 *   seen, is asked over HTTP (§ 7).
 * - `send_failed` `{room, client_msg_id, code, message}`: a pending send was given up.
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

    /** The room this client wants to be in; re-joined after every reconnect. */
    this.currentRoom = null;
    /** room → highest seq received (Message frames and History pages). */
    this.lastSeq = new Map();
    /** room → queue of after_seq values of Join/Switch requests awaiting their Joined. */
    this.joinRequests = new Map();
    /**
     * Outbox, in send order: hex(client_msg_id) → {room, client_msg_id, text, state, rejoins}.
     * state 'queued' = to be (re)transmitted, 'sent' = transmitted on the current connection.
     */
    this.pending = new Map();
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
    this.joinRequests.clear();
    this.presence.clear();
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
    this.typingBucket = new TokenBucket(TYPING_CLIENT_BURST, TYPING_RATE_PER_SEC, Date.now());
    this.typingPausedUntil = 0;
    if (this.transport !== conn.kind) {
      const previous = this.transport;
      this.transport = conn.kind;
      this._emit('transport', { transport: conn.kind, previous });
    }
    this._sendFrame({ type: 'Hello', version: PROTOCOL_VERSION, client: this.clientName });
    // Frames sent right after Hello are processed in order (§ 1.2): re-join and resend now.
    if (this.currentRoom !== null) {
      const room = this.currentRoom;
      const after = this.lastSeq.get(room) ?? null;
      this._requestJoin(room, after, 'Join');
      this._pump();
    }
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
    // Whatever was transmitted but not acknowledged is sent again (same id) after reconnect.
    for (const p of this.pending.values()) p.state = 'queued';
    this.joinRequests.clear();
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
    if (this.stopped || this.state !== 'reconnecting') return;
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

  _requestJoin(room, after, type) {
    if (!this._sendFrame({ type, room, after_seq: after })) return false;
    if (!this.joinRequests.has(room)) this.joinRequests.set(room, []);
    this.joinRequests.get(room).push(after);
    return true;
  }

  /**
   * Transmits queued sends of the current room in send order. Normally all at once; while
   * paused after a RateLimited/Unavailable error nothing, and for a while after a RateLimited
   * one at a time at the server's sustained rate, so retries neither reorder much nor flood.
   */
  _pump() {
    clearTimeout(this.pumpTimer);
    this.pumpTimer = null;
    if (!this.conn || !this.conn.isOpen || this.currentRoom === null) return;
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
      if (p.state !== 'queued' || p.room !== this.currentRoom) continue;
      if (inFlight >= MAX_SENDS_IN_FLIGHT) return; // continued when an Ack arrives
      if (pacing && now - this.lastSendAt < interval) {
        this.pumpTimer = setTimeout(() => this._pump(), interval - (now - this.lastSendAt));
        return;
      }
      if (!this._sendFrame({ type: 'Send', room: p.room, client_msg_id: p.client_msg_id, text: p.text, attachments: [] })) return;
      p.state = 'sent';
      inFlight += 1;
      this.lastSendAt = now;
    }
  }

  _startHeartbeat(ms) {
    clearInterval(this.heartbeatTimer);
    const interval = Math.max(100, ms || 25000);
    this.heartbeatTimer = setInterval(() => {
      const conn = this.conn;
      if (!conn) return;
      if (Date.now() - this.lastRxAt > 2 * interval + 5000) {
        // Nothing (not even a Pong) for two heartbeats: the connection is dead.
        conn.close(4000, 'heartbeat timeout');
        this._handleClose(1006, 'heartbeat timeout');
        return;
      }
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
        const after = queue && queue.length ? queue.shift() : null;
        const first = after === null;
        // A head below what we already have means the room's history was reset on the server:
        // our seqs are meaningless there, so start over like a first visit.
        const reset = !first && frame.head_seq < after;
        if (reset) this.lastSeq.delete(frame.room);
        const stale = !first && (reset || frame.replay_from > after + 1);
        this._emit('joined', { ...frame, after_seq: after, first, stale, reset });
        return;
      }
      case 'Left':
        // Nothing more comes for this membership; a later Joined brings a fresh RoomPresence.
        this.presence.delete(frame.room);
        this._emit('left', frame);
        return;
      case 'RoomPresence':
        // This client is only ever in its current room: a frame for another one was sent
        // before the server handled our Switch, and its Left is on the way.
        if (frame.room !== this.currentRoom) return;
        this.presence.set(frame.room, { room: frame.room, online: frame.online, users: frame.users });
        this._emit('room_presence', frame);
        return;
      case 'Ack':
        this._settle(frame.client_msg_id);
        this._emit('ack', frame);
        return;
      case 'Message': {
        this._noteSeq(frame.room, frame.seq);
        if (this.user && frame.sender.id === this.user.id) this._settle(frame.client_msg_id);
        this._emit('message', frame);
        return;
      }
      case 'History': {
        for (const m of frame.messages) this._noteSeq(m.room, m.seq);
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
        const err = new Error(frame.message);
        err.code = frame.code;
        req.reject(err);
      }
    }
    if (frame.code === ErrorCode.RateLimited && frame.client_msg_id === null && frame.request_id === null) {
      // A refused Typing (or Join): no typing update until the server says so (§ 4.1).
      this.typingPausedUntil = Math.max(this.typingPausedUntil, Date.now() + (frame.retry_after_ms ?? 1000));
    }
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
      } else if (frame.code === ErrorCode.NotMember && p.room === this.currentRoom && p.rejoins < 3) {
        // Join first, then retry with the same client_msg_id (§ 4.1).
        retrying = true;
        p.rejoins += 1;
        p.state = 'queued';
        if (p.rejoins === 1 || !this.joinRequests.get(p.room)?.length) {
          this._requestJoin(p.room, this.lastSeq.get(p.room) ?? null, 'Join');
        }
        this._pump();
      } else if (frame.code === ErrorCode.NotMember && p.room !== this.currentRoom) {
        // Sent just before a switch: stays queued and goes out when the room is current again.
        p.state = 'queued';
        retrying = true;
      } else {
        this.pending.delete(key);
        this._emit('send_failed', { room: p.room, client_msg_id: p.client_msg_id, text: p.text, code: frame.code, message: frame.message });
      }
    }
    this._emit('error', { ...frame, retrying });
  }

  /**
   * Makes `room` the current room: sends `Switch{room, after_seq}` where after_seq is the
   * highest seq received for it (null the first time). Returns that after_seq. When not
   * connected, the room is joined on (re)connect.
   */
  switchRoom(room) {
    this.currentRoom = room;
    for (const other of this.presence.keys()) if (other !== room) this.presence.delete(other);
    const after = this.lastSeq.get(room) ?? null;
    if (this.conn && this.conn.isOpen) {
      this._requestJoin(room, after, 'Switch');
      this._pump();
    }
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

  /**
   * Sends a message. It stays pending (and is re-sent with the same client_msg_id after a
   * reconnect) until its Ack or its own Message arrives. Returns `{client_msg_id, key}`.
   */
  send(room, text) {
    const client_msg_id = newClientMsgId();
    const key = idToHex(client_msg_id);
    this.pending.set(key, { room, client_msg_id, text, state: 'queued', rejoins: 0 });
    this._pump();
    return { client_msg_id, key };
  }

  /** Pending sends, oldest first. */
  pendingSends(room) {
    return [...this.pending.values()].filter((p) => room === undefined || p.room === room);
  }

  /** Requests a history page; resolves with the History frame, rejects on Error or disconnect. */
  history(room, before_seq = null, limit = 50) {
    const request_id = this.nextRequestId;
    this.nextRequestId = this.nextRequestId >= 0xffffffff ? 1 : this.nextRequestId + 1;
    return new Promise((resolve, reject) => {
      if (!this._sendFrame({ type: 'History', request_id, room, before_seq, limit })) {
        reject(new Error('not connected'));
        return;
      }
      this.historyRequests.set(request_id, { resolve, reject, room });
    });
  }

  /**
   * Sends a typing state for a joined room. Returns false when it was dropped: not connected,
   * or over the server's typing limit (burst 5, then 1/s per connection, § 5), which this
   * client never exceeds; a caller that wants its peers to see the state tries again later.
   */
  typing(room, active) {
    if (!this.conn || !this.conn.isOpen) return false;
    const now = Date.now();
    if (now < this.typingPausedUntil || !this.typingBucket.take(now)) return false;
    return this._sendFrame({ type: 'Typing', room, active });
  }
}
