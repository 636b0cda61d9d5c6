DROP INDEX devices_session_key;
ALTER TABLE devices DROP COLUMN session_key_hash;
DROP TABLE user_api_keys;
DROP TABLE users;
