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
        refuse_replays -> Bool,
    }
}

diesel::table! {
    seen_signatures (project_id, signature_hash) {
        project_id -> Text,
        signature_hash -> Text,
        expires_at -> BigInt,
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
        phone -> Nullable<Text>,
        push_name -> Nullable<Text>,
        wa_jid -> Nullable<Text>,
        wa_lid -> Nullable<Text>,
        state_reason -> Nullable<Text>,
        last_connected_at -> Nullable<BigInt>,
        updated_at -> Nullable<BigInt>,
        session_key_hash -> Nullable<Text>,
        linked_at -> Nullable<BigInt>,
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
        purged_at -> Nullable<BigInt>,
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

diesel::table! {
    inbound_messages (seq) {
        seq -> BigInt,
        id -> Text,
        project_id -> Text,
        device_id -> Text,
        wa_message_id -> Text,
        chat_jid -> Text,
        sender_jid -> Text,
        sender_phone -> Nullable<Text>,
        sender_lid -> Nullable<Text>,
        push_name -> Nullable<Text>,
        kind -> Text,
        body -> Nullable<Text>,
        media_id -> Nullable<Text>,
        sent_at -> BigInt,
        created_at -> BigInt,
    }
}

diesel::table! {
    users (id) {
        id -> Text,
        email -> Text,
        name -> Text,
        password_hash -> Text,
        project_id -> Text,
        created_at -> BigInt,
    }
}

diesel::table! {
    user_api_keys (id) {
        id -> Text,
        user_id -> Text,
        name -> Text,
        key_hash -> Text,
        key_prefix -> Text,
        created_at -> BigInt,
    }
}

diesel::table! {
    nodes (id) {
        id -> Text,
        instance -> Text,
        advertise_url -> Text,
        version -> Text,
        started_at -> BigInt,
        heartbeat_at -> BigInt,
        max_sessions -> Nullable<BigInt>,
        draining -> Bool,
        stopped_at -> Nullable<BigInt>,
    }
}

diesel::table! {
    session_leases (device_id) {
        device_id -> Text,
        owner -> Nullable<Text>,
        epoch -> BigInt,
        expires_at -> BigInt,
        acquired_at -> Nullable<BigInt>,
    }
}

diesel::joinable!(devices -> projects (project_id));
diesel::joinable!(user_api_keys -> users (user_id));
diesel::joinable!(messages -> devices (device_id));
diesel::allow_tables_to_appear_in_same_query!(
    projects,
    devices,
    media,
    messages,
    idempotency_keys,
    usage_counters,
    inbound_messages,
    users,
    user_api_keys,
    nodes,
    session_leases
);

// --- whatsapp-rust device store (src/storage/devices/) ---

diesel::table! {
    wa_store (device_id, kind, key) {
        device_id -> Text,
        kind -> Text,
        key -> Text,
        value -> Binary,
        updated_at -> BigInt,
    }
}

diesel::table! {
    wa_prekeys (device_id, id) {
        device_id -> Text,
        id -> BigInt,
        record -> Binary,
        uploaded -> Bool,
    }
}

diesel::table! {
    wa_app_state_macs (device_id, collection, index_mac) {
        device_id -> Text,
        collection -> Text,
        index_mac -> Binary,
        value_mac -> Binary,
        version -> BigInt,
    }
}

diesel::table! {
    wa_sender_key_devices (device_id, group_jid, device_jid) {
        device_id -> Text,
        group_jid -> Text,
        device_jid -> Text,
        has_key -> Bool,
    }
}

diesel::table! {
    wa_lid_mappings (device_id, lid) {
        device_id -> Text,
        lid -> Text,
        phone_number -> Text,
        created_at -> BigInt,
        updated_at -> BigInt,
        learning_source -> Text,
    }
}

diesel::table! {
    wa_tc_tokens (device_id, jid) {
        device_id -> Text,
        jid -> Text,
        token -> Binary,
        token_timestamp -> BigInt,
        sender_timestamp -> Nullable<BigInt>,
    }
}

diesel::table! {
    wa_msg_secrets (device_id, chat, sender, msg_id) {
        device_id -> Text,
        chat -> Text,
        sender -> Text,
        msg_id -> Text,
        secret -> Binary,
        expires_at -> BigInt,
        message_ts -> BigInt,
    }
}

// --- webhooks and events (src/storage/events.rs, src/storage/webhooks.rs) ---

diesel::table! {
    webhooks (id) {
        id -> Text,
        project_id -> Text,
        device_id -> Nullable<Text>,
        url -> Text,
        events -> Text,
        enabled -> Bool,
        disabled_reason -> Nullable<Text>,
        secret_enc -> Text,
        previous_secret_enc -> Nullable<Text>,
        previous_secret_expires_at -> Nullable<BigInt>,
        created_at -> BigInt,
        updated_at -> BigInt,
    }
}

diesel::table! {
    events (seq) {
        seq -> BigInt,
        txid -> BigInt,
        id -> Text,
        project_id -> Text,
        device_id -> Nullable<Text>,
        kind -> Text,
        data -> Text,
        created_at -> BigInt,
    }
}

diesel::table! {
    webhook_deliveries (seq) {
        seq -> BigInt,
        id -> Text,
        webhook_id -> Text,
        event_id -> Text,
        lane -> Text,
        state -> Text,
        attempts -> Integer,
        next_attempt_at -> BigInt,
        last_status_code -> Nullable<Integer>,
        last_error -> Nullable<Text>,
        created_at -> BigInt,
        updated_at -> BigInt,
        completed_at -> Nullable<BigInt>,
    }
}

diesel::table! {
    webhook_attempts (seq) {
        seq -> BigInt,
        delivery_id -> Text,
        status_code -> Nullable<Integer>,
        latency_ms -> BigInt,
        error -> Nullable<Text>,
        at -> BigInt,
    }
}

diesel::table! {
    webhook_lanes (webhook_id, lane) {
        webhook_id -> Text,
        lane -> Text,
        owner -> Nullable<Text>,
        lease_until -> BigInt,
        blocked_until -> BigInt,
    }
}

diesel::allow_tables_to_appear_in_same_query!(
    webhooks,
    events,
    webhook_deliveries,
    webhook_attempts,
    webhook_lanes,
    devices
);

// --- broadcasts (src/storage/templates.rs) ---

diesel::table! {
    templates (id) {
        id -> Text,
        project_id -> Text,
        name -> Text,
        category -> Text,
        status -> Text,
        variants -> Text,
        created_at -> BigInt,
        updated_at -> BigInt,
    }
}

diesel::table! {
    contact_lists (id) {
        id -> Text,
        project_id -> Text,
        name -> Text,
        source_type -> Text,
        progress -> Text,
        node_id -> Text,
        rows_total -> BigInt,
        accepted -> BigInt,
        rejected -> BigInt,
        duplicates -> BigInt,
        variables -> Text,
        error_message -> Nullable<Text>,
        created_at -> BigInt,
        updated_at -> BigInt,
        finished_at -> Nullable<BigInt>,
    }
}

diesel::table! {
    contact_list_contacts (list_id, phone) {
        list_id -> Text,
        phone -> Text,
        full_name -> Text,
        variables -> Text,
        row_no -> BigInt,
    }
}

diesel::table! {
    contact_list_rejects (list_id, row_no) {
        list_id -> Text,
        row_no -> BigInt,
        phone -> Text,
        reason -> Text,
    }
}

diesel::table! {
    suppressions (project_id, phone) {
        project_id -> Text,
        phone -> Text,
        reason -> Text,
        detail -> Nullable<Text>,
        created_at -> BigInt,
    }
}

diesel::table! {
    broadcasts (id) {
        id -> Text,
        project_id -> Text,
        name -> Text,
        template_id -> Text,
        language -> Text,
        kind -> Text,
        contact_list_id -> Nullable<Text>,
        session_ids -> Text,
        parameters -> Text,
        state -> Text,
        execute_type -> Text,
        send_at -> BigInt,
        pacing_min_ms -> BigInt,
        pacing_max_ms -> BigInt,
        daily_cap -> BigInt,
        recipients_total -> BigInt,
        created_at -> BigInt,
        updated_at -> BigInt,
        started_at -> Nullable<BigInt>,
        finished_at -> Nullable<BigInt>,
    }
}

diesel::table! {
    broadcast_recipients (broadcast_id, seq) {
        broadcast_id -> Text,
        seq -> BigInt,
        phone -> Text,
        full_name -> Text,
        variables -> Text,
        session_slot -> Integer,
        state -> Text,
        available_at -> BigInt,
        claimed_by -> Nullable<Text>,
        claim_expires_at -> Nullable<BigInt>,
        message_id -> Nullable<Text>,
        error_code -> Nullable<Text>,
        error_message -> Nullable<Text>,
        held_reason -> Nullable<Text>,
        created_at -> BigInt,
        updated_at -> BigInt,
    }
}

diesel::table! {
    session_pacing (device_id) {
        device_id -> Text,
        next_at -> BigInt,
        day -> Text,
        sent_today -> BigInt,
        new_today -> BigInt,
        last_sent_at -> BigInt,
    }
}

diesel::table! {
    send_policies (project_id) {
        project_id -> Text,
        min_gap_ms -> BigInt,
        max_gap_ms -> BigInt,
        daily_cap -> BigInt,
        new_contact_cap -> BigInt,
        warmup_days -> Integer,
        warmup_start_pct -> Integer,
        quiet_start_min -> Nullable<Integer>,
        quiet_end_min -> Nullable<Integer>,
        utc_offset_min -> Integer,
        typing -> Bool,
        typing_min_ms -> BigInt,
        typing_max_ms -> BigInt,
        all_messages -> Bool,
        updated_at -> BigInt,
    }
}

diesel::joinable!(broadcast_recipients -> broadcasts (broadcast_id));
diesel::allow_tables_to_appear_in_same_query!(broadcasts, broadcast_recipients, messages);

diesel::table! {
    broadcast_media (broadcast_id, url) {
        broadcast_id -> Text,
        url -> Text,
        state -> Text,
        media_id -> Nullable<Text>,
        attempts -> Integer,
        retry_at -> BigInt,
        claimed_by -> Nullable<Text>,
        error_code -> Nullable<Text>,
        error_message -> Nullable<Text>,
        updated_at -> BigInt,
    }
}

diesel::table! {
    number_checks (project_id, phone) {
        project_id -> Text,
        phone -> Text,
        on_whatsapp -> Bool,
        checked_at -> BigInt,
    }
}

diesel::joinable!(broadcast_media -> broadcasts (broadcast_id));
diesel::allow_tables_to_appear_in_same_query!(broadcast_media, broadcasts, media);

// --- account health (src/storage/health.rs) ---

diesel::table! {
    session_health (device_id) {
        device_id -> Text,
        project_id -> Text,
        health -> Text,
        reason -> Nullable<Text>,
        since -> BigInt,
        down_since -> Nullable<BigInt>,
        scan_from -> BigInt,
        updated_at -> BigInt,
    }
}

diesel::table! {
    broadcast_pauses (broadcast_id) {
        broadcast_id -> Text,
        paused_by -> Text,
        reason -> Nullable<Text>,
        since -> BigInt,
    }
}
