-- Channels users create (public or private), direct conversations, member roles and read
-- marks. `kind` replaces `is_private`: 'public' rooms are listed and joinable by everyone,
-- 'private' and 'direct' ones only by their members (rows in `memberships`).
ALTER TABLE rooms ADD COLUMN kind text NOT NULL DEFAULT 'public'
    CHECK (kind IN ('public', 'private', 'direct'));
UPDATE rooms SET kind = 'private' WHERE is_private;
ALTER TABLE rooms DROP COLUMN is_private;

ALTER TABLE memberships ADD COLUMN role text NOT NULL DEFAULT 'member'
    CHECK (role IN ('owner', 'member'));
CREATE INDEX memberships_user ON memberships (user_id);

-- The highest seq a user has read in a room (monotonic; shared by all their devices).
CREATE TABLE read_marks (
    user_id       bigint NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    room_id       bigint NOT NULL REFERENCES rooms (id) ON DELETE CASCADE,
    last_read_seq bigint NOT NULL,
    PRIMARY KEY (user_id, room_id)
);

-- Edits and deletions are events in the room's seq stream (`kind` 1 and 2, naming the message
-- they change in `target_seq`); a message row (`kind` 0) holds its current state: its text as
-- last edited, when, whether it was deleted, and its attachments (a JSON array, '' for none).
-- Such rows are written by `Store::append_checked`, one at a time under the room's row lock.
ALTER TABLE messages ADD COLUMN kind smallint NOT NULL DEFAULT 0 CHECK (kind IN (0, 1, 2));
ALTER TABLE messages ADD COLUMN target_seq bigint;
ALTER TABLE messages ADD COLUMN edited_at_ms bigint;
ALTER TABLE messages ADD COLUMN deleted boolean NOT NULL DEFAULT false;
ALTER TABLE messages ADD COLUMN attachments text NOT NULL DEFAULT '';

-- Uploaded files, in the database so that every node serves them. `room_id`/`seq` name the
-- message a file is attached to (once, when that message is stored); unattached files are
-- forgotten after a day.
CREATE TABLE uploads (
    id            bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    owner_id      bigint NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    name          text NOT NULL,
    content_type  text NOT NULL,
    size          bigint NOT NULL,
    data          bytea NOT NULL,
    created_at_ms bigint NOT NULL,
    room_id       bigint REFERENCES rooms (id) ON DELETE CASCADE,
    seq           bigint
);
CREATE INDEX uploads_unattached ON uploads (created_at_ms) WHERE room_id IS NULL;
