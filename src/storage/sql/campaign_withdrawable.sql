-- Campaign messages of session $1 still waiting in its queue at time $2 that no sender
-- holds and that were never written to WhatsApp (no WhatsApp id yet), oldest first, at most
-- $3, with their recipient. Reads the queue's partial index (device_id, seq).
SELECT m.id AS message_id, m.project_id, r.broadcast_id, r.seq, r.session_slot
FROM messages m
JOIN broadcast_recipients r ON r.message_id = m.id
WHERE m.device_id = $1
  AND m.status = 'queued'
  AND m.wa_message_id IS NULL
  AND (m.claimed_by IS NULL OR m.claim_expires_at < $2)
  AND r.state = 'enqueued'
ORDER BY m.seq
LIMIT $3
