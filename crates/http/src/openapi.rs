//! The OpenAPI 3.1 document (`GET /openapi.json`) and the API reference
//! page (`GET /docs`, Swagger UI from vendored assets: no CDN, no request
//! leaves the server).
//!
//! The document is assembled from the same `utoipa_axum` routers that
//! serve the requests (see [`crate::router`]), so a route cannot be served
//! without being described. What every route shares — the error statuses
//! of the JSON extractor, the bearer check and the admin gate — is added
//! here once, by [`CommonErrors`], mirroring the code that produces them.

use std::borrow::Cow;
use std::sync::{Arc, LazyLock, OnceLock};

use axum::extract::Path;
use axum::http::header::{
    CACHE_CONTROL, CONTENT_SECURITY_POLICY, CONTENT_TYPE, REFERRER_POLICY, X_CONTENT_TYPE_OPTIONS,
    X_FRAME_OPTIONS,
};
use axum::response::{IntoResponse, Redirect, Response};
use bytes::Bytes;
use unimsg_proto::ErrorBody;
use unimsg_proto::admin::Scope;
use unimsg_proto::groups::GroupChanged;
use unimsg_proto::ws::{ClientFrame, ReplyFrame};
use unimsg_proto::{ErrorCode, Event, EventType};
use utoipa::openapi::header::HeaderBuilder;
use utoipa::openapi::path::{Operation, Parameter, ParameterBuilder, ParameterIn};
use utoipa::openapi::schema::{ObjectBuilder, Type};
use utoipa::openapi::security::{ApiKey, ApiKeyValue, HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::openapi::{ContentBuilder, OpenApi, Ref, RefOr, Required, ResponseBuilder, Responses};
use utoipa::{Modify, ToSchema};
use utoipa_swagger_ui::Config;

use crate::error::ApiError;

/// Security scheme names used by the handlers' `#[utoipa::path]`.
pub(crate) const USER_BEARER: &str = "bearer";
pub(crate) const ACCESS_TOKEN_QUERY: &str = "access_token";
pub(crate) const ADMIN_BASIC: &str = "admin_basic";
pub(crate) const ADMIN_BEARER: &str = "admin_bearer";

/// The document's fixed parts: info, tags, security schemes, and the
/// schemas no route body names (WebSocket frames, the inbox event).
#[derive(utoipa::OpenApi)]
#[openapi(
    info(
        title = "unimsg",
        description = "Unified messaging and login server: accounts and sessions, direct \
            messages with gap-free per-user inbox sequences, real-time delivery over WebSocket \
            (`/v1/ws`) or Server-Sent Events (`/v1/events`), and an admin API for business \
            systems.\n\nEvery error is `{\"error\": {\"code\", \"message\"}}` (`ErrorBody`) \
            with the status fixed by the code. Every inbox event is an `Event` \
            (`{seq, type, ts, data}`), identical on WebSocket, SSE and `GET /v1/sync`.",
        license(name = "Apache-2.0", identifier = "Apache-2.0"),
    ),
    tags(
        (name = "auth", description = "Registration, login, token refresh, logout and the caller's sessions."),
        (name = "messages", description = "Direct messages, the inbox (sync and ack), read receipts, recall, conversations and history."),
        (name = "friends", description = "Friend requests, friends with private tags and remarks, and blocks. Every change is an inbox event (`friend.request`, `friend.changed`, `block.changed`)."),
        (name = "groups", description = "Groups with an owner, admins and members: membership, join policy, roles, mutes, ownership transfer, dissolution. Every change is a `group.changed` inbox event (`GroupChanged`) to the members concerned. Group messages are `POST /v1/messages` with `{\"to\": {\"group\": id}}`."),
        (name = "realtime", description = "Live delivery: WebSocket (`/v1/ws`) and Server-Sent Events (`/v1/events`). Both replay what the client missed, then follow live events in seq order."),
        (name = "admin", description = "The API for business systems. Credentials: HTTP Basic `admin_id:password` or a Bearer admin token from `POST /v1/admin/token`. Optional replay protection with `X-Nonce` and `X-Timestamp`; every request is audited (`X-Operation-Id` is recorded)."),
        (name = "webhooks", description = "Webhook endpoints of business systems (scope `webhooks`). Events are written to a durable outbox with the change that causes them and POSTed as `{type, timestamp, data}` with the Standard Webhooks 1.0 headers `webhook-id`, `webhook-timestamp` and `webhook-signature`; failed attempts are retried with back-off. The event types are `HookEventType`; each has a data schema (`MessageCreatedData`, `UserData`, `LoginData`, …)."),
        (name = "health", description = "Liveness, readiness, Prometheus metrics and this document."),
    ),
    components(schemas(
        Event, EventType, ClientFrame, ReplyFrame, ErrorBody, ErrorCode, Scope, GroupChanged,
        unimsg_proto::hooks::HookEventType,
        unimsg_proto::hooks::MessageCreatedData,
        unimsg_proto::hooks::MessageDeliveredData,
        unimsg_proto::hooks::MessageReadData,
        unimsg_proto::hooks::MessageRecalledHookData,
        unimsg_proto::hooks::NotificationStatusData,
        unimsg_proto::hooks::UserData,
        unimsg_proto::hooks::LoginData,
        unimsg_proto::hooks::SessionData,
        unimsg_proto::hooks::PresenceData,
        unimsg_proto::hooks::RelationData,
        unimsg_proto::hooks::QrConfirmedData,
        unimsg_proto::hooks::SecurityAlertData,
        unimsg_proto::hooks::AlertKind,
        unimsg_proto::hooks::WebhookTestData,
        unimsg_proto::hooks::BeforeSendRequest,
        unimsg_proto::hooks::BeforeSendAnswer,
    )),
    modifiers(&SecuritySchemes),
)]
pub(crate) struct ApiDoc;

