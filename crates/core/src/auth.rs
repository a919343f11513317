//! Identity: registration, password login, sessions under the device
//! policy, access tokens (EdDSA JWT), refresh-token rotation with reuse
//! detection, and immediate revocation.
//!
//! An access token is accepted only if its signature and expiry hold *and*
//! its session is still active in the store, so revocation takes effect on
//! the next request; live connections of a revoked session receive
//! `session.revoked` through their inbox and close.

use std::collections::HashMap;

use jsonwebtoken::{Algorithm, Validation};
use parking_lot::Mutex;
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;
use unimsg_proto::api::{
    LoginRequest, PublicUser, RegisterRequest, SessionInfo, TokenPair, UserProfile,
};
use unimsg_proto::event::{RevokeReason, SessionRevokedData};
use unimsg_proto::hooks::{
    AlertKind, HookEventType, LoginData, SecurityAlertData, SessionData, UserData,
};
use unimsg_proto::{Platform, SessionId, UserId};
use unimsg_store::{
    EventBody, HookDraft, NewRefreshToken, NewSession, NewUser, RefreshOutcome, Revocation,
    Session, StoredEvent, UserStatus,
};

use crate::Core;
use crate::audit::AuditRecord;
use crate::config::DevicePolicy;
use crate::error::{CoreError, Result};
use crate::keys::{OpaqueToken, new_opaque_token};
use crate::limits::{Limit, Realm};

/// Who is calling: established from a valid access token of an active session.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuthContext {
    pub user_id: UserId,
    pub session_id: SessionId,
    pub platform: Platform,
    /// The token's `exp` (unix seconds): live connections opened with it
    /// end then, as HTTP refuses it from then on.
    pub expires_at: i64,
}

/// Where a login comes from, for the session record.
#[derive(Debug, Clone, Default)]
pub struct ClientInfo {
    pub ip: Option<String>,
    pub user_agent: Option<String>,
    /// The language the client asked for (`Accept-Language`), for the few
    /// texts the server writes itself.
    pub language: Language,
}

/// How [`Core::lookup_user`] names the user it looks for.
#[derive(Debug, Clone)]
pub enum LookupBy {
    Username(String),
    Id(UserId),
}

/// The languages of the texts the server writes itself (the new sign-in
/// notice): Chinese when the client prefers it, else English.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Language {
    #[default]
    English,
    Chinese,
}

impl Language {
    /// From an `Accept-Language` header: its first language decides.
    pub fn from_accept_language(header: &str) -> Self {
        let first = header
            .split(',')
            .next()
            .and_then(|tag| tag.split(';').next())
            .unwrap_or("")
            .trim();
        let primary = first.split(['-', '_']).next().unwrap_or("");
        if primary.eq_ignore_ascii_case("zh") {
            Self::Chinese
        } else {
            Self::English
        }
    }
}

/// The JWT claims of an access token.
#[derive(Debug, Serialize, Deserialize)]
struct Claims {
    sub: String,
    sid: String,
    plt: String,
    exp: i64,
    iat: i64,
    jti: String,
}

/// Seconds an access token is still accepted after its `exp`.
const TOKEN_LEEWAY_SECS: u64 = 5;

/// Most access tokens remembered as verified at once.
const VERIFIED_TOKENS: usize = 65_536;

fn token_digest(token: &str) -> [u8; 32] {
    let digest = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, token.as_bytes());
    let mut out = [0u8; 32];
    out.copy_from_slice(digest.as_ref());
    out
}

/// Access tokens whose signature was verified, by SHA-256 of the token,
/// with what they say and until when they are valid. An Ed25519
/// verification costs tens of microseconds, more than the rest of a small
/// request; a client sends the same token until it refreshes it. Only
/// digests are kept, never tokens; the map is bounded (expired entries
/// are dropped when it is full, then everything if that is not enough).
#[derive(Default)]
pub(crate) struct VerifiedTokens(Mutex<HashMap<[u8; 32], VerifiedToken>>);

type TokenSubject = (UserId, SessionId, Platform);

struct VerifiedToken {
    subject: TokenSubject,
    /// Accepted up to and including this unix second.
    until: i64,
}

impl std::fmt::Debug for VerifiedTokens {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("VerifiedTokens([redacted])")
    }
}

