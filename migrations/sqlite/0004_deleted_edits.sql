-- A deletion takes the text of the post's earlier edits with it, as it takes the post's own
-- (PROTOCOL.md § 3): the edits of a post are found by the post they name. Edits of posts
-- deleted before this version lose their text here.
CREATE INDEX messages_edits ON messages (room_id, target_seq) WHERE kind = 1;
UPDATE messages SET text = ''
    WHERE kind = 1 AND EXISTS (
        SELECT 1 FROM messages p
        WHERE p.room_id = messages.room_id AND p.seq = messages.target_seq AND p.deleted <> 0
    );
