//! The admin side: admin credentials and scopes, users managed by business
//! systems, minted user tokens, forced logout, targeted notifications and
//! their delivery status.

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jsonwebtoken::{Algorithm, Validation};
use parking_lot::Mutex;
use serde::{Deserialize, Serialize};
use unimsg_proto::admin::{
    AdminToken, AdminUser, BroadcastRequest, BroadcastResponse, ForceLogoutResponse,
    ImportResponse, ImportResult, ImportUser, MessageStatus, NotifyRequest, NotifyResponse,
    PresenceResponse, RecipientStatus, Scope, Target, UserPage, UserPatch, UserPresence,
};
use unimsg_proto::api::TokenPair;
use unimsg_proto::event::RevokeReason;
use unimsg_proto::hooks::{HookEventType, UserData};
use unimsg_proto::{ErrorDetail, EventType, MessageId, Platform, UserId};
use unimsg_store::{
    Admin, AudiencePart, NewNotification, NewUser, PasswordHash, StoreError, StoredNotification,
    User, UserStatus, UserUpdate,
};

use crate::Core;
use crate::auth::ClientInfo;
use crate::bus::BroadcastNote;
use crate::error::{CoreError, Result};
use crate::limits::Realm;

/// The id of the admin account created at first start.
pub const INITIAL_ADMIN: &str = "admin";

const AUDIENCE: &str = "unimsg-admin";

/// Recipients appended per store call: large audiences are written in
/// several transactions, so other writes interleave.
const NOTIFY_CHUNK: usize = 2000;

/// An authenticated admin credential.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AdminContext {
    pub admin_id: String,
    pub scopes: BTreeSet<Scope>,
}

impl AdminContext {
    /// `Forbidden` unless the credential holds `scope` (or `admin`).
    pub fn require(&self, scope: Scope) -> Result<()> {
        if self.scopes.contains(&Scope::Admin) || self.scopes.contains(&scope) {
            Ok(())
        } else {
            Err(CoreError::Forbidden(format!(
                "this credential lacks the {} scope",
                scope.as_str()
            )))
        }
    }
}

#[derive(Debug, Serialize, Deserialize)]
struct AdminClaims {
    sub: String,
    aud: String,
    scp: Vec<Scope>,
    exp: i64,
    iat: i64,
    jti: String,
    /// The account's `tokens_valid_after` (ms) when the token was issued:
    /// any change of the account since makes it refused.
    #[serde(default)]
    ver: i64,
}

type SecretKey = (String, [u8; 32]);

/// Basic credentials verified recently, by admin id and SHA-256 of the
/// secret, so that a business system sending Basic auth on every request
/// does not pay an argon2 verification each time; and the checks under
/// way, so that a burst of requests with one credential that is not
/// remembered yet waits for one verification instead of filling the small
/// admin pool.
#[derive(Debug, Default)]
pub struct VerifiedSecrets {
    /// Until when, and the stored hash the secret matched: a secret
    /// changed since (on any node) is no longer remembered.
    remembered: Mutex<HashMap<SecretKey, (i64, String)>>,
    checking: Mutex<HashMap<SecretKey, Arc<tokio::sync::Mutex<()>>>>,
}

impl VerifiedSecrets {
    /// The stored hash a remembered secret matched.
    fn remembered(&self, key: &SecretKey, now: i64) -> Option<String> {
        self.remembered
            .lock()
            .get(key)
            .filter(|(until, _)| *until > now)
            .map(|(_, hash)| hash.clone())
    }

    fn remember(&self, key: SecretKey, now: i64, hash: String) {
        let mut m = self.remembered.lock();
        m.retain(|_, (until, _)| *until > now);
        m.insert(key, (now + VERIFIED_FOR_SECS, hash));
    }

    /// Forgets every remembered secret of `admin_id` (changed or deleted).
    pub(crate) fn forget(&self, admin_id: &str) {
        self.remembered.lock().retain(|(id, _), _| id != admin_id);
    }

    /// A place in the queue of checks of this credential (one at a time).
    fn turn(&self, key: &SecretKey) -> Turn<'_> {
        let lock = self.checking.lock().entry(key.clone()).or_default().clone();
        Turn {
            secrets: self,
            key: key.clone(),
            lock,
        }
    }
}

/// See [`VerifiedSecrets::turn`]. Dropped — also when the request is
/// cancelled — it forgets the queue if nobody else holds or waits for it,
/// so the map holds only checks under way.
struct Turn<'a> {
    secrets: &'a VerifiedSecrets,
    key: SecretKey,
    lock: Arc<tokio::sync::Mutex<()>>,
}

impl Drop for Turn<'_> {
    fn drop(&mut self) {
        let mut m = self.secrets.checking.lock();
        // Ours and the map's: nobody else has it.
        if Arc::strong_count(&self.lock) <= 2 {
            m.remove(&self.key);
        }
    }
}

