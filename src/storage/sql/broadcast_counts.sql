-- A broadcast's recipients by their own state and their message's status.
SELECT r.state AS r_state, m.status AS m_status, COUNT(*) AS n
FROM broadcast_recipients r
LEFT JOIN messages m ON m.id = r.message_id
WHERE r.broadcast_id = $1
GROUP BY r.state, m.status
