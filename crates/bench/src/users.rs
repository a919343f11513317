//! Creating the bench's users, each with one session on the `cli`
//! platform. Usernames carry a random run id so repeated runs against the
//! same server never collide.
//!
//! Registration and login each hash a password with argon2 on the server
//! (tens of ms of CPU and a 19 MiB scratch buffer). With admin credentials
//! [`provision`] avoids both: one bulk `POST /v1/admin/users` of users
//! without a password, then `POST /v1/admin/users/{id}/tokens` per user
//! (a session and a signed token, no hashing). Without them it falls back
//! to register + login ([`create`]).

use anyhow::{Context, Result, bail};
use futures_util::{StreamExt, TryStreamExt, stream};
use serde_json::json;
use unimsg_client::proto::admin::MintRequest;
use unimsg_client::proto::api::{LoginRequest, RegisterRequest};
use unimsg_client::proto::{Platform, UserId};
use unimsg_client::{AdminClient, Authed, Client, MAX_IMPORT_BATCH};

use crate::Ctx;

/// The password of every bench user (the server wants at least 8 bytes).
pub const PASSWORD: &str = "unimsg-bench-password";

/// Token mints in flight at once.
const MINT_CONCURRENCY: usize = 16;

/// Lifetime of minted access tokens: longer than any run, so a long idle
/// hold never meets an expired token.
const MINTED_TTL_SECS: u64 = 24 * 3600;

/// A logged-in bench user.
#[derive(Debug, Clone)]
pub struct User {
    pub username: String,
    pub user_id: UserId,
    pub authed: Authed,
}

/// A random 8-hex-digit id for this run.
pub fn run_id() -> String {
    let id = uuid::Uuid::new_v4().simple().to_string();
    id[..8].to_owned()
}

/// `count` users named `b{run}{role}{i}` with a `cli` session each: through
/// the admin API when the context has admin credentials, else registered
/// and logged in `register_concurrency` at a time.
pub async fn provision(
    ctx: &Ctx,
    run: &str,
    role: &str,
    count: usize,
    register_concurrency: usize,
) -> Result<Vec<User>> {
    match &ctx.admin {
        Some(admin) => import(admin, run, role, count).await,
        None => create(&ctx.client, run, role, count, register_concurrency).await,
    }
}

/// Imports `count` password-less users in batches, then mints a token pair
/// for each.
async fn import(admin: &AdminClient, run: &str, role: &str, count: usize) -> Result<Vec<User>> {
    let names: Vec<String> = (0..count).map(|i| format!("b{run}{role}{i}")).collect();
    for batch in names.chunks(MAX_IMPORT_BATCH) {
        let items = batch
            .iter()
            .map(|name| json!({ "user_id": name, "display_name": name }))
            .collect();
        let imported = admin
            .import_users(items)
            .await
            .context("cannot import users (POST /v1/admin/users)")?;
        if imported.failed > 0 {
            let first = imported
                .results
                .iter()
                .find(|r| !r.ok)
                .and_then(|r| r.error.as_ref())
                .map_or_else(|| "no detail".to_owned(), |e| e.message.clone());
            bail!(
                "{} of {} users failed to import: {first}",
                imported.failed,
                batch.len()
            );
        }
    }
    let platform = Platform::parse("cli")?;
    stream::iter(names)
        .map(|username| {
            let platform = platform.clone();
            async move {
                let user_id = UserId::parse(username.as_str())?;
                let tokens = admin
                    .mint_tokens(
                        &user_id,
                        &MintRequest {
                            platform,
                            device_id: None,
                            ttl_secs: Some(MINTED_TTL_SECS),
                        },
                    )
                    .await
                    .with_context(|| format!("cannot mint tokens for {username}"))?;
                Ok(User {
                    username,
                    user_id: tokens.user_id,
                    authed: admin.client().with_token(tokens.access_token),
                })
            }
        })
        .buffered(MINT_CONCURRENCY)
        .try_collect()
        .await
}

/// Registers and logs in `count` users named `b{run}{role}{i}`
/// (`role` is a short tag such as `s`, `r` or `i`), `concurrency` at a time.
pub async fn create(
    client: &Client,
    run: &str,
    role: &str,
    count: usize,
    concurrency: usize,
) -> Result<Vec<User>> {
    stream::iter(0..count)
        .map(|i| create_one(client, format!("b{run}{role}{i}")))
        .buffered(concurrency.max(1))
        .try_collect()
        .await
}

async fn create_one(client: &Client, username: String) -> Result<User> {
    client
        .register(&RegisterRequest {
            username: username.clone(),
            password: PASSWORD.to_owned(),
            display_name: None,
        })
        .await
        .with_context(|| format!("cannot register {username}"))?;
    let tokens = client
        .login(&LoginRequest {
            username: username.clone(),
            password: PASSWORD.to_owned(),
            platform: Platform::parse("cli")?,
            device_id: None,
        })
        .await
        .with_context(|| format!("cannot log in {username}"))?;
    Ok(User {
        username,
        user_id: tokens.user_id,
        authed: client.with_token(tokens.access_token),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn usernames_are_valid() {
        let run = run_id();
        assert_eq!(run.len(), 8);
        let longest = format!("b{run}s{}", usize::MAX);
        assert!(longest.len() <= 32, "{longest}");
        assert!(
            longest
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "_.-".contains(c))
        );
    }
}