const VERIFIED_FOR_SECS: i64 = 60;

fn secret_digest(secret: &str) -> [u8; 32] {
    crate::keys::OpaqueToken(secret.to_owned()).hash().0
}

/// The context of an authenticated admin account.
fn context(admin: Admin) -> AdminContext {
    AdminContext {
        admin_id: admin.admin_id,
        scopes: admin
            .scopes
            .iter()
            .filter_map(|s| Scope::parse(s))
            .collect(),
    }
}

fn to_admin_user(u: User) -> AdminUser {
    AdminUser {
        has_password: u.password_hash.is_some(),
        user_id: u.user_id,
        username: u.username,
        display_name: u.display_name,
        status: u.status.as_str().to_owned(),
        created_at: u.created_at,
    }
}

/// Unknown ids named in a 404, at most this many (the count says the rest).
const UNKNOWN_NAMED: usize = 20;

/// "unknown user ids: a, b (and 3 more)"; each distinct id once.
fn unknown_users_message(unknown: &[UserId]) -> String {
    let mut seen = BTreeSet::new();
    let distinct: Vec<&str> = unknown
        .iter()
        .filter(|u| seen.insert(u.as_str()))
        .map(UserId::as_str)
        .collect();
    let named = distinct[..distinct.len().min(UNKNOWN_NAMED)].join(", ");
    match distinct.len().saturating_sub(UNKNOWN_NAMED) {
        0 => format!("unknown user ids: {named}"),
        more => format!("unknown user ids: {named} (and {more} more)"),
    }
}

/// One item of a user import (`POST /v1/admin/users`) as the HTTP layer
/// read it: each item is parsed on its own, so one that does not parse
/// fails alone.
#[derive(Debug)]
pub enum ImportItem {
    User(ImportUser),
    /// Not a valid user: why, and its `user_id` when that is a string.
    Malformed {
        user_id: Option<String>,
        reason: String,
    },
}

fn bad_item(index: usize, user_id: Option<String>, e: &CoreError) -> ImportResult {
    ImportResult {
        index,
        user_id,
        ok: false,
        error: Some(ErrorDetail {
            code: e.code(),
            message: e.to_string(),
        }),
    }
}

impl Core {
    /// Creates the `admin` account (all scopes) when there is none. Returns
    /// the generated password when none was given, to be shown once.
    pub async fn ensure_initial_admin(&self, password: Option<String>) -> Result<Option<String>> {
        if let Some(existing) = self.store.admin(INITIAL_ADMIN).await? {
            // Said rather than silently ignored: the variable only sets
            // the first secret.
            if let Some(p) = password.filter(|p| !p.is_empty())
                && !self
                    .admin_passwords
                    .verify(p, Some(existing.secret_hash))
                    .await?
            {
                tracing::warn!(
                    "UNIMSG_ADMIN_PASSWORD differs from the secret of `admin` and is ignored: it only \
                     sets the first one. Change it with `unimsg admin passwd`, or offline with \
                     `unimsg admin reset-password --data-dir DIR`"
                );
            }
            return Ok(None);
        }
        let (password, generated) = match password {
            Some(p) if !p.is_empty() => {
                crate::admins::check_admin_secret(
                    INITIAL_ADMIN,
                    &p,
                    self.config.admin.min_secret_length,
                )?;
                (p, false)
            }
            _ => {
                let bytes = crate::keys::random_bytes::<18>()
                    .map_err(|e| CoreError::Internal(e.to_string()))?;
                (URL_SAFE_NO_PAD.encode(bytes), true)
            }
        };
        let secret_hash = self.passwords.hash(password.clone()).await?;
        let now = self.clock.now();
        let admin = Admin {
            admin_id: INITIAL_ADMIN.into(),
            secret_hash,
            scopes: vec![Scope::Admin.as_str().into()],
            created_at: now,
            disabled: false,
            tokens_valid_after: now,
            signing_secret: None,
        };
        match self.store.create_admin(admin).await {
            Ok(()) | Err(StoreError::Conflict(_)) => {}
            Err(e) => return Err(e.into()),
        }
        Ok(generated.then_some(password))
    }

    /// Checks an admin id and secret from the address `ip`, in an order
    /// that keeps failed attempts cheap: a remembered secret passes first,
    /// without hashing and whatever the back-off (so a business system
    /// keeps working while its admin id or address is under attack); then
    /// the back-off of this (admin id, IP) pair and of this IP (429); only
    /// then one argon2 verification, on the admin pool (busy → 503).
    async fn admin_by_secret(
        &self,
        admin_id: &str,
        secret: &str,
        ip: Option<&str>,
    ) -> Result<AdminContext> {
        const DENIED: CoreError = CoreError::Unauthorized("invalid admin credentials");
        if admin_id.is_empty() || admin_id.len() > 64 || secret.len() > 1024 {
            return Err(DENIED);
        }
        let key = (admin_id.to_owned(), secret_digest(secret));
        if let Some(hash) = self
            .verified
            .remembered(&key, self.clock.now().unix_timestamp())
            && let Some(ctx) = self.remembered_admin(admin_id, &hash).await?
        {
            return Ok(ctx);
        }
        let turn = self.verified.turn(&key);
        // Declared after `turn`, so dropped before it, also on cancellation.
        let _held = turn.lock.lock().await;
        self.admin_check(admin_id, secret, ip, &key).await
    }

