//! The admin API (`/v1/admin/*`) for business systems and operators:
//! [`AdminClient`], authenticated with HTTP Basic or an admin token.
//!
//! ```no_run
//! # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! use unimsg_client::{AdminClient, AdminCredentials};
//! use unimsg_client::proto::admin::{NotifyRequest, Target};
//! use unimsg_client::proto::UserId;
//!
//! let admin = AdminClient::new(
//!     "http://127.0.0.1:8080",
//!     AdminCredentials::Basic { admin_id: "admin".into(), secret: "s3cret".into() },
//! )?
//! .with_replay_protection(true);
//! let sent = admin
//!     .with_operation_id("ticket-42")
//!     .notify(&NotifyRequest {
//!         to: Target::Users(vec![UserId::parse("alice")?]),
//!         kind: "notification".into(),
//!         content: serde_json::json!({"title": "Maintenance at 22:00"}),
//!         from: None,
//!     })
//!     .await?;
//! println!("{} recipients", sent.recipients);
//! # Ok(())
//! # }
//! ```

use std::fmt;
use std::time::{SystemTime, UNIX_EPOCH};

use reqwest::header::HeaderValue;
use reqwest::{Method, RequestBuilder};
use serde::Serialize;
use serde::de::DeserializeOwned;
use unimsg_proto::admin::{
    AdminInfo, AdminKeyCreated, AdminList, AdminPatch, AdminToken, AdminTokenRequest, AdminUser,
    AuditPage, BroadcastRequest, BroadcastResponse, ForceLogoutRequest, ForceLogoutResponse,
    ImportRequest, ImportResponse, MessageStatus, MintRequest, NewAdminKey, NewAdminRequest,
    NotifyRequest, NotifyResponse, PresenceResponse, SigningKeyInfo, SigningSecret, UserPatch,
};
use unimsg_proto::api::TokenPair;
use unimsg_proto::hooks::{
    CreateWebhook, DeliveryPage, DeliveryState, PatchWebhook, ReplayRequest, Requeued, Webhook,
    WebhookList, WebhookWithSecret,
};
use unimsg_proto::{MessageId, Platform, UserId};

use crate::client::{Client, success};
use crate::error::{ClientError, Result};

/// The most users the server takes in one `POST /v1/admin/users`; split
/// larger imports into batches of at most this many.
pub const MAX_IMPORT_BATCH: usize = 10_000;

/// How an admin authenticates.
#[derive(Clone)]
pub enum AdminCredentials {
    /// HTTP Basic `admin_id:secret`.
    Basic { admin_id: String, secret: String },
    /// An admin token from `POST /v1/admin/token` ([`Client::admin_token`]).
    Bearer(String),
}

impl fmt::Debug for AdminCredentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            AdminCredentials::Basic { admin_id, .. } => f
                .debug_struct("Basic")
                .field("admin_id", admin_id)
                .field("secret", &"[redacted]")
                .finish(),
            AdminCredentials::Bearer(_) => f.debug_tuple("Bearer").field(&"[redacted]").finish(),
        }
    }
}

/// Filters of `GET /v1/admin/audit`; the default is the first page of
/// everything.
#[derive(Debug, Clone, Default)]
pub struct AuditFilter {
    /// Entries with an id above this one.
    pub after: u64,
    /// Page size (server default 100, at most 1000).
    pub limit: Option<u32>,
    pub action: Option<String>,
    pub actor: Option<String>,
    pub operation_id: Option<String>,
}

/// A handle on the admin API of one server. Cheap to clone.
///
/// Every request carries the credentials, the operation id if one was set
/// ([`AdminClient::with_operation_id`], sent as `X-Operation-Id` and kept
/// in the audit log) and, with [`AdminClient::with_replay_protection`], a
/// fresh random `X-Nonce` with the current `X-Timestamp`.
#[derive(Clone)]
pub struct AdminClient {
    client: Client,
    credentials: AdminCredentials,
    operation_id: Option<String>,
    replay_protection: bool,
    /// Signs each request (`X-Signature`) when set.
    signing_secret: Option<String>,
}

