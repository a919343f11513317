//! Creating the bench's users: register, then log in once on the `cli`
//! platform. Usernames carry a random run id so repeated runs against the
//! same server never collide.
//!
//! Registration and login each hash a password with argon2 on the server
//! (tens of ms of CPU and a 19 MiB scratch buffer), so scenarios create as
//! few users as they can.

use anyhow::{Context, Result};
use futures_util::{StreamExt, TryStreamExt, stream};
use unimsg_client::proto::api::{LoginRequest, RegisterRequest};
use unimsg_client::proto::{Platform, UserId};
use unimsg_client::{Authed, Client};

/// The password of every bench user (the server wants at least 8 bytes).
const PASSWORD: &str = "unimsg-bench-password";

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