    /// The admin whose remembered secret was given, if its stored secret
    /// is still the one it matched. A deleted or disabled admin's
    /// remembered secret stops working.
    async fn remembered_admin(&self, admin_id: &str, hash: &str) -> Result<Option<AdminContext>> {
        let Some(admin) = self.store.admin(admin_id).await? else {
            return Err(CoreError::Unauthorized("invalid admin credentials"));
        };
        if admin.disabled {
            return Err(CoreError::Unauthorized("invalid admin credentials"));
        }
        Ok((admin.secret_hash.0 == hash).then(|| context(admin)))
    }

    /// One check of a secret that was not remembered, while no other check
    /// of the same credential runs.
    async fn admin_check(
        &self,
        admin_id: &str,
        secret: &str,
        ip: Option<&str>,
        key: &SecretKey,
    ) -> Result<AdminContext> {
        const DENIED: CoreError = CoreError::Unauthorized("invalid admin credentials");
        let now = self.clock.now().unix_timestamp();
        // A check of the same credential that ran while this one waited
        // may have verified it.
        if let Some(hash) = self.verified.remembered(key, now)
            && let Some(ctx) = self.remembered_admin(admin_id, &hash).await?
        {
            return Ok(ctx);
        }
        self.limits
            .login_locked(Realm::Admin, admin_id, ip)
            .await
            .map_err(|r| CoreError::RateLimited(r.0))?;
        let admin = self.store.admin(admin_id).await?;
        let hash = admin.as_ref().map(|a| a.secret_hash.clone());
        let ok = self.admin_passwords.verify(secret.to_owned(), hash).await?;
        let Some(admin) = admin.filter(|_| ok) else {
            self.limits.login_failed(Realm::Admin, admin_id, ip).await;
            return Err(DENIED);
        };
        self.limits
            .login_succeeded(Realm::Admin, admin_id, ip)
            .await;
        if admin.disabled {
            return Err(DENIED);
        }
        self.verified
            .remember(key.clone(), now, admin.secret_hash.0.clone());
        Ok(context(admin))
    }

    /// `POST /v1/admin/admins`: another admin account with the given scopes.
    pub async fn create_admin(
        &self,
        admin_id: &str,
        secret: String,
        scopes: Vec<Scope>,
    ) -> Result<()> {
        let id_ok = !admin_id.is_empty()
            && admin_id.len() <= 64
            && admin_id
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'));
        if !id_ok {
            return Err(CoreError::BadRequest(
                "admin_id must be 1 to 64 of A-Z a-z 0-9 _ . -".into(),
            ));
        }
        crate::admins::check_admin_secret(admin_id, &secret, self.config.admin.min_secret_length)?;
        if scopes.is_empty() {
            return Err(CoreError::BadRequest("give at least one scope".into()));
        }
        let secret_hash = self.passwords.hash(secret).await?;
        let now = self.clock.now();
        let admin = Admin {
            admin_id: admin_id.to_owned(),
            secret_hash,
            scopes: scopes.iter().map(|s| s.as_str().to_owned()).collect(),
            created_at: now,
            disabled: false,
            tokens_valid_after: now,
            signing_secret: None,
        };
        self.store.create_admin(admin).await.map_err(|e| match e {
            StoreError::Conflict(_) => CoreError::Conflict("this admin_id exists".into()),
            other => other.into(),
        })
    }

    /// HTTP Basic `admin_id:password`, sent from `ip`.
    pub async fn admin_basic(
        &self,
        admin_id: &str,
        secret: &str,
        ip: Option<&str>,
    ) -> Result<AdminContext> {
        self.admin_by_secret(admin_id, secret, ip).await
    }

    /// `POST /v1/admin/token`: a short-lived admin token for a secret sent
    /// from `ip`.
    pub async fn admin_token(
        &self,
        admin_id: &str,
        secret: &str,
        ip: Option<&str>,
    ) -> Result<AdminToken> {
        let ctx = self.admin_by_secret(admin_id, secret, ip).await?;
        let ver = self
            .store
            .admin(&ctx.admin_id)
            .await?
            .map(|a| unimsg_store::sql::ms(a.tokens_valid_after))
            .ok_or(CoreError::Unauthorized("invalid admin credentials"))?;
        let now = self.clock.now().unix_timestamp();
        let ttl = self.config.admin.token_ttl_secs;
        let scopes: Vec<Scope> = ctx.scopes.iter().copied().collect();
        let claims = AdminClaims {
            sub: ctx.admin_id,
            aud: AUDIENCE.into(),
            scp: scopes.clone(),
            exp: now + ttl as i64,
            iat: now,
            jti: uuid::Uuid::now_v7().simple().to_string(),
            ver,
        };
        let token = self.sign_token(&claims)?;
        Ok(AdminToken {
            token,
            expires_in: ttl,
            scopes,
        })
    }

