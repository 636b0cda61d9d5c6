-- Claims up to $5 due messages of session $1 for node $3 at time $2, leased until $4.
--
-- Due: unclaimed (or its lease expired), attempts left, not expired, and the oldest queued
-- message of its recipient, so a recipient's messages go out one after another, in order.
-- The literal 'queued' (not a parameter) lets the planners use the partial queue indexes.
-- PostgreSQL puts `FOR UPDATE SKIP LOCKED` at the row-lock marker, so nodes claiming at the
-- same time never take the same message; SQLite has one writer and leaves the comment.
UPDATE messages
SET claimed_by = $3,
    claim_token = claim_token + 1,
    claim_expires_at = $4,
    attempts = attempts + 1
WHERE seq IN (
    SELECT m.seq
    FROM messages m
    WHERE m.device_id = $1
      AND m.status = 'queued'
      AND m.available_at <= $2
      AND (m.claim_expires_at IS NULL OR m.claim_expires_at < $2)
      AND m.attempts < m.max_attempts
      AND m.expires_at > $2
      AND NOT EXISTS (
          SELECT 1
          FROM messages e
          WHERE e.device_id = m.device_id
            AND e.recipient = m.recipient
            AND e.status = 'queued'
            AND e.seq < m.seq
      )
    ORDER BY m.seq
    LIMIT $5
    /* row lock */
)
RETURNING *
