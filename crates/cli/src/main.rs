//! `unimsg`: the command-line entry point. Parses flags, loads the
//! configuration and hands over to `unimsg-server`, or calls the admin API
//! of a running server (`admin.rs`).

mod admin;

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::{Parser, Subcommand};
use unimsg_server::Config;

use crate::admin::{
    Action, CREDENTIALS_HELP, Message, NotifyArgs, Remote, TokenCommand, UserCommand,
    WebhookCommand,
};

#[derive(Parser)]
#[command(name = "unimsg", version, about = "Unified messaging and login server")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the server (embedded store, no configuration needed).
    Serve(ServeArgs),
    /// Manage the webhook endpoints of a running server (admin API).
    #[command(after_help = CREDENTIALS_HELP)]
    Webhook {
        #[command(flatten)]
        remote: Remote,
        #[command(subcommand)]
        command: WebhookCommand,
    },
    /// Manage the users of a running server (admin API).
    #[command(after_help = CREDENTIALS_HELP)]
    User {
        #[command(flatten)]
        remote: Remote,
        #[command(subcommand)]
        command: UserCommand,
    },
    /// Mint user tokens on a running server (admin API).
    #[command(after_help = CREDENTIALS_HELP)]
    Token {
        #[command(flatten)]
        remote: Remote,
        #[command(subcommand)]
        command: TokenCommand,
    },
    /// Send a notification to some users of a running server (admin API).
    ///
    /// It arrives as `notification.new` in each recipient's inbox, live or
    /// by sync. Prints {message_id, recipients} as JSON.
    #[command(after_help = CREDENTIALS_HELP)]
    Notify {
        #[command(flatten)]
        remote: Remote,
        #[command(flatten)]
        args: NotifyArgs,
    },
    /// Announce something to every user of a running server (admin API).
    ///
    /// It arrives as `broadcast.new`, live for those online and by sync for
    /// everyone else. Prints {message_id, broadcast_seq} as JSON.
    #[command(after_help = CREDENTIALS_HELP)]
    Broadcast {
        #[command(flatten)]
        remote: Remote,
        #[command(flatten)]
        message: Message,
    },
    /// Manage admin accounts and their API keys. New secrets come from
    /// UNIMSG_NEW_ADMIN_PASSWORD, never from the command line.
    Admin {
        #[command(subcommand)]
        command: AdminCommand,
    },
    /// Rotate keys.
    Keys {
        #[command(subcommand)]
        command: KeysCommand,
    },
    /// Check the audit log.
    Audit {
        #[command(subcommand)]
        command: AuditCommand,
    },
    /// Copy the embedded store into one file while the server runs.
    ///
    /// The copy holds the data keys only wrapped by the master key, which
    /// it does not contain: keep master.key (or UNIMSG_MASTER_KEY)
    /// elsewhere, or give --include-keys to put it in the file (then
    /// guard the file like the key). PostgreSQL is backed up with pg_dump.
    Backup {
        /// Directory of the database and key files [default: ./data].
        #[arg(long, env = "UNIMSG_DATA_DIR")]
        data_dir: Option<PathBuf>,
        /// A TOML configuration file (see unimsg.example.toml).
        #[arg(long, env = "UNIMSG_CONFIG")]
        config: Option<PathBuf>,
        /// The backup file to create (it must not exist).
        #[arg(long, value_name = "FILE")]
        out: PathBuf,
        /// Put the master key into the backup too.
        #[arg(long)]
        include_keys: bool,
    },
    /// Put a backup in place of the embedded store (no server running).
    ///
    /// A backup made with --include-keys restores master.key too;
    /// otherwise bring the original master key (master.key in the data
    /// directory, or UNIMSG_MASTER_KEY). Every restored key is checked to
    /// open when a master key is at hand.
    Restore {
        /// The backup file.
        #[arg(value_name = "FILE")]
        file: PathBuf,
        /// Directory of the database and key files [default: ./data].
        #[arg(long, env = "UNIMSG_DATA_DIR")]
        data_dir: Option<PathBuf>,
        /// A TOML configuration file (see unimsg.example.toml).
        #[arg(long, env = "UNIMSG_CONFIG")]
        config: Option<PathBuf>,
        /// Replace an existing database (and a different master.key).
        #[arg(long)]
        force: bool,
    },
    /// Inspect the configuration.
    Config {
        #[command(subcommand)]
        command: ConfigCommand,
    },
}

