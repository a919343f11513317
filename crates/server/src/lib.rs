//! Builds and runs a unimsg server: configuration loading, the embedded
//! store, keys, the core, the bus and the HTTP router, wired together.
//!
//! [`run`] is the whole server as a function of a bound listener, a
//! configuration and a shutdown future; the binary and the tests call it.

mod config;
mod serve;
mod tls;

use std::future::Future;
use std::sync::{Arc, OnceLock};

use anyhow::Context;
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};
use tokio::net::TcpListener;
use unimsg_core::admin::INITIAL_ADMIN;
use unimsg_core::audit::AuditKey;
use unimsg_core::bus::LocalBus;
use unimsg_core::clock::SystemClock;
use unimsg_core::hub::Hub;
use unimsg_core::keys::{Keyring, MasterKey, MasterSource, SigningKey};
use unimsg_core::limits::MemoryLimits;
use unimsg_core::password::PasswordWorkers;
use unimsg_core::qr::MemoryTickets;
use unimsg_core::replay::{MemoryNonces, NonceBounds};
use unimsg_core::signing::SigningKeys;
use unimsg_core::{Core, CoreParts};
use unimsg_http::{AppState, SharedState};
use unimsg_redis::{Cluster, RedisBus, RedisLimits, RedisNonces, RedisOptions, RedisTickets};
use unimsg_store::Store;
use unimsg_store_postgres::{PgOptions, PgStore};
use unimsg_store_sqlite::{SqliteOptions, SqliteStore};

pub use config::{
    BusConfig, Config, ConfigError, ENV_PREFIX, LogConfig, LogFormat, StoreConfig, TlsConfig,
    parse_listen,
};
pub use tls::TlsFiles;

/// Log target of start and stop lines, shown at every log level: scripts
/// wait for `listening on http://ADDR`.
const LIFECYCLE: &str = "unimsg::lifecycle";

/// Broadcasts from other nodes waiting to be placed; past it, the local
/// connections read their streams instead (`Hub::remote_broadcast`).
const REMOTE_BROADCASTS_QUEUED: usize = 64;

/// The environment variable with the first start's password of `admin`.
pub const ADMIN_PASSWORD_ENV: &str = "UNIMSG_ADMIN_PASSWORD";

/// The environment variable holding the master key (base64 of 32 bytes).
pub const MASTER_KEY_ENV: &str = "UNIMSG_MASTER_KEY";

/// The process-wide Prometheus recorder; `None` if another one was installed first.
fn metrics_handle() -> Option<PrometheusHandle> {
    static HANDLE: OnceLock<Option<PrometheusHandle>> = OnceLock::new();
    HANDLE
        .get_or_init(|| {
            // Histograms with buckets (not summaries), for rates and
            // quantiles over any window in Prometheus.
            use metrics_exporter_prometheus::Matcher;
            use unimsg_core::catalogue::{BUCKETS, FINE_BUCKETS, FINE_SERIES};
            let builder = PrometheusBuilder::new()
                .set_buckets(BUCKETS)
                .and_then(|builder| {
                    FINE_SERIES.iter().try_fold(builder, |builder, name| {
                        builder
                            .set_buckets_for_metric(Matcher::Full((*name).to_owned()), FINE_BUCKETS)
                    })
                })
                .unwrap_or_else(|_| PrometheusBuilder::new());
            let recorder = builder.build_recorder();
            let handle = recorder.handle();
            let installed = metrics::set_global_recorder(recorder).ok().map(|()| handle);
            if installed.is_some() {
                unimsg_core::catalogue::describe();
            }
            installed
        })
        .clone()
}

/// The totals a node's report carries (`NodeStatus::totals`): the
/// counters the admin console's dashboard shows, summed over their labels.
const REPORTED_TOTALS: &[&str] = &[
    "unimsg_http_requests_total",
    "unimsg_messages_sent_total",
    "unimsg_group_messages_total",
    "unimsg_notifications_total",
    "unimsg_broadcasts_total",
    "unimsg_logins_total",
    "unimsg_login_failures_total",
    "unimsg_rate_limited_total",
    "unimsg_security_alerts_total",
    "unimsg_bus_disconnects_total",
];

