-- A page of a broadcast's recipients (after seq $2, at most $3) with their message, and
-- whether the recipient wrote back on the session within $4 ms after it was sent.
SELECT r.seq, r.phone, r.full_name, r.state, r.session_slot, r.message_id, r.error_code,
       r.error_message, r.held_reason, r.available_at, r.created_at, r.updated_at,
       m.status AS m_status, m.wa_message_id, m.error_code AS m_error_code,
       m.error_message AS m_error_message, m.sent_at, m.delivered_at, m.read_at, m.failed_at,
       EXISTS (
           SELECT 1 FROM inbound_messages i
           WHERE i.device_id = m.device_id
             AND i.sender_phone = r.phone
             AND i.created_at >= m.sent_at
             AND i.created_at <= m.sent_at + $4
       ) AS replied
FROM broadcast_recipients r
LEFT JOIN messages m ON m.id = r.message_id
WHERE r.broadcast_id = $1 AND r.seq > $2
ORDER BY r.seq
LIMIT $3
