-- The last campaign messages of session $1 with an outcome, after messages.seq $2, newest
-- first, at most $3: a run of `failed` at the head is a run of send failures. Messages
-- taken back from an unhealthy session (REROUTED) are no outcome of a send.
SELECT seq, status
FROM messages
WHERE device_id = $1
  AND seq > $2
  AND payload LIKE '{"broadcast_id"%'
  AND status IN ('sent', 'delivered', 'read', 'failed')
  AND (error_code IS NULL OR error_code <> 'REROUTED')
ORDER BY seq DESC
LIMIT $3
