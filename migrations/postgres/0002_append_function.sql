-- The send path in one round trip: `SELECT * FROM socketchat_append(...)` stores a batch of
-- sends and, run outside an explicit transaction, commits it on return (group commit).
--
-- 1. Lock the rows of the batch's rooms, in id order (two batches never deadlock). Every later
--    statement of this function sees whatever committed before the locks were granted, and no
--    one can insert into these rooms until this batch commits: the duplicate check below cannot
--    be overtaken, so a duplicate never consumes a seq and seqs stay gap-free in commit order.
-- 2. In one statement: find sends already stored (a retry: the original row is returned),
--    number the first occurrence of each new (room, sender, client_msg_id) after the room's
--    last seq, insert them, advance each room's last seq, and return one row per input send,
--    in input order.
CREATE FUNCTION socketchat_append(
    p_room bigint[], p_sender bigint[], p_client_msg_id bytea[], p_text text[], p_sent_at_ms bigint)
RETURNS TABLE (ord bigint, message_id bigint, seq bigint, sent_at_ms bigint, body text, duplicate boolean)
LANGUAGE plpgsql
-- Only key lookups happen here. Without this, plans cached while the tables were empty (a new
-- database, before autovacuum's first ANALYZE) keep scanning whole partitions as they grow.
SET enable_seqscan = off
AS $$
DECLARE
    locked integer;
BEGIN
    PERFORM 1 FROM rooms WHERE id = ANY (p_room) ORDER BY id FOR UPDATE;
    GET DIAGNOSTICS locked = ROW_COUNT;
    IF locked <> (SELECT count(DISTINCT r) FROM unnest(p_room) AS r) THEN
        RAISE EXCEPTION 'socketchat_append: unknown room in %', p_room USING ERRCODE = 'foreign_key_violation';
    END IF;
    RETURN QUERY
    WITH input AS (
        SELECT i.ord, i.room_id, i.sender_id, i.client_msg_id, i.body
        FROM unnest(p_room, p_sender, p_client_msg_id, p_text)
             WITH ORDINALITY AS i (room_id, sender_id, client_msg_id, body, ord)
    ),
    existing AS (
        SELECT i.ord, m.id, m.seq, m.sent_at_ms, m.text
        FROM input i
        JOIN messages m ON m.room_id = i.room_id AND m.sender_id = i.sender_id
                       AND m.client_msg_id = i.client_msg_id
    ),
    fresh AS (
        SELECT DISTINCT ON (i.room_id, i.sender_id, i.client_msg_id) i.*
        FROM input i
        WHERE NOT EXISTS (SELECT 1 FROM existing e WHERE e.ord = i.ord)
        ORDER BY i.room_id, i.sender_id, i.client_msg_id, i.ord
    ),
    numbered AS (
        SELECT f.*, r.last_seq + row_number() OVER (PARTITION BY f.room_id ORDER BY f.ord) AS seq
        FROM fresh f JOIN rooms r ON r.id = f.room_id
    ),
    inserted AS (
        INSERT INTO messages (room_id, seq, sender_id, client_msg_id, text, sent_at_ms)
        SELECT n.room_id, n.seq, n.sender_id, n.client_msg_id, n.body, p_sent_at_ms FROM numbered n
        RETURNING messages.id, messages.room_id, messages.seq
    ),
    advanced AS (
        UPDATE rooms r SET last_seq = top.seq
        FROM (SELECT n.room_id, max(n.seq) AS seq FROM numbered n GROUP BY n.room_id) top
        WHERE r.id = top.room_id
        RETURNING r.id
    )
    SELECT i.ord,
           coalesce(e.id, ins.id),
           coalesce(e.seq, n.seq),
           coalesce(e.sent_at_ms, p_sent_at_ms),
           coalesce(e.text, n.body),
           (e.ord IS NOT NULL OR n.ord <> i.ord)
    FROM input i
    LEFT JOIN existing e ON e.ord = i.ord
    LEFT JOIN numbered n ON n.room_id = i.room_id AND n.sender_id = i.sender_id
                        AND n.client_msg_id = i.client_msg_id
    LEFT JOIN inserted ins ON ins.room_id = n.room_id AND ins.seq = n.seq
    ORDER BY i.ord;
END
$$;