/// Reports this node every [`NODE_REPORT_EVERY`](unimsg_core::bus::NODE_REPORT_EVERY), from its start.
async fn report_node(core: Arc<Core>, metrics: Option<PrometheusHandle>, node_id: String) {
    let started_at = time::OffsetDateTime::now_utc();
    let mut every = tokio::time::interval(unimsg_core::bus::NODE_REPORT_EVERY);
    every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        every.tick().await;
        let rendered = metrics
            .as_ref()
            .map(PrometheusHandle::render)
            .unwrap_or_default();
        let hub = core.hub();
        let mut totals = sum_series(&rendered, REPORTED_TOTALS);
        totals.insert(
            "unimsg_hub_slow_consumer_disconnects".to_owned(),
            hub.slow_consumer_disconnects(),
        );
        totals.insert("unimsg_hub_deliveries_total".to_owned(), hub.deliveries());
        let status = unimsg_proto::admin::NodeStatus {
            node_id: node_id.clone(),
            version: env!("CARGO_PKG_VERSION").to_owned(),
            started_at,
            reported_at: time::OffsetDateTime::now_utc(),
            connections: hub.connections(),
            online_users: hub.online_user_count() as u64,
            live: unimsg_http::live_counts(),
            totals,
            store_ok: core.ready().await.is_ok(),
        };
        core.report_node(&status).await;
    }
}

/// The value of each named series in Prometheus text, summed over its
/// labels (0 when absent).
fn sum_series(text: &str, names: &[&str]) -> std::collections::BTreeMap<String, u64> {
    let mut totals: std::collections::BTreeMap<String, u64> =
        names.iter().map(|name| ((*name).to_owned(), 0)).collect();
    for line in text.lines().filter(|l| !l.starts_with('#')) {
        let name = line.split(['{', ' ']).next().unwrap_or_default();
        if let Some(total) = totals.get_mut(name)
            && let Some(value) = line.rsplit(' ').next().and_then(|v| v.parse::<f64>().ok())
        {
            *total += value as u64;
        }
    }
    totals
}

/// A built node: the core, and the cluster connection in cluster mode.
pub struct Node {
    pub core: Arc<Core>,
    pub cluster: Option<Arc<unimsg_redis::Cluster>>,
    /// Makes the webhook requests of this node's dispatcher.
    pub transport: Arc<dyn unimsg_core::hooks::HookTransport>,
}

