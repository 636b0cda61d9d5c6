-- Stores message secret $5 of (session $1, chat $2, sender $3, message $4), expiring at $6
-- (0: never) for a message sent at $7. A second write of the same key merges: the newest
-- secret, the later expiry (a "never" wins) and the newer message time.
INSERT INTO wa_msg_secrets (device_id, chat, sender, msg_id, secret, expires_at, message_ts)
VALUES ($1, $2, $3, $4, $5, $6, $7)
ON CONFLICT (device_id, chat, sender, msg_id) DO UPDATE SET
    secret = excluded.secret,
    expires_at = CASE
        WHEN wa_msg_secrets.expires_at = 0 OR excluded.expires_at = 0 THEN 0
        WHEN excluded.expires_at > wa_msg_secrets.expires_at THEN excluded.expires_at
        ELSE wa_msg_secrets.expires_at
    END,
    message_ts = CASE
        WHEN excluded.message_ts > wa_msg_secrets.message_ts THEN excluded.message_ts
        ELSE wa_msg_secrets.message_ts
    END
