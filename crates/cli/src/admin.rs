//! `unimsg user|token|notify|broadcast|webhook`: commands over the admin API of a
//! running server, through `unimsg_client::AdminClient`. Parses the
//! arguments, makes the calls and prints the answers as JSON.

use std::fs::File;
use std::io::{BufRead, BufReader};
use std::process::ExitCode;

use anyhow::Context;
use clap::builder::RangedU64ValueParser;
use clap::{Args, Subcommand};
use serde::Serialize;
use unimsg_client::proto::admin::{
    AdminPatch, BroadcastRequest, MintRequest, NewAdminKey, NewAdminRequest, NotifyRequest, Scope,
    Target, UserPatch,
};
use unimsg_client::proto::hooks::{CreateWebhook, DeliveryState};
use unimsg_client::proto::{Platform, UserId};
use unimsg_client::{AdminClient, AdminCredentials, MAX_IMPORT_BATCH};

/// Shown under `--help` of every command that talks to a server.
pub(crate) const CREDENTIALS_HELP: &str = "\
Credentials come from the environment:
  UNIMSG_ADMIN_PASSWORD   secret of the admin account (HTTP Basic, with --admin-id)
  UNIMSG_ADMIN_TOKEN      an admin token from POST /v1/admin/token (Bearer);
                          used instead of the password when set";

/// Where the server is and who calls it.
#[derive(Args)]
pub(crate) struct Remote {
    /// Base URL of the running server.
    #[arg(
        long,
        env = "UNIMSG_SERVER",
        default_value = "http://127.0.0.1:8080",
        global = true
    )]
    server: String,
    /// Admin account for HTTP Basic credentials.
    #[arg(long, env = "UNIMSG_ADMIN_ID", default_value = "admin", global = true)]
    pub(crate) admin_id: String,
    /// Sent as X-Operation-Id and recorded with the request in the audit log.
    #[arg(long, value_name = "ID", global = true)]
    operation_id: Option<String>,
    /// Send X-Nonce and X-Timestamp (needed when the server sets
    /// admin.require_nonce).
    #[arg(long, global = true)]
    nonce: bool,
    /// Sign every request with this admin's signing secret (needed when
    /// the server sets admin.require_signature).
    #[arg(
        long,
        env = "UNIMSG_ADMIN_SIGNING_SECRET",
        global = true,
        hide_env_values = true
    )]
    signing_secret: Option<String>,
    /// Trust only the CA certificate(s) in this PEM file for an
    /// https:// server (a private CA, or a self-signed certificate).
    #[arg(long, env = "UNIMSG_CA_CERT", value_name = "FILE", global = true)]
    ca_cert: Option<std::path::PathBuf>,
}

impl Remote {
    /// A remote given by a command's own flags.
    pub(crate) fn to(
        server: String,
        admin_id: String,
        ca_cert: Option<std::path::PathBuf>,
    ) -> Self {
        Remote {
            server,
            admin_id,
            operation_id: None,
            nonce: false,
            signing_secret: std::env::var("UNIMSG_ADMIN_SIGNING_SECRET")
                .ok()
                .filter(|s| !s.is_empty()),
            ca_cert,
        }
    }

    fn connect(&self) -> anyhow::Result<AdminClient> {
        let from_env = |name: &str| std::env::var(name).ok().filter(|v| !v.is_empty());
        let credentials = if let Some(token) = from_env("UNIMSG_ADMIN_TOKEN") {
            AdminCredentials::Bearer(token)
        } else if let Some(secret) = from_env("UNIMSG_ADMIN_PASSWORD") {
            AdminCredentials::Basic {
                admin_id: self.admin_id.clone(),
                secret,
            }
        } else {
            anyhow::bail!("no admin credentials: set UNIMSG_ADMIN_PASSWORD or UNIMSG_ADMIN_TOKEN");
        };
        let client = match &self.ca_cert {
            None => unimsg_client::Client::new(&self.server)?,
            Some(path) => {
                let pem = std::fs::read(path)
                    .with_context(|| format!("cannot read --ca-cert {}", path.display()))?;
                unimsg_client::Client::with_root_certificates(&self.server, &pem)?
            }
        };
        let mut admin = client.admin(credentials).with_replay_protection(self.nonce);
        if let Some(op) = &self.operation_id {
            admin = admin.with_operation_id(op.clone());
        }
        if let Some(secret) = &self.signing_secret {
            admin = admin.with_signing_secret(secret.clone());
        }
        Ok(admin)
    }
}

