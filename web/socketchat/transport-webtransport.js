// The WebTransport transport adapter (§ 1.3), its interface described in transport.js, and what
// a page needs to open one: the server's offer (`GET /api/transport`), a ticket
// (`POST /api/auth/ticket`) and the `new WebTransport()` arguments built from them.
import { encodeStreamFrame, StreamFrameReader } from './framing.js';
import { MAX_SERVER_FRAME } from './limits.js';
import { abortable, delay, errorText } from './transport.js';

/** How long a WebTransport attempt may take before falling back to WebSocket (ms). */
export const WEBTRANSPORT_TIMEOUT_MS = 5000;
/** After a failed WebTransport attempt, WebSocket is used for this long (ms). */
export const WEBTRANSPORT_RETRY_AFTER_MS = 60000;

function timeoutError(ms) {
  const err = new Error(`WebTransport not ready within ${ms} ms`);
  err.name = 'TimeoutError';
  return err;
}

/**
 * WebTransport: one bidirectional stream opened by the client carries every frame in both
 * directions, each prefixed by its length (§ 1.3). The session is established by
 * `WebTransportConnection.establish()`, which resolves only once the stream exists.
 */
export class WebTransportConnection {
  /**
   * @param {Function} WebTransportImpl the WebTransport constructor
   * @param {string} url `https://…/wt?ticket=…`
   * @param {object} options passed to the constructor (serverCertificateHashes)
   * @param {number} timeoutMs establishment deadline
   * @param {AbortSignal} [signal] gives up the attempt
   * @returns {Promise<WebTransportConnection>} rejects when the session or stream fails
   */
  static async establish(WebTransportImpl, url, options, timeoutMs = WEBTRANSPORT_TIMEOUT_MS, signal = undefined) {
    const conn = new WebTransportConnection();
    let timer = null;
    const deadline = abortable(
      new Promise((_, reject) => {
        timer = setTimeout(() => reject(timeoutError(timeoutMs)), timeoutMs);
      }),
      signal,
    );
    deadline.catch(() => {});
    try {
      conn.wt = new WebTransportImpl(url, options);
      // Observe `closed` at once so an early failure is never an unhandled rejection.
      conn.closedInfo = Promise.resolve(conn.wt.closed).then(
        (info) => ({ clean: true, code: info?.closeCode ?? 0, reason: info?.reason ?? '' }),
        (err) => ({ clean: false, code: 0, reason: errorText(err) }),
      );
      await Promise.race([conn.wt.ready, deadline]);
      const stream = await Promise.race([conn.wt.createBidirectionalStream(), deadline]);
      conn.reader = stream.readable.getReader();
      conn.writer = stream.writable.getWriter();
      conn.writer.closed.catch(() => {});
      conn.ready = true;
      return conn;
    } catch (err) {
      conn._abort(err);
      throw err;
    } finally {
      clearTimeout(timer);
    }
  }

  constructor() {
    this.kind = 'webtransport';
    this.wt = null;
    this.reader = null;
    this.writer = null;
    this.closedInfo = null;
    this.ready = false;
    this.handlers = null;
    this.ended = false;
    this.framer = new StreamFrameReader(MAX_SERVER_FRAME);
  }

  _abort(err) {
    this.ended = true;
    try {
      this.wt?.close({ closeCode: 0, reason: errorText(err).slice(0, 100) });
    } catch {
      /* not open */
    }
  }

  start(handlers) {
    this.handlers = handlers;
    const readDone = this._readLoop();
    // The end is reported once, after whatever the stream still delivered (a GoAway comes
    // just before the server closes the connection).
    this.closedInfo.then(async (info) => {
      await Promise.race([readDone, delay(200)]);
      this._finish(info);
    });
    readDone.then(async (why) => {
      if (why === null) return; // detached
      const info = await Promise.race([this.closedInfo, delay(200).then(() => null)]);
      this._finish(info ?? { clean: false, code: 0, reason: why });
    });
    this.handlers.open();
  }

