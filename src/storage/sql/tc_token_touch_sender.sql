-- Records that session $1 sent to $2 at $4 (the sender bucket of its tc token). A new row
-- starts with the empty token $3; an existing one only moves its sender time forward.
INSERT INTO wa_tc_tokens (device_id, jid, token, token_timestamp, sender_timestamp)
VALUES ($1, $2, $3, $4, $4)
ON CONFLICT (device_id, jid) DO UPDATE SET
    sender_timestamp = CASE
        WHEN wa_tc_tokens.sender_timestamp IS NULL
          OR wa_tc_tokens.sender_timestamp < excluded.sender_timestamp
        THEN excluded.sender_timestamp
        ELSE wa_tc_tokens.sender_timestamp
    END