    /// A Bearer admin token. User access tokens are refused here (no
    /// audience), and admin tokens are refused as user tokens (no session).
    /// An API key (`umk_…`) is checked as such; anything else must be an
    /// admin token of an account that still is as it was when the token
    /// was issued.
    pub async fn admin_bearer(&self, token: &str, ip: Option<&str>) -> Result<AdminContext> {
        const DENIED: CoreError = CoreError::Unauthorized("invalid or expired admin token");
        if token.starts_with(crate::admins::KEY_PREFIX) {
            return self.admin_by_key(token, ip).await;
        }
        let key = self.verifying_key(token).await.ok_or(DENIED)?;
        let mut validation = Validation::new(Algorithm::EdDSA);
        validation.leeway = 5;
        validation.set_audience(&[AUDIENCE]);
        validation.set_required_spec_claims(&["exp", "sub", "aud"]);
        let claims = jsonwebtoken::decode::<AdminClaims>(token, &key, &validation)
            .map_err(|_| DENIED)?
            .claims;
        // A deleted, disabled or changed admin's tokens stop working.
        let current = self.store.admin(&claims.sub).await?;
        let valid = current.is_some_and(|a| {
            !a.disabled && unimsg_store::sql::ms(a.tokens_valid_after) == claims.ver
        });
        if !valid {
            return Err(DENIED);
        }
        Ok(AdminContext {
            admin_id: claims.sub,
            scopes: claims.scp.into_iter().collect(),
        })
    }

    /// `POST /v1/admin/users`: each item is checked and stored on its own.
    pub async fn import_users(&self, items: Vec<ImportItem>) -> Result<ImportResponse> {
        let mut results: Vec<Option<ImportResult>> = vec![None; items.len()];
        let mut valid = Vec::new();
        let mut valid_index = Vec::new();
        for (index, item) in items.into_iter().enumerate() {
            let item = match item {
                ImportItem::User(user) => user,
                ImportItem::Malformed { user_id, reason } => {
                    results[index] = Some(bad_item(index, user_id, &CoreError::BadRequest(reason)));
                    continue;
                }
            };
            let raw_id = Some(item.user_id.to_string());
            match self.checked_import(item).await {
                Ok(user) => {
                    valid_index.push(index);
                    valid.push(user);
                }
                Err(e) => results[index] = Some(bad_item(index, raw_id, &e)),
            }
        }
        let hooked = valid.iter().any(|u| u.hook.is_some());
        let stored = self.store.import_users(valid).await?;
        if hooked {
            self.wake_dispatcher();
        }
        for (index, outcome) in valid_index.into_iter().zip(stored) {
            results[index] = Some(match outcome {
                Ok(user) => ImportResult {
                    index,
                    user_id: Some(user.user_id.to_string()),
                    ok: true,
                    error: None,
                },
                Err(e) => {
                    let e = match e {
                        StoreError::Conflict(what) => {
                            CoreError::Conflict(format!("{what} already exists"))
                        }
                        other => other.into(),
                    };
                    bad_item(index, None, &e)
                }
            });
        }
        let results: Vec<ImportResult> = results.into_iter().flatten().collect();
        let imported = results.iter().filter(|r| r.ok).count();
        Ok(ImportResponse {
            imported,
            failed: results.len() - imported,
            results,
        })
    }

    async fn checked_import(&self, item: ImportUser) -> Result<NewUser> {
        // Without a username the user id serves, already valid as an id.
        let username = match item.username {
            Some(name) => {
                crate::auth::validate_username(&name)?;
                name
            }
            None => item.user_id.to_string(),
        };
        crate::auth::validate_display_name(&item.display_name)?;
        let password_hash = match item.password {
            Some(p) => {
                crate::auth::validate_password(&p)?;
                Some(self.passwords.hash(p).await?)
            }
            None => None,
        };
        Ok(NewUser {
            hook: self.user_created_hook(&item.user_id, &username, &item.display_name),
            user_id: item.user_id,
            username,
            display_name: item.display_name,
            password_hash,
            created_at: self.clock.now(),
        })
    }

