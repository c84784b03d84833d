-- Channels users create (public or private), direct conversations, members and read marks.
-- `kind` replaces `is_private`: 'public' rooms are listed and joinable by everyone, 'private'
-- and 'direct' ones only by their members.
ALTER TABLE rooms ADD COLUMN kind TEXT NOT NULL DEFAULT 'public'
    CHECK (kind IN ('public', 'private', 'direct'));
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
