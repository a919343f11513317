//! Builds and runs a unimsg server: configuration loading, the embedded
//! store, keys, the core, the bus and the HTTP router, wired together.
//!
//! [`run`] is the whole server as a function of a bound listener, a
//! configuration and a shutdown future; the binary and the tests call it.

mod config;

use std::future::Future;
use std::net::SocketAddr;
use std::sync::{Arc, OnceLock};

use anyhow::Context;
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};
use tokio::net::TcpListener;
use unimsg_core::admin::INITIAL_ADMIN;
use unimsg_core::bus::LocalBus;
use unimsg_core::clock::SystemClock;
use unimsg_core::hub::Hub;
use unimsg_core::keys::{Keyring, MasterKey, SigningKey};
use unimsg_core::limits::MemoryLimits;
use unimsg_core::password::PasswordWorkers;
use unimsg_core::qr::MemoryTickets;
use unimsg_core::replay::MemoryNonces;
use unimsg_core::{Core, CoreParts};
use unimsg_http::AppState;
use unimsg_store::sqlite::{SqliteOptions, SqliteStore};

pub use config::{Config, ConfigError, ENV_PREFIX, LogConfig, LogFormat, StoreConfig};

/// Log target of start and stop lines, shown at every log level: scripts
/// wait for `listening on http://ADDR`.
const LIFECYCLE: &str = "unimsg::lifecycle";

/// The environment variable with the first start's password of `admin`.
pub const ADMIN_PASSWORD_ENV: &str = "UNIMSG_ADMIN_PASSWORD";

/// The environment variable holding the master key (base64 of 32 bytes).
pub const MASTER_KEY_ENV: &str = "UNIMSG_MASTER_KEY";

/// The process-wide Prometheus recorder; `None` if another one was installed first.
fn metrics_handle() -> Option<PrometheusHandle> {
    static HANDLE: OnceLock<Option<PrometheusHandle>> = OnceLock::new();
    HANDLE
        .get_or_init(|| {
            let recorder = PrometheusBuilder::new().build_recorder();
            let handle = recorder.handle();
            metrics::set_global_recorder(recorder).ok().map(|()| handle)
        })
        .clone()
}

/// Opens everything under the data directory and builds the core.
pub async fn build(config: &Config) -> anyhow::Result<Arc<Core>> {
    std::fs::create_dir_all(&config.data_dir).with_context(|| {
        format!(
            "cannot create the data directory {}",
            config.data_dir.display()
        )
    })?;
    let master_env = std::env::var(MASTER_KEY_ENV).ok();
    let master = MasterKey::load_or_create(&config.data_dir, master_env.as_deref())?;
    let signing = SigningKey::load_or_create(&config.data_dir)?;
    let mut options = SqliteOptions::new(config.data_dir.join("unimsg.db"));
    options.durability = config.store.durability();
    let store = Arc::new(SqliteStore::open(options)?);
    let keyring = Keyring::load(&*store, &master).await?;
    let hub = Hub::new(config.delivery.outbound_queue);
    let bus = Arc::new(LocalBus::new(hub.clone()));
    Ok(Arc::new(Core::new(CoreParts {
        store,
        bus,
        hub,
        keyring,
        signing,
        clock: Arc::new(SystemClock),
        passwords: PasswordWorkers::for_this_machine(),
        nonces: Arc::new(MemoryNonces::new(config.admin.nonce_capacity)),
        limits: Arc::new(MemoryLimits::new(config.limits.clone())),
        qr: Arc::new(MemoryTickets::default()),
        config: config.core(),
    })))
}

/// `unimsg audit verify`: walks the audit log of the data directory's store.
pub async fn verify_audit(data_dir: &std::path::Path) -> anyhow::Result<Result<u64, String>> {
    let path = data_dir.join("unimsg.db");
    anyhow::ensure!(path.exists(), "no database at {}", path.display());
    let store = SqliteStore::open(SqliteOptions::new(path))?;
    Ok(unimsg_core::audit::verify_store(&store)
        .await
        .map_err(|e| e.to_string()))
}

/// Serves until `shutdown` resolves, then closes live connections and
/// drains in-flight requests.
pub async fn run(
    listener: TcpListener,
    config: Config,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    let core = build(&config).await?;
    let initial = core
        .ensure_initial_admin(std::env::var(ADMIN_PASSWORD_ENV).ok())
        .await?;
    if let Some(password) = initial {
        // Shown once, on stdout rather than in the log; only its hash is stored.
        println!(
            "created the admin account: admin_id = {INITIAL_ADMIN}, password = {password} \
             (shown only now; set {ADMIN_PASSWORD_ENV} to choose it)"
        );
    }
    let state = AppState {
        core: core.clone(),
        http: config.http.clone(),
        metrics: metrics_handle(),
    };
    let app = unimsg_http::router(state);
    let addr = listener.local_addr()?;
    tracing::info!(target: LIFECYCLE, "listening on http://{addr}");
    let hub = core.hub().clone();
    let draining = hub.clone();
    axum::serve(
        listener,
        app.into_make_service_with_connect_info::<SocketAddr>(),
    )
    .with_graceful_shutdown(async move {
        shutdown.await;
        tracing::info!(target: LIFECYCLE, "shutting down: closing live connections");
        hub.shutdown();
    })
    .await?;
    // Upgraded connections live outside the HTTP server: wait until each
    // has sent its close frame, within a bound.
    if tokio::time::timeout(std::time::Duration::from_secs(10), draining.drained())
        .await
        .is_err()
    {
        tracing::warn!(target: LIFECYCLE, left = draining.connections(), "connections still open at exit");
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
    let filter = match format!("{LIFECYCLE}=info").parse() {
        Ok(directive) => filter.add_directive(directive),
        Err(_) => filter,
    };
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    let result = match log.format {
        LogFormat::Json => builder.json().try_init(),
        LogFormat::Text => builder.try_init(),
    };
    if let Err(e) = result {
        eprintln!("logging already initialised: {e}");
    }
}