    /// `GET /v1/admin/users/{id}`
    /// `GET /v1/admin/users?query=&limit=&after=`: users whose id,
    /// username or display name contains `query`, by id, one page.
    pub async fn search_users(
        &self,
        query: &str,
        after: Option<&UserId>,
        limit: Option<u32>,
    ) -> Result<UserPage> {
        let limit = limit.unwrap_or(50);
        if !(1..=200).contains(&limit) {
            return Err(CoreError::BadRequest("limit must be 1 to 200".into()));
        }
        if query.chars().count() > 100 {
            return Err(CoreError::BadRequest(
                "query must be at most 100 characters".into(),
            ));
        }
        // One more than asked, to know whether a next page exists.
        let mut users = self.store.search_users(query, after, limit + 1).await?;
        let more = users.len() > limit as usize;
        users.truncate(limit as usize);
        let next_after = more
            .then(|| users.last().map(|u| u.user_id.clone()))
            .flatten();
        Ok(UserPage {
            users: users.into_iter().map(to_admin_user).collect(),
            next_after,
        })
    }

    pub async fn admin_user(&self, id: &UserId) -> Result<AdminUser> {
        let user = self
            .store
            .user(id)
            .await?
            .ok_or_else(|| CoreError::NotFound("user not found".into()))?;
        Ok(to_admin_user(user))
    }

    /// `PATCH /v1/admin/users/{id}`. Disabling revokes every session at once.
    pub async fn update_user(&self, id: &UserId, patch: UserPatch) -> Result<AdminUser> {
        if let Some(name) = &patch.display_name {
            crate::auth::validate_display_name(name)?;
        }
        let status = match patch.status.as_deref() {
            None => None,
            Some(name) => Some(UserStatus::parse(name).ok_or_else(|| {
                CoreError::BadRequest("status must be active or disabled".into())
            })?),
        };
        let password_hash: Option<PasswordHash> = match patch.password {
            Some(p) => {
                crate::auth::validate_password(&p)?;
                Some(self.passwords.hash(p).await?)
            }
            None => None,
        };
        let password_changed = password_hash.is_some();
        let kind = if status == Some(UserStatus::Disabled) {
            HookEventType::UserDisabled
        } else {
            HookEventType::UserUpdated
        };
        // The event describes the user as the update leaves them.
        let hooks: Vec<_> = if self.hook_wanted(kind) {
            let before = self
                .store
                .user(id)
                .await?
                .ok_or_else(|| CoreError::NotFound("user not found".into()))?;
            let data = UserData {
                user_id: id.clone(),
                username: Some(before.username),
                display_name: Some(patch.display_name.clone().unwrap_or(before.display_name)),
                status: Some(status.unwrap_or(before.status).as_str().to_owned()),
            };
            self.hook_draft(kind, &data, None).into_iter().collect()
        } else {
            Vec::new()
        };
        let hooked = !hooks.is_empty();
        let update = UserUpdate {
            display_name: patch.display_name,
            password_hash,
            status,
        };
        let user = self.store.update_user(id, update, hooks).await?;
        if status.is_some() || password_changed {
            self.sessions.invalidate();
        }
        if hooked {
            self.wake_dispatcher();
        }
        if status == Some(UserStatus::Disabled) {
            self.revoke_user_sessions(id, None, RevokeReason::UserDisabled)
                .await?;
        } else if password_changed {
            self.revoke_user_sessions(id, None, RevokeReason::PasswordChanged)
                .await?;
        }
        Ok(to_admin_user(user))
    }

    /// `DELETE /v1/admin/users/{id}`: sessions are revoked first, so live
    /// connections close.
    pub async fn delete_user(&self, id: &UserId) -> Result<()> {
        if self.store.user(id).await?.is_none() {
            return Err(CoreError::NotFound("user not found".into()));
        }
        self.revoke_user_sessions(id, None, RevokeReason::UserDeleted)
            .await?;
        let data = UserData {
            user_id: id.clone(),
            username: None,
            display_name: None,
            status: None,
        };
        let hooks: Vec<_> = self
            .hook_draft(HookEventType::UserDeleted, &data, None)
            .into_iter()
            .collect();
        let hooked = !hooks.is_empty();
        self.store.delete_user(id, hooks).await?;
        self.sessions.invalidate();
        if hooked {
            self.wake_dispatcher();
        }
        Ok(())
    }

    /// Revokes a user's sessions (of one platform, or all); returns how many.
    pub async fn revoke_user_sessions(
        &self,
        id: &UserId,
        platform: Option<&Platform>,
        reason: RevokeReason,
    ) -> Result<usize> {
        let sessions = self.store.active_sessions(id).await?;
        let now = self.clock.now();
        let revocations = sessions
            .iter()
            .filter(|s| platform.is_none_or(|p| &s.platform == p))
            .map(|s| self.revocation(id, &s.session_id, reason, now, None))
            .collect::<Result<Vec<_>>>()?;
        let count = revocations.len();
        if count > 0 {
            let events = self.store.revoke_sessions(revocations).await?;
            self.publish(&events).await;
            self.audit_revocations(&events).await;
        }
        Ok(count)
    }

