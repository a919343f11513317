//! Settings of the core. Each field's doc comment is its documentation;
//! `unimsg.example.toml` shows the defaults.

use serde::{Deserialize, Serialize};

/// How many sessions a user may hold at once.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DevicePolicy {
    /// Any number of sessions; a new login from the same platform and
    /// device replaces that device's session.
    Multi,
    /// One session per platform: a new login on a platform kicks the older
    /// session of that platform.
    #[default]
    OnePerPlatform,
    /// One session in all: a new login kicks every other session.
    Single,
}

/// `[keys]`: where the master key comes from.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct KeysConfig {
    /// A command whose standard output is the master key (base64 of 32
    /// bytes), run with `sh -c` at start: a KMS, Vault or HSM client. The
    /// key then never touches the disk. Empty: `UNIMSG_MASTER_KEY`, else
    /// `master.key` in the data directory. `UNIMSG_MASTER_KEY` wins over
    /// the command.
    pub master_key_command: String,
    /// A new data key replaces the one that seals when that one is older
    /// than this, in days.
    pub data_key_max_age_days: u64,
    /// … or has sealed this many contents on one node (AES-GCM with
    /// random nonces must stay far below 2^32 per key).
    pub data_key_max_seals: u64,
    /// How often each node reads the data and signing keys again (other
    /// nodes' rotations) and checks whether a data key is due, in
    /// seconds. A new data key seals three of these after it was made.
    pub refresh_interval_secs: u64,
}

impl Default for KeysConfig {
    fn default() -> Self {
        Self {
            master_key_command: String::new(),
            data_key_max_age_days: 30,
            data_key_max_seals: 1 << 28,
            refresh_interval_secs: 10,
        }
    }
}

impl KeysConfig {
    /// The data-key limits these settings make.
    pub fn data_key_limits(&self) -> crate::keys::DataKeyLimits {
        let refresh = self.refresh_interval_secs.max(1);
        crate::keys::DataKeyLimits {
            max_age: time::Duration::days(
                i64::try_from(self.data_key_max_age_days.max(1)).unwrap_or(i64::MAX / 86_400),
            ),
            max_seals: self.data_key_max_seals.max(1),
            activation: time::Duration::seconds(i64::try_from(refresh * 3).unwrap_or(i64::MAX)),
        }
    }
}

/// `[auth]`
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AuthConfig {
    /// Whether anyone may create an account with `POST /v1/auth/register`.
    pub registration_open: bool,
    /// Lifetime of access tokens (JWT), in seconds.
    pub access_ttl_secs: u64,
    /// Lifetime of refresh tokens, in seconds.
    pub refresh_ttl_secs: u64,
    /// `multi`, `one_per_platform` or `single`.
    pub device_policy: DevicePolicy,
    /// How long a QR login ticket stays valid, in seconds.
    pub qr_ttl_secs: u64,
    /// The server's public base URL for links in QR codes (e.g.
    /// `https://chat.example.com`); empty to use the listening address
    /// (never the request's `Host` header, which a client chooses).
    pub public_url: String,
    /// Whether WebSocket and SSE accept the access token as
    /// `?access_token=`. A URL ends up in proxy and server logs; with
    /// `false` the token must come in the `Authorization` header or, on
    /// a WebSocket, in the first frame.
    pub allow_query_token: bool,
    /// A `credential_stuffing` alert fires when failed password logins
    /// from one address name this many accounts within
    /// `stuffing_window_secs` (0: never).
    pub stuffing_accounts: usize,
    pub stuffing_window_secs: u64,
    /// Whether a sign-in from a device and an address the user never used
    /// puts a "New sign-in" notification in their system conversation
    /// (the audit entry and the `security.alert` event happen anyway).
    pub new_device_notice: bool,
}

impl Default for AuthConfig {
    fn default() -> Self {
        Self {
            registration_open: true,
            access_ttl_secs: 900,
            refresh_ttl_secs: 30 * 24 * 3600,
            device_policy: DevicePolicy::OnePerPlatform,
            qr_ttl_secs: 300,
            public_url: String::new(),
            allow_query_token: true,
            stuffing_accounts: 20,
            stuffing_window_secs: 600,
            new_device_notice: true,
        }
    }
}

/// `[messaging]`
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MessagingConfig {
    /// Largest message `content`, in bytes of JSON.
    pub max_content_bytes: usize,
    /// How long after sending a sender may recall a message, in seconds.
    pub recall_window_secs: u64,
    /// Largest page of `GET /v1/sync` and history.
    pub max_page: u32,
    /// Direct messages only between friends.
    pub require_friendship: bool,
}