pub(crate) use admin::AdminCommand;

#[derive(clap::Subcommand)]
enum KeysCommand {
    /// Add a token signing key to a running server (admin API): it signs
    /// from now on; the old keys verify their tokens for 30 more days.
    /// Prints {kid, created_at}.
    #[command(after_help = CREDENTIALS_HELP)]
    RotateSigning {
        #[command(flatten)]
        remote: Remote,
    },
    /// Wrap every stored key again under a new master key, with no server
    /// running on the data directory. With master.key a new key is made
    /// and replaces it; run again after an interruption to resume. With
    /// UNIMSG_MASTER_KEY or keys.master_key_command, give the new key in
    /// UNIMSG_NEW_MASTER_KEY and change it there afterwards.
    RotateMaster {
        /// Directory of the database and key files [default: ./data].
        #[arg(long, env = "UNIMSG_DATA_DIR")]
        data_dir: Option<PathBuf>,
        /// A TOML configuration file (see unimsg.example.toml).
        #[arg(long, env = "UNIMSG_CONFIG")]
        config: Option<PathBuf>,
    },
}

#[derive(clap::Args)]
struct ServeArgs {
    /// Address to listen on, e.g. 127.0.0.1:8080; port 0 picks a free port.
    #[arg(long, env = "UNIMSG_LISTEN")]
    listen: Option<String>,
    /// Directory of the database and key files [default: ./data].
    #[arg(long, env = "UNIMSG_DATA_DIR")]
    data_dir: Option<PathBuf>,
    /// A TOML configuration file (see unimsg.example.toml).
    #[arg(long, env = "UNIMSG_CONFIG")]
    config: Option<PathBuf>,
    /// Serve HTTPS, WSS and SSE over TLS with this certificate chain (PEM).
    #[arg(long, requires = "tls_key")]
    tls_cert: Option<PathBuf>,
    /// The private key (PEM) of --tls-cert.
    #[arg(long, requires = "tls_cert")]
    tls_key: Option<PathBuf>,
}

#[derive(Subcommand)]
enum AuditCommand {
    /// Verify the keyed hash chain of the whole audit log; names the first
    /// entry altered or removed and exits non-zero if there is one.
    ///
    /// Reads the embedded store of --data-dir, or PostgreSQL when the
    /// configuration sets store.url; the audit key is unwrapped with the
    /// master key (master.key, UNIMSG_MASTER_KEY or
    /// keys.master_key_command). With --server the running server walks
    /// its own store (admin API, scope audit:read).
    #[command(after_help = CREDENTIALS_HELP)]
    Verify {
        /// Directory of the database and key files [default: ./data].
        #[arg(long, env = "UNIMSG_DATA_DIR")]
        data_dir: Option<PathBuf>,
        /// A TOML configuration file (see unimsg.example.toml).
        #[arg(long, env = "UNIMSG_CONFIG")]
        config: Option<PathBuf>,
        /// An exported head (`SEQ:HASH` from GET /v1/admin/audit/head or an
        /// earlier verify): its entry must still be there, so removing the
        /// newest entries is found too.
        #[arg(long, value_name = "SEQ:HASH")]
        head: Option<String>,
        /// Ask this running server to verify its store instead.
        #[arg(long, value_name = "URL")]
        server: Option<String>,
        /// Admin account for HTTP Basic credentials (with --server).
        #[arg(long, env = "UNIMSG_ADMIN_ID", default_value = "admin")]
        admin_id: String,
        /// Trust only the CA certificate(s) in this PEM file (with --server).
        #[arg(long, env = "UNIMSG_CA_CERT", value_name = "FILE")]
        ca_cert: Option<PathBuf>,
    },
}

#[derive(Subcommand)]
enum ConfigCommand {
    /// Print the default configuration as TOML.
    Defaults,
    /// Print the effective configuration (file + environment) as TOML.
    Show {
        #[arg(long, env = "UNIMSG_CONFIG")]
        config: Option<PathBuf>,
    },
}

