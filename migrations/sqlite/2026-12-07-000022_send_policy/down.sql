DROP INDEX messages_by_recipient;
ALTER TABLE devices DROP COLUMN linked_at;
ALTER TABLE session_pacing DROP COLUMN last_sent_at;
ALTER TABLE session_pacing DROP COLUMN new_today;
DROP TABLE send_policies;
