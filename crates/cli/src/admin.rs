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
    BroadcastRequest, MintRequest, NotifyRequest, Target, UserPatch,
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
    admin_id: String,
    /// Sent as X-Operation-Id and recorded with the request in the audit log.
    #[arg(long, value_name = "ID", global = true)]
    operation_id: Option<String>,
    /// Send X-Nonce and X-Timestamp (needed when the server sets
    /// admin.require_nonce).
    #[arg(long, global = true)]
    nonce: bool,
    /// Trust only the CA certificate(s) in this PEM file for an
    /// https:// server (a private CA, or a self-signed certificate).
    #[arg(long, env = "UNIMSG_CA_CERT", value_name = "FILE", global = true)]
    ca_cert: Option<std::path::PathBuf>,
}

impl Remote {
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
    Webhook(WebhookCommand),
    User(UserCommand),
    Token(TokenCommand),
    Notify(NotifyArgs),
    Broadcast(Message),
}

/// Runs `action` against the server of `remote`.
pub(crate) fn run(remote: &Remote, action: Action) -> anyhow::Result<ExitCode> {
    let admin = remote.connect()?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    runtime
        .block_on(execute(&admin, action))
        .with_context(|| format!("admin API at {}", remote.server))
}

async fn execute(admin: &AdminClient, action: Action) -> anyhow::Result<ExitCode> {
    match action {
        Action::RotateSigning => print_json(&admin.rotate_signing_key().await?)?,
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
