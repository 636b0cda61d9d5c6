-- Stores token $3 that $2 issued to session $1 at $4, unless a newer one is stored already
-- (an empty stored token, written by the sender bucket, is always replaced).
INSERT INTO wa_tc_tokens (device_id, jid, token, token_timestamp, sender_timestamp)
VALUES ($1, $2, $3, $4, NULL)
ON CONFLICT (device_id, jid) DO UPDATE SET
    token = excluded.token,
    token_timestamp = excluded.token_timestamp
WHERE length(wa_tc_tokens.token) = 0
   OR excluded.token_timestamp >= wa_tc_tokens.token_timestamp