/// jemalloc serves every allocation of the process, SQLite's and the TLS
/// library's included (the crate's `unprefixed_malloc…` feature makes it
/// `malloc` itself). Against glibc's malloc it took a fifth of the CPU of
/// a WebSocket or HTTP send, mostly frees of memory allocated on another
/// thread (a send is parsed on a worker, written by the store's writer
/// thread, and its reply freed on a worker again); see BENCHMARKS.md.
#[global_allocator]
static GLOBAL: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

fn main() -> ExitCode {
    match run(Cli::parse()) {
        Ok(code) => code,
        Err(error) => {
            // One line per cause, never a backtrace (whatever
            // RUST_BACKTRACE says): these are messages for the person at
            // the terminal, not for a debugger.
            eprintln!("error: {error:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    match cli.command {
        Command::Serve(args) => serve(args).map(|()| ExitCode::SUCCESS),
        Command::User { remote, command } => admin::run(&remote, Action::User(command)),
        Command::Webhook { remote, command } => admin::run(&remote, Action::Webhook(command)),
        Command::Keys {
            command: KeysCommand::RotateSigning { remote },
        } => admin::run(&remote, Action::RotateSigning),
        Command::Admin {
            command:
                AdminCommand::ResetPassword {
                    data_dir,
                    config,
                    admin_id,
                },
        } => reset_password(data_dir, config, &admin_id),
        Command::Admin { command } => {
            let (remote, action) = admin::admin_action(command)?;
            admin::run(&remote, action)
        }
        Command::Keys {
            command: KeysCommand::RotateMaster { data_dir, config },
        } => rotate_master(data_dir, config),
        Command::Token { remote, command } => admin::run(&remote, Action::Token(command)),
        Command::Notify { remote, args } => admin::run(&remote, Action::Notify(args)),
        Command::Broadcast { remote, message } => admin::run(&remote, Action::Broadcast(message)),
        Command::Audit {
            command:
                AuditCommand::Verify {
                    head,
                    server: Some(server),
                    admin_id,
                    ca_cert,
                    ..
                },
        } => {
            let remote = admin::Remote::to(server, admin_id, ca_cert);
            admin::run(&remote, Action::VerifyAudit { head })
        }
        Command::Audit {
            command:
                AuditCommand::Verify {
                    data_dir,
                    config,
                    head,
                    server: None,
                    ..
                },
        } => {
            let config = offline_config(data_dir, config)?;
            audit_result(
                current_thread()?
                    .block_on(unimsg_server::verify_audit(&config, head.as_deref()))?,
            )
        }
        Command::Backup {
            data_dir,
            config,
            out,
            include_keys,
        } => {
            let config = offline_config(data_dir, config)?;
            let bytes = current_thread()?.block_on(unimsg_server::backup_embedded(
                &config,
                &out,
                include_keys,
            ))?;
            let keys = if include_keys {
                "with the master key: guard it like the key itself"
            } else {
                "without the master key: keep master.key (or UNIMSG_MASTER_KEY) to restore it"
            };
            println!("backed up {bytes} bytes to {}, {keys}", out.display());
            Ok(ExitCode::SUCCESS)
        }
        Command::Restore {
            file,
            data_dir,
            config,
            force,
        } => {
            let config = offline_config(data_dir, config)?;
            let report = current_thread()?
                .block_on(unimsg_server::restore_embedded(&config, &file, force))?;
            let dir = config.data_dir.display();
            println!("restored {} bytes into {dir}", report.bytes);
            if report.key_restored {
                println!("the backup's master key is in {dir}/master.key");
            }
            match report.keys_open {
                Some(true) => println!("the master key opens every restored key"),
                Some(false) => anyhow::bail!(
                    "the master key at hand does not open the restored keys: \
                     put the original master key in place before starting the server"
                ),
                None => println!(
                    "no master key here yet: put the original master.key into {dir} \
                     or set UNIMSG_MASTER_KEY before starting the server"
                ),
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Config {
            command: ConfigCommand::Defaults,
        } => {
            print!("{}", Config::default_toml());
            Ok(ExitCode::SUCCESS)
        }
        Command::Config {
            command: ConfigCommand::Show { config },
        } => {
            let config = Config::load(config.as_deref(), std::env::vars())?;
            print!("{}", toml_of(&config));
            Ok(ExitCode::SUCCESS)
        }
    }
}

/// The configuration of a command that works on a data directory.
fn offline_config(data_dir: Option<PathBuf>, file: Option<PathBuf>) -> anyhow::Result<Config> {
    let mut config = Config::load(file.as_deref(), std::env::vars())?;
    if let Some(dir) = data_dir {
        config.data_dir = dir;
    }
    Ok(config)
}

fn current_thread() -> anyhow::Result<tokio::runtime::Runtime> {
    Ok(tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?)
}

/// Prints an intact log's head, or fails naming where it breaks.
pub(crate) fn audit_result(result: Result<String, String>) -> anyhow::Result<ExitCode> {
    match result {
        Ok(head) => {
            let count = head.split(':').next().unwrap_or("0");
            println!("audit log intact: {count} entries verified; head {head}");
            Ok(ExitCode::SUCCESS)
        }
        Err(broken) => anyhow::bail!("audit log broken: {broken}"),
    }
}

fn toml_of(config: &Config) -> String {
    unimsg_server::to_toml(config)
}

/// The new secret of `admin passwd|create|reset-password`.
pub(crate) fn new_admin_secret() -> anyhow::Result<String> {
    std::env::var("UNIMSG_NEW_ADMIN_PASSWORD")
        .ok()
        .filter(|s| !s.is_empty())
        .ok_or_else(|| anyhow::anyhow!("set UNIMSG_NEW_ADMIN_PASSWORD to the new secret"))
}

fn reset_password(
    data_dir: Option<PathBuf>,
    file: Option<PathBuf>,
    admin_id: &str,
) -> anyhow::Result<ExitCode> {
    let config = offline_config(data_dir, file)?;
    let secret = new_admin_secret()?;
    current_thread()?.block_on(unimsg_server::reset_admin_password(
        &config, admin_id, secret,
    ))?;
    println!("the secret of {admin_id} is changed; its earlier admin tokens are refused");
    Ok(ExitCode::SUCCESS)
}

fn rotate_master(data_dir: Option<PathBuf>, file: Option<PathBuf>) -> anyhow::Result<ExitCode> {
    let config = offline_config(data_dir, file)?;
    let new_key = std::env::var("UNIMSG_NEW_MASTER_KEY")
        .ok()
        .filter(|k| !k.is_empty());
    let (rewrapped, source) =
        current_thread()?.block_on(unimsg_server::rotate_master_offline(&config, new_key))?;
    println!("re-wrapped {rewrapped} keys under the new master key (in {source})");
    if source != "master.key" {
        println!("now set {source} to the new key on every node before starting them");
    }
    Ok(ExitCode::SUCCESS)
}

fn serve(args: ServeArgs) -> anyhow::Result<()> {
    let mut config = Config::load(args.config.as_deref(), std::env::vars())?;
    if let Some(listen) = args.listen {
        let (addr, warning) =
            unimsg_server::parse_listen(&listen).map_err(|e| anyhow::anyhow!("--listen: {e}"))?;
        config.listen = addr;
        config.warnings.extend(warning);
    }
    if let Some(dir) = args.data_dir {
        config.data_dir = dir;
    }
    if let (Some(cert), Some(key)) = (args.tls_cert, args.tls_key) {
        config.tls.cert = cert;
        config.tls.key = key;
    }
    unimsg_server::init_logging(&config.log);
    for warning in &config.warnings {
        tracing::warn!("{warning}");
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async move {
        let listener = tokio::net::TcpListener::bind(config.listen)
            .await
            .with_context(|| format!("cannot listen on {}", config.listen))?;
        unimsg_server::run(listener, config, shutdown_signal()).await
    })
}

/// Resolves on Ctrl-C or SIGTERM.
async fn shutdown_signal() {
    let ctrl_c = async {
        if let Err(e) = tokio::signal::ctrl_c().await {
            tracing::error!(error = %e, "cannot listen for Ctrl-C");
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(e) => {
                tracing::error!(error = %e, "cannot listen for SIGTERM");
                std::future::pending::<()>().await;
            }
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {}
        () = term => {}
    }
}
