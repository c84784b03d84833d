// RoomPosts (web/socketchat/posts.js): a room's posts kept current by its Edit and Delete events
// (PROTOCOL.md § 3). Run with `node --test web/test/`.
import { test, describe } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';

import { RoomPosts, decodeServerFrame } from '../socketchat.js';
import { alice, editEvent, message } from '../test-support/fakes.mjs';

const post = (seq, extra = {}) => message(seq, alice, extra);
const edit = (seq, target, text) => editEvent(seq, target, text, alice);
const del = (seq, target) => editEvent(seq, target, '', alice, { kind: 'Delete' });

describe('RoomPosts', () => {
  test('posts are held by seq; edit and delete events change them and are never held themselves', () => {
    const posts = new RoomPosts();
    const r1 = posts.apply([post(1), post(2, { attachments: [{ id: 7, name: 'a.png', content_type: 'image/png', size: 3 }] })], 0);
    assert.deepEqual(r1.added.map((m) => m.seq), [1, 2]);
    assert.deepEqual(r1.changed, []);

    const r2 = posts.apply([edit(3, 1, 'one, edited')], 2);
    assert.equal(r2.added.length, 0);
    assert.equal(r2.changed.length, 1);
    assert.equal(posts.get(1).text, 'one, edited');
    assert.equal(posts.get(1).edited_at_ms, edit(3, 1, '').sent_at_ms, 'edited_at_ms is the edit\'s sent_at_ms');
    assert.equal(posts.get(1).kind, 'Post');

    posts.apply([del(4, 2)], 3);
    assert.equal(posts.get(2).deleted, true);
    assert.equal(posts.get(2).text, '');
    assert.deepEqual(posts.get(2).attachments, [], 'files gone');

    assert.equal(posts.size, 2, 'events are not held');
    assert.deepEqual(posts.sorted().map((m) => m.seq), [1, 2]);
    assert.equal(posts.has(3), false);
  });

  test('a deleted post is final: a later edit or delete changes nothing', () => {
    const posts = new RoomPosts();
    posts.apply([post(1), del(2, 1)], 0);
    const r = posts.apply([edit(3, 1, 'back from the dead'), del(4, 1)], 2);
    assert.deepEqual(r.changed, []);
    assert.equal(posts.get(1).text, '');
    assert.equal(posts.get(1).deleted, true);
  });

  test('an event about a post not held is ignored', () => {
    const posts = new RoomPosts();
    posts.apply([post(10)], 0);
    const r = posts.apply([edit(11, 3, 'x'), del(12, 4)], 10);
    assert.deepEqual(r, { added: [], changed: [] });
    assert.equal(posts.size, 1);
  });

  test('an older edit met later (in a page of older events) does not bring back an old text', () => {
    const posts = new RoomPosts();
    // Live: the post (seq 5) and, later, its second edit (seq 9) while 1..8 were known.
    posts.apply([post(5, { text: 'v0' })], 5);
    posts.apply([edit(9, 5, 'v2')], 8);
    assert.equal(posts.get(5).text, 'v2');
    // A history page of older events read after seq 9 was sent: the post in its state then
    // (v2), and its first edit (seq 7): already in the post, skipped.
    const r = posts.apply([post(5, { text: 'v2', edited_at_ms: 9 }), edit(7, 5, 'v1')], 9);
    assert.equal(posts.get(5).text, 'v2');
    assert.deepEqual(r.changed, [], 'v2 → v2 is no change');
  });

  test('a replayed post reflects the events up to the join\'s head: those in the replay are skipped', () => {
    const posts = new RoomPosts();
    // Joined{head_seq: 12}: the replay has post 10 as it is now (edited twice) and both edits.
    posts.apply([post(10, { text: 'final', edited_at_ms: 12 })], 12);
    const r = posts.apply([edit(11, 10, 'first edit'), edit(12, 10, 'final')], 12);
    assert.deepEqual(r.changed, []);
    assert.equal(posts.get(10).text, 'final');
    // A live edit after the head applies.
    posts.apply([edit(13, 10, 'live')], 12);
    assert.equal(posts.get(10).text, 'live');
  });

  test('a newer copy of a post replaces the held one; an older copy does not', () => {
    const posts = new RoomPosts();
    posts.apply([post(1, { text: 'a' })], 1);
    assert.deepEqual(posts.apply([post(1, { text: 'b', edited_at_ms: 3 })], 4).changed.map((m) => m.text), ['b']);
    assert.deepEqual(posts.apply([post(1, { text: 'a' })], 2).changed, []);
    assert.equal(posts.get(1).text, 'b');
    posts.clear();
    assert.equal(posts.size, 0);
    assert.equal(posts.minSeq(), undefined);
  });

  test('the protocol vectors: a post, its edit event and its delete event', () => {
    const path = fileURLToPath(new URL('../../protocol/vectors/frames.jsonl', import.meta.url));
    const byName = new Map(
      readFileSync(path, 'utf8')
        .split('\n')
        .filter(Boolean)
        .map((l) => JSON.parse(l))
        .filter((v) => v.direction === 'server_to_client')
        .map((v) => [v.name, decodeServerFrame(Buffer.from(v.hex, 'hex'))]),
    );
    const posts = new RoomPosts();
    posts.apply([byName.get('message')], 306);
    posts.apply([byName.get('message_edit_event')], 307);
    assert.equal(posts.get(306).text, 'héllo, edited');
    assert.equal(posts.get(306).edited_at_ms, byName.get('message_edit_event').sent_at_ms);
    posts.apply([byName.get('message_delete_event')], 308);
    // As the deleted post reads from the server (the vector message_deleted), but for the
    // edit time the client saw.
    const deleted = byName.get('message_deleted');
    assert.equal(posts.get(306).deleted, deleted.deleted);
    assert.equal(posts.get(306).text, deleted.text);
    assert.deepEqual(posts.get(306).attachments, deleted.attachments);
    assert.equal(posts.size, 1);
  });
});
