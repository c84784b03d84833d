-- Channels users create (public or private), direct conversations, member roles and read
-- marks. `kind` replaces `is_private`: 'public' rooms are listed and joinable by everyone,
-- 'private' and 'direct' ones only by their members (rows in `memberships`).
ALTER TABLE rooms ADD COLUMN kind text NOT NULL DEFAULT 'public'
    CHECK (kind IN ('public', 'private', 'direct'));
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
