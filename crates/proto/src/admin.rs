//! Bodies of the admin API (`/v1/admin/...`), used by business systems.

use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

use crate::error::ErrorDetail;
use crate::ids::{GroupId, MessageId, Platform, UserId};

wire_names! {
    /// What an admin credential may do.
    #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
    #[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
    pub enum Scope {
        UsersRead = "users:read",
        UsersWrite = "users:write",
        TokensMint = "tokens:mint",
        MessagesSend = "messages:send",
        AuditRead = "audit:read",
        /// Webhook endpoints and their deliveries.
        Webhooks = "webhooks",
        /// Everything.
        Admin = "admin",
    }
}

/// `POST /v1/admin/token`
#[derive(Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct AdminTokenRequest {
    pub admin_id: String,
    /// The admin's secret (`secret` is accepted as an older name).
    #[serde(rename = "password", alias = "secret")]
    pub secret: String,
}

impl std::fmt::Debug for AdminTokenRequest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AdminTokenRequest")
            .field("admin_id", &self.admin_id)
            .field("secret", &"[redacted]")
            .finish()
    }
}

#[derive(Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct AdminToken {
    pub token: String,
    pub expires_in: u64,
    pub scopes: Vec<Scope>,
}

impl std::fmt::Debug for AdminToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AdminToken")
            .field("token", &"[redacted]")
            .field("scopes", &self.scopes)
            .finish()
    }
}

/// `POST /v1/admin/admins`: another admin account with its scopes.
#[derive(Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct NewAdminRequest {
    pub admin_id: String,
    pub secret: String,
    pub scopes: Vec<Scope>,
}

impl std::fmt::Debug for NewAdminRequest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NewAdminRequest")
            .field("admin_id", &self.admin_id)
            .field("secret", &"[redacted]")
            .field("scopes", &self.scopes)
            .finish()
    }
}

/// One user of `POST /v1/admin/users`. Items are parsed one by one, so a
/// bad item fails alone.
#[derive(Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct ImportUser {
    pub user_id: UserId,
    /// Defaults to the user id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub username: Option<String>,
    pub display_name: String,
    /// Without a password the user can only log in with minted tokens.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub password: Option<String>,
}

impl std::fmt::Debug for ImportUser {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ImportUser")
            .field("user_id", &self.user_id)
            .field("username", &self.username)
            .field("display_name", &self.display_name)
            .field("password", &self.password.as_ref().map(|_| "[redacted]"))
            .finish()
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ImportRequest {
    /// Users to create, each parsed on its own: a malformed item fails
    /// alone and is reported in `results`.
    #[cfg_attr(feature = "openapi", schema(value_type = Vec<ImportUser>))]
    pub users: Vec<serde_json::Value>,
}

/// The outcome of one imported item, in request order.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ImportResult {
    pub index: usize,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user_id: Option<String>,
    pub ok: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<ErrorDetail>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ImportResponse {
    pub imported: usize,
    pub failed: usize,
    pub results: Vec<ImportResult>,
}

/// A user as the admin API shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct AdminUser {
    pub user_id: UserId,
    pub username: String,
    pub display_name: String,
    /// `active` or `disabled`.
    pub status: String,
    pub has_password: bool,
    #[serde(with = "time::serde::rfc3339")]
    pub created_at: OffsetDateTime,
}

/// One page of `GET /v1/admin/users?query=`: users by id.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct UserPage {
    pub users: Vec<AdminUser>,
    /// Pass as `after` for the next page; absent on the last page.
    pub next_after: Option<UserId>,
}

/// `PATCH /v1/admin/users/{id}`: fields to change.
#[derive(Clone, Default, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct UserPatch {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub display_name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub password: Option<String>,
    /// `active` or `disabled`; disabling revokes every session at once.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<String>,
}

impl std::fmt::Debug for UserPatch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UserPatch")
            .field("display_name", &self.display_name)
            .field("password", &self.password.as_ref().map(|_| "[redacted]"))
            .field("status", &self.status)
            .finish()
    }
}

/// `POST /v1/admin/users/{id}/tokens`
#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct MintRequest {
    pub platform: Platform,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub device_id: Option<String>,
    /// Lifetime of the access token, in seconds (default: `auth.access_ttl_secs`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ttl_secs: Option<u64>,
}

/// `POST /v1/admin/users/{id}/logout`
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct ForceLogoutRequest {
    /// Only this platform's sessions; all when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub platform: Option<Platform>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ForceLogoutResponse {
    pub revoked: usize,
}

/// Who a targeted message goes to.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields, rename_all = "snake_case")]
pub enum Target {
    Users(Vec<UserId>),
    Group(GroupId),
}

/// `POST /v1/admin/messages`
#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct NotifyRequest {
    pub to: Target,
    /// `notification` (default), `event` or `status`.
    #[serde(default = "notification_kind")]
    pub kind: String,
    pub content: serde_json::Value,
    /// Shown as the sender; defaults to `system`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub from: Option<String>,
}