impl Default for MessagingConfig {
    fn default() -> Self {
        Self {
            max_content_bytes: 64 * 1024,
            recall_window_secs: 120,
            max_page: 1000,
            require_friendship: false,
        }
    }
}

/// `[delivery]`
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DeliveryConfig {
    /// Interval of server heartbeats (WebSocket ping, SSE comment), in seconds.
    pub heartbeat_secs: u64,
    /// A WebSocket that sends nothing (not even a pong) for this long is closed, in seconds.
    pub idle_timeout_secs: u64,
    /// Time a WebSocket has to authenticate with its first frame, in seconds.
    pub auth_timeout_secs: u64,
    /// Events queued per connection before it counts as a slow consumer and is disconnected.
    pub outbound_queue: usize,
    /// Largest WebSocket message (and frame) a client may send, in bytes.
    pub ws_max_message_bytes: usize,
    /// WebSocket read buffer, allocated per connection, in bytes (at least
    /// 256); writes are gathered up to 8 times this before a socket write.
    pub ws_buffer_bytes: usize,
    /// Most live connections (WebSocket and SSE together) one session may
    /// hold on this node; one more is refused with 429. 0: no cap.
    pub max_connections_per_session: usize,
    /// `send` frames one WebSocket may have in flight: they are checked
    /// and committed together, stored in the order they arrived, and
    /// answered as each completes. The socket is not read while the
    /// window is full. 1: one at a time.
    pub ws_send_window: usize,
}

impl Default for DeliveryConfig {
    fn default() -> Self {
        Self {
            heartbeat_secs: 25,
            idle_timeout_secs: 75,
            auth_timeout_secs: 10,
            outbound_queue: 1024,
            ws_max_message_bytes: 128 * 1024,
            ws_buffer_bytes: 512,
            max_connections_per_session: 16,
            ws_send_window: 64,
        }
    }
}

/// `[admin]`: the admin API for business systems.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AdminConfig {
    /// CIDRs allowed to call `/v1/admin/*`; empty allows every address.
    pub ip_allowlist: Vec<ipnet::IpNet>,
    /// Proxies whose `X-Forwarded-For` is believed (CIDRs), for the admin
    /// allowlist and every per-IP limit (user routes too). Entries are
    /// walked from the right through trusted proxies; the first untrusted
    /// one is the client, and one that does not parse makes the client
    /// unknown (refused by the allowlist, limited under one shared key).
    pub trusted_proxies: Vec<ipnet::IpNet>,
    /// Refuse admin requests without `X-Nonce` and `X-Timestamp`.
    pub require_nonce: bool,
    /// Refuse admin requests that did not arrive over TLS: on this
    /// server's own TLS listener, or from a trusted proxy that says
    /// `X-Forwarded-Proto: https`.
    pub require_tls: bool,
    /// Refuse admin requests that are not signed (`X-Signature` over the
    /// method, path, `X-Timestamp`, `X-Nonce` and body, with the admin's
    /// signing secret); implies `require_nonce`. `POST /v1/admin/token`
    /// is exempt (its credential is in its body).
    pub require_signature: bool,
    /// How far `X-Timestamp` may be from now, and how long a nonce is remembered, in seconds.
    pub nonce_window_secs: u64,
    /// Most nonces remembered at once. A nonce is never forgotten inside
    /// its window: when the store is full, new nonces are refused (503
    /// `busy`) until old ones expire.
    pub nonce_capacity: usize,
    /// Most unexpired nonces of one admin credential, so that one credential
    /// cannot fill the store for the others (refused with 503 `busy`).
    pub nonce_per_credential: usize,
    /// Refused admin requests without a valid credential are audited one
    /// row per source and interval: the first at once, then an
    /// `admin.refused` row with the count of the rest. In seconds.
    pub refusal_audit_interval_secs: u64,
    /// Lifetime of admin tokens from `POST /v1/admin/token`, in seconds.
    pub token_ttl_secs: u64,
    /// Shortest admin secret, in bytes (at least 12). Secrets on a small
    /// deny-list, of one repeated character or equal to the admin id are
    /// refused too.
    pub min_secret_length: usize,
    /// Most recipients of one targeted message.
    pub max_recipients: usize,
    /// How often each node verifies the audit log entries appended since
    /// its last check (and that the last checked entry is unchanged), in
    /// seconds; a failure raises an `audit_chain_broken` alert. 0: never.
    pub audit_verify_interval_secs: u64,
    /// After each periodic check that finds the chain intact, its head
    /// (`SEQ:HASH`) is written to this file (empty: nowhere). Keep it
    /// where the database's writers cannot reach, and check with
    /// `unimsg audit verify --head`.
    pub audit_head_file: std::path::PathBuf,
}

