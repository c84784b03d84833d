-- When each user's last connection closed (Unix ms). Written by the single-node presence;
-- a cluster keeps it in Redis (a sorted set) instead.
ALTER TABLE users ADD COLUMN IF NOT EXISTS last_seen_ms bigint;
