// The WebSocket transport adapter (§ 1.2); its interface is described in transport.js.

const WS_OPEN = 1;

/** WebSocket: one binary message is one frame (§ 1.2). */
export class WebSocketConnection {
  constructor(WebSocketImpl, url) {
    this.kind = 'websocket';
    this.ws = new WebSocketImpl(url);
    this.ws.binaryType = 'arraybuffer';
    this.handlers = null;
  }

  start(handlers) {
    this.handlers = handlers;
    const ws = this.ws;
    ws.onopen = () => this.handlers?.open();
    ws.onmessage = (ev) => {
      if (!this.handlers) return;
      if (typeof ev.data === 'string') this.handlers.text('text message from server');
      else this.handlers.frame(ev.data);
    };
    ws.onerror = () => {
      /* the close event follows */
    };
    ws.onclose = (ev) => this.handlers?.close(ev.code, ev.reason);
  }

  get isOpen() {
    return this.ws.readyState === WS_OPEN;
  }

  send(bytes) {
    this.ws.send(bytes);
  }

  detach() {
    this.handlers = null;
    const ws = this.ws;
    ws.onopen = ws.onmessage = ws.onerror = ws.onclose = null;
  }

  close(code, reason) {
    this.detach();
    try {
      this.ws.close(code, reason);
    } catch {
      /* already closed */
    }
  }

  /** Closes the socket but keeps the callbacks: its end is reported like any other. */
  drop() {
    try {
      this.ws.close(4000, 'dropped by the client');
    } catch {
      /* already closed */
    }
  }
}