impl VerifiedTokens {
    /// What a known token says, and its `exp`.
    fn get(&self, digest: &[u8; 32], now: i64) -> Option<(TokenSubject, i64)> {
        let map = self.0.lock();
        let leeway = i64::try_from(TOKEN_LEEWAY_SECS).unwrap_or(0);
        map.get(digest)
            .filter(|t| now <= t.until)
            .map(|t| (t.subject.clone(), t.until.saturating_sub(leeway)))
    }

    fn insert(&self, digest: [u8; 32], subject: TokenSubject, exp: i64, now: i64) {
        let mut map = self.0.lock();
        if map.len() >= VERIFIED_TOKENS {
            map.retain(|_, t| now <= t.until);
            if map.len() >= VERIFIED_TOKENS {
                map.clear();
            }
        }
        let until = exp.saturating_add(i64::try_from(TOKEN_LEEWAY_SECS).unwrap_or(0));
        map.insert(digest, VerifiedToken { subject, until });
    }
}

const MIN_PASSWORD: usize = 8;
const MAX_PASSWORD: usize = 1024;

fn new_id() -> String {
    uuid::Uuid::now_v7().simple().to_string()
}

pub(crate) fn validate_username(name: &str) -> Result<()> {
    let ok_chars = name
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'));
    if !(3..=32).contains(&name.len()) || !ok_chars {
        return Err(CoreError::BadRequest(
            "username must be 3 to 32 characters of ASCII letters, digits, '_', '.' or '-'".into(),
        ));
    }
    Ok(())
}

pub(crate) fn validate_password(password: &str) -> Result<()> {
    if password.len() < MIN_PASSWORD || password.len() > MAX_PASSWORD {
        return Err(CoreError::BadRequest(format!(
            "password must be {MIN_PASSWORD} to {MAX_PASSWORD} bytes long"
        )));
    }
    Ok(())
}

pub(crate) fn validate_display_name(name: &str) -> Result<()> {
    if name.trim().is_empty() || name.chars().count() > 64 {
        return Err(CoreError::BadRequest(
            "display_name must be 1 to 64 characters".into(),
        ));
    }
    Ok(())
}

pub(crate) fn validate_device(device: Option<&str>) -> Result<()> {
    if let Some(d) = device {
        let ok = !d.is_empty()
            && d.len() <= 128
            && d.chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-' | ':'));
        if !ok {
            return Err(CoreError::BadRequest(
                "device_id must be 1 to 128 characters of ASCII letters, digits, '_', '.', '-' or ':'".into(),
            ));
        }
    }
    Ok(())
}

fn session_info(s: &Session, current: &SessionId) -> SessionInfo {
    SessionInfo {
        session_id: s.session_id.clone(),
        platform: s.platform.clone(),
        device_id: s.device_id.clone(),
        created_at: s.created_at,
        current: &s.session_id == current,
    }
}

impl Core {
    /// `POST /v1/auth/register`
    pub async fn register(&self, req: RegisterRequest, client: &ClientInfo) -> Result<UserProfile> {
        if !self.config.auth.registration_open {
            return Err(CoreError::RegistrationClosed);
        }
        if let Some(ip) = &client.ip {
            self.check_limit(Limit::Register, ip).await?;
        }
        validate_username(&req.username)?;
        validate_password(&req.password)?;
        let display_name = req.display_name.unwrap_or_else(|| req.username.clone());
        if display_name.trim().is_empty() || display_name.chars().count() > 64 {
            return Err(CoreError::BadRequest(
                "display_name must be 1 to 64 characters".into(),
            ));
        }
        let hash = self.passwords.hash(req.password).await?;
        let user_id = UserId::parse(new_id()).map_err(|e| CoreError::Internal(e.to_string()))?;
        let hook = self.user_created_hook(&user_id, &req.username, &display_name);
        let hooked = hook.is_some();
        let user = self
            .store
            .create_user(NewUser {
                user_id,
                username: req.username,
                display_name,
                password_hash: Some(hash),
                created_at: self.clock.now(),
                hook,
            })
            .await
            .map_err(|e| match e {
                unimsg_store::StoreError::Conflict(_) => {
                    CoreError::Conflict("username is taken".into())
                }
                other => other.into(),
            })?;
        if hooked {
            self.wake_dispatcher();
        }
        Ok(UserProfile {
            user_id: user.user_id,
            username: user.username,
            display_name: user.display_name,
            created_at: user.created_at,
        })
    }

