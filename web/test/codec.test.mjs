// Codec tests: every protocol vector round-trips byte-exactly, malformed input is rejected,
// stream framing round-trips. Run with `node --test web/test/`.
import { test, describe } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';

import {
  encodeClientFrame,
  decodeClientFrame,
  encodeServerFrame,
  decodeServerFrame,
  encodeStreamFrame,
  decodeStreamFrame,
  DecodeError,
  idToHex,
  hexToId,
  PROTOCOL_VERSION,
  CLIENT_FRAME_TYPES,
  SERVER_FRAME_TYPES,
  RETIRED_SERVER_FRAMES,
  MESSAGE_KINDS,
} from '../socketchat.js';

const vectorsPath = fileURLToPath(new URL('../../protocol/vectors/frames.jsonl', import.meta.url));
const vectors = readFileSync(vectorsPath, 'utf8')
  .split('\n')
  .filter((line) => line.trim() !== '')
  .map((line) => JSON.parse(line));

const hex = (bytes) => Buffer.from(bytes).toString('hex');
const unhex = (s) => new Uint8Array(Buffer.from(s.replace(/\s+/g, ''), 'hex'));

/** serde's externally tagged JSON → the JS shape (`{type, ...fields}`, ids as Uint8Array). */
function toJs(serdeFrame) {
  const keys = Object.keys(serdeFrame);
  assert.equal(keys.length, 1, 'externally tagged enum has one key');
  const type = keys[0];
  return { type, ...convertFields(serdeFrame[type]) };
}

function convertFields(value, key) {
  if (key === 'client_msg_id' && Array.isArray(value)) return Uint8Array.from(value);
  if (Array.isArray(value)) return value.map((v) => convertFields(v));
  if (value !== null && typeof value === 'object') {
    const out = {};
    for (const [k, v] of Object.entries(value)) out[k] = convertFields(v, k);
    return out;
  }
  return value;
}

const codecs = {
  client_to_server: { encode: encodeClientFrame, decode: decodeClientFrame },
  server_to_client: { encode: encodeServerFrame, decode: decodeServerFrame },
};