    /// `POST /v1/admin/users/{id}/logout`
    pub async fn force_logout(
        &self,
        id: &UserId,
        platform: Option<Platform>,
    ) -> Result<ForceLogoutResponse> {
        if self.store.user(id).await?.is_none() {
            return Err(CoreError::NotFound("user not found".into()));
        }
        let revoked = self
            .revoke_user_sessions(id, platform.as_ref(), RevokeReason::AdminLogout)
            .await?;
        Ok(ForceLogoutResponse { revoked })
    }

    /// `POST /v1/admin/users/{id}/tokens`: a session for a user whose login
    /// the business system owns, under the device policy.
    pub async fn mint_tokens(
        &self,
        id: &UserId,
        platform: Platform,
        device_id: Option<String>,
        ttl_secs: Option<u64>,
    ) -> Result<TokenPair> {
        crate::auth::validate_device(device_id.as_deref())?;
        let user = self
            .store
            .user(id)
            .await?
            .ok_or_else(|| CoreError::NotFound("user not found".into()))?;
        if user.status == UserStatus::Disabled {
            return Err(crate::auth::disabled());
        }
        if ttl_secs.is_some_and(|t| t == 0 || t > 30 * 24 * 3600) {
            return Err(CoreError::BadRequest(
                "ttl_secs must be 1 to 2592000".into(),
            ));
        }
        let pair = self
            .open_session_with_ttl(id, platform, device_id, ClientInfo::default(), ttl_secs)
            .await?;
        self.audit(crate::audit::AuditRecord {
            action: "auth.token_minted".into(),
            actor_kind: "system".into(),
            actor: "-".into(),
            outcome: "ok".into(),
            target: Some(id.to_string()),
            session_id: Some(pair.session_id.to_string()),
            ..Default::default()
        })
        .await;
        Ok(pair)
    }

    /// `POST /v1/admin/messages`: one notification, stored once, with a
    /// `notification.new` event in each recipient's inbox (for a group:
    /// each of its members).
    pub async fn notify(&self, req: NotifyRequest) -> Result<NotifyResponse> {
        let named = matches!(req.to, Target::Users(_));
        let users = match req.to {
            Target::Users(users) => users,
            // The members at this moment, each in their own system conversation.
            Target::Group(group) => self.group_audience(&group).await?,
        };
        if users.is_empty() || users.len() > self.config.admin.max_recipients {
            return Err(CoreError::BadRequest(format!(
                "a message goes to 1 to {} users",
                self.config.admin.max_recipients
            )));
        }
        if named {
            // A list with an unknown id is a mistake of the caller: nothing
            // is sent, and the answer names the ids (a user deleted after
            // this check is skipped, as the store skips unknown users).
            let unknown = self.store.unknown_users(users.clone()).await?;
            if !unknown.is_empty() {
                return Err(CoreError::NotFound(unknown_users_message(&unknown)));
            }
        }
        let (message_id, sealed, kind, sender) =
            self.prepare_announcement(req.kind, req.from, &req.content)?;
        let mut seen = BTreeSet::new();
        let users: Vec<UserId> = users
            .into_iter()
            .filter(|u| seen.insert(u.clone()))
            .collect();
        let notification = NewNotification {
            message_id: message_id.clone(),
            kind,
            sender,
            content: sealed,
            created_at: self.clock.now(),
        };
        let stored = unimsg_store::StoredNotification {
            message_id: notification.message_id.clone(),
            kind: notification.kind.clone(),
            sender: notification.sender.clone(),
            content: notification.content.clone(),
            created_at: notification.created_at,
        };
        // Rendered once: every recipient gets the same data.
        let data = crate::render::notification(&self.keyring, &stored)?;
        let ts = notification.created_at;
        let mut recipients = 0;
        let mut live = Vec::new();
        for (i, chunk) in users.chunks(NOTIFY_CHUNK).enumerate() {
            let seqs = self
                .store
                .append_notification(
                    notification.clone(),
                    if i == 0 {
                        AudiencePart::First
                    } else {
                        AudiencePart::Rest
                    },
                    chunk.to_vec(),
                )
                .await?;
            recipients += seqs.len();
            let received: Vec<UserId> = seqs.iter().map(|(user, _)| user.clone()).collect();
            let deliveries =
                crate::render::shared_deliveries(EventType::NotificationNew, ts, &data, seqs)?;
            if let Err(error) = self.bus.publish(deliveries).await {
                tracing::warn!(%error, "live delivery failed; clients will catch up by sync");
                continue;
            }
            live.extend(self.online_of(received).await);
        }
        // One write for the whole audience, after every push went out.
        if !live.is_empty()
            && let Err(error) = self
                .store
                .mark_notification_sent_live(&message_id, live)
                .await
        {
            tracing::warn!(%error, "\"sent live\" not recorded");
        }
        metrics::counter!("unimsg_notifications_total").increment(1);
        Ok(NotifyResponse {
            message_id,
            recipients,
        })
    }

