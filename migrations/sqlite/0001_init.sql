-- Embedded (SQLite) schema, version 1. Applied once; PRAGMA user_version records it.
CREATE TABLE users (
    id            INTEGER PRIMARY KEY,
    username      TEXT NOT NULL COLLATE NOCASE UNIQUE,
    email         TEXT NOT NULL COLLATE NOCASE UNIQUE,
    password_hash TEXT NOT NULL,
    created_at_ms INTEGER NOT NULL
);

CREATE TABLE rooms (
    id         INTEGER PRIMARY KEY,
    name       TEXT NOT NULL UNIQUE,
    topic      TEXT NOT NULL DEFAULT '',
    is_private INTEGER NOT NULL DEFAULT 0,
    -- Highest seq assigned in the room; bumped in the same transaction as the insert.
    last_seq   INTEGER NOT NULL DEFAULT 0
);

CREATE TABLE messages (
    id            INTEGER PRIMARY KEY,
    room_id       INTEGER NOT NULL REFERENCES rooms(id),
    seq           INTEGER NOT NULL,
    sender_id     INTEGER NOT NULL REFERENCES users(id),
    client_msg_id BLOB NOT NULL CHECK (length(client_msg_id) = 16),
    text          TEXT NOT NULL,
    sent_at_ms    INTEGER NOT NULL,
    UNIQUE (room_id, seq),
    UNIQUE (room_id, sender_id, client_msg_id)
);

CREATE TABLE revoked_tokens (
    jti        TEXT PRIMARY KEY,
    expires_at INTEGER NOT NULL
);

INSERT INTO rooms (name, topic) VALUES
    ('general', 'Anything goes'),
    ('engineering', 'Building SocketChat'),
    ('design', 'Pixels and words'),
    ('support', 'Ask for help here');
