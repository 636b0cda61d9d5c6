DROP TABLE wa_msg_secrets;
DROP TABLE wa_tc_tokens;
DROP TABLE wa_lid_mappings;
DROP TABLE wa_sender_key_devices;
DROP TABLE wa_app_state_macs;
DROP TABLE wa_prekeys;
DROP TABLE wa_store;
