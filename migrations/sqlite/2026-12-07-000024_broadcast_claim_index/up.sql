-- The dispatcher's claim walks due recipients in (available_at, broadcast_id, seq) order and
-- stops at its batch: without this it sorted every waiting recipient of every running
-- campaign on each round (100,000 held recipients: most of a core).
CREATE INDEX broadcast_recipients_claim ON broadcast_recipients (state, available_at, broadcast_id, seq);