    /// The recipients that had a live connection, on any node, once the
    /// push went out: the status's "sent live". Only a count is lost if
    /// presence cannot be read; the message itself is committed.
    async fn online_of(&self, received: Vec<UserId>) -> Vec<UserId> {
        match self.bus.presence(&received).await {
            Ok(platforms) => received
                .into_iter()
                .zip(platforms)
                .filter(|(_, platforms)| !platforms.is_empty())
                .map(|(user, _)| user)
                .collect(),
            Err(error) => {
                tracing::warn!(%error, "presence unavailable; \"sent live\" not recorded");
                Vec::new()
            }
        }
    }

    /// `GET /v1/admin/nodes`: every node's latest report (one node: its own).
    pub async fn nodes(&self) -> Result<unimsg_proto::admin::NodeList> {
        let nodes = self
            .bus
            .nodes()
            .await
            .map_err(|e| CoreError::Unavailable(e.to_string()))?;
        Ok(unimsg_proto::admin::NodeList { nodes })
    }

    /// Keeps this node's report for [`Core::nodes`] on every node.
    pub async fn report_node(&self, status: &unimsg_proto::admin::NodeStatus) {
        if let Err(error) = self.bus.report_node(status).await {
            tracing::debug!(%error, "node report not kept");
        }
    }

    /// `GET /v1/admin/presence?user_ids=a,b,c`: live platforms per user.
    /// One node answers from its own hub; a cluster answers from the shared
    /// presence of the bus.
    pub async fn presence(&self, users: Vec<UserId>) -> Result<PresenceResponse> {
        let platforms = self
            .bus
            .presence(&users)
            .await
            .map_err(|e| CoreError::Unavailable(e.to_string()))?;
        let users = users
            .into_iter()
            .zip(platforms)
            .map(|(user_id, platforms)| UserPresence {
                online: !platforms.is_empty(),
                user_id,
                platforms,
            })
            .collect();
        Ok(PresenceResponse { users })
    }

    /// `POST /v1/admin/broadcasts`: stored once; everyone online is told at
    /// once, everyone else finds it in their stream on their next sync.
    pub async fn broadcast(&self, req: BroadcastRequest) -> Result<BroadcastResponse> {
        let (message_id, sealed, kind, sender) =
            self.prepare_announcement(req.kind, req.from, &req.content)?;
        let broadcast = NewNotification {
            message_id: message_id.clone(),
            kind,
            sender,
            content: sealed,
            created_at: self.clock.now(),
        };
        let placed = StoredNotification {
            message_id: broadcast.message_id.clone(),
            kind: broadcast.kind.clone(),
            sender: broadcast.sender.clone(),
            content: broadcast.content.clone(),
            created_at: broadcast.created_at,
        };
        let broadcast_seq = self.store.append_broadcast(broadcast).await?;
        let rendered = crate::render::notification(&self.keyring, &placed).and_then(|data| {
            serde_json::value::to_raw_value(&data)
                .map_err(|e| CoreError::Internal(format!("cannot encode a broadcast: {e}")))
        });
        match rendered {
            Ok(data) => {
                let note = BroadcastNote {
                    bseq: broadcast_seq,
                    at: placed.created_at,
                    data,
                };
                self.place_broadcast(&note).await;
                if let Err(error) = self.bus.broadcast(&note).await {
                    tracing::warn!(%error, "live broadcast failed; clients will catch up by sync");
                }
            }
            Err(error) => {
                // Committed all the same: every stream reads it.
                tracing::error!(%error, "cannot render a broadcast; connections read it from the store");
                self.hub.broadcast();
            }
        }
        metrics::counter!("unimsg_broadcasts_total").increment(1);
        Ok(BroadcastResponse {
            message_id,
            broadcast_seq,
        })
    }

    /// Hands a committed broadcast to this node's connections with each
    /// user's seq already known: one store read places it for every online
    /// user, and its data was rendered once, on the node that committed
    /// it. A connection whose user was not placed (it opened meanwhile)
    /// reads its own stream from the store instead, as every connection
    /// does if this fails.
    async fn place_broadcast(&self, note: &BroadcastNote) {
        let users = self.hub.online_users();
        if users.is_empty() {
            return;
        }
        let placed = async {
            let positions = self.store.broadcast_positions(note.bseq, users).await?;
            crate::render::shared_deliveries(
                EventType::BroadcastNew,
                note.at,
                &note.data,
                positions,
            )
        }
        .await;
        match placed {
            Ok(deliveries) => {
                metrics::counter!("unimsg_broadcasts_placed_total").increment(1);
                self.hub.broadcast_placed(&deliveries);
            }
            Err(error) => {
                tracing::warn!(%error, "cannot place a broadcast; connections read it from the store");
                self.hub.broadcast();
            }
        }
    }

