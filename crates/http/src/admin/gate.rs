//! The gate in front of every `/v1/admin/*` route, and the audit of each
//! admin request.
//!
//! One middleware, [`gate`], guards every admin route in this order: the
//! IP allowlist (403; the client by [`crate::extract::client_addr`], an
//! unknown client is refused), `admin.require_tls` (403 unless the request
//! came over TLS, see [`crate::extract::arrived_over_tls`]), the credential — HTTP Basic
//! `admin_id:password` or a Bearer admin token — (401), the credential's
//! rate limit (429), replay protection with `X-Nonce` and `X-Timestamp`
//! keyed by the verified admin id (409 / 401, 503 `busy` when the replay
//! store is full); then it runs the handler. Served requests, and refused
//! ones with a valid credential, are audited one entry each; refusals
//! without one (and over a credential's limit) are counted per source
//! ([`unimsg_core::Core::audit_refusal`]). `POST /v1/admin/token` carries
//! its credential in the body: its handler verifies it and names the actor
//! (or the claimed admin) with [`AuditActor`] / [`ClaimedAdmin`].

use axum::extract::{Request, State};
use axum::http::HeaderMap;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use unimsg_core::admin::AdminContext;
use unimsg_core::audit::AuditRecord;
use unimsg_core::limits::Limit;
use unimsg_core::replay::ReplayHeaders;
use unimsg_proto::ErrorCode;

use super::header;
use crate::AppState;
use crate::error::ApiError;
use crate::extract::{ClientAddr, arrived_over_tls, request_client};

/// Set by a handler on its response to name the actor when the request
/// itself carried no credential (`POST /v1/admin/token`), once the
/// credential in the body was verified.
#[derive(Clone)]
pub(super) struct AuditActor(pub(super) String);

/// Set by `POST /v1/admin/token` when the credential in the body was
/// refused: the admin id it named, recorded as the target, never as the actor.
#[derive(Clone)]
pub(super) struct ClaimedAdmin(pub(super) String);

/// Guards and audits every admin request.
pub(crate) async fn gate(State(state): State<AppState>, request: Request, next: Next) -> Response {
    let core = state.core.clone();
    let client = request_client(request.extensions(), request.headers(), &state);
    let mut record = AuditRecord {
        action: "admin.request".into(),
        actor_kind: "admin".into(),
        actor: "-".into(),
        ip: Some(client.key()),
        operation_id: header(request.headers(), "x-operation-id")
            .map(|s| s.chars().take(128).collect()),
        method: Some(request.method().to_string()),
        path: Some(request.uri().path().chars().take(256).collect()),
        ..AuditRecord::default()
    };
    let outcome = admit(&state, client, request, next, &mut record).await;
    let (response, cause) = match outcome {
        Ok(response) => (response, None),
        Err((e, cause)) => (e.into_response(), Some(cause)),
    };
    if let Some(actor) = response.extensions().get::<AuditActor>() {
        record.actor = actor.0.clone();
    }
    if let Some(claimed) = response.extensions().get::<ClaimedAdmin>() {
        record.target = Some(claimed.0.clone());
    }
    let status = response.status().as_u16();
    record.outcome = status.to_string();
    if matches!(status, 401 | 403 | 429) {
        let (status_label, by_handler) = match status {
            401 => ("401", Cause::Credential),
            403 => ("403", Cause::Scope),
            _ => ("429", Cause::RateLimit),
        };
        let cause = cause.unwrap_or(by_handler);
        metrics::counter!("unimsg_admin_refusals_total",
            "status" => status_label, "cause" => cause.as_str())
        .increment(1);
    }
    // Only a verified credential sets the actor. Refusals no credential
    // vouches for, and refusals over a credential's limits, are counted
    // per source instead of written one row each: otherwise anyone could
    // make the audit log (and the writer that message sends use) write
    // as fast as they can send.
    let verified = record.actor != "-";
    if status >= 400 && (!verified || matches!(status, 429 | 503)) {
        core.audit_refusal(record).await;
    } else {
        core.audit(record).await;
    }
    response
}

/// Why the gate refused an admin request, for
/// `unimsg_admin_refusals_total{status, cause}`. A 403 from a handler is
/// a missing scope; a 401 from one (`POST /v1/admin/token`) a credential.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Cause {
    /// The client is not on `admin.ip_allowlist`.
    Allowlist,
    /// `admin.require_tls` and the request came in plain.
    Tls,
    /// No credential, or a wrong, expired or revoked one.
    Credential,
    /// The credential's (or the token endpoint's) rate limit.
    RateLimit,
    /// A nonce seen before, or a timestamp outside the window.
    Replay,
    /// A missing or wrong `X-Signature`.
    Signature,
    /// The credential lacks the route's scope.
    Scope,
}

impl Cause {
    fn as_str(self) -> &'static str {
        match self {
            Cause::Allowlist => "allowlist",
            Cause::Tls => "tls",
            Cause::Credential => "credential",
            Cause::RateLimit => "rate_limit",
            Cause::Replay => "replay",
            Cause::Signature => "signature",
            Cause::Scope => "scope",
        }
    }
}

/// Tags an error of one step of the gate with its cause.
fn because<E: Into<ApiError>>(cause: Cause) -> impl FnOnce(E) -> (ApiError, Cause) {
    move |e| (e.into(), cause)
}

