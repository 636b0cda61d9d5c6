-- Claims up to $4 due recipients of running broadcasts for node $2 at time $1, leased until
-- $3. Due: created, available, unclaimed or with an expired lease, of a running broadcast.
-- PostgreSQL puts `FOR UPDATE SKIP LOCKED` at the row-lock marker, so nodes claiming at the
-- same time never take the same recipient; SQLite has one writer and leaves the comment.
UPDATE broadcast_recipients
SET claimed_by = $2,
    claim_expires_at = $3
WHERE (broadcast_id, seq) IN (
    SELECT r.broadcast_id, r.seq
    FROM broadcast_recipients r
    JOIN broadcasts b ON b.id = r.broadcast_id
    WHERE b.state = 'running'
      AND r.state = 'created'
      AND r.available_at <= $1
      AND (r.claim_expires_at IS NULL OR r.claim_expires_at < $1)
    ORDER BY r.available_at, r.broadcast_id, r.seq
    LIMIT $4
    /* row lock */
)
RETURNING broadcast_id, seq, phone, full_name, variables, session_slot