    /// Places the broadcasts other nodes committed (handed over by the
    /// bus through [`crate::hub::Hub::remote_broadcast`]) in this node's
    /// streams, one at a time, until the hub's sender is gone.
    pub async fn place_remote_broadcasts(
        self: std::sync::Arc<Self>,
        mut notes: tokio::sync::mpsc::Receiver<BroadcastNote>,
    ) {
        while let Some(note) = notes.recv().await {
            self.place_broadcast(&note).await;
        }
    }

    /// Checks and seals the content of a notification or broadcast.
    fn prepare_announcement(
        &self,
        kind: String,
        from: Option<String>,
        content: &serde_json::Value,
    ) -> Result<(MessageId, unimsg_store::Sealed, String, String)> {
        if !matches!(kind.as_str(), "notification" | "event" | "status") {
            return Err(CoreError::BadRequest(
                "kind must be notification, event or status".into(),
            ));
        }
        let sender = from.unwrap_or_else(|| "system".into());
        if sender.is_empty() || sender.chars().count() > 64 {
            return Err(CoreError::BadRequest(
                "from must be 1 to 64 characters".into(),
            ));
        }
        let content =
            serde_json::to_vec(content).map_err(|e| CoreError::BadRequest(e.to_string()))?;
        if content.len() > self.config.messaging.max_content_bytes {
            return Err(CoreError::TooLarge(format!(
                "content is {} bytes; the limit is {}",
                content.len(),
                self.config.messaging.max_content_bytes
            )));
        }
        let message_id = MessageId::parse(uuid::Uuid::now_v7().simple().to_string())
            .map_err(|e| CoreError::Internal(e.to_string()))?;
        let sealed = self
            .keyring
            .seal(&content, message_id.as_str().as_bytes())
            .map_err(|e| CoreError::Internal(format!("cannot seal content: {e}")))?;
        Ok((message_id, sealed, kind, sender))
    }

    /// `GET /v1/admin/messages/{id}/status`
    pub async fn message_status(
        &self,
        id: &MessageId,
        after: Option<UserId>,
        limit: u32,
    ) -> Result<MessageStatus> {
        if self.store.notification(id).await?.is_none() {
            return Err(CoreError::NotFound("message not found".into()));
        }
        let limit = limit.clamp(1, 1000);
        let status = self.store.notification_status(id, after, limit).await?;
        let next_after = if status.page.len() == limit as usize {
            status.page.last().map(|r| r.user.to_string())
        } else {
            None
        };
        Ok(MessageStatus {
            message_id: id.clone(),
            recipients: status.recipients,
            sent_live: status.sent_live,
            delivered: status.delivered,
            read: status.read,
            users: status
                .page
                .into_iter()
                .map(|r| RecipientStatus {
                    user_id: r.user,
                    sent_live: r.sent_live,
                    delivered: r.delivered,
                    read: r.read,
                })
                .collect(),
            next_after,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(secret: &str) -> SecretKey {
        ("admin".to_owned(), secret_digest(secret))
    }

    fn checking(v: &VerifiedSecrets) -> usize {
        v.checking.lock().len()
    }

    #[tokio::test]
    async fn checks_of_one_credential_take_turns_and_leave_nothing_behind() {
        let v = VerifiedSecrets::default();
        let first = v.turn(&key("s"));
        let held = first.lock.clone().try_lock_owned();
        assert!(held.is_ok(), "the first check runs at once");
        let second = v.turn(&key("s"));
        assert!(
            second.lock.try_lock().is_err(),
            "a second check of the same credential waits"
        );
        let other = v.turn(&key("t"));
        assert!(other.lock.try_lock().is_ok(), "another credential does not");
        assert_eq!(checking(&v), 2);
        drop(other);
        assert_eq!(checking(&v), 1);
        drop(held);
        drop(first);
        assert_eq!(checking(&v), 1, "the waiting check still needs the queue");
        assert!(second.lock.try_lock().is_ok(), "and now has its turn");
        drop(second);
        assert_eq!(checking(&v), 0, "nothing is left once no check runs");
    }

    #[test]
    fn a_remembered_secret_expires() {
        let v = VerifiedSecrets::default();
        v.remember(key("s"), 1000, "h1".into());
        assert_eq!(
            v.remembered(&key("s"), 1000 + VERIFIED_FOR_SECS - 1)
                .as_deref(),
            Some("h1"),
            "with the stored hash it matched"
        );
        assert!(v.remembered(&key("s"), 1000 + VERIFIED_FOR_SECS).is_none());
        assert!(v.remembered(&key("t"), 1000).is_none());
        v.remember(key("s"), 1000, "h1".into());
        v.forget("admin");
        assert!(
            v.remembered(&key("s"), 1001).is_none(),
            "forgotten on a change"
        );
    }
}
