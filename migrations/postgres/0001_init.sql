-- SocketChat schema on PostgreSQL, version 1.

CREATE TABLE users (
    id            bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    username      text NOT NULL,
    email         text NOT NULL,
    password_hash text NOT NULL,
    created_at    timestamptz NOT NULL DEFAULT now()
);
-- Case-insensitive uniqueness, as in the embedded store.
CREATE UNIQUE INDEX users_username_key ON users (lower(username));
CREATE UNIQUE INDEX users_email_key ON users (lower(email));

CREATE TABLE rooms (
    id         bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    name       text NOT NULL UNIQUE,
    topic      text NOT NULL DEFAULT '',
    is_private boolean NOT NULL DEFAULT false,
    -- Highest seq assigned in the room. A writer locks this row, so a room's seqs are handed
    -- out in commit order, and a rolled-back batch gives its seqs back.
    last_seq   bigint NOT NULL DEFAULT 0,
    created_at timestamptz NOT NULL DEFAULT now()
);

-- Who belongs to a private room (public rooms need no row).
CREATE TABLE memberships (
    room_id   bigint NOT NULL REFERENCES rooms (id) ON DELETE CASCADE,
    user_id   bigint NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    joined_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (room_id, user_id)
);

CREATE SEQUENCE messages_id_seq AS bigint;

-- Ready for billions of rows: hash-partitioned by room, keyed by (room_id, seq), so history and
-- resume reads touch one partition and one index range. No foreign keys on purpose: their
-- per-row checks cost about a quarter of the send path's throughput (measured, bench/README.md). Rows
-- are written only by socketchat_append, which refuses unknown rooms, with sender ids taken
-- from verified tokens; reads LEFT JOIN users.
CREATE TABLE messages (
    room_id       bigint NOT NULL,
    seq           bigint NOT NULL,
    id            bigint NOT NULL DEFAULT nextval('messages_id_seq'),
    sender_id     bigint NOT NULL,
    client_msg_id bytea  NOT NULL CHECK (octet_length(client_msg_id) = 16),
    text          text   NOT NULL,
    sent_at_ms    bigint NOT NULL,
    PRIMARY KEY (room_id, seq),
    -- Idempotency: one row per (room, sender, client_msg_id).
    UNIQUE (room_id, sender_id, client_msg_id)
) PARTITION BY HASH (room_id);

CREATE TABLE messages_p00 PARTITION OF messages FOR VALUES WITH (MODULUS 16, REMAINDER 0);
CREATE TABLE messages_p01 PARTITION OF messages FOR VALUES WITH (MODULUS 16, REMAINDER 1);
CREATE TABLE messages_p02 PARTITION OF messages FOR VALUES WITH (MODULUS 16, REMAINDER 2);
CREATE TABLE messages_p03 PARTITION OF messages FOR VALUES WITH (MODULUS 16, REMAINDER 3);
CREATE TABLE messages_p04 PARTITION OF messages FOR VALUES WITH (MODULUS 16, REMAINDER 4);
CREATE TABLE messages_p05 PARTITION OF messages FOR VALUES WITH (MODULUS 16, REMAINDER 5);
CREATE TABLE messages_p06 PARTITION OF messages FOR VALUES WITH (MODULUS 16, REMAINDER 6);
CREATE TABLE messages_p07 PARTITION OF messages FOR VALUES WITH (MODULUS 16, REMAINDER 7);
CREATE TABLE messages_p08 PARTITION OF messages FOR VALUES WITH (MODULUS 16, REMAINDER 8);
CREATE TABLE messages_p09 PARTITION OF messages FOR VALUES WITH (MODULUS 16, REMAINDER 9);
CREATE TABLE messages_p10 PARTITION OF messages FOR VALUES WITH (MODULUS 16, REMAINDER 10);
CREATE TABLE messages_p11 PARTITION OF messages FOR VALUES WITH (MODULUS 16, REMAINDER 11);
CREATE TABLE messages_p12 PARTITION OF messages FOR VALUES WITH (MODULUS 16, REMAINDER 12);
CREATE TABLE messages_p13 PARTITION OF messages FOR VALUES WITH (MODULUS 16, REMAINDER 13);
CREATE TABLE messages_p14 PARTITION OF messages FOR VALUES WITH (MODULUS 16, REMAINDER 14);
CREATE TABLE messages_p15 PARTITION OF messages FOR VALUES WITH (MODULUS 16, REMAINDER 15);

CREATE TABLE revoked_tokens (
    jti        text PRIMARY KEY,
    expires_at bigint NOT NULL
);
CREATE INDEX revoked_tokens_expiry ON revoked_tokens (expires_at);

INSERT INTO rooms (name, topic) VALUES
    ('general', 'Anything goes'),
    ('engineering', 'Building SocketChat'),
    ('design', 'Pixels and words'),
    ('support', 'Ask for help here');