impl fmt::Debug for AdminClient {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AdminClient")
            .field("client", &self.client)
            .field("credentials", &self.credentials)
            .field("operation_id", &self.operation_id)
            .field("replay_protection", &self.replay_protection)
            .field("signing", &self.signing_secret.is_some())
            .finish()
    }
}

impl Client {
    /// An admin handle on this server with `credentials`.
    pub fn admin(&self, credentials: AdminCredentials) -> AdminClient {
        AdminClient {
            client: self.clone(),
            credentials,
            operation_id: None,
            replay_protection: false,
            signing_secret: None,
        }
    }

    /// `POST /v1/admin/token`: trades an admin secret for a short-lived
    /// admin token, to use as [`AdminCredentials::Bearer`].
    pub async fn admin_token(&self, admin_id: &str, secret: &str) -> Result<AdminToken> {
        let req = AdminTokenRequest {
            admin_id: admin_id.to_owned(),
            secret: secret.to_owned(),
        };
        let resp = self
            .request(
                Method::POST,
                &["v1", "admin", "token"],
                &[],
                None,
                Some(&req),
            )?
            .send()
            .await?;
        let bytes = success(resp).await?.bytes().await?;
        Ok(serde_json::from_slice(&bytes)?)
    }
}

impl AdminClient {
    /// An admin handle on the server at `base_url` (see [`Client::new`]).
    pub fn new(base_url: &str, credentials: AdminCredentials) -> Result<AdminClient> {
        Ok(Client::new(base_url)?.admin(credentials))
    }

    /// The underlying client, for the user-facing API of the same server.
    pub fn client(&self) -> &Client {
        &self.client
    }

    /// A handle that sends `X-Operation-Id: id` with each request, so the
    /// audit log can be searched by it. At most 128 characters are kept.
    pub fn with_operation_id(&self, id: impl Into<String>) -> AdminClient {
        AdminClient {
            operation_id: Some(id.into()),
            ..self.clone()
        }
    }

    /// A handle that sends (or, with `false`, stops sending) a random
    /// `X-Nonce` and the current `X-Timestamp` with each request, as servers
    /// with `admin.require_nonce` demand.
    pub fn with_replay_protection(&self, on: bool) -> AdminClient {
        AdminClient {
            replay_protection: on,
            ..self.clone()
        }
    }

    /// `POST /v1/admin/admins`: another admin account with its scopes.
    pub async fn create_admin(&self, req: &NewAdminRequest) -> Result<()> {
        self.call_empty(Method::POST, &["v1", "admin", "admins"], Some(req))
            .await
    }

    /// `GET /v1/admin/admins`
    pub async fn list_admins(&self) -> Result<AdminList> {
        self.call::<(), _>(Method::GET, &["v1", "admin", "admins"], &[], None)
            .await
    }

    /// `PATCH /v1/admin/admins/{id}`: revokes the account's earlier tokens.
    pub async fn update_admin(&self, id: &str, patch: &AdminPatch) -> Result<AdminInfo> {
        self.call(
            Method::PATCH,
            &["v1", "admin", "admins", id],
            &[],
            Some(patch),
        )
        .await
    }

    /// `POST /v1/admin/admins/{id}/keys`: the key is in this answer only.
    pub async fn create_admin_key(&self, id: &str, req: &NewAdminKey) -> Result<AdminKeyCreated> {
        self.call(
            Method::POST,
            &["v1", "admin", "admins", id, "keys"],
            &[],
            Some(req),
        )
        .await
    }

    /// `DELETE /v1/admin/admins/{id}/keys/{key_id}`
    pub async fn revoke_admin_key(&self, id: &str, key_id: &str) -> Result<()> {
        self.call_empty::<()>(
            Method::DELETE,
            &["v1", "admin", "admins", id, "keys", key_id],
            None,
        )
        .await
    }