    /// `POST /v1/auth/login`
    pub async fn login(&self, req: LoginRequest, client: ClientInfo) -> Result<TokenPair> {
        validate_device(req.device_id.as_deref())?;
        if req.password.len() > MAX_PASSWORD || req.username.len() > 64 {
            return Err(CoreError::Unauthorized("invalid username or password"));
        }
        if let Some(ip) = &client.ip
            && let Err(e) = self.check_limit(Limit::Login, ip).await
        {
            login_failed("rate_limited");
            return Err(e);
        }
        // Back-off after repeated failures of this account from this IP
        // (see `limits`) is checked before the password, so a locked pair
        // costs no hashing.
        let ip = client.ip.as_deref();
        if let Err(wait) = self
            .limits
            .login_locked(Realm::User, &req.username, ip)
            .await
        {
            // At most one alert a minute, whoever is locked (the refusals
            // are unauthenticated: they must not grow any state).
            if let Some(held_back) = self.replay_alerts.allow("login_backoff") {
                let alert = SecurityAlertData {
                    alert: AlertKind::LoginBackoff,
                    user_id: None,
                    ip: client.ip.clone(),
                    detail: Some(format!(
                        "login attempts for {:?} are slowed down; {held_back} more locked attempts in the last minute",
                        req.username.chars().take(64).collect::<String>()
                    )),
                };
                self.alert(alert).await;
            }
            login_failed("backoff");
            return Err(CoreError::RateLimited(wait.0));
        }
        let user = self.store.user_by_username(&req.username).await?;
        let hash = user.as_ref().and_then(|u| u.password_hash.clone());
        let ok = self.passwords.verify(req.password, hash).await?;
        if ok {
            self.limits
                .login_succeeded(Realm::User, &req.username, ip)
                .await;
        } else {
            self.limits
                .login_failed(Realm::User, &req.username, ip)
                .await;
        }
        let Some(user) = user.filter(|_| ok) else {
            login_failed("bad_credentials");
            self.login_failed_from(ip, &req.username).await;
            self.audit(AuditRecord {
                action: "auth.login_failed".into(),
                actor_kind: "user".into(),
                actor: req.username.chars().take(64).collect(),
                ip: client.ip.clone(),
                outcome: "denied".into(),
                ..AuditRecord::default()
            })
            .await;
            return Err(CoreError::Unauthorized("invalid username or password"));
        };
        if user.status == UserStatus::Disabled {
            login_failed("disabled");
            return Err(disabled());
        }
        let ip = client.ip.clone();
        let language = client.language;
        let new_place = self
            .store
            .is_new_place(&user.user_id, req.device_id.as_deref(), ip.as_deref())
            .await?;
        let (platform, device) = (req.platform.clone(), req.device_id.clone());
        let pair = self
            .open_session(&user.user_id, req.platform, req.device_id, client)
            .await?;
        self.audit(AuditRecord {
            action: "auth.login".into(),
            actor_kind: "user".into(),
            actor: user.user_id.to_string(),
            ip: ip.clone(),
            outcome: "ok".into(),
            session_id: Some(pair.session_id.to_string()),
            ..AuditRecord::default()
        })
        .await;
        login_succeeded("password");
        if new_place {
            self.warn_new_place(&user.user_id, &platform, device, ip, language, &pair)
                .await;
        }
        Ok(pair)
    }

