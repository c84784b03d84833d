// The posts of one room as a client holds them, kept current by the room's seq stream
// (PROTOCOL.md § 3, § 6.11). Pure: events in, changed posts out; no IO, no clock.
//
// A room's stream carries three kinds of events, all ChatMessages: a `Post` is stored (it comes
// in its state at the time it was read), an `Edit` or a `Delete` changes the post it names when
// that post is held and is never kept or shown itself.
//
// Each held post remembers the seq its state is as of. A post read by the server reflects every
// event up to what the connection had been sent when it was read: a replayed post the room's
// head at the join (`Joined.head_seq`), a post of a history page the highest seq the client had
// received for the room when the page came (the server reads the page after sending those), a
// live post its own seq. An `Edit` or `Delete` with a seq at or below that is already in the
// post and is skipped, so an older edit met later (in a page of older events, after a newer
// edit came live) never brings back an old text.

/**
 * The posts of one room by seq. `apply(events, knownSeq)` takes events in ascending seq;
 * `knownSeq` is the seq the stream was known up to when they were read (ChatClient sets it as
 * `known_seq` on every Message and History frame).
 */
export class RoomPosts {
  constructor() {
    /** seq → ChatMessage (kind 'Post'), in its current state */
    this.posts = new Map();
    /** seq → the seq the post's state is as of */
    this.stateSeqs = new Map();
  }

  get size() {
    return this.posts.size;
  }

  get(seq) {
    return this.posts.get(seq);
  }

  has(seq) {
    return this.posts.has(seq);
  }

  /** Held posts in ascending seq. */
  sorted() {
    return [...this.posts.values()].sort((a, b) => a.seq - b.seq);
  }

  /** Lowest seq held, or undefined. */
  minSeq() {
    let min;
    for (const seq of this.posts.keys()) if (min === undefined || seq < min) min = seq;
    return min;
  }

  clear() {
    this.posts.clear();
    this.stateSeqs.clear();
  }

  /**
   * Applies events of the room's stream. Returns `{added, changed}`: posts held for the first
   * time, and held posts whose state changed (edited, deleted, or a newer copy), each in its
   * new state. Events of other kinds than Post, Edit and Delete are ignored.
   * @param {Array<object>} events ChatMessages, ascending seq
   * @param {number} [knownSeq] the seq the stream was known up to when they were read
   */
  apply(events, knownSeq = 0) {
    const added = [];
    const changed = [];
    for (const m of events) {
      if (m.kind === 'Post' || m.kind === undefined) {
        const stateSeq = Math.max(m.seq, knownSeq || 0);
        const held = this.posts.get(m.seq);
        if (!held) {
          this.posts.set(m.seq, m);
          this.stateSeqs.set(m.seq, stateSeq);
          added.push(m);
        } else if (stateSeq > this.stateSeqs.get(m.seq)) {
          this.posts.set(m.seq, m);
          this.stateSeqs.set(m.seq, stateSeq);
          if (!samePost(held, m)) changed.push(m);
        }
        continue;
      }
      if (m.kind !== 'Edit' && m.kind !== 'Delete') continue;
      const target = this.posts.get(m.target_seq);
      if (!target || target.deleted || m.seq <= this.stateSeqs.get(m.target_seq)) continue;
      const next =
        m.kind === 'Edit'
          ? { ...target, text: m.text, edited_at_ms: m.sent_at_ms }
          : { ...target, text: '', deleted: true, attachments: [] };
      this.posts.set(target.seq, next);
      this.stateSeqs.set(target.seq, m.seq);
      changed.push(next);
    }
    return { added, changed };
  }
}

/** Whether two copies of a post show the same thing. */
function samePost(a, b) {
  return (
    a.text === b.text &&
    a.deleted === b.deleted &&
    a.edited_at_ms === b.edited_at_ms &&
    (a.attachments || []).length === (b.attachments || []).length
  );
}