    /// `POST /v1/admin/users`: imports at most [`MAX_IMPORT_BATCH`] users,
    /// each an [`ImportUser`](unimsg_proto::admin::ImportUser) object. Items
    /// are checked one by one: a bad item fails alone and the response has
    /// one result per item, in order.
    pub async fn import_users(&self, users: Vec<serde_json::Value>) -> Result<ImportResponse> {
        let req = ImportRequest { users };
        self.call(Method::POST, &["v1", "admin", "users"], &[], Some(&req))
            .await
    }

    /// `GET /v1/admin/users/{id}`
    pub async fn user(&self, id: &UserId) -> Result<AdminUser> {
        self.call(
            Method::GET,
            &["v1", "admin", "users", id.as_str()],
            &[],
            None::<&()>,
        )
        .await
    }

    /// `PATCH /v1/admin/users/{id}`: disabling (`status: "disabled"`)
    /// revokes every session of the user at once.
    pub async fn update_user(&self, id: &UserId, patch: &UserPatch) -> Result<AdminUser> {
        self.call(
            Method::PATCH,
            &["v1", "admin", "users", id.as_str()],
            &[],
            Some(patch),
        )
        .await
    }

    /// `DELETE /v1/admin/users/{id}`
    pub async fn delete_user(&self, id: &UserId) -> Result<()> {
        self.call_empty(
            Method::DELETE,
            &["v1", "admin", "users", id.as_str()],
            None::<&()>,
        )
        .await
    }

    /// `POST /v1/admin/users/{id}/tokens`: a session and token pair for the
    /// user, as if they had logged in.
    pub async fn mint_tokens(&self, id: &UserId, req: &MintRequest) -> Result<TokenPair> {
        self.call(
            Method::POST,
            &["v1", "admin", "users", id.as_str(), "tokens"],
            &[],
            Some(req),
        )
        .await
    }

    /// `POST /v1/admin/users/{id}/logout`: revokes the user's sessions on
    /// `platform`, or on every platform.
    pub async fn force_logout(
        &self,
        id: &UserId,
        platform: Option<Platform>,
    ) -> Result<ForceLogoutResponse> {
        self.call(
            Method::POST,
            &["v1", "admin", "users", id.as_str(), "logout"],
            &[],
            Some(&ForceLogoutRequest { platform }),
        )
        .await
    }

    /// `POST /v1/admin/messages`: a notification to the given users.
    pub async fn notify(&self, req: &NotifyRequest) -> Result<NotifyResponse> {
        self.call(Method::POST, &["v1", "admin", "messages"], &[], Some(req))
            .await
    }

    /// `POST /v1/admin/broadcasts`: an announcement to every user.
    pub async fn broadcast(&self, req: &BroadcastRequest) -> Result<BroadcastResponse> {
        self.call(Method::POST, &["v1", "admin", "broadcasts"], &[], Some(req))
            .await
    }

    /// `GET /v1/admin/messages/{id}/status?after=&limit=`: counts, and one
    /// page of recipients after the user id `after`.
    pub async fn message_status(
        &self,
        id: &MessageId,
        after: Option<&UserId>,
        limit: Option<u32>,
    ) -> Result<MessageStatus> {
        let mut query = Vec::new();
        query.extend(after.map(|a| ("after", a.as_str().to_owned())));
        query.extend(limit.map(|l| ("limit", l.to_string())));
        self.call(
            Method::GET,
            &["v1", "admin", "messages", id.as_str(), "status"],
            &query,
            None::<&()>,
        )
        .await
    }

    /// `GET /v1/admin/presence?user_ids=…` (1 to 1000 users).
    pub async fn presence(&self, users: &[UserId]) -> Result<PresenceResponse> {
        let ids = users
            .iter()
            .map(UserId::as_str)
            .collect::<Vec<_>>()
            .join(",");
        self.call(
            Method::GET,
            &["v1", "admin", "presence"],
            &[("user_ids", ids)],
            None::<&()>,
        )
        .await
    }

