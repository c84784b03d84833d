-- Embedded (SQLite) schema, version 2: when each user's last connection closed (Unix ms),
-- kept by the in-process presence (with Redis, a sorted set there holds it instead).
ALTER TABLE users ADD COLUMN last_seen_ms INTEGER;
