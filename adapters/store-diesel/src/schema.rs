//! The tables, as diesel sees them. One definition for both backends: the
//! DDL differs (see `migrations/{sqlite,postgres}/`), the columns do not.

diesel::table! {
    users (id) {
        id -> Text,
        name -> Text,
        display_name -> Text,
        email -> Text,
        role -> Text,
        password_hash -> Nullable<Text>,
        created_at -> BigInt,
    }
}

diesel::table! {
    tokens (id) {
        seq -> BigInt,
        id -> Text,
        user_id -> Nullable<Text>,
        machine_id -> Nullable<Text>,
        name -> Text,
        secret_hash -> Binary,
        created_at -> BigInt,
        expires_at -> Nullable<BigInt>,
        revoked_at -> Nullable<BigInt>,
    }
}

diesel::table! {
    images (id) {
        seq -> BigInt,
        id -> Text,
        owner_id -> Text,
        name -> Text,
        disk -> Text,
        size -> BigInt,
        metadata -> Text,
        visibility -> Text,
        created_at -> BigInt,
        next_version -> BigInt,
    }
}

diesel::table! {
    image_shares (image_id, position) {
        image_id -> Text,
        position -> Integer,
        user_id -> Text,
    }
}

diesel::table! {
    versions (image_id, number) {
        image_id -> Text,
        number -> BigInt,
        size -> BigInt,
        root -> Binary,
        data_chunks -> BigInt,
        added_bytes -> BigInt,
        created_by -> Text,
        created_at -> BigInt,
        source -> Text,
        source_job -> Nullable<Text>,
        note -> Nullable<Text>,
        manifest -> Binary,
    }
}

diesel::table! {
    uploads (id) {
        id -> Text,
        image_id -> Text,
        created_by -> Text,
        manifest -> Nullable<Binary>,
        source -> Text,
        source_job -> Nullable<Text>,
        started_at -> BigInt,
        last_active -> BigInt,
        added_bytes -> BigInt,
    }
}

diesel::table! {
    setups (id) {
        seq -> BigInt,
        id -> Text,
        owner_id -> Text,
        name -> Text,
        created_at -> BigInt,
        updated_at -> BigInt,
    }
}

diesel::table! {
    setup_entries (setup_id, position) {
        setup_id -> Text,
        position -> Integer,
        image_id -> Text,
        version -> Text,
        disk -> Nullable<Text>,
        capture -> Bool,
    }
}

diesel::table! {
    machines (id) {
        id -> Text,
        mac -> Text,
        name -> Text,
        arch -> Text,
        pool -> Nullable<Text>,
        state -> Text,
        inventory -> Nullable<Text>,
        last_seen -> Nullable<BigInt>,
        created_at -> BigInt,
        power -> Nullable<Text>,
        neutral -> Nullable<Text>,
    }
}

diesel::table! {
    jobs (id) {
        seq -> BigInt,
        id -> Text,
        machine_id -> Text,
        owner_id -> Text,
        setup_id -> Nullable<Text>,
        state -> Text,
        progress_phase -> Text,
        progress_done -> BigInt,
        progress_total -> BigInt,
        progress_rate -> BigInt,
        error -> Nullable<Text>,
        created_at -> BigInt,
        started_at -> Nullable<BigInt>,
        finished_at -> Nullable<BigInt>,
        session -> Nullable<Text>,
    }
}

diesel::table! {
    job_entries (job_id, position) {
        job_id -> Text,
        position -> Integer,
        image_id -> Text,
        version -> BigInt,
        disk -> Text,
        capture -> Bool,
    }
}

diesel::table! {
    job_events (seq) {
        seq -> BigInt,
        job_id -> Text,
        at -> BigInt,
        kind -> Text,
        message -> Text,
    }
}

diesel::table! {
    machine_events (seq) {
        seq -> BigInt,
        machine_id -> Text,
        at -> BigInt,
        kind -> Text,
        message -> Text,
    }
}

diesel::table! {
    placements (seq) {
        seq -> BigInt,
        id -> Text,
        owner_id -> Text,
        state -> Text,
        request -> Text,
        machine_id -> Nullable<Text>,
        error -> Nullable<Text>,
        created_at -> BigInt,
        finished_at -> Nullable<BigInt>,
    }
}

diesel::table! {
    settings (key) {
        key -> Text,
        value -> Text,
    }
}

diesel::allow_tables_to_appear_in_same_query!(
    users,
    tokens,
    images,
    image_shares,
    versions,
    uploads,
    setups,
    setup_entries,
    machines,
    jobs,
    job_entries,
    job_events,
    placements,
    settings,
    machine_events,
);