    /// `GET /v1/admin/audit?after=&limit=&action=&actor=&operation_id=`
    pub async fn audit(&self, filter: &AuditFilter) -> Result<AuditPage> {
        let mut query = vec![("after", filter.after.to_string())];
        query.extend(filter.limit.map(|l| ("limit", l.to_string())));
        query.extend(filter.action.clone().map(|a| ("action", a)));
        query.extend(filter.actor.clone().map(|a| ("actor", a)));
        query.extend(filter.operation_id.clone().map(|o| ("operation_id", o)));
        self.call(Method::GET, &["v1", "admin", "audit"], &query, None::<&()>)
            .await
    }

    /// `GET /v1/admin/audit/verify?head=`: the server walks the whole
    /// chain; with `head` (an exported `SEQ:HASH`) its entry must still
    /// be there.
    pub async fn verify_audit(
        &self,
        head: Option<&str>,
    ) -> Result<unimsg_proto::admin::AuditVerification> {
        let query: Vec<(&str, String)> = head.map(|h| ("head", h.to_owned())).into_iter().collect();
        self.call(
            Method::GET,
            &["v1", "admin", "audit", "verify"],
            &query,
            None::<&()>,
        )
        .await
    }

    /// `POST /v1/admin/webhooks`: the answer holds the secret, shown only here.
    pub async fn create_webhook(&self, req: &CreateWebhook) -> Result<WebhookWithSecret> {
        self.call(Method::POST, &["v1", "admin", "webhooks"], &[], Some(req))
            .await
    }

    /// `GET /v1/admin/webhooks`
    pub async fn webhooks(&self) -> Result<WebhookList> {
        self.call(Method::GET, &["v1", "admin", "webhooks"], &[], None::<&()>)
            .await
    }

    /// `GET /v1/admin/webhooks/{id}`
    pub async fn webhook(&self, id: &str) -> Result<Webhook> {
        self.call(
            Method::GET,
            &["v1", "admin", "webhooks", id],
            &[],
            None::<&()>,
        )
        .await
    }

    /// `PATCH /v1/admin/webhooks/{id}`
    pub async fn update_webhook(&self, id: &str, patch: &PatchWebhook) -> Result<Webhook> {
        self.call(
            Method::PATCH,
            &["v1", "admin", "webhooks", id],
            &[],
            Some(patch),
        )
        .await
    }

    /// `DELETE /v1/admin/webhooks/{id}`
    pub async fn delete_webhook(&self, id: &str) -> Result<()> {
        self.call_empty(
            Method::DELETE,
            &["v1", "admin", "webhooks", id],
            None::<&()>,
        )
        .await
    }

    /// `POST /v1/admin/webhooks/{id}/secret`: a new secret; the old one
    /// signs too during the overlap.
    pub async fn rotate_webhook_secret(&self, id: &str) -> Result<WebhookWithSecret> {
        self.call(
            Method::POST,
            &["v1", "admin", "webhooks", id, "secret"],
            &[],
            None::<&()>,
        )
        .await
    }

    /// `GET /v1/admin/webhooks/{id}/deliveries?status=&limit=&before=`
    pub async fn webhook_deliveries(
        &self,
        id: &str,
        status: Option<DeliveryState>,
        limit: Option<u32>,
    ) -> Result<DeliveryPage> {
        let mut query = Vec::new();
        query.extend(status.map(|s| ("status", s.as_str().to_owned())));
        query.extend(limit.map(|l| ("limit", l.to_string())));
        self.call(
            Method::GET,
            &["v1", "admin", "webhooks", id, "deliveries"],
            &query,
            None::<&()>,
        )
        .await
    }

    /// `POST /v1/admin/keys/signing/rotate`: a new key signs from now on.
    pub async fn rotate_signing_key(&self) -> Result<SigningKeyInfo> {
        self.call::<(), _>(
            Method::POST,
            &["v1", "admin", "keys", "signing", "rotate"],
            &[],
            None,
        )
        .await
    }