/// Opens the store (embedded, or PostgreSQL in cluster mode), loads the
/// keys, joins the cluster bus if configured, and builds the core.
pub async fn build(config: &Config) -> anyhow::Result<Node> {
    create_data_dir(&config.data_dir)?;
    let clustered = !config.store.url.is_empty();
    anyhow::ensure!(
        config.bus.url.is_empty() || clustered,
        "bus.url needs store.url: the nodes of a cluster share one PostgreSQL database"
    );
    let source = master_source(config);
    anyhow::ensure!(
        !clustered
            || !matches!(source, MasterSource::File(_))
            || config.data_dir.join("master.key").exists(),
        "cluster mode needs the same master key on every node: set {MASTER_KEY_ENV} \
         (base64 of 32 bytes) or keys.master_key_command, or copy master.key into the data directory"
    );
    let master = source
        .load()
        .await
        .with_context(|| format!("cannot load the master key from {}", source.describe()))?;
    let store: Arc<dyn Store> = if clustered {
        let mut options = PgOptions::new(config.store.url.clone());
        options.pool_size = config.store.pool_size.max(1);
        let store = PgStore::connect(options)
            .await
            .context("cannot open the PostgreSQL store")?;
        Arc::new(store)
    } else {
        let mut options = SqliteOptions::new(config.data_dir.join("unimsg.db"));
        options.durability = config.store.durability();
        Arc::new(SqliteStore::open(options)?)
    };
    // The embedded store's first version kept the signing key in a file:
    // it moves into the store (wrapped like the data keys) and the file
    // goes.
    let legacy = if clustered {
        None
    } else {
        SigningKey::legacy_file(&config.data_dir)?
    };
    let imported = legacy.is_some();
    let signing = SigningKeys::load_or_create(&*store, &master, legacy).await?;
    if imported {
        let path = config.data_dir.join("signing.key");
        match std::fs::remove_file(&path) {
            Ok(()) => tracing::info!(path = %path.display(),
                "moved the token signing key into the store; the file is gone"),
            Err(error) => tracing::warn!(%error, path = %path.display(),
                "the signing key is in the store now; remove this file"),
        }
    }
    let keyring = Keyring::load_with(&*store, &master, config.keys.data_key_limits())
        .await
        .map_err(|e| {
            let cut_off = config.data_dir.join("master.key.new").exists();
            if cut_off {
                anyhow::anyhow!(
                    "{e}: a master-key rotation was cut off; finish it with \
                 `unimsg keys rotate-master --data-dir {}`",
                    config.data_dir.display()
                )
            } else {
                e.into()
            }
        })?;
    let (audit_key, audit_key_created) = AuditKey::load_or_create(&*store, &master)
        .await
        .context("cannot load the audit log's key")?;
    let hub = Hub::new(config.delivery.outbound_queue);
    let nonce_bounds = NonceBounds::new(
        config.admin.nonce_capacity,
        config.admin.nonce_per_credential,
    );
    let hooks = &config.hooks;
    let secret = &hooks.before_send.secret;
    if !secret.is_empty() {
        anyhow::ensure!(
            unimsg_core::hooks::sign::HookSecret::parse(secret).is_some(),
            "hooks.before_send.secret must be whsec_ and the base64 of at least 24 bytes"
        );
    }
    let url = &hooks.before_send.url;
    if !url.is_empty() {
        unimsg_core::hooks::target::check(url, hooks.allow_private_targets)
            .await
            .with_context(|| format!("hooks.before_send.url {url} cannot be used"))?;
    }
    let transport = unimsg_hooks::HttpTransport::new(hooks.allow_private_targets)
        .context("cannot build the HTTP client for hooks")?;
    let mut parts = CoreParts {
        store,
        bus: Arc::new(LocalBus::new(hub.clone())),
        hub: hub.clone(),
        keyring,
        master,
        master_source: source,
        signing,
        audit_key,
        clock: Arc::new(SystemClock),
        passwords: PasswordWorkers::for_this_machine(),
        admin_passwords: PasswordWorkers::for_admin_checks(),
        nonces: Arc::new(MemoryNonces::new(nonce_bounds)),
        limits: Arc::new(MemoryLimits::new(config.limits.clone())),
        qr: Arc::new(MemoryTickets::default()),
        transport: Some(Arc::new(transport.clone())),
        sessions_cached: config.bus.url.is_empty(),
        config: config.core(),
    };
    let cluster = if config.bus.url.is_empty() {
        None
    } else {
        let node_id = if config.bus.node_id.is_empty() {
            format!("node-{}", uuid_suffix())
        } else {
            config.bus.node_id.clone()
        };
        let ca_cert = if config.bus.ca_cert.as_os_str().is_empty() {
            None
        } else {
            let path = &config.bus.ca_cert;
            Some(
                std::fs::read(path)
                    .with_context(|| format!("cannot read bus.ca_cert {}", path.display()))?,
            )
        };
        let options = RedisOptions {
            url: config.bus.url.clone(),
            ca_cert,
            prefix: config.bus.prefix.clone(),
            node_id,
            presence_ttl: std::time::Duration::from_secs(config.bus.presence_ttl_secs.max(1)),
            timeout: std::time::Duration::from_secs(2),
        };
        let cluster = Cluster::connect(options, hub)
            .await
            .context("cannot connect to Redis")?;
        parts.bus = Arc::new(RedisBus::new(cluster.clone()));
        parts.nonces = Arc::new(RedisNonces::new(cluster.clone(), nonce_bounds));
        parts.limits = Arc::new(RedisLimits::new(cluster.clone(), config.limits.clone()));
        parts.qr = Arc::new(RedisTickets::new(cluster.clone()));
        Some(cluster)
    };
    let core = Arc::new(Core::new(parts));
    // The node's one timer for every connection's heartbeat and expiry.
    tokio::spawn(Hub::run_timers(Arc::downgrade(core.hub())));
    if cluster.is_some() {
        // Broadcasts committed on other nodes are placed here with one
        // store read, rather than read by every connection.
        let (tx, rx) = tokio::sync::mpsc::channel(REMOTE_BROADCASTS_QUEUED);
        core.hub().place_remote_broadcasts_with(tx);
        tokio::spawn(core.clone().place_remote_broadcasts(rx));
    }
    if audit_key_created {
        core.audit_key_created().await;
    }
    core.refresh_hook_interest()
        .await
        .context("cannot read the webhook endpoints")?;
    Ok(Node {
        core,
        cluster,
        transport: Arc::new(transport),
    })
}