#[derive(Subcommand)]
pub(crate) enum UserCommand {
    /// Import users from a JSON Lines file.
    ///
    /// One object per line: {"user_id", "username"?, "display_name",
    /// "password"?}; blank lines are skipped. Sends batches of at most
    /// 10000 users. Prints `imported N, failed M` on stdout and one line per
    /// failure (line number and error) on stderr; exits non-zero if any line
    /// failed.
    #[command(after_help = CREDENTIALS_HELP)]
    Import {
        /// The file, or `-` for stdin.
        #[arg(value_name = "FILE.jsonl")]
        file: String,
        /// Users per request (the server takes at most 10000).
        #[arg(long, default_value_t = MAX_IMPORT_BATCH,
              value_parser = RangedU64ValueParser::<usize>::new().range(1..=MAX_IMPORT_BATCH as u64))]
        batch_size: usize,
    },
    /// Print a user as JSON.
    #[command(after_help = CREDENTIALS_HELP)]
    Show {
        /// The user id.
        #[arg(value_parser = user_id)]
        user_id: UserId,
    },
    /// Disable a user and revoke all of their sessions.
    ///
    /// Every session is revoked at once and no new one can start until the
    /// user is enabled again. Prints the user as JSON.
    #[command(after_help = CREDENTIALS_HELP)]
    Disable {
        /// The user id.
        #[arg(value_parser = user_id)]
        user_id: UserId,
    },
    /// Enable a disabled user again; prints the user as JSON.
    #[command(after_help = CREDENTIALS_HELP)]
    Enable {
        /// The user id.
        #[arg(value_parser = user_id)]
        user_id: UserId,
    },
    /// Delete a user.
    #[command(after_help = CREDENTIALS_HELP)]
    Delete {
        /// The user id.
        #[arg(value_parser = user_id)]
        user_id: UserId,
    },
}

#[derive(Subcommand)]
pub(crate) enum TokenCommand {
    /// Mint an access and refresh token pair for a user.
    ///
    /// Starts a session as if the user had logged in on PLATFORM (the
    /// server's device policy applies). Prints the token pair as JSON.
    #[command(after_help = CREDENTIALS_HELP)]
    Mint {
        /// The user id.
        #[arg(value_parser = user_id)]
        user_id: UserId,
        /// The platform of the new session, e.g. web, ios, android.
        #[arg(long, value_parser = platform)]
        platform: Platform,
        /// The device of the new session (for the `multi` device policy).
        #[arg(long)]
        device_id: Option<String>,
        /// Lifetime of the access token [default: the server's auth.access_ttl_secs].
        #[arg(long)]
        ttl_secs: Option<u64>,
    },
}

/// What a notification or broadcast says.
#[derive(Args)]
pub(crate) struct Message {
    /// The content, a JSON value, e.g. '{"title":"Maintenance at 22:00"}'.
    #[arg(long, value_name = "JSON", value_parser = json)]
    content: serde_json::Value,
    #[arg(long, default_value = "notification",
          value_parser = ["notification", "event", "status"])]
    kind: String,
    /// Shown as the sender [default: system].
    #[arg(long, value_name = "NAME")]
    from: Option<String>,
}

#[derive(Args)]
pub(crate) struct NotifyArgs {
    /// Recipients, comma-separated user ids.
    #[arg(long, required = true, value_delimiter = ',', value_parser = user_id)]
    to: Vec<UserId>,
    #[command(flatten)]
    message: Message,
}