    /// A sign-in from a device and an address this user never used: an
    /// audit entry, a `security.alert` webhook event, and (unless
    /// `auth.new_device_notice` is off) a notification in the user's
    /// system conversation, in the language the login asked for.
    async fn warn_new_place(
        &self,
        user: &UserId,
        platform: &Platform,
        device: Option<String>,
        ip: Option<String>,
        language: Language,
        pair: &TokenPair,
    ) {
        let alert = SecurityAlertData {
            alert: AlertKind::NewPlace,
            user_id: Some(user.clone()),
            ip: ip.clone(),
            detail: device.clone(),
        };
        self.emit(HookEventType::SecurityAlert, &alert).await;
        self.audit(AuditRecord {
            action: "auth.new_place".into(),
            actor_kind: "user".into(),
            actor: user.to_string(),
            ip: ip.clone(),
            outcome: "ok".into(),
            session_id: Some(pair.session_id.to_string()),
            detail: device.clone(),
            ..AuditRecord::default()
        })
        .await;
        if !self.config.auth.new_device_notice {
            return;
        }
        let (title, body) = match language {
            Language::English => (
                "New sign-in",
                "Your account was used to sign in from a new device or address.",
            ),
            Language::Chinese => ("新的登录", "你的账号在新的设备或地址上登录了。"),
        };
        let content = NewPlaceNotice {
            title,
            body,
            platform,
            device_id: device,
            ip,
            session_id: &pair.session_id,
        };
        let content = match serde_json::to_value(&content) {
            Ok(content) => content,
            Err(error) => {
                tracing::warn!(%error, user_id = %user, "cannot encode the new sign-in notification");
                return;
            }
        };
        let request = unimsg_proto::admin::NotifyRequest {
            to: unimsg_proto::admin::Target::Users(vec![user.clone()]),
            kind: "notification".into(),
            content,
            from: Some("security".into()),
        };
        if let Err(error) = self.notify(request).await {
            tracing::warn!(%error, user_id = %user, "cannot send the new sign-in notification");
        }
    }

    /// Opens a session for a user whose identity is established, kicking
    /// the sessions the device policy forbids alongside it.
    pub async fn open_session(
        &self,
        user: &UserId,
        platform: Platform,
        device_id: Option<String>,
        client: ClientInfo,
    ) -> Result<TokenPair> {
        self.open_session_with_ttl(user, platform, device_id, client, None)
            .await
    }

    /// [`Self::open_session`] with an access-token lifetime other than the default.
    pub async fn open_session_with_ttl(
        &self,
        user: &UserId,
        platform: Platform,
        device_id: Option<String>,
        client: ClientInfo,
        access_ttl: Option<u64>,
    ) -> Result<TokenPair> {
        let opening = Opening {
            platform,
            device_id,
            client,
            access_ttl,
            also: None,
        };
        self.open_session_for(user, opening).await
    }

    /// Opens a session; `opening.also` is a webhook event written with it
    /// (a `qr.confirmed`).
    pub(crate) async fn open_session_for(
        &self,
        user: &UserId,
        opening: Opening,
    ) -> Result<TokenPair> {
        let Opening {
            platform,
            device_id,
            client,
            access_ttl,
            also,
        } = opening;
        // Every way in (password, minted tokens, QR by a phone or by the
        // admin API) ends here, so this is where a disabled account is
        // stopped; `authenticate` refuses a session whose user was
        // disabled while it was being opened.
        match self.store.user(user).await? {
            Some(u) if u.status == UserStatus::Active => {}
            Some(_) => return Err(disabled()),
            None => return Err(CoreError::NotFound("user not found".into())),
        }
        let now = self.clock.now();
        let active = self.store.active_sessions(user).await?;
        let kicked = active
            .iter()
            .filter(|s| match self.config.auth.device_policy {
                DevicePolicy::Single => true,
                DevicePolicy::OnePerPlatform => s.platform == platform,
                DevicePolicy::Multi => s.platform == platform && s.device_id == device_id,
            });
        let kick = kicked
            .map(|s| {
                self.revocation(
                    user,
                    &s.session_id,
                    RevokeReason::ReplacedByNewLogin,
                    now,
                    None,
                )
            })
            .collect::<Result<Vec<_>>>()?;
        let session_id =
            SessionId::parse(new_id()).map_err(|e| CoreError::Internal(e.to_string()))?;
        let (refresh, refresh_hash) =
            new_opaque_token().map_err(|e| CoreError::Internal(e.to_string()))?;
        let login = LoginData {
            user_id: user.clone(),
            session_id: session_id.clone(),
            platform: platform.clone(),
            device_id: device_id.clone(),
            ip: client.ip.clone(),
        };
        let session = NewSession {
            session_id: session_id.clone(),
            user_id: user.clone(),
            platform: platform.clone(),
            device_id,
            created_at: now,
            ip: client.ip,
            user_agent: client.user_agent,
        };
        let expires_at = now + time::Duration::seconds(self.config.auth.refresh_ttl_secs as i64);
        let hooks: Vec<HookDraft> = self
            .hook_draft(HookEventType::UserLogin, &login, None)
            .into_iter()
            .chain(also)
            .collect();
        let events = self
            .store
            .open_session(
                session,
                NewRefreshToken {
                    hash: refresh_hash,
                    expires_at,
                },
                kick,
                hooks.clone(),
            )
            .await?;
        self.publish(&events).await;
        self.audit_revocations(&events).await;
        if !hooks.is_empty() {
            self.wake_dispatcher();
        }
        self.token_pair(user, &session_id, &platform, refresh, now, access_ttl)
    }