impl Default for AdminConfig {
    fn default() -> Self {
        Self {
            ip_allowlist: Vec::new(),
            trusted_proxies: Vec::new(),
            require_nonce: false,
            require_tls: false,
            require_signature: false,
            nonce_window_secs: 300,
            nonce_capacity: 100_000,
            nonce_per_credential: 25_000,
            refusal_audit_interval_secs: 60,
            token_ttl_secs: 900,
            min_secret_length: 12,
            max_recipients: 100_000,
            audit_verify_interval_secs: 600,
            audit_head_file: std::path::PathBuf::new(),
        }
    }
}

/// `[groups]`
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct GroupsConfig {
    /// Most members of one group.
    pub max_members: usize,
    /// Users may put only their friends into a group (when creating it or
    /// adding members); joining an open group is unchanged, and the admin
    /// API is not bound by it. Off: anyone not blocked either way.
    pub add_requires_friendship: bool,
}

impl Default for GroupsConfig {
    fn default() -> Self {
        Self {
            max_members: 2000,
            add_requires_friendship: false,
        }
    }
}

/// `[hooks]`: webhooks and the before-send hook.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct HooksConfig {
    /// Allow webhook and before-send URLs on loopback, private,
    /// link-local and metadata addresses (off: refused at registration
    /// and at every delivery).
    pub allow_private_targets: bool,
    /// Deadline of one delivery attempt, connection included, in ms.
    pub timeout_ms: u64,
    /// Most attempts in flight to one endpoint at a time.
    pub max_in_flight: usize,
    /// Ended deliveries (and their events) are deleted after this many days.
    pub retention_days: u64,
    /// An endpoint whose every attempt failed for this many hours is
    /// disabled (audited, with a `security.alert`).
    pub disable_after_hours: u64,
    /// After a secret rotation the old secret signs too, for this long.
    pub secret_overlap_secs: u64,
    /// The waits before the 2nd, 3rd, … attempt, in seconds (each ±20 %
    /// jitter; a longer `Retry-After` wins). After the last, `failed`.
    pub retry_schedule_secs: Vec<u64>,
    /// How often a node looks for due deliveries (retries, other nodes'
    /// events), in ms. Its own new events are sent at once.
    pub poll_interval_ms: u64,
    pub before_send: BeforeSendConfig,
}

impl Default for HooksConfig {
    fn default() -> Self {
        Self {
            allow_private_targets: false,
            timeout_ms: 10_000,
            max_in_flight: 8,
            retention_days: 7,
            disable_after_hours: 72,
            secret_overlap_secs: 86_400,
            retry_schedule_secs: vec![5, 30, 120, 600, 1800, 3600, 10_800, 21_600, 43_200, 86_400],
            poll_interval_ms: 1000,
            before_send: BeforeSendConfig::default(),
        }
    }
}

/// `[hooks.before_send]`: a synchronous check of every user message
/// before it is stored. Off while `url` is empty.
#[derive(Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct BeforeSendConfig {
    pub url: String,
    /// How long a send waits for the answer, in ms.
    pub timeout_ms: u64,
    /// What a timeout, an error or an unreadable answer means.
    pub on_failure: OnFailure,
    /// The message kinds checked (default: all).
    pub kinds: Vec<unimsg_proto::api::MessageKind>,
    /// Signs the requests like webhooks (`whsec_…`); unsigned when empty.
    pub secret: String,
}

impl Default for BeforeSendConfig {
    fn default() -> Self {
        Self {
            url: String::new(),
            timeout_ms: 2000,
            on_failure: OnFailure::Allow,
            kinds: unimsg_proto::api::MessageKind::ALL.to_vec(),
            secret: String::new(),
        }
    }
}

impl std::fmt::Debug for BeforeSendConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BeforeSendConfig")
            .field("url", &self.url)
            .field("timeout_ms", &self.timeout_ms)
            .field("on_failure", &self.on_failure)
            .field("kinds", &self.kinds)
            .field(
                "secret",
                &if self.secret.is_empty() {
                    ""
                } else {
                    "[redacted]"
                },
            )
            .finish()
    }
}

/// What the before-send hook's failure means for the message.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OnFailure {
    /// Fail open: store and deliver it.
    Allow,
    /// Fail closed: refuse it (403 `rejected`).
    Reject,
}

/// The core's part of the configuration.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct CoreConfig {
    pub keys: KeysConfig,
    pub auth: AuthConfig,
    pub messaging: MessagingConfig,
    pub delivery: DeliveryConfig,
    pub admin: AdminConfig,
    pub limits: crate::limits::LimitsConfig,
    pub groups: GroupsConfig,
    pub hooks: HooksConfig,
}
