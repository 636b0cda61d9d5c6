//! Table definitions shared by both backends (migrations/sqlite and migrations/postgres).

diesel::table! {
    projects (id) {
        id -> Text,
        name -> Text,
        api_key_hash -> Text,
        api_key_prefix -> Text,
        api_secret_enc -> Text,
        rate_limit_per_minute -> BigInt,
        monthly_quota -> BigInt,
        max_sessions -> BigInt,
        suspended -> Bool,
        created_at -> BigInt,
    }
}

diesel::table! {
    devices (id) {
        id -> Text,
        project_id -> Text,
        code -> Text,
        name -> Text,
        state -> Text,
        created_at -> BigInt,
    }
}

diesel::table! {
    media (id) {
        id -> Text,
        project_id -> Text,
        sha256 -> Text,
        mime_type -> Text,
        filename -> Nullable<Text>,
        size_bytes -> BigInt,
        data -> Binary,
        created_at -> BigInt,
    }
}

diesel::table! {
    messages (seq) {
        seq -> BigInt,
        id -> Text,
        project_id -> Text,
        device_id -> Text,
        device_code -> Text,
        recipient -> Text,
        kind -> Text,
        body -> Nullable<Text>,
        media_id -> Nullable<Text>,
        payload -> Nullable<Text>,
        status -> Text,
        attempts -> Integer,
        max_attempts -> Integer,
        available_at -> BigInt,
        claimed_by -> Nullable<Text>,
        claim_token -> BigInt,
        claim_expires_at -> Nullable<BigInt>,
        wa_message_id -> Nullable<Text>,
        error_code -> Nullable<Text>,
        error_message -> Nullable<Text>,
        created_at -> BigInt,
        sent_at -> Nullable<BigInt>,
        delivered_at -> Nullable<BigInt>,
        read_at -> Nullable<BigInt>,
        failed_at -> Nullable<BigInt>,
        expires_at -> BigInt,
    }
}

diesel::table! {
    idempotency_keys (project_id, key) {
        project_id -> Text,
        key -> Text,
        fingerprint -> Text,
        message_id -> Text,
        expires_at -> BigInt,
    }
}

diesel::table! {
    usage_counters (project_id, bucket) {
        project_id -> Text,
        bucket -> Text,
        count -> BigInt,
        expires_at -> BigInt,
    }
}

diesel::joinable!(devices -> projects (project_id));
diesel::joinable!(messages -> devices (device_id));
diesel::allow_tables_to_appear_in_same_query!(
    projects,
    devices,
    media,
    messages,
    idempotency_keys,
    usage_counters
);