describe('protocol vectors', () => {
  test('the codec speaks protocol v3: its frame types are the spec\'s (§ 3), #1 and #8 retired', () => {
    assert.equal(PROTOCOL_VERSION, 3);
    assert.deepEqual(CLIENT_FRAME_TYPES, ['Hello', 'Join', 'Leave', 'Switch', 'Send', 'History', 'Typing', 'Ping', 'Edit', 'Delete', 'MarkRead']);
    assert.deepEqual(
      SERVER_FRAME_TYPES,
      ['Welcome', 'Joined', 'Left', 'Ack', 'Message', 'History', 'Typing', 'Pong', 'Error', 'GoAway', 'RoomPresence', 'ReadState', 'RoomAdded'],
    );
    assert.deepEqual(RETIRED_SERVER_FRAMES, [1, 8]);
    assert.deepEqual(MESSAGE_KINDS, ['Post', 'Edit', 'Delete']);
  });

  test('the vector file is not empty and covers every live frame type, and only those', () => {
    const types = (dir) => new Set(vectors.filter((v) => v.direction === dir).map((v) => Object.keys(v.frame)[0]));
    assert.deepEqual([...types('client_to_server')].sort(), [...CLIENT_FRAME_TYPES].sort());
    // No vector for the retired Online (#1) and Presence (#8): they are never sent since v2.
    assert.deepEqual([...types('server_to_client')].sort(), [...SERVER_FRAME_TYPES].sort());
  });

  test('Hello and Welcome vectors carry version 3', () => {
    const frameOf = (name) => {
      const v = vectors.find((x) => x.name === name);
      assert.ok(v, `vector ${name}`);
      return Object.values(v.frame)[0];
    };
    assert.equal(frameOf('hello').version, PROTOCOL_VERSION);
    assert.equal(frameOf('welcome').version, PROTOCOL_VERSION);
  });

  for (const v of vectors) {
    test(`${v.name} (${v.direction}) encodes to its hex and decodes back`, () => {
      const codec = codecs[v.direction];
      assert.ok(codec, `unknown direction ${v.direction}`);
      const frame = toJs(v.frame);
      assert.equal(hex(codec.encode(frame)), v.hex);
      const decoded = codec.decode(unhex(v.hex));
      assert.deepStrictEqual(decoded, frame);
      // Also from an ArrayBuffer (what a browser WebSocket delivers) and from a Node Buffer.
      assert.deepStrictEqual(codec.decode(unhex(v.hex).buffer), frame);
      assert.deepStrictEqual(codec.decode(Buffer.from(v.hex, 'hex')), frame);
    });
  }

  test('RoomPresence bytes checked by hand against § 2 (independent of the vector file)', () => {
    // 0c: variant 12 · 07 "general" · 82 01: varint 130 (0x02 | 0x80, then 0x01) · 02: two
    // users · 01 05 "alice" · 02 03 "bob"
    const full = { type: 'RoomPresence', room: 'general', online: 130, users: [{ id: 1, username: 'alice' }, { id: 2, username: 'bob' }] };
    assert.equal(hex(encodeServerFrame(full)), '0c' + '0767656e6572616c' + '8201' + '02' + '0105616c696365' + '0203626f62');
    assert.deepStrictEqual(decodeServerFrame(unhex('0c0767656e6572616c8201020105616c6963650203626f62')), full);
    // 0c · 06 "design" · 00: online 0 · 00: no users
    const empty = { type: 'RoomPresence', room: 'design', online: 0, users: [] };
    assert.equal(hex(encodeServerFrame(empty)), '0c0664657369676e0000');
    assert.deepStrictEqual(decodeServerFrame(unhex('0c0664657369676e0000')), empty);
  });

  test('decoded ids are plain Uint8Arrays of 16 bytes, independent of the input buffer', () => {
    const v = vectors.find((x) => x.name === 'message');
    const bytes = unhex(v.hex);
    const frame = decodeServerFrame(bytes);
    assert.ok(frame.client_msg_id instanceof Uint8Array);
    assert.equal(frame.client_msg_id.constructor, Uint8Array);
    assert.equal(frame.client_msg_id.length, 16);
    bytes.fill(0);
    assert.equal(idToHex(frame.client_msg_id), '6f1c8a3e52044b7d9a11e02f33c45890');
  });
});

