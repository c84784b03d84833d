// The room list's rules, pure: how a room is named and marked, which rooms one connection
// follows, and how many unread messages each badge shows (PROTOCOL.md § 8.1, § 6.13).

/** Rooms one connection may have joined at once (§ 5). */
export const MAX_FOLLOWED = 32;
/** The server counts unread messages up to this many; the badge then says "99+". */
export const UNREAD_CAP = 100;

/** The other members of a direct conversation. */
export function otherMembers(room, me) {
  const members = Array.isArray(room.members) ? room.members : [];
  return members.filter((m) => !me || m.id !== me.id);
}

/**
 * What a room is called in the list: a channel by its name, a direct conversation (named
 * `@…` by the server) by the other members' usernames ("only you" once they all left it).
 */
export function roomLabel(room, me) {
  if (room.kind !== 'direct') return room.name;
  if (!Array.isArray(room.members)) return room.name;
  const names = otherMembers(room, me).map((m) => m.username);
  return names.length ? names.join(', ') : 'only you';
}

/** The room's title above the conversation: "# general", "🔒 secret", "@ bob". */
export function roomTitle(room, me) {
  if (!room) return '';
  if (room.kind === 'direct') return `@ ${roomLabel(room, me)}`;
  return `${room.kind === 'private' ? '🔒' : '#'} ${room.name}`;
}

/** A badge's text: nothing for 0, "99+" from 100 on (the server's cap). */
export function badgeText(n) {
  if (!Number.isFinite(n) || n <= 0) return '';
  return n >= UNREAD_CAP ? '99+' : String(Math.floor(n));
}

/**
 * The rooms one connection joins so that their badges move live: the open room first, then
 * the list in its order, `max` at most (the server's 32 per connection). Rooms beyond are
 * counted from the room list only (refreshed on focus and on events).
 * @param {Array<{name: string}>} rooms the room list
 * @param {string|null} open the room shown
 */
export function roomsToFollow(rooms, open, max = MAX_FOLLOWED) {
  const names = rooms.map((r) => r.name);
  const out = open !== null && names.includes(open) ? [open] : [];
  for (const name of names) {
    if (out.length >= max) break;
    if (name !== open) out.push(name);
  }
  return out;
}

/**
 * Unread counts of every room: the server's count at the room list's head (`GET
 * /api/channels`), plus the posts of other users that came live after that head and above the
 * read mark. A read mark at or above the list's head clears the server's part; one below it
 * cannot be counted here, and `read` says so (the caller fetches the list again).
 */
export class UnreadCounts {
  constructor() {
    /** room → {base, head, lastRead, live: Set<seq>} */
    this.rooms = new Map();
  }

  _entry(room) {
    let e = this.rooms.get(room);
    if (!e) {
      e = { base: 0, head: 0, lastRead: 0, live: new Set() };
      this.rooms.set(room, e);
    }
    return e;
  }

  /** Takes a room of the room list: `{name, unread, head_seq, last_read_seq}`. */
  fromList({ name, unread = 0, head_seq = 0, last_read_seq = 0 }) {
    const e = this._entry(name);
    e.head = head_seq;
    e.lastRead = Math.max(e.lastRead, last_read_seq);
    // A mark that moved here after the server counted makes its count too high: the part at
    // or below the mark is read.
    e.base = e.lastRead >= head_seq ? 0 : unread;
    for (const seq of e.live) if (seq <= head_seq || seq <= e.lastRead) e.live.delete(seq);
  }

  /** A live post of another user (not deleted). Returns whether it counts. */
  post(room, seq) {
    const e = this._entry(room);
    if (seq <= e.head || seq <= e.lastRead || e.live.has(seq)) return false;
    e.live.add(seq);
    return true;
  }

  /** The post at `seq` was deleted: it no longer counts (when it was counted live). */
  deleted(room, seq) {
    return this._entry(room).live.delete(seq);
  }

  /**
   * The read mark of `room` moved to `lastRead` (ReadState, or this client marking it).
   * Returns true when the count is no longer known here (the mark is below the list's head
   * and the server counted some unread there): fetch the room list again.
   */
  read(room, lastRead) {
    const e = this._entry(room);
    if (lastRead <= e.lastRead) return false;
    e.lastRead = lastRead;
    for (const seq of e.live) if (seq <= lastRead) e.live.delete(seq);
    if (lastRead >= e.head) {
      e.base = 0;
      return false;
    }
    return e.base > 0;
  }

  /** The read mark known for `room`. */
  lastRead(room) {
    return this.rooms.get(room)?.lastRead ?? 0;
  }

  /** Unread messages in `room`, at most 100. */
  count(room) {
    const e = this.rooms.get(room);
    return e ? Math.min(UNREAD_CAP, e.base + e.live.size) : 0;
  }

  forget(room) {
    this.rooms.delete(room);
  }

  clear() {
    this.rooms.clear();
  }
}