    /// A revocation of `session` with its `session.revoked` webhook event
    /// and `also` (a `user.logout`), written only if it revokes.
    pub(crate) fn revocation(
        &self,
        user: &UserId,
        session: &SessionId,
        reason: RevokeReason,
        at: OffsetDateTime,
        also: Option<HookDraft>,
    ) -> Result<Revocation> {
        let revoked = SessionData {
            user_id: user.clone(),
            session_id: session.clone(),
            reason: Some(reason.as_str().to_owned()),
        };
        let mut r = revocation(session, reason, at)?;
        r.hooks = self
            .hook_draft(HookEventType::SessionRevoked, &revoked, None)
            .into_iter()
            .chain(also)
            .collect();
        Ok(r)
    }

    /// One audit entry per session revoked by these events; wakes the
    /// dispatcher for the webhook events written with them.
    pub(crate) async fn audit_revocations(&self, events: &[StoredEvent]) {
        if !events.is_empty() && self.hook_wanted(HookEventType::SessionRevoked) {
            self.wake_dispatcher();
        }
        for e in events
            .iter()
            .filter(|e| e.kind == unimsg_proto::EventType::SessionRevoked)
        {
            let (session, reason) = match &e.body {
                EventBody::Data(d) => {
                    let v: serde_json::Value = serde_json::from_str(d).unwrap_or_default();
                    (
                        v["session_id"].as_str().map(str::to_owned),
                        v["reason"].as_str().map(str::to_owned),
                    )
                }
                _ => (None, None),
            };
            self.audit(AuditRecord {
                action: "session.revoked".into(),
                actor_kind: "system".into(),
                actor: "-".into(),
                outcome: "ok".into(),
                target: Some(e.user_id.to_string()),
                session_id: session,
                detail: reason,
                ..AuditRecord::default()
            })
            .await;
        }
    }

    fn token_pair(
        &self,
        user: &UserId,
        session: &SessionId,
        platform: &Platform,
        refresh: OpaqueToken,
        now: OffsetDateTime,
        access_ttl: Option<u64>,
    ) -> Result<TokenPair> {
        let ttl = access_ttl.unwrap_or(self.config.auth.access_ttl_secs);
        let claims = Claims {
            sub: user.to_string(),
            sid: session.to_string(),
            plt: platform.to_string(),
            iat: now.unix_timestamp(),
            exp: now.unix_timestamp() + ttl as i64,
            jti: new_id(),
        };
        let access = self.sign_token(&claims)?;
        Ok(TokenPair {
            access_token: access,
            refresh_token: refresh.0,
            expires_in: ttl,
            user_id: user.clone(),
            session_id: session.clone(),
        })
    }

    /// `POST /v1/auth/refresh`: rotates the pair. Presenting a refresh token
    /// that was already rotated revokes the whole session (theft detection).
    pub async fn refresh(&self, presented: &str, client: &ClientInfo) -> Result<TokenPair> {
        if let Some(ip) = &client.ip {
            self.check_limit(Limit::Token, ip).await?;
        }
        let now = self.clock.now();
        let presented = OpaqueToken(presented.to_owned());
        let (next, next_hash) =
            new_opaque_token().map_err(|e| CoreError::Internal(e.to_string()))?;
        let expires_at = now + time::Duration::seconds(self.config.auth.refresh_ttl_secs as i64);
        let outcome = self
            .store
            .rotate_refresh(
                &presented.hash(),
                NewRefreshToken {
                    hash: next_hash,
                    expires_at,
                },
                now,
            )
            .await?;
        match outcome {
            RefreshOutcome::Rotated(session) => {
                // The store rotates only for an active session of an active
                // user (`Session::is_active`); checked again here so that
                // a backend cannot forget it.
                if !session.is_active() {
                    return Err(CoreError::Unauthorized("invalid refresh token"));
                }
                self.token_pair(
                    &session.user_id,
                    &session.session_id,
                    &session.platform,
                    next,
                    now,
                    None,
                )
            }
            RefreshOutcome::Reused(session) => {
                metrics::counter!("unimsg_refresh_token_reuse_total").increment(1);
                tracing::warn!(session_id = %session.session_id, user_id = %session.user_id,
                    "refresh token reused: revoking the session");
                self.revoke(
                    &session.user_id,
                    &session.session_id,
                    RevokeReason::RefreshTokenReuse,
                    None,
                )
                .await?;
                let alert = SecurityAlertData {
                    alert: AlertKind::RefreshTokenReuse,
                    user_id: Some(session.user_id.clone()),
                    ip: None,
                    detail: Some(format!("session {} revoked", session.session_id)),
                };
                self.alert(alert).await;
                Err(CoreError::Unauthorized(
                    "refresh token was already used; the session is revoked",
                ))
            }
            RefreshOutcome::Invalid => Err(CoreError::Unauthorized("invalid refresh token")),
        }
    }

