// The frame schema of protocol v3 (§ 3): every variant in discriminant order with its fields
// and their types, as data the codec walks. Types are the spec's: 'u8' 'u16' 'u32' 'u64' 'bool'
// 'string' 'id16' ([u8; 16]), and option / vec / struct of them, and enums without fields
// (a varint index, shown in JS as the variant's name).

const opt = (of) => ({ kind: 'option', of });
const vec = (of) => ({ kind: 'vec', of });
const struct = (fields) => ({ kind: 'struct', fields });
const unitEnum = (variants) => ({ kind: 'enum', variants });

/** `MessageKind` (§ 3): what an event of a room's seq stream is, by its index. */
export const MESSAGE_KINDS = Object.freeze(['Post', 'Edit', 'Delete']);

const UserRef = struct([['id', 'u64'], ['username', 'string']]);
const Limits = struct([
  ['max_frame_bytes', 'u32'],
  ['max_text_bytes', 'u32'],
  ['max_rooms', 'u16'],
  ['max_history_page', 'u16'],
  ['sends_per_sec', 'u16'],
  ['send_burst', 'u16'],
]);
const Attachment = struct([['id', 'u64'], ['name', 'string'], ['content_type', 'string'], ['size', 'u64']]);
const ChatMessageFields = [
  ['room', 'string'],
  ['seq', 'u64'],
  ['message_id', 'u64'],
  ['sender', UserRef],
  ['client_msg_id', 'id16'],
  ['sent_at_ms', 'u64'],
  ['text', 'string'],
  ['kind', unitEnum(MESSAGE_KINDS)],
  ['target_seq', opt('u64')],
  ['edited_at_ms', opt('u64')],
  ['deleted', 'bool'],
  ['attachments', vec(Attachment)],
];
const ChatMessage = struct(ChatMessageFields);

/** Client → server variants, in discriminant order (§ 3.1). */
export const CLIENT_VARIANTS = [
  ['Hello', [['version', 'u32'], ['client', 'string']]],
  ['Join', [['room', 'string'], ['after_seq', opt('u64')]]],
  ['Leave', [['room', 'string']]],
  ['Switch', [['room', 'string'], ['after_seq', opt('u64')]]],
  ['Send', [['room', 'string'], ['client_msg_id', 'id16'], ['text', 'string'], ['attachments', vec('u64')]]],
  ['History', [['request_id', 'u32'], ['room', 'string'], ['before_seq', opt('u64')], ['limit', 'u16']]],
  ['Typing', [['room', 'string'], ['active', 'bool']]],
  ['Ping', [['nonce', 'u64']]],
  ['Edit', [['room', 'string'], ['client_msg_id', 'id16'], ['target_seq', 'u64'], ['text', 'string']]],
  ['Delete', [['room', 'string'], ['client_msg_id', 'id16'], ['target_seq', 'u64']]],
  ['MarkRead', [['room', 'string'], ['seq', 'u64']]],
];

/**
 * Server → client variants, in discriminant order (§ 3.2). `null` marks an index retired in
 * v2 (#1 was v1's `Online`, #8 v1's `Presence`): never sent, decoded like an unknown index.
 */
export const SERVER_VARIANTS = [
  ['Welcome', [['version', 'u32'], ['user', UserRef], ['connection_id', 'u64'], ['heartbeat_ms', 'u32'], ['limits', Limits]]],
  null,
  ['Joined', [['room', 'string'], ['head_seq', 'u64'], ['replay_from', 'u64']]],
  ['Left', [['room', 'string']]],
  ['Ack', [['room', 'string'], ['client_msg_id', 'id16'], ['seq', 'u64'], ['message_id', 'u64'], ['sent_at_ms', 'u64']]],
  ['Message', ChatMessageFields],
  ['History', [['request_id', 'u32'], ['room', 'string'], ['messages', vec(ChatMessage)], ['next_before', opt('u64')]]],
  ['Typing', [['room', 'string'], ['user', UserRef], ['active', 'bool']]],
  null,
  ['Pong', [['nonce', 'u64']]],
  ['Error', [
    ['code', 'u16'],
    ['message', 'string'],
    ['room', opt('string')],
    ['client_msg_id', opt('id16')],
    ['request_id', opt('u32')],
    ['retry_after_ms', opt('u32')],
  ]],
  ['GoAway', [['code', 'u16'], ['reason', 'string']]],
  ['RoomPresence', [['room', 'string'], ['online', 'u32'], ['users', vec(UserRef)]]],
  ['ReadState', [['room', 'string'], ['last_read_seq', 'u64']]],
  ['RoomAdded', [['room', 'string']]],
];

/** Variant name → {index, fields}. */
function indexVariants(list) {
  const byName = new Map();
  list.forEach((variant, index) => variant && byName.set(variant[0], { index, fields: variant[1] }));
  return byName;
}
export const CLIENT_BY_NAME = indexVariants(CLIENT_VARIANTS);
export const SERVER_BY_NAME = indexVariants(SERVER_VARIANTS);

/** Client → server frame types, in discriminant order. */
export const CLIENT_FRAME_TYPES = Object.freeze(CLIENT_VARIANTS.map(([name]) => name));
/** Server → client frame types this codec knows, in discriminant order (retired ones left out). */
export const SERVER_FRAME_TYPES = Object.freeze(SERVER_VARIANTS.filter(Boolean).map(([name]) => name));
/** Server → client discriminants retired since v2 (§ 3.2): decoded as unknown frames. */
export const RETIRED_SERVER_FRAMES = Object.freeze(SERVER_VARIANTS.flatMap((v, index) => (v ? [] : [index])));
