//! `/v1/admin/*`: the API for business systems, one module per area; each
//! handler's doc names its path.
//!
//! Every admin route is behind one middleware, [`gate`](fn@gate) (the IP
//! allowlist, the credential, its rate limit, replay protection and the
//! audit of each request: see [`gate`](mod@gate)); handlers check the scope
//! they need (403).
//!
//! - [`tokens`] — `POST /v1/admin/token`, `POST /v1/admin/admins`
//! - [`users`] — `POST|GET /v1/admin/users`, `GET|PATCH|DELETE /v1/admin/users/{id}`,
//!   `POST /v1/admin/users/{id}/tokens`, `POST /v1/admin/users/{id}/logout`
//! - [`messages`] — `POST /v1/admin/messages`, `POST /v1/admin/broadcasts`,
//!   `GET /v1/admin/messages/{id}/status`
//! - [`audit`] — `GET /v1/admin/audit`
//! - [`presence`] — `GET /v1/admin/presence`, `GET /v1/admin/nodes`
//! - [`qr`] — `POST /v1/admin/qr/{ticket_id}/confirm`
//! - [`relationships`] — `GET|PUT /v1/admin/relationships`
//! - [`groups`] — `/v1/admin/groups…`
//! - [`webhooks`] — `/v1/admin/webhooks…`

mod admins;
mod audit;
mod gate;
mod groups;
mod keys;
mod messages;
mod presence;
mod qr;
mod relationships;
mod tokens;
mod users;
mod webhooks;

use axum::extract::FromRequestParts;
use axum::http::HeaderMap;
use axum::http::request::Parts;
use unimsg_core::admin::AdminContext;
use unimsg_proto::UserId;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::AppState;
use crate::error::ApiError;

pub(crate) use gate::gate;

/// The admin routes; [`crate::router`] puts them behind [`gate`](fn@gate).
pub(crate) fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(tokens::token))
        .routes(routes!(tokens::create_admin, admins::list_admins))
        .routes(routes!(
            admins::get_admin,
            admins::update_admin,
            admins::delete_admin
        ))
        .routes(routes!(admins::create_key, admins::list_keys))
        .routes(routes!(admins::revoke_key))
        .routes(routes!(admins::new_signing_secret))
        .routes(routes!(users::import_users, users::search_users))
        .routes(routes!(
            users::get_user,
            users::patch_user,
            users::delete_user
        ))
        .routes(routes!(users::mint))
        .routes(routes!(users::sessions))
        .routes(routes!(users::logout))
        .routes(routes!(messages::notify))
        .routes(routes!(messages::broadcast))
        .routes(routes!(messages::status))
        .routes(routes!(audit::audit))
        .routes(routes!(audit::audit_head))
        .routes(routes!(audit::audit_verify))
        .routes(routes!(presence::presence))
        .routes(routes!(presence::nodes))
        .routes(routes!(qr::qr_confirm))
        .routes(routes!(
            relationships::relationships,
            relationships::update_relationships
        ))
        .routes(routes!(groups::create_group))
        .routes(routes!(groups::get_group, groups::dissolve_group))
        .routes(routes!(groups::add_group_members))
        .routes(routes!(groups::remove_group_member))
        .routes(routes!(webhooks::create_webhook, webhooks::list_webhooks))
        .routes(routes!(
            webhooks::get_webhook,
            webhooks::update_webhook,
            webhooks::delete_webhook
        ))
        .routes(routes!(webhooks::rotate_secret))
        .routes(routes!(webhooks::test_webhook))
        .routes(routes!(webhooks::deliveries))
        .routes(routes!(webhooks::retry_delivery))
        .routes(routes!(webhooks::replay))
        .routes(routes!(keys::rotate_signing))
        .routes(routes!(keys::rotate_master))
        .routes(routes!(keys::rotate_data))
}

/// The admin credential of the request, put there by [`gate`](fn@gate).
pub(crate) struct AdminAuth(pub AdminContext);

impl<S: Send + Sync> FromRequestParts<S> for AdminAuth {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, ApiError> {
        parts
            .extensions
            .get::<AdminContext>()
            .cloned()
            .map(AdminAuth)
            .ok_or_else(|| ApiError::unauthorized("admin credentials required"))
    }
}

/// A comma-separated list of 1 to 1000 user ids.
fn user_ids(raw: &str) -> Result<Vec<UserId>, ApiError> {
    let ids = raw
        .split(',')
        .filter(|s| !s.is_empty())
        .map(|s| UserId::parse(s).map_err(|e| ApiError::bad_request(e.to_string())))
        .collect::<Result<Vec<_>, _>>()?;
    if ids.is_empty() || ids.len() > 1000 {
        return Err(ApiError::bad_request("give 1 to 1000 user_ids"));
    }
    Ok(ids)
}

fn header<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers.get(name).and_then(|v| v.to_str().ok())
}
