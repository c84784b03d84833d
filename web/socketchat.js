// SocketChat client library, the public entry: everything app.js, the tests and other pages
// import comes from here. Plain ES modules, no dependencies, no build step; runs in browsers
// and in Node 20+.
//
// # Layout (web/socketchat/)
//
//   limits.js                  protocol version, frame and text limits, the typing, read-mark
//                              and join rates (§ 5); utf8Length, how text is measured
//   codes.js                   Error codes (§ 4.1), close codes (§ 4.2), closeName
//   frames.js                  the frame schema (§ 3): every variant and its fields, as data
//   codec.js                   postcard encode/decode of one frame (§ 2); no IO
//   framing.js                 length-prefixed stream framing (§ 1.3); no IO
//   ids.js                     client_msg_id: random, to and from hex
//   transport.js               the adapter interface, chooseTransport, small async helpers
//   transport-websocket.js     WebSocketConnection (§ 1.2)
//   transport-webtransport.js  WebTransportConnection (§ 1.3) and how a page opens one
//   backoff.js                 reconnect delays
//   rate.js                    token bucket: typing, read marks and joins stay within the
//                              server's limits
//   posts.js                   RoomPosts: a room's posts kept current by its Edit and Delete
//                              events (§ 3); pure
//   client.js                  ChatClient: the session that survives reconnects
//
// The codec and framing follow protocol/PROTOCOL.md; web/test/codec.test.mjs checks them
// against protocol/vectors/frames.jsonl.

export {
  MARK_READ_BURST,
  MARK_READ_RATE_PER_SEC,
  MAX_ATTACHMENTS,
  MAX_CLIENT_FRAME,
  MAX_ROOMS,
  MAX_SERVER_FRAME,
  MAX_TEXT_BYTES,
  PROTOCOL_VERSION,
  READ_BURST,
  READ_RATE_PER_SEC,
  TYPING_BURST,
  TYPING_RATE_PER_SEC,
  utf8Length,
} from './socketchat/limits.js';
export { TokenBucket } from './socketchat/rate.js';
export { CloseCode, ErrorCode, closeName, isTerminalClose } from './socketchat/codes.js';
export { CLIENT_FRAME_TYPES, MESSAGE_KINDS, RETIRED_SERVER_FRAMES, SERVER_FRAME_TYPES } from './socketchat/frames.js';
export { DecodeError, decodeClientFrame, decodeServerFrame, encodeClientFrame, encodeServerFrame } from './socketchat/codec.js';
export { StreamFrameReader, decodeStreamFrame, encodeStreamFrame } from './socketchat/framing.js';
export { hexToId, idToHex, newClientMsgId } from './socketchat/ids.js';
export { chooseTransport } from './socketchat/transport.js';
export { WebSocketConnection } from './socketchat/transport-websocket.js';
export {
  WEBTRANSPORT_RETRY_AFTER_MS,
  WEBTRANSPORT_TIMEOUT_MS,
  WebTransportConnection,
  base64ToBytes,
  fetchTicket,
  fetchTransportInfo,
  webTransportOptions,
  webTransportUrl,
} from './socketchat/transport-webtransport.js';
export { RoomPosts } from './socketchat/posts.js';
export { ChatClient, ChatEvent } from './socketchat/client.js';
