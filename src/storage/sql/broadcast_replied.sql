-- How many of broadcast $1's recipients wrote back on their session within $2 ms after
-- their message was sent.
SELECT COUNT(*) AS n
FROM broadcast_recipients r
JOIN messages m ON m.id = r.message_id
WHERE r.broadcast_id = $1
  AND m.sent_at IS NOT NULL
  AND EXISTS (
      SELECT 1 FROM inbound_messages i
      WHERE i.device_id = m.device_id
        AND i.sender_phone = r.phone
        AND i.created_at >= m.sent_at
        AND i.created_at <= m.sent_at + $2
  )