    /// Revokes one session: its tokens are refused from now on and its live
    /// connections receive `session.revoked` and close.
    /// `also` is a webhook event written with the revocation (a logout).
    pub async fn revoke(
        &self,
        user: &UserId,
        session: &SessionId,
        reason: RevokeReason,
        also: Option<HookDraft>,
    ) -> Result<()> {
        let revocation = self.revocation(user, session, reason, self.clock.now(), also)?;
        let hooked = !revocation.hooks.is_empty();
        let events = self.store.revoke_sessions(vec![revocation]).await?;
        self.publish(&events).await;
        self.audit_revocations(&events).await;
        if hooked && !events.is_empty() {
            self.wake_dispatcher();
        }
        Ok(())
    }

    /// `POST /v1/auth/logout`
    pub async fn logout(&self, auth: &AuthContext) -> Result<()> {
        let data = SessionData {
            user_id: auth.user_id.clone(),
            session_id: auth.session_id.clone(),
            reason: None,
        };
        let logout = self.hook_draft(HookEventType::UserLogout, &data, None);
        self.revoke(
            &auth.user_id,
            &auth.session_id,
            RevokeReason::Logout,
            logout,
        )
        .await?;
        self.audit(AuditRecord {
            action: "auth.logout".into(),
            actor_kind: "user".into(),
            actor: auth.user_id.to_string(),
            outcome: "ok".into(),
            session_id: Some(auth.session_id.to_string()),
            ..AuditRecord::default()
        })
        .await;
        Ok(())
    }

    /// `DELETE /v1/me/sessions/{id}`: end one of the caller's own sessions.
    pub async fn end_own_session(&self, auth: &AuthContext, session: &SessionId) -> Result<()> {
        match self.store.session(session).await? {
            Some(s) if s.user_id == auth.user_id && s.is_active() => {
                self.revoke(&auth.user_id, session, RevokeReason::EndedByUser, None)
                    .await
            }
            _ => Err(CoreError::NotFound("session not found".into())),
        }
    }

    /// Checks an access token: signature (EdDSA only), expiry, and that its
    /// session is still active.
    pub async fn authenticate(&self, token: &str) -> Result<AuthContext> {
        const INVALID: CoreError = CoreError::Unauthorized("invalid or expired access token");
        if token.len() > 4096 {
            return Err(INVALID);
        }
        let digest = token_digest(token);
        let now = self.clock.now().unix_timestamp();
        let ((user_id, session_id, platform), expires_at) = match self.tokens.get(&digest, now) {
            Some(known) => known,
            None => {
                let key = self.verifying_key(token).await.ok_or(INVALID)?;
                let mut validation = Validation::new(Algorithm::EdDSA);
                validation.leeway = TOKEN_LEEWAY_SECS;
                validation.set_required_spec_claims(&["exp", "sub"]);
                let data = jsonwebtoken::decode::<Claims>(token, &key, &validation)
                    .map_err(|_| INVALID)?;
                let claims = data.claims;
                let (Ok(user_id), Ok(session_id), Ok(platform)) = (
                    UserId::parse(claims.sub),
                    SessionId::parse(claims.sid),
                    Platform::parse(claims.plt),
                ) else {
                    return Err(INVALID);
                };
                let known = (user_id, session_id, platform);
                self.tokens.insert(digest, known.clone(), claims.exp, now);
                (known, claims.exp)
            }
        };
        // The signature is checked once per token; the session (with its
        // user's status, in the same read) is checked on every use, so a
        // revocation or a disabled account takes effect at once. On a
        // single node the check is a lookup of sessions read as active,
        // which every such change empties ([`crate::sessions`]).
        let context = AuthContext {
            user_id,
            session_id,
            platform,
            expires_at,
        };
        if self.sessions.active(&context.session_id).as_ref() == Some(&context.user_id) {
            return Ok(context);
        }
        let epoch = self.sessions.epoch();
        match self.store.session(&context.session_id).await? {
            Some(s) if s.is_active() && s.user_id == context.user_id => {
                self.sessions.insert(s.session_id, s.user_id, epoch);
                Ok(context)
            }
            _ => {
                // A token that verifies, of a session revoked since.
                metrics::counter!("unimsg_revoked_token_use_total").increment(1);
                Err(CoreError::Unauthorized("the session was revoked"))
            }
        }
    }