/// Declares the security schemes the handlers refer to.
struct SecuritySchemes;

impl Modify for SecuritySchemes {
    fn modify(&self, openapi: &mut OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            USER_BEARER,
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .bearer_format("JWT")
                    .description(Some(
                        "A user's access token from login, refresh or an admin mint (EdDSA JWT).",
                    ))
                    .build(),
            ),
        );
        components.add_security_scheme(
            ACCESS_TOKEN_QUERY,
            SecurityScheme::ApiKey(ApiKey::Query(ApiKeyValue::with_description(
                "access_token",
                "A user's access token in the query string, for WebSocket and EventSource \
                 clients that cannot set headers.",
            ))),
        );
        components.add_security_scheme(
            ADMIN_BASIC,
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Basic)
                    .description(Some("An admin account: `admin_id:password`."))
                    .build(),
            ),
        );
        components.add_security_scheme(
            ADMIN_BEARER,
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .bearer_format("JWT")
                    .description(Some("An admin token from `POST /v1/admin/token`."))
                    .build(),
            ),
        );
    }
}

/// Operations whose JSON body may be left empty (their handlers read the
/// raw body; there is no content-type check).
const OPTIONAL_BODIES: &[&str] = &["admin_force_logout"];

/// Adds what comes from shared code rather than from a handler: the error
/// responses of the JSON body extractor (400, 413, and 415 for required
/// bodies), of the bearer check (401) and of the admin gate (400, 401,
/// 403, 409, 429, 503, and the gate's request headers).
pub(crate) struct CommonErrors;

fn error_response(description: &str) -> RefOr<utoipa::openapi::Response> {
    error_response_builder(description).build().into()
}

fn error_response_builder(description: &str) -> ResponseBuilder {
    ResponseBuilder::new().description(description).content(
        "application/json",
        ContentBuilder::new()
            .schema(Some(Ref::from_schema_name(ErrorBody::name())))
            .build(),
    )
}

fn rate_limited() -> RefOr<utoipa::openapi::Response> {
    error_response_builder("Rate limited (`rate_limited`); retry after `Retry-After` seconds.")
        .header(
            "Retry-After",
            HeaderBuilder::new()
                .schema(Some(
                    ObjectBuilder::new()
                        .schema_type(Type::Integer)
                        .minimum(Some(1)),
                ))
                .description(Some("Seconds to wait before retrying."))
                .build(),
        )
        .build()
        .into()
}

fn add(
    responses: &mut Responses,
    status: &str,
    response: impl FnOnce() -> RefOr<utoipa::openapi::Response>,
) {
    if !responses.responses.contains_key(status) {
        responses.responses.insert(status.to_owned(), response());
    }
}

fn header_param(name: &str, description: &str) -> RefOr<Parameter> {
    ParameterBuilder::new()
        .name(name)
        .parameter_in(ParameterIn::Header)
        .required(Required::False)
        .description(Some(description))
        .schema(Some(ObjectBuilder::new().schema_type(Type::String)))
        .build()
        .into()
}

fn requires(op: &Operation, scheme: &str) -> bool {
    op.security.as_ref().is_some_and(|all| {
        all.iter().any(|req| {
            serde_json::to_value(req)
                .ok()
                .and_then(|v| v.as_object().map(|o| o.contains_key(scheme)))
                .unwrap_or(false)
        })
    })
}