/// Creates the data directory (and missing parents) accessible to its
/// owner only (0700): it holds the database, the master key and the
/// signing key. An existing directory is left as it is, with a warning if
/// other users may enter it.
fn create_data_dir(dir: &std::path::Path) -> anyhow::Result<()> {
    let mut builder = std::fs::DirBuilder::new();
    builder.recursive(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
        builder.mode(0o700);
        builder
            .create(dir)
            .with_context(|| format!("cannot create the data directory {}", dir.display()))?;
        let mode = std::fs::metadata(dir)
            .with_context(|| format!("cannot read the data directory {}", dir.display()))?
            .permissions()
            .mode()
            & 0o777;
        if mode & 0o077 != 0 {
            tracing::warn!(
                path = %dir.display(),
                mode = format!("{mode:04o}"),
                "the data directory is accessible to other users; chmod 700 it"
            );
        }
    }
    #[cfg(not(unix))]
    builder
        .create(dir)
        .with_context(|| format!("cannot create the data directory {}", dir.display()))?;
    Ok(())
}

/// Eight random hex digits for a generated node id.
fn uuid_suffix() -> String {
    let bytes = unimsg_core::keys::random_bytes::<4>().unwrap_or([0; 4]);
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Where the master key of `config` comes from.
fn master_source(config: &Config) -> MasterSource {
    MasterSource::of(
        &config.data_dir,
        std::env::var(MASTER_KEY_ENV).ok().filter(|k| !k.is_empty()),
        &config.keys.master_key_command,
    )
}

/// `unimsg keys rotate-master`: re-wraps every stored key under a new
/// master key while no server runs on the data directory. `new_key` is
/// the new key (base64), needed when the key does not come from
/// `master.key`. Returns how many keys were re-wrapped and where the new
/// key is now.
pub async fn rotate_master_offline(
    config: &Config,
    new_key: Option<String>,
) -> anyhow::Result<(u64, &'static str)> {
    let source = master_source(config);
    let current = source
        .load()
        .await
        .with_context(|| format!("cannot load the master key from {}", source.describe()))?;
    let given = new_key
        .as_deref()
        .map(MasterKey::from_base64)
        .transpose()
        .context("the new master key must be the base64 of 32 bytes")?;
    let store = open_store_offline(config).await?;
    let (new, rewrapped) = unimsg_core::keys::rotate_master(&*store, &source, &current, given)
        .await
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    // Proof that the new key alone opens everything.
    Keyring::load(&*store, &new).await?;
    Ok((rewrapped, source.describe()))
}

/// `unimsg admin reset-password`: gives `admin_id` a new secret with no
/// server running (an operator who lost the first one). Its earlier
/// tokens are refused from then on.
pub async fn reset_admin_password(
    config: &Config,
    admin_id: &str,
    secret: String,
) -> anyhow::Result<()> {
    unimsg_core::admins::check_admin_secret(admin_id, &secret, config.admin.min_secret_length)
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    let path = config.data_dir.join("unimsg.db");
    anyhow::ensure!(path.exists(), "no database at {}", path.display());
    let store = SqliteStore::open(SqliteOptions::new(path))?;
    let hash = PasswordWorkers::start(1, 1)
        .hash(secret)
        .await
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    let change = unimsg_store::AdminChange {
        secret_hash: Some(hash),
        ..Default::default()
    };
    use unimsg_store::Admins;
    store
        .update_admin(admin_id, change, time::OffsetDateTime::now_utc())
        .await
        .map_err(|e| match e {
            unimsg_store::StoreError::NotFound(_) => {
                anyhow::anyhow!("no admin account {admin_id:?} in this data directory")
            }
            other => other.into(),
        })?;
    Ok(())
}

/// `unimsg audit verify`: walks the audit log of the configured store
/// (the data directory's database, or PostgreSQL with `store.url`) with
/// the audit key the master key unwraps, and with `expected` (`SEQ:HASH`,
/// an exported head) checks that its entry is still there. Answers the
/// head, or why the log is broken.
pub async fn verify_audit(
    config: &Config,
    expected: Option<&str>,
) -> anyhow::Result<Result<String, String>> {
    let expected = expected
        .map(|text| {
            unimsg_core::audit::parse_head(text).context(
                "--head is SEQ:HASH (64 hex digits), as GET /v1/admin/audit/head prints it",
            )
        })
        .transpose()?;
    let store = open_store_offline(config).await?;
    let source = master_source(config);
    let master = source
        .load()
        .await
        .with_context(|| format!("cannot load the master key from {}", source.describe()))?;
    let key = AuditKey::load(&*store, &master)
        .await
        .context("the master key does not open the audit key")?
        .context("this store has no audit key yet: start the server on it once")?;
    Ok(
        unimsg_core::audit::verify_store_against(&*store, &key, expected)
            .await
            .map(|(seq, hash)| unimsg_core::audit::head_text(seq, &hash))
            .map_err(|e| e.to_string()),
    )
}

/// The configured store, for a command that runs beside (or without) the
/// server: the data directory's database, which must exist, or
/// PostgreSQL with `store.url`.
async fn open_store_offline(config: &Config) -> anyhow::Result<Arc<dyn Store>> {
    Ok(if config.store.url.is_empty() {
        let path = config.data_dir.join("unimsg.db");
        anyhow::ensure!(path.exists(), "no database at {}", path.display());
        Arc::new(SqliteStore::open(SqliteOptions::new(path))?)
    } else {
        let options = PgOptions::new(config.store.url.clone());
        Arc::new(
            PgStore::connect(options)
                .await
                .context("cannot open the PostgreSQL store")?,
        )
    })
}

/// `unimsg backup`: copies the embedded store of the data directory into
/// the new file `out` while the server runs (SQLite's online backup). The
/// copy holds the data keys only wrapped by the master key; with
/// `include_keys` it carries the master key too. Returns the copy's size.
pub async fn backup_embedded(
    config: &Config,
    out: &std::path::Path,
    include_keys: bool,
) -> anyhow::Result<u64> {
    anyhow::ensure!(
        config.store.url.is_empty(),
        "unimsg backup copies the embedded store; back up PostgreSQL with pg_dump \
         (its data keys are wrapped by the master key, which is not in the database)"
    );
    let db = config.data_dir.join("unimsg.db");
    anyhow::ensure!(db.exists(), "no database at {}", db.display());
    let key = if include_keys {
        let source = master_source(config);
        if let MasterSource::File(path) = &source {
            anyhow::ensure!(path.exists(), "no master key at {}", path.display());
        }
        let master = source
            .load()
            .await
            .with_context(|| format!("cannot load the master key from {}", source.describe()))?;
        Some(unimsg_store_sqlite::backup::MasterKeyText(
            master.to_base64(),
        ))
    } else {
        None
    };
    let out = out.to_owned();
    let bytes = tokio::task::spawn_blocking(move || {
        unimsg_store_sqlite::backup::backup(&db, &out, key.as_ref())
    })
    .await??;
    Ok(bytes)
}

/// What `unimsg restore` did.
#[derive(Debug)]
pub struct RestoreReport {
    /// The restored database's size.
    pub bytes: u64,
    /// Whether the backup carried the master key (now in `master.key`).
    pub key_restored: bool,
    /// Whether a master key at hand opens every restored key; `None` when
    /// there is none yet (the operator brings the original).
    pub keys_open: Option<bool>,
}

/// `unimsg restore`: puts a backup in place of the data directory's
/// database, with no server running on it. An existing database (or a
/// different `master.key`) is replaced only with `force`. A backup made
/// with its master key restores `master.key` too; then, or when a master
/// key is already at hand, every restored key is checked to open.
pub async fn restore_embedded(
    config: &Config,
    from: &std::path::Path,
    force: bool,
) -> anyhow::Result<RestoreReport> {
    use unimsg_store_sqlite::backup;
    anyhow::ensure!(
        config.store.url.is_empty(),
        "unimsg restore fills the embedded store; restore PostgreSQL with pg_restore or psql"
    );
    anyhow::ensure!(from.exists(), "no backup at {}", from.display());
    create_data_dir(&config.data_dir)?;
    let db = config.data_dir.join("unimsg.db");
    anyhow::ensure!(
        force || !db.exists(),
        "{} exists; stop the server and give --force to replace it",
        db.display()
    );
    let carried = {
        let from = from.to_owned();
        tokio::task::spawn_blocking(move || backup::master_key_in(&from)).await??
    };
    let key_file = config.data_dir.join("master.key");
    let carried = carried
        .map(|text| MasterKey::from_base64(&text.0))
        .transpose()
        .context("the backup's master key is damaged")?;
    if let Some(key) = &carried
        && key_file.exists()
    {
        let present = MasterKey::load_or_create_file(&key_file)?;
        anyhow::ensure!(
            force || present.same_as(key),
            "{} holds another master key; give --force to replace it with the backup's",
            key_file.display()
        );
    }
    let restored = {
        let (from, db) = (from.to_owned(), db.clone());
        tokio::task::spawn_blocking(move || backup::restore(&from, &db)).await??
    };
    if let Some(key) = &carried {
        match std::fs::remove_file(&key_file) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(e).context("cannot replace master.key"),
        }
        key.write_new_file(&key_file)?;
    }
    // Check the keys only with a master key at hand: loading from a
    // missing master.key would make a new one.
    let source = master_source(config);
    let at_hand = !matches!(&source, MasterSource::File(path) if !path.exists());
    let keys_open = if at_hand {
        let master = source
            .load()
            .await
            .with_context(|| format!("cannot load the master key from {}", source.describe()))?;
        let store = SqliteStore::open(SqliteOptions::new(db))?;
        Some(unimsg_core::keys::opens_all(&store, &master).await?)
    } else {
        None
    };
    Ok(RestoreReport {
        bytes: restored.bytes,
        key_restored: carried.is_some(),
        keys_open,
    })
}