fn notification_kind() -> String {
    "notification".into()
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct NotifyResponse {
    pub message_id: MessageId,
    pub recipients: usize,
}

/// `GET /v1/admin/messages/{id}/status`
#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct MessageStatus {
    pub message_id: MessageId,
    pub recipients: u64,
    /// Recipients who had a WebSocket or SSE connection open (on any node)
    /// right after it was pushed: it went to them live, unless the
    /// cluster bus dropped the push under load (`unimsg_bus_dropped_total`).
    /// The others get it when they next sync. Sent live is not delivered:
    /// only a client's acknowledgement says it arrived.
    pub sent_live: u64,
    /// Recipients whose client acknowledged it (`ack` up to its seq) or
    /// read it (reading implies delivery).
    pub delivered: u64,
    pub read: u64,
    /// One page of per-recipient state, by user id.
    pub users: Vec<RecipientStatus>,
    /// Pass as `after` for the next page.
    pub next_after: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct RecipientStatus {
    pub user_id: UserId,
    pub sent_live: bool,
    pub delivered: bool,
    pub read: bool,
}

/// One entry of the audit log.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct AuditEntry {
    pub id: u64,
    #[serde(with = "time::serde::rfc3339")]
    pub at: OffsetDateTime,
    /// What happened, who did it, from where: the hashed content.
    pub record: serde_json::Value,
    /// Hex SHA-256 of this entry, chained to the previous one.
    pub hash: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct AuditPage {
    pub entries: Vec<AuditEntry>,
    pub next_after: Option<u64>,
}

/// One user of `GET /v1/admin/presence`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct UserPresence {
    pub user_id: UserId,
    pub online: bool,
    /// Platforms with at least one live WebSocket or SSE connection.
    pub platforms: Vec<Platform>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct PresenceResponse {
    pub users: Vec<UserPresence>,
}

/// One node of the deployment, as it last reported itself (every few
/// seconds): `GET /v1/admin/nodes`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct NodeStatus {
    /// `bus.node_id` (random per start when not set); `local` on a single
    /// node without one.
    pub node_id: String,
    /// The server's version.
    pub version: String,
    #[serde(with = "time::serde::rfc3339")]
    pub started_at: OffsetDateTime,
    /// When this report was made; a node that stopped reporting keeps its
    /// last report for a minute.
    #[serde(with = "time::serde::rfc3339")]
    pub reported_at: OffsetDateTime,
    /// Live WebSocket and SSE connections on the node.
    pub connections: u64,
    /// Users with at least one live connection on the node.
    pub online_users: u64,
    /// Live connections by transport and platform (common platform names;
    /// any other is `other`).
    pub live: Vec<LiveCount>,
    /// Totals since the node started, by their `/metrics` series name
    /// (`unimsg_messages_sent_total`, `unimsg_login_failures_total`, …).
    pub totals: std::collections::BTreeMap<String, u64>,
    /// Whether the node's store answered when it reported.
    pub store_ok: bool,
}

/// Live connections of one transport and platform.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct LiveCount {
    /// `ws` or `sse`.
    pub transport: String,
    pub platform: String,
    pub connections: u64,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct NodeList {
    /// Every node that reported in the last minute, by node id.
    pub nodes: Vec<NodeStatus>,
}

/// `POST /v1/admin/broadcasts`: an announcement to every user.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct BroadcastRequest {
    /// `notification` (default), `event` or `status`.
    #[serde(default = "notification_kind")]
    pub kind: String,
    pub content: serde_json::Value,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub from: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct BroadcastResponse {
    pub message_id: MessageId,
    /// Position in the global broadcast stream.
    pub broadcast_seq: u64,
}

/// `POST /v1/admin/qr/{ticket_id}/confirm`: log the waiting page in as this
/// user, verified by the business system elsewhere.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct AdminQrConfirm {
    pub user_id: UserId,
}

/// `GET /.well-known/jwks.json`: the public keys that verify unimsg's
/// access tokens (RFC 7517). A token's `kid` names its key.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct JwkSet {
    pub keys: Vec<Jwk>,
}

/// One Ed25519 public key (RFC 8037).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Jwk {
    /// `OKP`.
    pub kty: String,
    /// `Ed25519`.
    pub crv: String,
    /// The public key, base64url.
    pub x: String,
    /// The key's RFC 7638 thumbprint.
    pub kid: String,
    /// `EdDSA`.
    pub alg: String,
    /// `sig`.
    #[serde(rename = "use")]
    pub key_use: String,
}

/// `POST /v1/admin/keys/signing/rotate`: the key that signs from now on.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct SigningKeyInfo {
    pub kid: String,
    #[serde(with = "time::serde::rfc3339")]
    pub created_at: OffsetDateTime,
}

/// `POST /v1/admin/keys/master/rotate`
#[derive(Clone, Default, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct RotateMasterRequest {
    /// The new master key, base64 of 32 bytes. Needed when the key comes
    /// from `UNIMSG_MASTER_KEY` or `keys.master_key_command`; with
    /// `master.key` the server makes one when this is absent.
    #[serde(default)]
    pub new_master_key: Option<String>,
}