/// `unimsg webhook …`
#[derive(Subcommand)]
pub(crate) enum WebhookCommand {
    /// Register an endpoint; prints it with its secret (shown only now).
    Add {
        /// Where the events are POSTed (http or https).
        url: String,
        /// Event types, comma-separated, or `*` for all.
        #[arg(long, required = true, value_delimiter = ',')]
        events: Vec<String>,
        /// `message.created` carries the message content.
        #[arg(long)]
        include_content: bool,
        #[arg(long, default_value = "")]
        description: String,
    },
    /// List the endpoints.
    List,
    /// Show one endpoint.
    Show { webhook_id: String },
    /// Remove an endpoint and its deliveries.
    Rm { webhook_id: String },
    /// Give an endpoint a new secret; the old one signs too during the
    /// overlap (hooks.secret_overlap_secs).
    RotateSecret { webhook_id: String },
    /// The newest deliveries of an endpoint.
    Deliveries {
        webhook_id: String,
        /// Only the failed ones.
        #[arg(long)]
        failed: bool,
        #[arg(long, default_value_t = 50)]
        limit: u32,
    },
    /// Queue one delivery again.
    Retry {
        webhook_id: String,
        event_id: String,
    },
}

/// One admin command.
pub(crate) enum Action {
    RotateSigning,
    Admins(AdminAction),
    Webhook(WebhookCommand),
    User(UserCommand),
    Token(TokenCommand),
    Notify(NotifyArgs),
    Broadcast(Message),
    VerifyAudit { head: Option<String> },
}

/// Runs `action` against the server of `remote`.
pub(crate) fn run(remote: &Remote, action: Action) -> anyhow::Result<ExitCode> {
    let admin = remote.connect()?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    runtime
        .block_on(execute(&admin, action))
        .map_err(|error| explain(error, &remote.server))
}

/// Says in one line what went wrong, and where: a server that cannot be
/// reached names `--server`, an answer of the server names the admin API,
/// and anything else (a local file) is said as it is.
fn explain(error: anyhow::Error, server: &str) -> anyhow::Error {
    let client = error
        .chain()
        .find_map(|e| e.downcast_ref::<unimsg_client::ClientError>());
    match client {
        Some(unimsg_client::ClientError::Http(e)) if e.is_connect() || e.is_timeout() => {
            let what = if e.is_timeout() {
                "it did not answer in time"
            } else {
                "nothing answers there"
            };
            anyhow::anyhow!(
                "cannot reach the server at {server}: {what}; start it, or point --server \
                 (or UNIMSG_SERVER) at it"
            )
        }
        Some(_) => error.context(format!("admin API at {server}")),
        None => error,
    }
}