  async _readLoop() {
    try {
      for (;;) {
        const { value, done } = await this.reader.read();
        if (!this.handlers) return null;
        if (done) return 'stream ended by the server';
        let frames;
        try {
          frames = this.framer.push(value);
        } catch (err) {
          this.handlers.fatal(`bad stream framing from server: ${err.message}`, err.kind === 'too_large' ? 4501 : 4500);
          return null;
        }
        for (const f of frames) {
          if (!this.handlers) return null;
          this.handlers.frame(f);
        }
      }
    } catch (err) {
      return this.handlers ? errorText(err) : null;
    }
  }

  _finish(info) {
    if (this.ended) return;
    this.ended = true;
    const handlers = this.handlers;
    this.handlers = null;
    try {
      this.wt.close({ closeCode: 0, reason: '' });
    } catch {
      /* already closed */
    }
    if (!handlers) return;
    // A browser sees the server's connection close as an error without a code: what counts
    // is the GoAway read before it (ChatClient), so report a drop. A session close capsule
    // carrying one of our close codes is honoured.
    const code = info.clean && info.code >= 4000 && info.code <= 4999 ? info.code : 1006;
    handlers.close(code, info.reason || 'WebTransport session closed');
  }

  get isOpen() {
    return this.ready && !this.ended;
  }

  send(bytes) {
    this.writer.write(encodeStreamFrame(bytes)).catch(() => {
      /* the session's end is reported by the read side */
    });
  }

  detach() {
    this.handlers = null;
  }

  /** Closes the session but keeps the callbacks: its end is reported like any other. */
  drop() {
    try {
      this.wt.close({ closeCode: 0, reason: 'dropped by the client' });
    } catch {
      /* already closed */
    }
  }

  close(code, reason) {
    this.handlers = null;
    if (this.ended) return;
    this.ended = true;
    // End our side of the stream first (FIN after any queued frames): a server that watches
    // only the stream sees the end even if the session close is not acted upon.
    this.writer.close().catch(() => {});
    try {
      this.wt.close({ closeCode: code, reason: String(reason ?? '').slice(0, 120) });
    } catch {
      /* already closed */
    }
  }
}

/** Decodes standard base64 into bytes. */
export function base64ToBytes(text) {
  const bin = globalThis.atob(text);
  const out = new Uint8Array(bin.length);
  for (let i = 0; i < bin.length; i++) out[i] = bin.charCodeAt(i);
  return out;
}

/** `new WebTransport()` options from `GET /api/transport`'s cert_hashes (sha-256 only). */
export function webTransportOptions(info) {
  const hashes = Array.isArray(info && info.cert_hashes) ? info.cert_hashes : [];
  const serverCertificateHashes = hashes
    .filter((h) => h && h.algorithm === 'sha-256' && typeof h.value === 'string')
    .map((h) => ({ algorithm: 'sha-256', value: base64ToBytes(h.value) }));
  return serverCertificateHashes.length ? { serverCertificateHashes } : {};
}

/** `url?ticket=…` (or `&ticket=…` when the URL has a query already). */
export function webTransportUrl(base, ticket) {
  return `${base}${base.includes('?') ? '&' : '?'}ticket=${encodeURIComponent(ticket)}`;
}

async function fetchJson(path, init) {
  const res = await globalThis.fetch(path, {
    credentials: 'same-origin',
    headers: { accept: 'application/json' },
    signal: AbortSignal.timeout(WEBTRANSPORT_TIMEOUT_MS),
    ...init,
  });
  if (!res.ok) {
    await res.body?.cancel();
    throw new Error(`${init?.method ?? 'GET'} ${path} answered ${res.status}`);
  }
  return res.json();
}

/** `GET /api/transport` (same origin). */
export function fetchTransportInfo() {
  return fetchJson('/api/transport');
}

/** `POST /api/auth/ticket` (same origin, cookie-authenticated) → the ticket string. */
export async function fetchTicket() {
  const body = await fetchJson('/api/auth/ticket', { method: 'POST' });
  if (!body || typeof body.ticket !== 'string' || body.ticket === '') throw new Error('no ticket in the answer');
  return body.ticket;
}