describe('malformed input throws', () => {
  const ping = unhex('07fbd095ffbc31');
  const send = unhex(vectors.find((v) => v.name === 'send').hex);
  const welcome = unhex(vectors.find((v) => v.name === 'welcome').hex);

  test('empty input', () => {
    assert.throws(() => decodeServerFrame(new Uint8Array(0)), DecodeError);
    assert.throws(() => decodeClientFrame(new Uint8Array(0)), DecodeError);
  });

  test('every truncation of every vector', () => {
    for (const v of vectors) {
      const bytes = unhex(v.hex);
      const decode = codecs[v.direction].decode;
      for (let cut = 0; cut < bytes.length; cut++) {
        assert.throws(() => decode(bytes.subarray(0, cut)), DecodeError, `${v.name} cut at ${cut}`);
      }
    }
  });

  test('a trailing byte after any vector', () => {
    for (const v of vectors) {
      const bytes = unhex(v.hex + '00');
      assert.throws(() => codecs[v.direction].decode(bytes), /trailing/, v.name);
    }
  });

  test('invalid bool byte', () => {
    // Typing{room: "general", active: 2}
    assert.throws(() => decodeClientFrame(unhex('060767656e6572616c02')), /invalid bool/);
    // server Typing{room: "general", user: alice, active: 0xff}
    assert.throws(() => decodeServerFrame(unhex('070767656e6572616c0105616c696365ff')), /invalid bool/);
  });

  test('invalid option tag', () => {
    assert.throws(() => decodeClientFrame(unhex('010767656e6572616c02')), /option/);
  });

  test('unknown discriminant', () => {
    assert.throws(() => decodeClientFrame(unhex('0b')), /discriminant/);
    assert.throws(() => decodeClientFrame(unhex('0b00')), /discriminant/);
    assert.throws(() => decodeServerFrame(unhex('0f')), /discriminant/);
    assert.throws(() => decodeServerFrame(unhex('ff01')), /discriminant/);
    assert.throws(() => decodeServerFrame(unhex('0f')), (err) => err instanceof DecodeError && err.kind === 'unknown_frame');
    assert.throws(() => decodeServerFrame(unhex('0980')), (err) => err instanceof DecodeError && err.kind === 'malformed');
    // #12 to #14 are RoomPresence, ReadState and RoomAdded: a bare discriminant is a truncated
    // frame, not an unknown one; so is a bare Edit, Delete or MarkRead.
    for (const d of ['0c', '0d', '0e']) {
      assert.throws(() => decodeServerFrame(unhex(d)), (err) => err instanceof DecodeError && err.kind === 'malformed', d);
    }
    for (const d of ['08', '09', '0a']) assert.throws(() => decodeClientFrame(unhex(d)), /truncated/, d);
  });

  test('MessageKind is a varint index: 0 Post, 1 Edit, 2 Delete; any other index is malformed', () => {
    const base = vectors.find((v) => v.name === 'message_edit_event');
    const frame = decodeServerFrame(unhex(base.hex));
    assert.equal(frame.kind, 'Edit');
    assert.equal(frame.target_seq, 306);
    for (const [kind, index] of [['Post', '00'], ['Edit', '01'], ['Delete', '02']]) {
      const bytes = hex(encodeServerFrame({ ...frame, kind }));
      // The kind follows the text ("héllo, edited": 0e + 14 bytes).
      assert.ok(bytes.includes('0e68c3a96c6c6f2c20656469746564' + index), kind);
      assert.equal(decodeServerFrame(unhex(bytes)).kind, kind);
    }
    const bad = hex(encodeServerFrame(frame)).replace('0e68c3a96c6c6f2c2065646974656401', '0e68c3a96c6c6f2c2065646974656403');
    assert.throws(() => decodeServerFrame(unhex(bad)), (err) => err instanceof DecodeError && err.kind === 'malformed' && /unknown variant 3/.test(err.message));
    assert.throws(() => encodeServerFrame({ ...frame, kind: 'Reaction' }), /expected one of Post, Edit, Delete/);
    assert.throws(() => encodeServerFrame({ ...frame, kind: 1 }), TypeError);
  });

  test('Send carries attachment ids as a Vec<u64>; Edit, Delete and MarkRead by hand (§ 3.1)', () => {
    const id = new Uint8Array(16).fill(0xab);
    const ids = 'ab'.repeat(16);
    // 04 · 01 "a" · id · 00: empty text · 03 ids: 1, 300 (ac 02), 2^32 (80 80 80 80 10)
    assert.equal(
      hex(encodeClientFrame({ type: 'Send', room: 'a', client_msg_id: id, text: '', attachments: [1, 300, 2 ** 32] })),
      '040161' + ids + '00' + '03' + '01' + 'ac02' + '8080808010',
    );
    assert.throws(() => encodeClientFrame({ type: 'Send', room: 'a', client_msg_id: id, text: 'x' }), /attachments is missing/);
    // 08 · 01 "a" · id · 05: target 5 · 02 "hi"
    assert.equal(hex(encodeClientFrame({ type: 'Edit', room: 'a', client_msg_id: id, target_seq: 5, text: 'hi' })), '080161' + ids + '05' + '026869');
    // 09 · 01 "a" · id · 05
    assert.equal(hex(encodeClientFrame({ type: 'Delete', room: 'a', client_msg_id: id, target_seq: 5 })), '090161' + ids + '05');
    // 0a · 01 "a" · 80 01: seq 128
    assert.equal(hex(encodeClientFrame({ type: 'MarkRead', room: 'a', seq: 128 })), '0a01618001');
    assert.deepStrictEqual(decodeServerFrame(unhex('0d01618001')), { type: 'ReadState', room: 'a', last_read_seq: 128 });
    assert.deepStrictEqual(decodeServerFrame(unhex('0e0440312d32')), { type: 'RoomAdded', room: '@1-2' });
  });

  test('the retired v1 frames Online (#1) and Presence (#8) are unknown frames', () => {
    const unknown = (err) => err instanceof DecodeError && err.kind === 'unknown_frame' && /retired/.test(err.message);
    // v1's online_empty, online and presence vectors.
    assert.throws(() => decodeServerFrame(unhex('0100')), unknown);
    assert.throws(() => decodeServerFrame(unhex('01020105616c6963650203626f62')), unknown);
    assert.throws(() => decodeServerFrame(unhex('080105616c69636501')), unknown);
    assert.throws(() => encodeServerFrame({ type: 'Online', users: [] }), /unknown server frame type/);
    assert.throws(() => encodeServerFrame({ type: 'Presence', user: { id: 1, username: 'a' }, online: true }), /unknown server frame type/);
  });

  test('RoomPresence fields: online is a u32, users a Vec<UserRef>', () => {
    // RoomPresence{room: "a", online: 2^32, users: []}
    assert.throws(() => decodeServerFrame(unhex('0c0161808080801000')), /overflows u32/);
    assert.deepStrictEqual(decodeServerFrame(unhex('0c0161ffffffff0f00')), { type: 'RoomPresence', room: 'a', online: 0xffffffff, users: [] });
    assert.throws(() => encodeServerFrame({ type: 'RoomPresence', room: 'a', online: 2 ** 32, users: [] }), RangeError);
    assert.throws(() => encodeServerFrame({ type: 'RoomPresence', room: 'a', online: 1 }), /missing/);
  });

  test('invalid UTF-8', () => {
    // Leave{room: <ff fe>}
    assert.throws(() => decodeClientFrame(unhex('0202fffe')), /UTF-8/);
    // Left{room: lone continuation byte}
    assert.throws(() => decodeServerFrame(unhex('030180')), /UTF-8/);
    // overlong encoding of "/" and an encoded surrogate half
    assert.throws(() => decodeServerFrame(unhex('0302c0af')), /UTF-8/);
    assert.throws(() => decodeServerFrame(unhex('0303eda080')), /UTF-8/);
    // a valid multi-byte string still decodes
    assert.equal(decodeServerFrame(unhex('0302c3a9')).room, 'é');
  });

  test('varint too long or overflowing', () => {
    // u64 nonce with 11 bytes
    assert.throws(() => decodeClientFrame(unhex('07' + '80'.repeat(10) + '01')), /varint/);
    // u32 discriminant with 6 bytes
    assert.throws(() => decodeServerFrame(unhex('808080808000')), /varint/);
    // u16 code (GoAway) with 4 bytes, and a 3-byte u16 above 65535
    assert.throws(() => decodeServerFrame(unhex('0b8080800100')), /varint/);
    assert.throws(() => decodeServerFrame(unhex('0bffff0400')), /overflows u16/);
    // u32 heartbeat overflow: 5th byte > 0x0f
    assert.throws(() => decodeServerFrame(unhex('0001' + '0105616c696365' + '2a' + 'ffffffff10')), /overflows u32/);
    // u64 above 2^53 - 1 is rejected rather than rounded
    assert.throws(() => decodeClientFrame(unhex('07' + '8080808080808080' + '10')), /2\^53/); // 2^60
    assert.throws(() => decodeClientFrame(unhex('07' + '80808080808080' + '10')), /2\^53/); // 2^53
    assert.equal(decodeClientFrame(unhex('07' + 'ffffffffffffff' + '0f')).nonce, Number.MAX_SAFE_INTEGER);
  });

  test('vec count larger than the remaining bytes', () => {
    // RoomPresence{room: "a", online: 0, users: <2^32 - 1 elements announced>}
    assert.throws(() => decodeServerFrame(unhex('0c016100ffffffff0f')), /announces/);
  });

  test('valid frames of the other direction are not confused', () => {
    assert.throws(() => decodeServerFrame(send), DecodeError);
    assert.throws(() => decodeClientFrame(welcome), DecodeError);
    assert.deepStrictEqual(decodeClientFrame(ping), { type: 'Ping', nonce: 1700000000123 });
  });
});