/// The allowlist, the credential, the credential's rate limit and its
/// nonce, in this order: a nonce is recorded only once a credential is
/// verified, keyed by it. `POST /v1/admin/token` carries its credential in
/// the body, so its handler checks the nonce after verifying it.
async fn admit(
    state: &AppState,
    client: ClientAddr,
    mut request: Request,
    next: Next,
    record: &mut AuditRecord,
) -> Result<Response, (ApiError, Cause)> {
    let core = &state.core;
    let allow = &core.config().admin.ip_allowlist;
    let allowed = match client {
        ClientAddr::Ip(ip) => allow.iter().any(|net| net.contains(&ip)),
        // An unknown client cannot be shown to be on the list.
        ClientAddr::Unknown => false,
    };
    if !allow.is_empty() && !allowed {
        return Err((
            ApiError::new(
                ErrorCode::Forbidden,
                "this address may not use the admin API",
            ),
            Cause::Allowlist,
        ));
    }
    if core.config().admin.require_tls
        && !arrived_over_tls(request.extensions(), request.headers(), state)
    {
        return Err((
            ApiError::new(
                ErrorCode::Forbidden,
                "the admin API is served over HTTPS only on this server (admin.require_tls)",
            ),
            Cause::Tls,
        ));
    }
    if request.uri().path() == "/v1/admin/token" {
        core.check_limit(Limit::Token, &client.key())
            .await
            .map_err(because(Cause::RateLimit))?;
        return Ok(next.run(request).await);
    }
    let ctx = authenticate(state, request.headers(), &client.key())
        .await
        .map_err(because(Cause::Credential))?;
    if let ClientAddr::Ip(ip) = client {
        core.admin_seen(&ctx.admin_id, &ip.to_string()).await;
    }
    record.actor = ctx.admin_id.clone();
    record.scope = Some(
        ctx.scopes
            .iter()
            .map(|s| s.as_str())
            .collect::<Vec<_>>()
            .join(","),
    );
    core.check_limit(Limit::Admin, &ctx.admin_id)
        .await
        .map_err(because(Cause::RateLimit))?;
    // An account with no signing secret yet may make its first one
    // unsigned; everything else is signed.
    let signed = core.config().admin.require_signature
        && !(request.method() == axum::http::Method::POST
            && request.uri().path() == format!("/v1/admin/admins/{}/signing-secret", ctx.admin_id)
            && core
                .store_admin_has_no_signing_secret(&ctx.admin_id)
                .await
                .map_err(because(Cause::Signature))?);
    let nonce = header(request.headers(), "x-nonce");
    let timestamp = header(request.headers(), "x-timestamp");
    if signed && (nonce.is_none() || timestamp.is_none()) {
        return Err((
            ApiError::unauthorized("signed admin requests need X-Nonce and X-Timestamp"),
            Cause::Signature,
        ));
    }
    core.check_replay(ReplayHeaders {
        credential: &ctx.admin_id,
        nonce,
        timestamp,
    })
    .await
    .map_err(because(Cause::Replay))?;
    if signed {
        request = verified_signature(state, &ctx.admin_id, request)
            .await
            .map_err(because(Cause::Signature))?;
    }
    request.extensions_mut().insert(ctx);
    Ok(next.run(request).await)
}

/// Reads the body (at most `http.max_body_bytes`) and checks the
/// request's signature over it; the request goes on with the same body.
async fn verified_signature(
    state: &AppState,
    admin_id: &str,
    request: Request,
) -> Result<Request, ApiError> {
    let (parts, body) = request.into_parts();
    let bytes = axum::body::to_bytes(body, state.http.max_body_bytes)
        .await
        .map_err(|_| ApiError::new(ErrorCode::PayloadTooLarge, "the request body is too large"))?;
    let path = parts
        .uri
        .path_and_query()
        .map_or_else(|| parts.uri.path().to_owned(), |p| p.as_str().to_owned());
    let canonical = unimsg_core::admins::canonical_request(
        parts.method.as_str(),
        &path,
        header(&parts.headers, "x-timestamp").unwrap_or_default(),
        header(&parts.headers, "x-nonce").unwrap_or_default(),
        &bytes,
    );
    state
        .core
        .check_signature(admin_id, &canonical, header(&parts.headers, "x-signature"))
        .await?;
    Ok(Request::from_parts(parts, axum::body::Body::from(bytes)))
}

/// The request's admin credential; `ip` is the client's address, which the
/// back-off of failed Basic authentications counts by.
async fn authenticate(
    state: &AppState,
    headers: &HeaderMap,
    client: &str,
) -> Result<AdminContext, ApiError> {
    let value = header(headers, "authorization")
        .ok_or_else(|| ApiError::unauthorized("admin credentials required"))?;
    let (scheme, rest) = value
        .split_once(' ')
        .ok_or_else(|| ApiError::unauthorized("malformed Authorization"))?;
    if scheme.eq_ignore_ascii_case("basic") {
        let (id, secret) = basic_pair(rest)?;
        Ok(state.core.admin_basic(&id, &secret, Some(client)).await?)
    } else if scheme.eq_ignore_ascii_case("bearer") {
        Ok(state.core.admin_bearer(rest.trim(), Some(client)).await?)
    } else {
        Err(ApiError::unauthorized("use Basic or Bearer credentials"))
    }
}

/// The admin id and secret of Basic credentials (the part after `Basic `).
pub(super) fn basic_pair(encoded: &str) -> Result<(String, String), ApiError> {
    let malformed = || ApiError::unauthorized("malformed Basic credentials");
    let decoded = STANDARD
        .decode(encoded.trim())
        .ok()
        .and_then(|b| String::from_utf8(b).ok())
        .ok_or_else(malformed)?;
    let (id, secret) = decoded.split_once(':').ok_or_else(malformed)?;
    Ok((id.to_owned(), secret.to_owned()))
}