    /// When a live connection opened with `auth` must end: the token's
    /// `exp`, on the runtime's clock (at once if it has passed).
    pub fn token_deadline(&self, auth: &AuthContext) -> tokio::time::Instant {
        let now = self.clock.now();
        let exp = OffsetDateTime::from_unix_timestamp(auth.expires_at).unwrap_or(now);
        // Bounded, so the addition below cannot overflow.
        const YEAR: std::time::Duration = std::time::Duration::from_secs(365 * 24 * 3600);
        let left = std::time::Duration::try_from(exp - now)
            .unwrap_or_default()
            .min(YEAR);
        tokio::time::Instant::now() + left
    }

    /// The unix second of a runtime instant (the inverse of
    /// [`Self::token_deadline`], for telling clients when).
    pub fn unix_deadline(&self, at: tokio::time::Instant) -> i64 {
        let left = at.saturating_duration_since(tokio::time::Instant::now());
        // Rounded up: the deadline came from a whole second.
        let secs = left.as_secs() + u64::from(left.subsec_nanos() > 0);
        let left = i64::try_from(secs).unwrap_or(i64::MAX);
        self.clock.now().unix_timestamp().saturating_add(left)
    }

    /// Whether a session is still active (for connections to re-check after subscribing).
    pub async fn session_active(&self, session: &SessionId) -> Result<bool> {
        if self.sessions.active(session).is_some() {
            return Ok(true);
        }
        let epoch = self.sessions.epoch();
        match self.store.session(session).await? {
            Some(s) if s.is_active() => {
                self.sessions.insert(s.session_id, s.user_id, epoch);
                Ok(true)
            }
            _ => Ok(false),
        }
    }

    /// `GET /v1/me`
    pub async fn me(&self, auth: &AuthContext) -> Result<UserProfile> {
        let user = self
            .store
            .user(&auth.user_id)
            .await?
            .ok_or_else(|| CoreError::NotFound("user not found".into()))?;
        Ok(UserProfile {
            user_id: user.user_id,
            username: user.username,
            display_name: user.display_name,
            created_at: user.created_at,
        })
    }

    /// `GET /v1/users?username=`: another user's public profile, so that
    /// a client can start a chat by username. Limited per caller; a
    /// disabled or unknown user is the same 404.
    pub async fn lookup_user(&self, auth: &AuthContext, by: LookupBy) -> Result<PublicUser> {
        self.check_limit(crate::limits::Limit::Lookup, auth.user_id.as_str())
            .await?;
        let not_found = || CoreError::NotFound("no such user".into());
        let user = match by {
            LookupBy::Username(name) if name.is_empty() || name.len() > 64 => None,
            LookupBy::Username(name) => self.store.user_by_username(&name).await?,
            LookupBy::Id(id) => self.store.user(&id).await?,
        };
        match user {
            Some(user) if user.status == UserStatus::Active => Ok(PublicUser {
                user_id: user.user_id,
                username: user.username,
                display_name: user.display_name,
            }),
            _ => Err(not_found()),
        }
    }

    /// `GET /v1/admin/users/{id}/sessions`: a user's sessions that are not
    /// revoked, for an admin (none of them is "current").
    pub async fn user_sessions(&self, id: &UserId) -> Result<Vec<SessionInfo>> {
        if self.store.user(id).await?.is_none() {
            return Err(CoreError::NotFound("user not found".into()));
        }
        let sessions = self.store.active_sessions(id).await?;
        Ok(sessions
            .iter()
            .map(|s| SessionInfo {
                current: false,
                ..session_info(s, &s.session_id)
            })
            .collect())
    }