impl std::fmt::Debug for RotateMasterRequest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RotateMasterRequest")
            .field(
                "new_master_key",
                &self.new_master_key.as_ref().map(|_| "[redacted]"),
            )
            .finish()
    }
}

/// The outcome of a master-key rotation.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct MasterRotated {
    /// Stored keys (data and signing keys) wrapped again under the new
    /// master key; 0 when a finished rotation is asked again.
    pub rewrapped: u64,
    /// Where the new key is: `master.key` (written there), or
    /// `UNIMSG_MASTER_KEY` / `keys.master_key_command`, which the operator
    /// must now change on every node before it starts again.
    pub key_source: String,
}

/// `POST /v1/admin/keys/data/rotate`: the new data key.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct DataKeyRotated {
    pub key_id: u32,
    /// When it starts sealing: every node reads it first.
    #[serde(with = "time::serde::rfc3339")]
    pub seals_from: OffsetDateTime,
}

/// An admin account as `GET /v1/admin/admins` lists it (never its secret).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct AdminInfo {
    pub admin_id: String,
    pub scopes: Vec<Scope>,
    pub disabled: bool,
    #[serde(with = "time::serde::rfc3339")]
    pub created_at: OffsetDateTime,
}

/// `GET /v1/admin/admins`
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct AdminList {
    pub admins: Vec<AdminInfo>,
}

/// `PATCH /v1/admin/admins/{id}`: any change revokes the account's admin
/// tokens at once, on every node.
#[derive(Clone, Default, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct AdminPatch {
    /// A new secret; an admin may change its own with any scope.
    #[serde(default)]
    pub secret: Option<String>,
    #[serde(default)]
    pub scopes: Option<Vec<Scope>>,
    #[serde(default)]
    pub disabled: Option<bool>,
}

impl std::fmt::Debug for AdminPatch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AdminPatch")
            .field("secret", &self.secret.as_ref().map(|_| "[redacted]"))
            .field("scopes", &self.scopes)
            .field("disabled", &self.disabled)
            .finish()
    }
}

/// `POST /v1/admin/admins/{id}/keys`
#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct NewAdminKey {
    /// Lifetime in seconds, 60 to 31,536,000 (a year).
    pub expires_in: u64,
    /// At most the admin's own scopes; default: all of them.
    #[serde(default)]
    pub scopes: Option<Vec<Scope>>,
}

/// A new API key: `key` is shown in this answer only. Send it as
/// `Authorization: Bearer <key>`.
#[derive(Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct AdminKeyCreated {
    pub key_id: String,
    pub key: String,
    pub scopes: Vec<Scope>,
    #[serde(with = "time::serde::rfc3339")]
    pub expires_at: OffsetDateTime,
}

impl std::fmt::Debug for AdminKeyCreated {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AdminKeyCreated")
            .field("key_id", &self.key_id)
            .field("key", &"[redacted]")
            .field("scopes", &self.scopes)
            .finish()
    }
}

/// An API key as listed (never the key itself).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct AdminKeyInfo {
    pub key_id: String,
    pub scopes: Vec<Scope>,
    #[serde(with = "time::serde::rfc3339")]
    pub created_at: OffsetDateTime,
    #[serde(with = "time::serde::rfc3339")]
    pub expires_at: OffsetDateTime,
    #[serde(with = "time::serde::rfc3339::option", default)]
    pub last_used_at: Option<OffsetDateTime>,
    #[serde(default)]
    pub last_used_ip: Option<String>,
    #[serde(with = "time::serde::rfc3339::option", default)]
    pub revoked_at: Option<OffsetDateTime>,
}

/// `GET /v1/admin/admins/{id}/keys`
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct AdminKeyList {
    pub keys: Vec<AdminKeyInfo>,
}

/// `POST /v1/admin/admins/{id}/signing-secret`: the secret that signs the
/// account's requests, shown in this answer only.
#[derive(Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct SigningSecret {
    pub signing_secret: String,
}

impl std::fmt::Debug for SigningSecret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SigningSecret([redacted])")
    }
}

/// `GET /v1/admin/audit/head`: the newest entry of the audit chain. Kept
/// elsewhere, it shows later whether the newest entries were removed
/// (`unimsg audit verify --head SEQ:HASH`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct AuditHead {
    /// Entries in the chain (the newest one's number); 0 for none.
    pub seq: u64,
    /// The newest entry's hash, hex.
    pub hash: String,
    /// `SEQ:HASH`, as `unimsg audit verify --head` takes it.
    pub head: String,
}

/// `GET /v1/admin/audit/verify`: the whole chain walked on the server.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct AuditVerification {
    /// Whether every entry is in place, unchanged and keyed (and the
    /// exported head given as `?head=` is still there).
    pub intact: bool,
    /// The head when intact, `SEQ:HASH`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub head: Option<String>,
    /// Entries verified (the head's number) when intact.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub entries: Option<u64>,
    /// Where the chain breaks, naming the first entry that does not fit.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub broken: Option<String>,
}