impl Modify for CommonErrors {
    fn modify(&self, openapi: &mut OpenApi) {
        for (path, item) in openapi.paths.paths.iter_mut() {
            let admin = path.starts_with("/v1/admin/");
            for op in operations(item) {
                let user_bearer = requires(op, USER_BEARER);
                let optional_body = op
                    .operation_id
                    .as_deref()
                    .is_some_and(|id| OPTIONAL_BODIES.contains(&id));
                if let Some(RefOr::T(body)) = op.request_body.as_mut().filter(|_| optional_body) {
                    body.required = Some(Required::False);
                }
                let responses = &mut op.responses;
                if let Some(body) = &op.request_body {
                    add(responses, "400", || {
                        error_response(
                            "Malformed body: bad JSON, wrong types, unknown fields or invalid values (`bad_request`).",
                        )
                    });
                    add(responses, "413", || {
                        error_response(
                            "The body is over `http.max_body_bytes` (`payload_too_large`).",
                        )
                    });
                    let optional =
                        matches!(body, RefOr::T(b) if matches!(b.required, Some(Required::False)));
                    if !optional {
                        add(responses, "415", || {
                            error_response(
                                "Not `Content-Type: application/json` (`unsupported_media_type`).",
                            )
                        });
                    }
                }
                if user_bearer {
                    add(responses, "401", || {
                        error_response(
                            "Missing, invalid, expired or revoked access token (`unauthorized`).",
                        )
                    });
                }
                if admin {
                    add(responses, "401", || {
                        error_response(
                            "Missing or invalid admin credentials; `X-Nonce` without `X-Timestamp` or the reverse; an `X-Timestamp` outside the accepted window (`unauthorized`).",
                        )
                    });
                    add(responses, "400", || {
                        error_response("Malformed `X-Nonce` or `X-Timestamp` (`bad_request`).")
                    });
                    add(responses, "403", || {
                        error_response(
                            "The caller's address is not in `admin.ip_allowlist`, or the credential lacks the scope (`forbidden`).",
                        )
                    });
                    add(responses, "409", || {
                        error_response("`X-Nonce` was already used (`conflict`).")
                    });
                    add(responses, "429", rate_limited);
                    add(responses, "503", || {
                        error_response(
                            "The replay store holds its capacity of unexpired nonces, overall (`admin.nonce_capacity`) or for this credential (`admin.nonce_per_credential`); no nonce is forgotten to make room. Retry when older nonces expire (`busy`).",
                        )
                    });
                    let params = op.parameters.get_or_insert_with(Vec::new);
                    params.push(header_param(
                        "X-Nonce",
                        "1 to 128 characters never sent before by this credential within the window; sent together with `X-Timestamp` (both required when `admin.require_nonce`), it makes a replayed request fail with 409.",
                    ));
                    params.push(header_param(
                        "X-Timestamp",
                        "Unix time of the request in seconds, sent together with `X-Nonce`; refused (401) when outside the accepted window around the server's clock.",
                    ));
                    params.push(header_param(
                        "X-Operation-Id",
                        "The business system's own id of this operation, recorded in the audit log (up to 128 characters).",
                    ));
                }
            }
        }
    }
}

fn operations(item: &mut utoipa::openapi::PathItem) -> impl Iterator<Item = &mut Operation> {
    [
        item.get.as_mut(),
        item.put.as_mut(),
        item.post.as_mut(),
        item.delete.as_mut(),
        item.options.as_mut(),
        item.head.as_mut(),
        item.patch.as_mut(),
        item.trace.as_mut(),
    ]
    .into_iter()
    .flatten()
}

/// The document as served, serialized once.
static DOCUMENT: OnceLock<Bytes> = OnceLock::new();

/// Remembers the document built with the router (the first one wins; every
/// router describes the same routes).
pub(crate) fn publish(doc: &OpenApi) {
    DOCUMENT.get_or_init(|| Bytes::from(doc.to_pretty_json().unwrap_or_default()));
}

/// `GET /openapi.json`
#[utoipa::path(
    get,
    path = "/openapi.json",
    operation_id = "openapi",
    tag = "health",
    summary = "This OpenAPI 3.1 document",
    responses((status = 200, description = "The OpenAPI 3.1 document of every route.", content_type = "application/json", body = Object)),
)]
pub(crate) async fn document() -> Response {
    let body = DOCUMENT.get().cloned().unwrap_or_default();
    ([(CONTENT_TYPE, "application/json")], body).into_response()
}

static SWAGGER: LazyLock<Arc<Config<'static>>> = LazyLock::new(|| {
    Arc::new(
        Config::from("/openapi.json")
            // No online validator badge: the page makes no outside request.
            .validator_url("none")
            .try_it_out_enabled(false)
            .persist_authorization(false)
            .display_operation_id(false)
            .filter(true),
    )
});

