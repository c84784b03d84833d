-- Channels users create (public or private), direct conversations, members and read marks.
-- `kind` replaces `is_private`: 'public' rooms are listed and joinable by everyone, 'private'
-- and 'direct' ones only by their members.
ALTER TABLE rooms ADD COLUMN kind TEXT NOT NULL DEFAULT 'public'
    CHECK (kind IN ('public', 'private', 'direct'));
UPDATE rooms SET kind = 'private' WHERE is_private <> 0;
ALTER TABLE rooms DROP COLUMN is_private;

CREATE TABLE memberships (
    room_id INTEGER NOT NULL REFERENCES rooms(id) ON DELETE CASCADE,
    user_id INTEGER NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    role    TEXT NOT NULL DEFAULT 'member' CHECK (role IN ('owner', 'member')),
    PRIMARY KEY (room_id, user_id)
) WITHOUT ROWID;
CREATE INDEX memberships_user ON memberships (user_id);

-- The highest seq a user has read in a room (monotonic; shared by all their devices).
CREATE TABLE read_marks (
    user_id       INTEGER NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    room_id       INTEGER NOT NULL REFERENCES rooms(id) ON DELETE CASCADE,
    last_read_seq INTEGER NOT NULL,
    PRIMARY KEY (user_id, room_id)
) WITHOUT ROWID;

-- Edits and deletions are events in the room's seq stream (`kind` 1 and 2, naming the message
-- they change in `target_seq`); a message row (`kind` 0) holds its current state: its text as
-- last edited, when, whether it was deleted, and its attachments (a JSON array, '' for none).
ALTER TABLE messages ADD COLUMN kind INTEGER NOT NULL DEFAULT 0 CHECK (kind IN (0, 1, 2));
ALTER TABLE messages ADD COLUMN target_seq INTEGER;
ALTER TABLE messages ADD COLUMN edited_at_ms INTEGER;
ALTER TABLE messages ADD COLUMN deleted INTEGER NOT NULL DEFAULT 0;
ALTER TABLE messages ADD COLUMN attachments TEXT NOT NULL DEFAULT '';

-- Uploaded files, in the database so that every node serves them. `room_id`/`seq` name the
-- message a file is attached to (once, when that message is stored); unattached files are
-- forgotten after a day.
CREATE TABLE uploads (
    id            INTEGER PRIMARY KEY,
    owner_id      INTEGER NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    name          TEXT NOT NULL,
    content_type  TEXT NOT NULL,
    size          INTEGER NOT NULL,
    data          BLOB NOT NULL,
    created_at_ms INTEGER NOT NULL,
    room_id       INTEGER REFERENCES rooms(id) ON DELETE CASCADE,
    seq           INTEGER
);
CREATE INDEX uploads_unattached ON uploads (created_at_ms) WHERE room_id IS NULL;
