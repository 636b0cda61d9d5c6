DROP TABLE usage_counters;
DROP TABLE idempotency_keys;
DROP TABLE messages;
DROP TABLE media;
DROP TABLE devices;
DROP TABLE projects;