/// `GET /docs`
#[utoipa::path(
    get,
    path = "/docs",
    operation_id = "docs",
    tag = "health",
    summary = "API reference page",
    description = "Redirects to `/docs/`, an HTML reference of this API rendered from \
        `/openapi.json` by Swagger UI; its assets are served by this server (`/docs/*`).",
    responses((status = 303, description = "See `/docs/`.", headers(("Location" = String, description = "`/docs/`")))),
)]
pub(crate) async fn docs() -> Redirect {
    Redirect::to("/docs/")
}

/// The reference page's policy: its own scripts only (Swagger UI's bundle
/// and initializer are files, no inline script), inline styles and data
/// images (Swagger UI sets both at run time), requests to this server only,
/// and no framing.
const DOCS_CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self' 'unsafe-inline'; \
    img-src 'self' data:; connect-src 'self'; font-src 'self'; base-uri 'none'; form-action 'none'; \
    frame-ancestors 'none'";

/// `GET /docs/` and `GET /docs/{*file}`: the page and its vendored assets,
/// with the same framing and sniffing protection as the console.
pub(crate) async fn docs_asset(file: Option<Path<String>>) -> Result<Response, ApiError> {
    let file = file.map(|Path(f)| f).unwrap_or_default();
    match utoipa_swagger_ui::serve(&file, SWAGGER.clone()) {
        Ok(Some(asset)) => Ok((
            [
                (CONTENT_TYPE, asset.content_type),
                (CACHE_CONTROL, "no-cache".to_owned()),
                (CONTENT_SECURITY_POLICY, DOCS_CSP.to_owned()),
                (X_FRAME_OPTIONS, "DENY".to_owned()),
                (X_CONTENT_TYPE_OPTIONS, "nosniff".to_owned()),
                (REFERRER_POLICY, "no-referrer".to_owned()),
            ],
            match asset.bytes {
                Cow::Borrowed(bytes) => Bytes::from_static(bytes),
                Cow::Owned(bytes) => Bytes::from(bytes),
            },
        )
            .into_response()),
        Ok(None) => Err(ApiError::new(ErrorCode::NotFound, "no such file")),
        Err(e) => {
            tracing::error!(error = %e, "cannot render the docs page");
            Err(ApiError::new(ErrorCode::Internal, "internal error"))
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use serde_json::Value;

    fn refs<'a>(v: &'a Value, out: &mut Vec<&'a str>) {
        match v {
            Value::Object(map) => {
                if let Some(Value::String(r)) = map.get("$ref") {
                    out.push(r);
                }
                map.values().for_each(|v| refs(v, out));
            }
            Value::Array(items) => items.iter().for_each(|v| refs(v, out)),
            _ => {}
        }
    }

    #[test]
    fn document_is_3_1_with_unique_operation_ids_and_resolved_refs() {
        let doc = serde_json::to_value(crate::openapi()).unwrap();
        assert_eq!(doc["openapi"], "3.1.0");
        let mut ids = BTreeSet::new();
        for item in doc["paths"]
            .as_object()
            .into_iter()
            .flat_map(|p| p.values())
        {
            for op in item.as_object().into_iter().flat_map(|o| o.values()) {
                let id = op["operationId"].as_str().expect("no id");
                assert!(ids.insert(id.to_owned()), "duplicate operationId {id}");
            }
        }
        let mut all = Vec::new();
        refs(&doc, &mut all);
        for r in all {
            let name = r
                .strip_prefix("#/components/schemas/")
                .unwrap_or_else(|| panic!("unexpected $ref {r}"));
            assert!(
                doc["components"]["schemas"].get(name).is_some(),
                "unresolved $ref {r}"
            );
        }
    }

    #[test]
    fn admin_operations_carry_the_gate_and_optional_bodies_stay_optional() {
        let doc = serde_json::to_value(crate::openapi()).unwrap();
        let audit = &doc["paths"]["/v1/admin/audit"]["get"];
        for status in ["401", "403", "409", "429", "503"] {
            assert!(audit["responses"].get(status).is_some(), "{status}");
        }
        let names: Vec<&str> = audit["parameters"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|p| p["name"].as_str())
            .collect();
        assert!(
            names.contains(&"X-Nonce") && names.contains(&"after"),
            "{names:?}"
        );
        let logout = &doc["paths"]["/v1/admin/users/{id}/logout"]["post"];
        assert_eq!(logout["requestBody"]["required"], false);
        assert!(logout["responses"].get("415").is_none());
        let send = &doc["paths"]["/v1/messages"]["post"];
        assert_eq!(send["requestBody"]["required"], true);
        assert!(send["responses"].get("415").is_some());
    }
}