/// Serves until `shutdown` resolves, then closes live connections and
/// drains in-flight requests.
pub async fn run(
    listener: TcpListener,
    config: Config,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    let mut config = config;
    let addr = listener.local_addr()?;
    let tls = config
        .tls
        .files()?
        .map(tls::Tls::new)
        .transpose()
        .context("cannot start TLS")?;
    let scheme = if tls.is_some() { "https" } else { "http" };
    let redirect = if config.tls.redirect_from.is_empty() {
        None
    } else {
        anyhow::ensure!(
            tls.is_some(),
            "tls.redirect_from redirects to HTTPS: it needs tls.cert and tls.key"
        );
        let from = &config.tls.redirect_from;
        let plain = TcpListener::bind(from)
            .await
            .with_context(|| format!("cannot listen on tls.redirect_from {from}"))?;
        Some(plain)
    };
    if config.auth.public_url.is_empty() {
        // QR codes link to the phone page under this URL; a request's Host
        // header is never used for it (a client could point it anywhere).
        config.auth.public_url = format!("{scheme}://{addr}");
        if !addr.ip().is_loopback() {
            tracing::warn!(target: LIFECYCLE, url = %config.auth.public_url,
                "auth.public_url is empty: QR codes link to the listening address; \
                 set auth.public_url (UNIMSG_AUTH__PUBLIC_URL) to the address phones reach");
        }
    }
    // Installed before the store and the bus start, so that the handles
    // they register at their first call report to it.
    let metrics = metrics_handle();
    let Node {
        core,
        cluster,
        transport,
    } = build(&config).await?;
    if let Some(cluster) = &cluster {
        tracing::info!(target: LIFECYCLE, node_id = cluster.node_id(), "cluster mode: PostgreSQL store, Redis bus");
    }
    let initial = core
        .ensure_initial_admin(std::env::var(ADMIN_PASSWORD_ENV).ok())
        .await
        .with_context(|| format!("cannot create the admin account from {ADMIN_PASSWORD_ENV}"))?;
    if let Some(password) = initial {
        // Shown once, on stdout rather than in the log; only its hash is stored.
        println!(
            "created the admin account: admin_id = {INITIAL_ADMIN}, password = {password} \
             (shown only now; set {ADMIN_PASSWORD_ENV} to choose it); sign in with it \
             at /admin"
        );
    }
    if let Some(handle) = metrics.clone() {
        // Histogram samples wait in the recorder until they are folded
        // into the buckets: fold them every few seconds, so that memory
        // stays flat whether or not anyone scrapes `/metrics`.
        tokio::spawn(async move {
            let mut every = tokio::time::interval(std::time::Duration::from_secs(5));
            loop {
                every.tick().await;
                handle.run_upkeep();
            }
        });
    }
    let state = AppState::new(SharedState {
        core: core.clone(),
        http: config.http.clone(),
        metrics: metrics.clone(),
        metrics_config: config.metrics.clone(),
    });
    let app = unimsg_http::router(state.clone());
    let (max_connections, fd_limit) = serve::max_connections(&config.http);
    let caps = serve::Caps::new(
        max_connections,
        config.http.max_connections_per_ip,
        config.admin.trusted_proxies.clone(),
    );
    tracing::info!(
        target: LIFECYCLE,
        max_connections,
        open_file_limit = fd_limit,
        max_connections_per_ip = config.http.max_connections_per_ip,
        header_read_timeout_secs = config.http.header_read_timeout_secs,
        request_timeout_secs = config.http.request_timeout_secs,
        "connection caps and timeouts"
    );
    let watcher = tls.as_ref().map(tls::Tls::watch);
    let redirector = redirect.map(|plain| {
        if let Ok(from) = plain.local_addr() {
            tracing::info!(target: LIFECYCLE, "redirecting http://{from} to https://");
        }
        let caps = serve::Caps::new(
            max_connections,
            config.http.max_connections_per_ip,
            config.admin.trusted_proxies.clone(),
        );
        let app = serve::redirect_app(addr.port());
        let http = config.http.clone();
        tokio::spawn(async move {
            serve::serve(plain, app, &http, caps, None, std::future::pending(), || {}).await;
        })
    });
    let metrics_listener = if config.metrics.listen.is_empty() {
        None
    } else {
        let (at, _) = config::parse_listen(&config.metrics.listen)
            .map_err(|e| anyhow::anyhow!("metrics.listen: {e}"))?;
        let plain = TcpListener::bind(at)
            .await
            .with_context(|| format!("cannot listen on metrics.listen {at}"))?;
        if let Ok(at) = plain.local_addr() {
            tracing::info!(target: LIFECYCLE, "metrics on http://{at}/metrics");
            if !at.ip().is_loopback() && config.metrics.token.is_empty() {
                tracing::warn!(target: LIFECYCLE,
                    "metrics.listen is reachable from other machines and metrics.token is empty: \
                     anyone who reaches {at} reads the metrics");
            }
        }
        let caps = serve::Caps::new(64, 0, Vec::new());
        let app = unimsg_http::metrics_router(state.clone());
        let http = config.http.clone();
        Some(tokio::spawn(async move {
            serve::serve(plain, app, &http, caps, None, std::future::pending(), || {}).await;
        }))
    };
    tracing::info!(target: LIFECYCLE, "listening on {scheme}://{addr}");
    tracing::info!(
        target: LIFECYCLE,
        "web console {scheme}://{addr}/ · admin console {scheme}://{addr}/admin · \
         API reference {scheme}://{addr}/docs/"
    );
    let hub = core.hub().clone();
    let draining = hub.clone();
    // Counted refusals of the admin API are written when their interval
    // ends (see `Core::audit_refusal`).
    let flusher = {
        let core = core.clone();
        let every =
            std::time::Duration::from_secs(config.admin.refusal_audit_interval_secs.clamp(1, 60));
        tokio::spawn(async move {
            let mut ticks = tokio::time::interval(every);
            ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                ticks.tick().await;
                core.flush_refusals().await;
            }
        })
    };
    // New audit entries are verified as they come, so a broken chain
    // raises an alert (see `Core::check_audit_chain`).
    let audit_checker = (config.admin.audit_verify_interval_secs > 0).then(|| {
        let core = core.clone();
        let every = std::time::Duration::from_secs(config.admin.audit_verify_interval_secs);
        tokio::spawn(async move {
            let mut ticks = tokio::time::interval(every);
            ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                ticks.tick().await;
                core.check_audit_chain().await;
            }
        })
    });
    let dispatcher = tokio::spawn(core.clone().run_webhooks(transport));
    // This node's report for the admin console's view of every node.
    let reporter = {
        let node_id = match &cluster {
            Some(cluster) => cluster.node_id().to_owned(),
            None if !config.bus.node_id.is_empty() => config.bus.node_id.clone(),
            None => "local".to_owned(),
        };
        tokio::spawn(report_node(core.clone(), metrics.clone(), node_id))
    };
    // Data keys due for rotation, and another node's rotations.
    let key_refresh = tokio::spawn(core.clone().run_key_refresh());
    serve::serve(
        listener,
        app,
        &config.http,
        caps,
        tls,
        shutdown,
        move || {
            tracing::info!(target: LIFECYCLE, "shutting down: closing live connections");
            hub.shutdown();
        },
    )
    .await;
    // Upgraded connections live outside the HTTP server: wait until each
    // has sent its close frame, within a bound.
    if tokio::time::timeout(std::time::Duration::from_secs(10), draining.drained())
        .await
        .is_err()
    {
        tracing::warn!(target: LIFECYCLE, left = draining.connections(), "connections still open at exit");
    }
    flusher.abort();
    reporter.abort();
    key_refresh.abort();
    if let Some(checker) = audit_checker {
        checker.abort();
    }
    if let Some(watcher) = watcher {
        watcher.abort();
    }
    if let Some(redirector) = redirector {
        redirector.abort();
    }
    if let Some(metrics_listener) = metrics_listener {
        metrics_listener.abort();
    }
    // Attempts cut off here are attempted again when their lease ends.
    dispatcher.abort();
    core.flush_all_refusals().await;
    if let Some(cluster) = &cluster {
        cluster.leave().await;
    }
    tracing::info!(target: LIFECYCLE, "stopped");
    Ok(())
}