    /// `POST /v1/admin/webhooks/{id}/replay`: every event since `since` again.
    pub async fn replay_webhook(&self, id: &str, since: time::OffsetDateTime) -> Result<Requeued> {
        self.call(
            Method::POST,
            &["v1", "admin", "webhooks", id, "replay"],
            &[],
            Some(&ReplayRequest { since }),
        )
        .await
    }

    /// `POST /v1/admin/webhooks/{id}/deliveries/{event_id}/retry`
    pub async fn retry_webhook_delivery(&self, id: &str, event_id: &str) -> Result<Requeued> {
        self.call(
            Method::POST,
            &[
                "v1",
                "admin",
                "webhooks",
                id,
                "deliveries",
                event_id,
                "retry",
            ],
            &[],
            None::<&()>,
        )
        .await
    }

    /// Signs every request with `secret` (from `POST
    /// /v1/admin/admins/{id}/signing-secret`): `X-Signature` over the
    /// method, path, `X-Timestamp`, `X-Nonce` and body, which it sends too.
    pub fn with_signing_secret(&self, secret: impl Into<String>) -> AdminClient {
        AdminClient {
            signing_secret: Some(secret.into()),
            replay_protection: true,
            ..self.clone()
        }
    }

    /// `POST /v1/admin/admins/{id}/signing-secret`: shown in this answer only.
    pub async fn new_signing_secret(&self, id: &str) -> Result<SigningSecret> {
        self.call::<(), _>(
            Method::POST,
            &["v1", "admin", "admins", id, "signing-secret"],
            &[],
            None,
        )
        .await
    }

    /// Sends a built request, signed when a signing secret is set.
    async fn send(&self, builder: RequestBuilder) -> Result<reqwest::Response> {
        let (http, request) = builder.build_split();
        let mut request = request?;
        if let Some(secret) = &self.signing_secret {
            let header = |name: &str| {
                request
                    .headers()
                    .get(name)
                    .and_then(|v| v.to_str().ok())
                    .unwrap_or_default()
                    .to_owned()
            };
            let path = match request.url().query() {
                Some(q) => format!("{}?{q}", request.url().path()),
                None => request.url().path().to_owned(),
            };
            let body = request
                .body()
                .and_then(|b| b.as_bytes())
                .unwrap_or_default();
            let canonical = canonical_request(
                request.method().as_str(),
                &path,
                &header("x-timestamp"),
                &header("x-nonce"),
                body,
            );
            let value = HeaderValue::from_str(&sign_request(secret, &canonical))
                .map_err(|_| ClientError::Protocol("a signature is not a header value".into()))?;
            request.headers_mut().insert("x-signature", value);
        }
        Ok(http.execute(request).await?)
    }

    async fn call<B: Serialize + ?Sized, T: DeserializeOwned>(
        &self,
        method: Method,
        path: &[&str],
        query: &[(&str, String)],
        body: Option<&B>,
    ) -> Result<T> {
        let resp = self.send(self.request(method, path, query, body)?).await?;
        let bytes = success(resp).await?.bytes().await?;
        Ok(serde_json::from_slice(&bytes)?)
    }

    async fn call_empty<B: Serialize + ?Sized>(
        &self,
        method: Method,
        path: &[&str],
        body: Option<&B>,
    ) -> Result<()> {
        let resp = self.send(self.request(method, path, &[], body)?).await?;
        success(resp).await?;
        Ok(())
    }

    fn request<B: Serialize + ?Sized>(
        &self,
        method: Method,
        path: &[&str],
        query: &[(&str, String)],
        body: Option<&B>,
    ) -> Result<RequestBuilder> {
        let mut req = self.client.request(method, path, query, None, body)?;
        req = match &self.credentials {
            AdminCredentials::Basic { admin_id, secret } => req.basic_auth(admin_id, Some(secret)),
            AdminCredentials::Bearer(token) => req.bearer_auth(token),
        };
        for (name, value) in self.extra_headers() {
            let value = HeaderValue::from_str(&value).map_err(|_| {
                ClientError::Protocol(format!("{name} must be printable ASCII: {value:?}"))
            })?;
            req = req.header(name, value);
        }
        Ok(req)
    }