async fn execute(admin: &AdminClient, action: Action) -> anyhow::Result<ExitCode> {
    match action {
        Action::RotateSigning => print_json(&admin.rotate_signing_key().await?)?,
        Action::VerifyAudit { head } => {
            let v = admin.verify_audit(head.as_deref()).await?;
            return crate::audit_result(match (v.intact, v.head, v.broken) {
                (true, Some(head), _) => Ok(head),
                (_, _, broken) => Err(broken.unwrap_or_else(|| "the server gave no reason".into())),
            });
        }
        Action::Admins(action) => admins(admin, action).await?,
        Action::Webhook(command) => webhook(admin, command).await?,
        Action::User(UserCommand::Import { file, batch_size }) => {
            return import(admin, &file, batch_size).await;
        }
        Action::User(UserCommand::Show { user_id }) => print_json(&admin.user(&user_id).await?)?,
        Action::User(UserCommand::Disable { user_id }) => {
            print_json(&admin.update_user(&user_id, &status("disabled")).await?)?;
        }
        Action::User(UserCommand::Enable { user_id }) => {
            print_json(&admin.update_user(&user_id, &status("active")).await?)?;
        }
        Action::User(UserCommand::Delete { user_id }) => {
            admin.delete_user(&user_id).await?;
            println!("deleted {user_id}");
        }
        Action::Token(TokenCommand::Mint {
            user_id,
            platform,
            device_id,
            ttl_secs,
        }) => {
            let req = MintRequest {
                platform,
                device_id,
                ttl_secs,
            };
            print_json(&admin.mint_tokens(&user_id, &req).await?)?;
        }
        Action::Notify(NotifyArgs { to, message }) => {
            let req = NotifyRequest {
                to: Target::Users(to),
                kind: message.kind,
                content: message.content,
                from: message.from,
            };
            print_json(&admin.notify(&req).await?)?;
        }
        Action::Broadcast(message) => {
            let req = BroadcastRequest {
                kind: message.kind,
                content: message.content,
                from: message.from,
            };
            print_json(&admin.broadcast(&req).await?)?;
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn status(status: &str) -> UserPatch {
    UserPatch {
        status: Some(status.into()),
        ..UserPatch::default()
    }
}

/// Reads `file` line by line and imports it in batches of `batch_size`;
/// blank lines are skipped, lines that are not JSON fail here.
async fn import(admin: &AdminClient, file: &str, batch_size: usize) -> anyhow::Result<ExitCode> {
    let reader: Box<dyn BufRead> = if file == "-" {
        Box::new(std::io::stdin().lock())
    } else {
        Box::new(BufReader::new(
            File::open(file).with_context(|| format!("cannot open {file}"))?,
        ))
    };
    let mut tally = Tally::default();
    let mut batch = Batch::default();
    for (i, line) in reader.lines().enumerate() {
        let number = i + 1;
        let line = line.with_context(|| format!("cannot read line {number} of {file}"))?;
        if line.trim().is_empty() {
            continue;
        }
        match serde_json::from_str(&line) {
            Ok(user) => {
                batch.lines.push(number);
                batch.users.push(user);
            }
            Err(e) => batch.failures.push((number, format!("invalid JSON: {e}"))),
        }
        if batch.users.len() >= batch_size {
            tally.send(admin, &mut batch).await?;
        }
    }
    tally.send(admin, &mut batch).await?;
    println!("imported {}, failed {}", tally.imported, tally.failed);
    Ok(if tally.failed == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

/// Users waiting to be sent, with the line each came from, and the lines
/// among them that already failed.
#[derive(Default)]
struct Batch {
    lines: Vec<usize>,
    users: Vec<serde_json::Value>,
    failures: Vec<(usize, String)>,
}

#[derive(Default)]
struct Tally {
    imported: usize,
    failed: usize,
}

impl Tally {
    /// Imports the batch, then reports its failures in line order.
    async fn send(&mut self, admin: &AdminClient, batch: &mut Batch) -> anyhow::Result<()> {
        let lines = std::mem::take(&mut batch.lines);
        let users = std::mem::take(&mut batch.users);
        let mut failures = std::mem::take(&mut batch.failures);
        if let Some(&first) = lines.first() {
            let response = admin.import_users(users).await.with_context(|| {
                format!(
                    "importing the users from line {first} on (imported {} before)",
                    self.imported
                )
            })?;
            self.imported += response.imported;
            for result in response.results.into_iter().filter(|r| !r.ok) {
                let line = lines.get(result.index).copied().unwrap_or(first);
                let why = result.error.map_or_else(
                    || "not imported".to_owned(),
                    |e| {
                        let code = serde_json::to_value(e.code).unwrap_or_default();
                        format!("{}: {}", code.as_str().unwrap_or("error"), e.message)
                    },
                );
                failures.push((line, why));
            }
        }
        failures.sort_by_key(|(line, _)| *line);
        for (line, why) in &failures {
            eprintln!("line {line}: {why}");
        }
        self.failed += failures.len();
        Ok(())
    }
}

fn print_json<T: Serialize>(value: &T) -> anyhow::Result<()> {
    println!("{}", serde_json::to_string_pretty(value)?);
    Ok(())
}

fn user_id(s: &str) -> Result<UserId, String> {
    UserId::parse(s).map_err(|e| e.to_string())
}

fn platform(s: &str) -> Result<Platform, String> {
    Platform::parse(s).map_err(|e| e.to_string())
}

fn json(s: &str) -> Result<serde_json::Value, String> {
    serde_json::from_str(s).map_err(|e| format!("not JSON ({e}); quote text as '\"text\"'"))
}

async fn webhook(admin: &AdminClient, command: WebhookCommand) -> anyhow::Result<()> {
    match command {
        WebhookCommand::Add {
            url,
            events,
            include_content,
            description,
        } => {
            let req = CreateWebhook {
                url,
                events,
                description,
                enabled: true,
                include_content,
            };
            print_json(&admin.create_webhook(&req).await?)
        }
        WebhookCommand::List => print_json(&admin.webhooks().await?),
        WebhookCommand::Show { webhook_id } => print_json(&admin.webhook(&webhook_id).await?),
        WebhookCommand::Rm { webhook_id } => {
            admin.delete_webhook(&webhook_id).await?;
            println!("removed {webhook_id}");
            Ok(())
        }
        WebhookCommand::RotateSecret { webhook_id } => {
            print_json(&admin.rotate_webhook_secret(&webhook_id).await?)
        }
        WebhookCommand::Deliveries {
            webhook_id,
            failed,
            limit,
        } => {
            let state = failed.then_some(DeliveryState::Failed);
            print_json(
                &admin
                    .webhook_deliveries(&webhook_id, state, Some(limit))
                    .await?,
            )
        }
        WebhookCommand::Retry {
            webhook_id,
            event_id,
        } => print_json(&admin.retry_webhook_delivery(&webhook_id, &event_id).await?),
    }
}

/// `unimsg admin …`
#[derive(Subcommand)]
pub(crate) enum AdminCommand {
    /// Change an admin's secret (yours by default) to UNIMSG_NEW_ADMIN_PASSWORD.
    #[command(after_help = CREDENTIALS_HELP)]
    Passwd {
        #[command(flatten)]
        remote: Remote,
        /// The account [default: --admin-id].
        target: Option<String>,
    },
    /// Create an admin account whose secret is UNIMSG_NEW_ADMIN_PASSWORD.
    #[command(after_help = CREDENTIALS_HELP)]
    Create {
        #[command(flatten)]
        remote: Remote,
        target: String,
        /// Comma-separated scopes, e.g. users:read,messages:send.
        #[arg(long, value_delimiter = ',', required = true)]
        scopes: Vec<String>,
    },
    /// List the admin accounts.
    #[command(after_help = CREDENTIALS_HELP)]
    List {
        #[command(flatten)]
        remote: Remote,
    },
    /// Disable an admin account: its secret, keys and tokens are refused.
    #[command(after_help = CREDENTIALS_HELP)]
    Disable {
        #[command(flatten)]
        remote: Remote,
        target: String,
    },
    /// API keys of an admin account.
    Key {
        #[command(subcommand)]
        command: KeyCommand,
    },
    /// Give an admin account (default `admin`) the secret in
    /// UNIMSG_NEW_ADMIN_PASSWORD, with no server running on the data
    /// directory: for an operator who lost it.
    ResetPassword {
        /// Directory of the database and key files [default: ./data].
        #[arg(long, env = "UNIMSG_DATA_DIR")]
        data_dir: Option<std::path::PathBuf>,
        /// A TOML configuration file (see unimsg.example.toml).
        #[arg(long, env = "UNIMSG_CONFIG")]
        config: Option<std::path::PathBuf>,
        #[arg(long = "account", default_value = "admin")]
        admin_id: String,
    },
}

/// `unimsg admin key …`
#[derive(Subcommand)]
pub(crate) enum KeyCommand {
    /// Make an API key (printed once, with its id).
    #[command(after_help = CREDENTIALS_HELP)]
    Create {
        #[command(flatten)]
        remote: Remote,
        target: String,
        /// Lifetime in seconds (at most a year).
        #[arg(long, default_value_t = 90 * 24 * 3600)]
        expires_in: u64,
        /// Comma-separated scopes [default: the admin's].
        #[arg(long, value_delimiter = ',')]
        scopes: Option<Vec<String>>,
    },
    /// Revoke an API key.
    #[command(after_help = CREDENTIALS_HELP)]
    Revoke {
        #[command(flatten)]
        remote: Remote,
        target: String,
        key_id: String,
    },
}

/// What an `unimsg admin` command asks of the server.
pub(crate) enum AdminAction {
    Passwd {
        target: String,
        secret: String,
    },
    Create {
        target: String,
        secret: String,
        scopes: Vec<Scope>,
    },
    List,
    Disable {
        target: String,
    },
    KeyCreate {
        target: String,
        req: NewAdminKey,
    },
    KeyRevoke {
        target: String,
        key_id: String,
    },
}

fn parse_scopes(names: &[String]) -> anyhow::Result<Vec<Scope>> {
    names
        .iter()
        .map(|n| Scope::parse(n.trim()).ok_or_else(|| anyhow::anyhow!("{n:?} is not a scope")))
        .collect()
}

/// The server and the request of an `unimsg admin` command (not
/// `reset-password`, which runs offline).
pub(crate) fn admin_action(command: AdminCommand) -> anyhow::Result<(Remote, Action)> {
    let action = match command {
        AdminCommand::Passwd { remote, target } => {
            let target = target.unwrap_or_else(|| remote.admin_id.clone());
            let secret = crate::new_admin_secret()?;
            (remote, AdminAction::Passwd { target, secret })
        }
        AdminCommand::Create {
            remote,
            target,
            scopes,
        } => {
            let scopes = parse_scopes(&scopes)?;
            let secret = crate::new_admin_secret()?;
            (
                remote,
                AdminAction::Create {
                    target,
                    secret,
                    scopes,
                },
            )
        }
        AdminCommand::List { remote } => (remote, AdminAction::List),
        AdminCommand::Disable { remote, target } => (remote, AdminAction::Disable { target }),
        AdminCommand::Key {
            command:
                KeyCommand::Create {
                    remote,
                    target,
                    expires_in,
                    scopes,
                },
        } => {
            let scopes = scopes.map(|s| parse_scopes(&s)).transpose()?;
            let req = NewAdminKey { expires_in, scopes };
            (remote, AdminAction::KeyCreate { target, req })
        }
        AdminCommand::Key {
            command:
                KeyCommand::Revoke {
                    remote,
                    target,
                    key_id,
                },
        } => (remote, AdminAction::KeyRevoke { target, key_id }),
        AdminCommand::ResetPassword { .. } => {
            anyhow::bail!("reset-password runs on the data directory, not a server")
        }
    };
    Ok((action.0, Action::Admins(action.1)))
}

async fn admins(admin: &AdminClient, action: AdminAction) -> anyhow::Result<()> {
    match action {
        AdminAction::Passwd { target, secret } => {
            let patch = AdminPatch {
                secret: Some(secret),
                ..AdminPatch::default()
            };
            admin.update_admin(&target, &patch).await?;
            println!("the secret of {target} is changed; its earlier admin tokens are refused");
        }
        AdminAction::Create {
            target,
            secret,
            scopes,
        } => {
            let req = NewAdminRequest {
                admin_id: target.clone(),
                secret,
                scopes,
            };
            admin.create_admin(&req).await?;
            println!("created {target}");
        }
        AdminAction::List => print_json(&admin.list_admins().await?)?,
        AdminAction::Disable { target } => {
            let patch = AdminPatch {
                disabled: Some(true),
                ..AdminPatch::default()
            };
            print_json(&admin.update_admin(&target, &patch).await?)?;
        }
        AdminAction::KeyCreate { target, req } => {
            // The one time the key is shown.
            print_json(&admin.create_admin_key(&target, &req).await?)?;
        }
        AdminAction::KeyRevoke { target, key_id } => {
            admin.revoke_admin_key(&target, &key_id).await?;
            println!("revoked {key_id}");
        }
    }
    Ok(())
}