/// A configuration as TOML.
pub fn to_toml(config: &Config) -> String {
    toml::to_string(config).unwrap_or_default()
}

/// Installs the log subscriber described by the configuration. `RUST_LOG`
/// overrides the level when set.
pub fn init_logging(log: &LogConfig) {
    use tracing_subscriber::EnvFilter;
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(&log.level));
    // The PostgreSQL driver logs query parameters (password hashes,
    // wrapped keys) at debug level: never let them through.
    let filter = [
        format!("{LIFECYCLE}=info"),
        "tokio_postgres=info".to_owned(),
    ]
    .iter()
    .filter_map(|d| d.parse().ok())
    .fold(filter, |f, directive| f.add_directive(directive));
    // Colours only for a person at a terminal who did not ask for none
    // (https://no-color.org): never in a file, a pipe or a journal.
    use std::io::IsTerminal;
    let colour = std::io::stderr().is_terminal()
        && std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty());
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(colour)
        .with_writer(std::io::stderr);
    let result = match log.format {
        LogFormat::Json => builder.json().try_init(),
        LogFormat::Text => builder.try_init(),
    };
    if let Err(e) = result {
        eprintln!("logging already initialised: {e}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_reported_total_is_a_series_of_the_catalogue() {
        let known: Vec<&str> = unimsg_core::catalogue::names().collect();
        for name in REPORTED_TOTALS {
            assert!(known.contains(name), "{name} is not in the catalogue");
        }
    }

    #[test]
    fn series_are_summed_over_their_labels_and_absent_ones_are_zero() {
        let text = "# HELP unimsg_logins_total Sign-ins.\n\
                    # TYPE unimsg_logins_total counter\n\
                    unimsg_logins_total{method=\"password\",result=\"ok\"} 3\n\
                    unimsg_logins_total{method=\"qr\",result=\"failed\"} 2\n\
                    unimsg_logins_total_other 100\n\
                    unimsg_messages_sent_total 7\n";
        let totals = sum_series(
            text,
            &[
                "unimsg_logins_total",
                "unimsg_messages_sent_total",
                "unimsg_broadcasts_total",
            ],
        );
        assert_eq!(totals["unimsg_logins_total"], 5);
        assert_eq!(totals["unimsg_messages_sent_total"], 7);
        assert_eq!(totals["unimsg_broadcasts_total"], 0);
    }
}