    /// `X-Operation-Id`, `X-Nonce` and `X-Timestamp`, as configured.
    fn extra_headers(&self) -> Vec<(&'static str, String)> {
        let mut headers = Vec::new();
        if let Some(op) = &self.operation_id {
            headers.push(("x-operation-id", op.clone()));
        }
        if self.replay_protection {
            let now = SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map_or(0, |d| d.as_secs());
            headers.push(("x-nonce", uuid::Uuid::new_v4().simple().to_string()));
            headers.push(("x-timestamp", now.to_string()));
        }
        headers
    }
}

/// The string `X-Signature` signs: see the README's "Signed admin
/// requests" (the server's `unimsg_core::admins::canonical_request`).
fn canonical_request(
    method: &str,
    path_and_query: &str,
    timestamp: &str,
    nonce: &str,
    body: &[u8],
) -> String {
    let digest = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, body);
    let hex: String = digest.as_ref().iter().map(|b| format!("{b:02x}")).collect();
    format!("unimsg-admin-v1\n{method}\n{path_and_query}\n{timestamp}\n{nonce}\n{hex}")
}

/// `v1=` and the base64 HMAC-SHA256 of `canonical` keyed with `secret`.
fn sign_request(secret: &str, canonical: &str) -> String {
    use base64::Engine;
    let key = aws_lc_rs::hmac::Key::new(aws_lc_rs::hmac::HMAC_SHA256, secret.as_bytes());
    let tag = aws_lc_rs::hmac::sign(&key, canonical.as_bytes());
    format!(
        "v1={}",
        base64::engine::general_purpose::STANDARD.encode(tag.as_ref())
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn admin(credentials: AdminCredentials) -> AdminClient {
        AdminClient::new("http://h", credentials).unwrap()
    }

    #[test]
    fn debug_redacts_secrets() {
        let basic = admin(AdminCredentials::Basic {
            admin_id: "ops".into(),
            secret: "hunter2-secret".into(),
        });
        let bearer = admin(AdminCredentials::Bearer("tok-secret".into()));
        for s in [format!("{basic:?}"), format!("{bearer:?}")] {
            assert!(!s.contains("hunter2") && !s.contains("tok-secret"), "{s}");
            assert!(s.contains("[redacted]"), "{s}");
        }
        assert!(format!("{basic:?}").contains("ops"));
    }

    #[test]
    fn replay_headers_are_fresh_and_only_when_asked() {
        let plain = admin(AdminCredentials::Bearer("t".into()));
        assert!(plain.extra_headers().is_empty());
        let guarded = plain.with_replay_protection(true).with_operation_id("op-1");
        let a = guarded.extra_headers();
        let b = guarded.extra_headers();
        let get = |h: &[(&str, String)], name: &str| {
            h.iter()
                .find(|(n, _)| *n == name)
                .map(|(_, v)| v.clone())
                .unwrap_or_else(|| panic!("no {name} in {h:?}"))
        };
        assert_eq!(get(&a, "x-operation-id"), "op-1");
        assert_ne!(get(&a, "x-nonce"), get(&b, "x-nonce"));
        let ts: u64 = get(&a, "x-timestamp").parse().unwrap();
        assert!(ts > 1_600_000_000);
    }

    #[test]
    fn operation_ids_must_be_header_safe() {
        let bad = admin(AdminCredentials::Bearer("t".into())).with_operation_id("a\nb");
        let err = bad
            .request(Method::GET, &["v1", "admin", "audit"], &[], None::<&()>)
            .err();
        assert!(matches!(err, Some(ClientError::Protocol(_))), "{err:?}");
    }
}