describe('encoding rejects what it cannot represent', () => {
  test('u64 above 2^53 - 1, negatives, fractions', () => {
    assert.throws(() => encodeClientFrame({ type: 'Ping', nonce: 2 ** 53 }), RangeError);
    assert.throws(() => encodeClientFrame({ type: 'Ping', nonce: -1 }), TypeError);
    assert.throws(() => encodeClientFrame({ type: 'Ping', nonce: 1.5 }), TypeError);
    assert.equal(hex(encodeClientFrame({ type: 'Ping', nonce: Number.MAX_SAFE_INTEGER })), '07ffffffffffffff0f');
  });

  test('u16 and u32 ranges', () => {
    assert.throws(() => encodeClientFrame({ type: 'History', request_id: 1, room: 'a', before_seq: null, limit: 65536 }), RangeError);
    assert.throws(() => encodeClientFrame({ type: 'Hello', version: 2 ** 32, client: 'x' }), RangeError);
  });

  test('unknown type, missing field, wrong id length, wrong types', () => {
    assert.throws(() => encodeClientFrame({ type: 'Nope' }), TypeError);
    assert.throws(() => encodeClientFrame({ type: 'Welcome' }), TypeError); // server-only
    assert.throws(() => encodeClientFrame({ type: 'Leave' }), /missing/);
    assert.throws(() => encodeClientFrame({ type: 'Send', room: 'a', client_msg_id: new Uint8Array(15), text: 'x' }), TypeError);
    assert.throws(() => encodeClientFrame({ type: 'Typing', room: 'a', active: 1 }), TypeError);
    assert.throws(() => encodeClientFrame({ type: 'Leave', room: 5 }), TypeError);
    assert.throws(() => encodeClientFrame({ type: 'Leave', room: '\ud800' }), /surrogate/);
  });

  test('an omitted Option encodes as none', () => {
    assert.equal(hex(encodeClientFrame({ type: 'Join', room: 'general' })), '010767656e6572616c00');
  });
});

