DROP INDEX inbound_by_sender;
DROP TABLE session_pacing;
DROP TABLE broadcast_recipients;
DROP TABLE broadcasts;
