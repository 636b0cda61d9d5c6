DROP TABLE broadcast_pauses;
DROP TABLE session_health;