describe('stream framing', () => {
  test('the spec example: Ping{nonce: 1} is 02 07 01 on a stream', () => {
    const frame = encodeClientFrame({ type: 'Ping', nonce: 1 });
    assert.equal(hex(frame), '0701');
    assert.equal(hex(encodeStreamFrame(frame)), '020701');
  });

  test('round-trips every vector, also concatenated', () => {
    const all = [];
    for (const v of vectors) {
      const framed = encodeStreamFrame(unhex(v.hex));
      const got = decodeStreamFrame(framed);
      assert.equal(got.consumed, framed.length);
      assert.equal(hex(got.frame), v.hex);
      all.push(...framed);
    }
    let buf = Uint8Array.from(all);
    const out = [];
    while (buf.length) {
      const got = decodeStreamFrame(buf);
      assert.ok(got);
      out.push(hex(got.frame));
      buf = buf.subarray(got.consumed);
    }
    assert.deepEqual(out, vectors.map((v) => v.hex));
  });

  test('a multi-byte length prefix', () => {
    const body = new Uint8Array(300).fill(7);
    const framed = encodeStreamFrame(body);
    assert.equal(hex(framed.subarray(0, 2)), 'ac02');
    const got = decodeStreamFrame(framed);
    assert.equal(got.consumed, 302);
    assert.deepStrictEqual(got.frame, body);
  });

  test('reports incomplete input as null at every cut', () => {
    const framed = encodeStreamFrame(new Uint8Array(300).fill(1));
    for (let cut = 0; cut < framed.length; cut++) {
      assert.equal(decodeStreamFrame(framed.subarray(0, cut)), null, `cut at ${cut}`);
    }
    assert.equal(decodeStreamFrame(new Uint8Array(0)), null);
    assert.equal(decodeStreamFrame(unhex('ffffffff')), null); // prefix may still end
  });

  test('a prefix not ending within 5 bytes is an error', () => {
    assert.throws(() => decodeStreamFrame(unhex('ffffffffff')), /5 bytes/);
    assert.throws(() => decodeStreamFrame(unhex('ffffffffff01')), /5 bytes/);
  });

  test('a length above the limit is an error', () => {
    const framed = encodeStreamFrame(new Uint8Array(200));
    assert.throws(() => decodeStreamFrame(framed, 100), /exceeds/);
    assert.throws(() => decodeStreamFrame(unhex('8180c000'), 16384), /exceeds/); // announced, not yet there
    assert.ok(decodeStreamFrame(framed, 200));
  });
});

describe('helpers', () => {
  test('idToHex / hexToId', () => {
    const id = hexToId('6f1c8a3e52044b7d9a11e02f33c45890');
    assert.equal(idToHex(id), '6f1c8a3e52044b7d9a11e02f33c45890');
    assert.throws(() => hexToId('xyz'), TypeError);
  });
});
