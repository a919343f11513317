//! Every metric series the server exports, with the help text `/metrics`
//! shows for it (`# HELP`). [`describe`] registers them all once the
//! recorder is installed; a series that is not yet counted appears only
//! when first used, with its help text from here.

/// Counters: name and what one increment means.
const COUNTERS: &[(&str, &str)] = &[
    (
        "unimsg_http_requests_total",
        "HTTP requests answered, by route template and status.",
    ),
    (
        "unimsg_logins_total",
        "Sign-ins by method (password, qr) and result (ok, failed).",
    ),
    (
        "unimsg_login_failures_total",
        "Failed password sign-ins, by reason.",
    ),
    (
        "unimsg_messages_sent_total",
        "Direct and group messages stored.",
    ),
    ("unimsg_group_messages_total", "Group messages stored."),
    ("unimsg_groups_created_total", "Groups created."),
    ("unimsg_notifications_total", "Admin notifications stored."),
    ("unimsg_broadcasts_total", "Admin broadcasts stored."),
    (
        "unimsg_broadcasts_placed_total",
        "Broadcasts this node placed in its connections' streams with one store read.",
    ),
    (
        "unimsg_broadcast_stream_reads_total",
        "Connections that read their stream from the store for a broadcast that was not placed for them.",
    ),
    (
        "unimsg_changes_total",
        "Relationship and group changes, by type.",
    ),
    (
        "unimsg_rate_limited_total",
        "Requests refused by a rate limit, by limit.",
    ),
    (
        "unimsg_limits_unavailable_total",
        "Rate-limit checks that could not reach the shared limiter.",
    ),
    (
        "unimsg_password_busy_total",
        "Password checks refused because the hashing pool was full (503).",
    ),
    (
        "unimsg_refresh_token_reuse_total",
        "Refresh tokens presented again after rotation (the session is revoked).",
    ),
    (
        "unimsg_revoked_token_use_total",
        "Valid access tokens of revoked sessions presented.",
    ),
    (
        "unimsg_security_alerts_total",
        "Security alerts raised, by alert.",
    ),
    (
        "unimsg_admin_refusals_total",
        "Refused admin requests, by status and cause.",
    ),
    (
        "unimsg_admin_refused_total",
        "Refused admin requests counted before their audit entry.",
    ),
    (
        "unimsg_replay_store_full_total",
        "Admin requests refused because the nonce store was full, by scope.",
    ),
    (
        "unimsg_qr_refusals_total",
        "Refused QR-login steps, by step and reason.",
    ),
    (
        "unimsg_tls_handshake_failures_total",
        "TLS handshakes that failed.",
    ),
    (
        "unimsg_http_connections_refused_total",
        "Connections closed at once by a connection cap, by cap.",
    ),
    (
        "unimsg_session_connections_refused_total",
        "Live connections refused because their session had too many.",
    ),
    (
        "unimsg_before_send_decisions_total",
        "Before-send hook answers, by decision.",
    ),
    (
        "unimsg_webhook_attempts_total",
        "Webhook delivery attempts, by result.",
    ),
    (
        "unimsg_bus_disconnects_total",
        "Disconnections from the cluster bus (Redis).",
    ),
    (
        "unimsg_bus_dropped_total",
        "Live-delivery batches the cluster bus could not publish (clients catch up by sync).",
    ),
];

/// Gauges: name and what the value is.
const GAUGES: &[(&str, &str)] = &[
    (
        "unimsg_live_connections",
        "Live WebSocket and SSE connections of signed-in users, by transport (ws, sse) and platform (common names, else other).",
    ),
    (
        "unimsg_http_connections",
        "Open HTTP connections (WebSocket and SSE included).",
    ),
    (
        "unimsg_webhook_pending",
        "Webhook deliveries waiting, by endpoint.",
    ),
];

/// Histograms (seconds): name and what is timed.
const HISTOGRAMS: &[(&str, &str)] = &[
    (
        "unimsg_http_request_duration_seconds",
        "Time to answer an HTTP request, by route template.",
    ),
    (
        "unimsg_before_send_seconds",
        "Time the before-send hook took to answer.",
    ),
    (
        "unimsg_group_fanout_publish_seconds",
        "Time to hand a group message's deliveries to the bus.",
    ),
    (
        "unimsg_webhook_delivery_seconds",
        "Time a webhook endpoint took to answer.",
    ),
    (
        "unimsg_store_duration_seconds",
        "Time a store call took, waiting included, by call (read, write; statement: PostgreSQL only).",
    ),
    (
        "unimsg_bus_duration_seconds",
        "Time a round trip to the cluster bus (Redis) took, by call (publish, broadcast, presence).",
    ),
];

/// The bucket bounds of every histogram, in seconds.
pub const BUCKETS: &[f64] = &[
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

/// The bucket bounds of the store's and the bus's histograms, in seconds:
/// their calls take tens of microseconds to a few milliseconds.
pub const FINE_BUCKETS: &[f64] = &[
    0.00001, 0.000025, 0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05,
    0.1, 0.25, 1.0,
];

/// The series that use [`FINE_BUCKETS`].
pub const FINE_SERIES: &[&str] = &[
    "unimsg_store_duration_seconds",
    "unimsg_bus_duration_seconds",
];

/// The names of every series described here.
pub fn names() -> impl Iterator<Item = &'static str> {
    COUNTERS
        .iter()
        .chain(GAUGES)
        .chain(HISTOGRAMS)
        .map(|(name, _)| *name)
}

/// Registers the help text of every series with the installed recorder.
pub fn describe() {
    for (name, help) in COUNTERS {
        metrics::describe_counter!(*name, *help);
    }
    for (name, help) in GAUGES {
        metrics::describe_gauge!(*name, *help);
    }
    for (name, help) in HISTOGRAMS {
        metrics::describe_histogram!(*name, metrics::Unit::Seconds, *help);
    }
}