    /// `GET /v1/me/sessions`
    pub async fn sessions(&self, auth: &AuthContext) -> Result<Vec<SessionInfo>> {
        let sessions = self.store.active_sessions(&auth.user_id).await?;
        Ok(sessions
            .iter()
            .map(|s| session_info(s, &auth.session_id))
            .collect())
    }
}

/// The content of the notification about a sign-in from a new place.
#[derive(Serialize)]
struct NewPlaceNotice<'a> {
    title: &'static str,
    body: &'static str,
    platform: &'a Platform,
    device_id: Option<String>,
    ip: Option<String>,
    session_id: &'a SessionId,
}

/// The refusal for a disabled account (given only to a caller who proved
/// who they are, or to the admin API).
pub(crate) fn disabled() -> CoreError {
    CoreError::Forbidden("this account is disabled".into())
}

/// How a session is opened: see [`Core::open_session_for`].
pub(crate) struct Opening {
    pub platform: Platform,
    pub device_id: Option<String>,
    pub client: ClientInfo,
    pub access_ttl: Option<u64>,
    pub also: Option<HookDraft>,
}

/// Counts a refused password login by why it was refused.
fn login_failed(reason: &'static str) {
    metrics::counter!("unimsg_login_failures_total", "reason" => reason).increment(1);
    metrics::counter!("unimsg_logins_total", "method" => "password", "result" => "failed")
        .increment(1);
}

/// A sign-in that opened a session.
pub(crate) fn login_succeeded(method: &'static str) {
    metrics::counter!("unimsg_logins_total", "method" => method, "result" => "ok").increment(1);
}

/// A revocation with no webhook event ([`Core::revocation`] adds them).
pub(crate) fn revocation(
    session: &SessionId,
    reason: RevokeReason,
    at: OffsetDateTime,
) -> Result<Revocation> {
    let data = SessionRevokedData {
        session_id: session.clone(),
        reason: reason.as_str().to_owned(),
    };
    Ok(Revocation {
        session_id: session.clone(),
        reason: reason.as_str().to_owned(),
        at,
        event_data: crate::render::event_json(&data)?,
        hooks: Vec::new(),
    })
}

impl Core {
    /// `user.created` for a new user, if an endpoint wants it.
    pub(crate) fn user_created_hook(
        &self,
        user_id: &UserId,
        username: &str,
        display_name: &str,
    ) -> Option<HookDraft> {
        let data = UserData {
            user_id: user_id.clone(),
            username: Some(username.to_owned()),
            display_name: Some(display_name.to_owned()),
            status: Some(UserStatus::Active.as_str().to_owned()),
        };
        self.hook_draft(HookEventType::UserCreated, &data, None)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn subject(n: usize) -> TokenSubject {
        (
            UserId::parse(format!("u{n}")).unwrap(),
            SessionId::parse(format!("s{n}")).unwrap(),
            Platform::parse("web").unwrap(),
        )
    }

    #[test]
    fn a_verified_token_is_known_until_its_expiry_and_leeway() {
        let tokens = VerifiedTokens::default();
        let d = token_digest("a.b.c");
        assert!(tokens.get(&d, 100).is_none());
        tokens.insert(d, subject(1), 200, 100);
        assert_eq!(tokens.get(&d, 205), Some((subject(1), 200)));
        assert!(tokens.get(&d, 206).is_none(), "past exp + leeway");
        assert!(tokens.get(&token_digest("a.b.d"), 100).is_none());
    }

    #[test]
    fn the_map_stays_bounded() {
        let tokens = VerifiedTokens::default();
        for n in 0..VERIFIED_TOKENS + 10 {
            tokens.insert(token_digest(&n.to_string()), subject(1), 200, 100);
        }
        let len = tokens.0.lock().len();
        assert!(len <= VERIFIED_TOKENS, "{len}");
        // Expired entries go first when it is full.
        let tokens = VerifiedTokens::default();
        for n in 0..VERIFIED_TOKENS {
            tokens.insert(token_digest(&n.to_string()), subject(1), 50, 10);
        }
        tokens.insert(token_digest("fresh"), subject(2), 500, 100);
        assert_eq!(
            tokens.get(&token_digest("fresh"), 100),
            Some((subject(2), 500))
        );
        assert_eq!(tokens.0.lock().len(), 1);
    }
}
