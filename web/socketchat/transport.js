// What every transport adapter provides, and which transport a connection attempt uses.
//
// One small adapter per transport (transport-websocket.js, transport-webtransport.js), one
// session logic (ChatClient, client.js) on top. An adapter carries whole frames (Uint8Array,
// no length prefix) both ways:
//   conn.kind                     'websocket' | 'webtransport'
//   conn.start(handlers)          wires the callbacks below; `open` may be called at once
//   conn.isOpen                   true while frames can be sent
//   conn.send(bytes)              sends one frame
//   conn.close(code, reason)      ends the connection; no callback follows
//   conn.detach()                 no callback follows any more (the connection is left as is)
//   conn.drop()                   ends the connection underneath; `close` is reported (tests)
// handlers: open(), frame(bytes), text(message) for a WebSocket text message (skipped),
// fatal(message, code) for unreadable stream framing, close(code, reason) when the connection
// ended without the client closing it (a WebTransport session reports 1006 unless the
// session close carried a 4xxx code: the GoAway read before it is what counts).

/**
 * Which transport to try first for one connection attempt.
 * @param {object} p
 * @param {'auto'|'websocket'|'webtransport'} p.mode the client's `transport` option
 * @param {object|null} p.info `GET /api/transport` answer, null when it could not be fetched
 * @param {boolean} p.hasWebTransport whether the WebTransport API exists here
 * @param {number} p.now current time (ms)
 * @param {number} p.webTransportBlockedUntil no WebTransport attempt before this time
 * @returns {{transport: 'webtransport'|'websocket', why: string}}
 */
export function chooseTransport({ mode = 'auto', info, hasWebTransport, now, webTransportBlockedUntil = 0 }) {
  if (mode === 'websocket') return { transport: 'websocket', why: 'WebSocket forced' };
  if (!hasWebTransport) return { transport: 'websocket', why: 'no WebTransport API' };
  if (!info || typeof info.webtransport !== 'string' || info.webtransport === '') {
    return { transport: 'websocket', why: info ? 'server offers no WebTransport' : 'transport info unavailable' };
  }
  if (mode !== 'webtransport' && now < webTransportBlockedUntil) {
    return { transport: 'websocket', why: 'WebTransport failed recently' };
  }
  return { transport: 'webtransport', why: mode === 'webtransport' ? 'WebTransport forced' : 'offered by the server' };
}

/** A one-line description of an error (or whatever was thrown). */
export function errorText(err) {
  if (err === undefined || err === null) return 'unknown error';
  return err.message ? `${err.name && err.name !== 'Error' ? err.name + ': ' : ''}${err.message}` : String(err);
}

export const delay = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

/** `promise`, or a rejection as soon as `signal` aborts. */
export function abortable(promise, signal) {
  if (!signal) return Promise.resolve(promise);
  if (signal.aborted) return Promise.reject(new Error('attempt abandoned'));
  return new Promise((resolve, reject) => {
    const onAbort = () => reject(new Error('attempt abandoned'));
    signal.addEventListener('abort', onAbort, { once: true });
    Promise.resolve(promise).then(
      (v) => {
        signal.removeEventListener('abort', onAbort);
        resolve(v);
      },
      (e) => {
        signal.removeEventListener('abort', onAbort);
        reject(e);
      },
    );
  });
}
