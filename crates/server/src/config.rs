//! The server configuration: one TOML file plus `UNIMSG_*` environment
//! overrides, on top of defaults that need no file at all.
//!
//! Every key can be set from the environment as `UNIMSG_`, the section,
//! `__` and the key, upper-cased (`UNIMSG_AUTH__DEVICE_POLICY=single`);
//! top-level keys drop the section (`UNIMSG_LISTEN`, `UNIMSG_DATA_DIR`). Unknown keys in
//! the file are errors; unknown `UNIMSG_*` variables are ignored with a
//! warning, because other tools (and later versions) share the prefix.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use unimsg_core::config::{
    AdminConfig, AuthConfig, CoreConfig, DeliveryConfig, GroupsConfig, HooksConfig, KeysConfig,
    MessagingConfig,
};
use unimsg_core::limits::LimitsConfig;
use unimsg_http::{HttpConfig, MetricsConfig};
use unimsg_store_sqlite::Durability;

pub const ENV_PREFIX: &str = "UNIMSG_";

/// Variables with the prefix that are not configuration keys: secrets
/// read at start, and what the admin and key commands of the `unimsg`
/// binary read (from `UNIMSG_NEW_MASTER_KEY` on).
const NOT_CONFIG: &[&str] = &[
    "UNIMSG_CONFIG",
    "UNIMSG_MASTER_KEY",
    "UNIMSG_NEW_MASTER_KEY",
    "UNIMSG_NEW_ADMIN_PASSWORD",
    "UNIMSG_ADMIN_PASSWORD",
    "UNIMSG_SERVER",
    "UNIMSG_CA_CERT",
    "UNIMSG_ADMIN_SIGNING_SECRET",
    "UNIMSG_ADMIN_ID",
    "UNIMSG_ADMIN_TOKEN",
];

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// Address to listen on; port 0 picks a free port. Given as
    /// `HOST:PORT` (a name such as `localhost` is resolved), `[::1]:PORT`,
    /// or `:PORT` for every interface.
    #[serde(deserialize_with = "listen_address")]
    pub listen: SocketAddr,
    /// Directory of the embedded database and the key files.
    pub data_dir: PathBuf,
    pub log: LogConfig,
    pub keys: KeysConfig,
    pub http: HttpConfig,
    pub auth: AuthConfig,
    pub messaging: MessagingConfig,
    pub delivery: DeliveryConfig,
    pub admin: AdminConfig,
    pub limits: LimitsConfig,
    pub groups: GroupsConfig,
    pub hooks: HooksConfig,
    pub store: StoreConfig,
    pub bus: BusConfig,
    pub tls: TlsConfig,
    pub metrics: MetricsConfig,
    /// What loading noticed and the server should say once logging is up
    /// (an unknown `UNIMSG_*` variable, `:PORT` listening everywhere).
    #[serde(skip)]
    pub warnings: Vec<String>,
}

/// Reads `listen` from the configuration with [`parse_listen`].
fn listen_address<'de, D: serde::Deserializer<'de>>(d: D) -> Result<SocketAddr, D::Error> {
    let text = String::deserialize(d)?;
    parse_listen(&text)
        .map(|(addr, _)| addr)
        .map_err(serde::de::Error::custom)
}

/// A listening address: `HOST:PORT` (names are resolved; the first
/// address wins), `[::1]:PORT`, or `:PORT` for every interface, which
/// comes with a warning to show. The error says what is accepted.
pub fn parse_listen(text: &str) -> Result<(SocketAddr, Option<String>), String> {
    let refused = || {
        format!(
            "cannot listen on \"{text}\": write HOST:PORT, e.g. 127.0.0.1:8080, \
             localhost:8080, [::1]:8080, or :8080 for every interface"
        )
    };
    if let Some(port) = text.strip_prefix(':') {
        let port: u16 = port.parse().map_err(|_| refused())?;
        let warning = format!(
            "listening on every interface (0.0.0.0:{port}): anyone who can reach this \
             machine can reach the server; write 127.0.0.1:{port} for this machine only"
        );
        return Ok((SocketAddr::from(([0, 0, 0, 0], port)), Some(warning)));
    }
    if let Ok(addr) = text.parse::<SocketAddr>() {
        return Ok((addr, None));
    }
    use std::net::ToSocketAddrs;
    let mut resolved = text.to_socket_addrs().map_err(|_| refused())?;
    resolved.next().map(|addr| (addr, None)).ok_or_else(refused)
}

/// A refusal of the merged configuration in words: the `config` crate's
/// own (`enum DevicePolicy does not have variant constructor bogus for key
/// …`) names Rust types and not the allowed values, so the same values
/// are read again through JSON, whose errors name the key's path and the
/// allowed values. That second reading is stricter (a number given as a
/// string in a list is refused there), so its words are used only when
/// they are about the key the first reading refused.
fn explain(merged: config::Config, error: &config::ConfigError) -> String {
    let first = error.to_string();
    let second = merged
        .try_deserialize::<serde_json::Value>()
        .ok()
        .and_then(|value| serde_path_to_error::deserialize::<_, Config>(value).err());
    if let Some(e) = second {
        let path = e.path().to_string();
        if first.contains(&format!("`{path}`")) {
            let words = unimsg_http::plain_words(&e.inner().to_string());
            return format!("{path}: {words}");
        }
    }
    unimsg_http::plain_words(&first)
}

/// The known variable closest to an unknown one, if it is close enough to
/// be a typo.
fn closest(unknown: &str, known: &[String]) -> Option<String> {
    known
        .iter()
        .map(|k| (strsim::levenshtein(unknown, k), k))
        .filter(|(distance, k)| *distance <= 3.max(k.len() / 5))
        .min_by_key(|(distance, _)| *distance)
        .map(|(_, k)| k.clone())
}

impl Default for Config {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([127, 0, 0, 1], 8080)),
            data_dir: PathBuf::from("./data"),
            log: LogConfig::default(),
            keys: KeysConfig::default(),
            http: HttpConfig::default(),
            auth: AuthConfig::default(),
            messaging: MessagingConfig::default(),
            delivery: DeliveryConfig::default(),
            admin: AdminConfig::default(),
            limits: LimitsConfig::default(),
            groups: GroupsConfig::default(),
            hooks: HooksConfig::default(),
            store: StoreConfig::default(),
            bus: BusConfig::default(),
            tls: TlsConfig::default(),
            metrics: MetricsConfig::default(),
            warnings: Vec::new(),
        }
    }
}

/// `[log]`
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LogConfig {
    /// `text` or `json`.
    pub format: LogFormat,
    /// A tracing filter such as `info` or `unimsg_core=debug,info`.
    pub level: String,
}

impl Default for LogConfig {
    fn default() -> Self {
        Self {
            format: LogFormat::Text,
            level: "info".into(),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LogFormat {
    Text,
    Json,
}

/// `[store]`
#[derive(Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct StoreConfig {
    /// `full` syncs every commit to disk (survives power loss); `normal`
    /// survives a process crash only. Commits are grouped either way.
    /// (Embedded store only.)
    pub sync: String,
    /// Cluster mode: `postgres://user:password@host:port/database`. Empty
    /// keeps the embedded SQLite store in the data directory.
    pub url: String,
    /// Connections each node keeps to PostgreSQL.
    pub pool_size: usize,
}

/// A URL that may carry a password: `[redacted]` unless empty.
fn redacted_url(url: &str) -> &'static str {
    if url.is_empty() { "" } else { "[redacted]" }
}

impl std::fmt::Debug for StoreConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StoreConfig")
            .field("sync", &self.sync)
            .field("url", &redacted_url(&self.url))
            .field("pool_size", &self.pool_size)
            .finish()
    }
}

impl Default for StoreConfig {
    fn default() -> Self {
        Self {
            sync: "full".into(),
            url: String::new(),
            pool_size: 16,
        }
    }
}

/// `[tls]`: HTTPS, WSS and SSE on the listener itself.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TlsConfig {
    /// The certificate chain (PEM), leaf first; with `key`, the listener
    /// speaks TLS only. Reloaded on `SIGHUP` and when the file changes.
    pub cert: PathBuf,
    /// The private key (PEM) of the certificate.
    pub key: PathBuf,
    /// A second, plain listener (e.g. `0.0.0.0:80`) that answers every
    /// request with a redirect to HTTPS; empty for none.
    pub redirect_from: String,
}

impl TlsConfig {
    /// The files, when both are set; an error when only one is.
    pub fn files(&self) -> Result<Option<crate::tls::TlsFiles>, ConfigError> {
        let (cert, key) = (self.cert.as_os_str(), self.key.as_os_str());
        match (cert.is_empty(), key.is_empty()) {
            (true, true) => Ok(None),
            (false, false) => Ok(Some(crate::tls::TlsFiles {
                cert: self.cert.clone(),
                key: self.key.clone(),
            })),
            _ => Err(ConfigError::Invalid(
                "tls.cert and tls.key (--tls-cert, --tls-key) go together: set both or neither"
                    .into(),
            )),
        }
    }
}

/// `[bus]`
#[derive(Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct BusConfig {
    /// Cluster mode: `redis://[:password@]host:port/[db]` (or `rediss://`
    /// for TLS) for cross-node delivery, presence, nonces, rate limits and
    /// QR tickets. Empty runs a single node with all of it in memory.
    /// Needs `store.url`.
    pub url: String,
    /// For `rediss://`: a PEM file of the CA certificates the server's
    /// certificate must chain to; empty trusts the system's roots.
    pub ca_cert: PathBuf,
    /// Prefix of every Redis key and channel.
    pub prefix: String,
    /// This node's id in the cluster; empty picks a random one at start.
    pub node_id: String,
    /// How long a node's presence entries outlive it if it dies, in seconds.
    pub presence_ttl_secs: u64,
}

impl std::fmt::Debug for BusConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BusConfig")
            .field("url", &redacted_url(&self.url))
            .field("ca_cert", &self.ca_cert)
            .field("prefix", &self.prefix)
            .field("node_id", &self.node_id)
            .field("presence_ttl_secs", &self.presence_ttl_secs)
            .finish()
    }
}

impl Default for BusConfig {
    fn default() -> Self {
        Self {
            url: String::new(),
            ca_cert: PathBuf::new(),
            prefix: "unimsg:".into(),
            node_id: String::new(),
            presence_ttl_secs: 30,
        }
    }
}

impl StoreConfig {
    pub fn durability(&self) -> Durability {
        if self.sync.eq_ignore_ascii_case("normal") {
            Durability::Normal
        } else {
            Durability::Full
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("configuration: {0}")]
    Invalid(String),
}

impl Config {
    /// The defaults, overlaid with the file (if any), overlaid with the
    /// environment. `env` is the process environment, passed in for tests.
    pub fn load(
        file: Option<&Path>,
        env: impl IntoIterator<Item = (String, String)>,
    ) -> Result<Self, ConfigError> {
        let mut builder = config::Config::builder();
        if let Some(path) = file {
            builder = builder.add_source(
                config::File::from(path)
                    .format(config::FileFormat::Toml)
                    .required(true),
            );
        }
        let known = known_keys();
        let lists = list_keys();
        let mut overrides = HashMap::new();
        let mut list_values = Vec::new();
        let mut warnings = Vec::new();
        for (name, value) in env {
            let Some(rest) = name.strip_prefix(ENV_PREFIX) else {
                continue;
            };
            if NOT_CONFIG.contains(&name.as_str()) {
                continue;
            }
            let key = rest.to_ascii_lowercase().replace("__", ".");
            if lists.contains(&key) {
                // Split here: a single item is a list of one too.
                let items: Vec<String> = value
                    .split(',')
                    .map(str::trim)
                    .filter(|v| !v.is_empty())
                    .map(str::to_owned)
                    .collect();
                list_values.push((key, items));
            } else if known.contains(&key) {
                overrides.insert(name, value);
            } else {
                let env_names: Vec<String> = known
                    .iter()
                    .map(|k| format!("{ENV_PREFIX}{}", k.replace('.', "__").to_ascii_uppercase()))
                    .chain(NOT_CONFIG.iter().map(|n| (*n).to_owned()))
                    .collect();
                let hint = closest(&name, &env_names)
                    .map(|k| format!("; did you mean {k}?"))
                    .unwrap_or_default();
                warnings.push(format!("ignoring {name}: it is no configuration key{hint}"));
            }
        }
        let environment = config::Environment::with_prefix("UNIMSG")
            .prefix_separator("_")
            .separator("__")
            .try_parsing(true)
            .source(Some(overrides));
        builder = builder.add_source(environment);
        for (key, items) in list_values {
            builder = builder
                .set_override(key.as_str(), items)
                .map_err(|e| ConfigError::Invalid(e.to_string()))?;
        }
        let merged = builder
            .build()
            .map_err(|e| ConfigError::Invalid(e.to_string()))?;
        // `listen = ":8080"` (file or UNIMSG_LISTEN): every interface, said
        // once logging is up, as for `--listen :8080`.
        if let Ok(listen) = merged.get_string("listen")
            && let Ok((_, Some(warning))) = parse_listen(&listen)
        {
            warnings.push(warning);
        }
        let mut config: Self = match merged.clone().try_deserialize() {
            Ok(config) => config,
            Err(error) => return Err(ConfigError::Invalid(explain(merged, &error))),
        };
        config.http.check().map_err(ConfigError::Invalid)?;
        if !config.metrics.listen.is_empty() {
            match parse_listen(&config.metrics.listen) {
                Ok((_, Some(warning))) => warnings.push(format!("metrics.listen: {warning}")),
                Ok((_, None)) => {}
                Err(error) => return Err(ConfigError::Invalid(format!("metrics.listen: {error}"))),
            }
        }
        config.warnings = warnings;
        Ok(config)
    }

    /// The core's part.
    pub fn core(&self) -> CoreConfig {
        CoreConfig {
            keys: self.keys.clone(),
            auth: self.auth.clone(),
            messaging: self.messaging.clone(),
            delivery: self.delivery.clone(),
            admin: self.admin.clone(),
            limits: self.limits.clone(),
            groups: self.groups.clone(),
            hooks: self.hooks.clone(),
        }
    }

    /// The defaults as TOML, as `unimsg.example.toml` shows them.
    pub fn default_toml() -> String {
        toml::to_string(&Config::default()).unwrap_or_default()
    }
}

/// Every key path (`auth.device_policy`, `listen`) of the configuration,
/// with whether its value is a list.
fn key_paths() -> Vec<(String, bool)> {
    let value =
        toml::Value::try_from(Config::default()).unwrap_or(toml::Value::Table(Default::default()));
    let mut out = Vec::new();
    if let toml::Value::Table(top) = value {
        collect_paths("", &top, &mut out);
    }
    out
}

/// The key paths of `table` under `prefix`, nested tables included
/// (`hooks.before_send.url`), each with whether its value is a list.
fn collect_paths(prefix: &str, table: &toml::Table, out: &mut Vec<(String, bool)>) {
    for (k, v) in table {
        let path = if prefix.is_empty() {
            k.clone()
        } else {
            format!("{prefix}.{k}")
        };
        match v {
            toml::Value::Table(inner) => collect_paths(&path, inner, out),
            other => out.push((path, other.is_array())),
        }
    }
}

fn known_keys() -> Vec<String> {
    key_paths().into_iter().map(|(k, _)| k).collect()
}

fn list_keys() -> Vec<String> {
    key_paths()
        .into_iter()
        .filter(|(_, list)| *list)
        .map(|(k, _)| k)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    #[test]
    fn no_file_and_no_env_gives_defaults() {
        let c = Config::load(None, env(&[])).unwrap();
        assert_eq!(c, Config::default());
    }

    #[test]
    fn nested_keys_and_one_item_lists_come_from_the_environment() {
        let c = Config::load(
            None,
            env(&[
                (
                    "UNIMSG_HOOKS__BEFORE_SEND__URL",
                    "https://hook.example/check",
                ),
                ("UNIMSG_HOOKS__BEFORE_SEND__ON_FAILURE", "reject"),
                ("UNIMSG_HOOKS__RETRY_SCHEDULE_SECS", "7"),
                ("UNIMSG_ADMIN__IP_ALLOWLIST", "10.0.0.0/8"),
                ("UNIMSG_HOOKS__BEFORE_SEND__KINDS", "chat,event"),
            ]),
        )
        .unwrap();
        assert_eq!(c.hooks.before_send.url, "https://hook.example/check");
        assert_eq!(
            c.hooks.before_send.on_failure,
            unimsg_core::config::OnFailure::Reject
        );
        assert_eq!(c.hooks.retry_schedule_secs, vec![7]);
        assert_eq!(c.admin.ip_allowlist.len(), 1);
        assert_eq!(c.hooks.before_send.kinds.len(), 2);
    }

    #[test]
    fn env_overrides_sections_and_top_level_keys() {
        let c = Config::load(
            None,
            env(&[
                ("UNIMSG_LISTEN", "127.0.0.1:0"),
                ("UNIMSG_AUTH__DEVICE_POLICY", "single"),
                ("UNIMSG_MESSAGING__RECALL_WINDOW_SECS", "7"),
                ("UNIMSG_AUTH__REGISTRATION_OPEN", "false"),
                ("UNIMSG_LOG__LEVEL", "unimsg_core=debug,info"),
                ("UNIMSG_MASTER_KEY", "not a config key"),
                ("UNIMSG_SOMETHING__ELSE", "ignored"),
                ("OTHER", "ignored"),
            ]),
        )
        .unwrap();
        assert_eq!(c.listen.port(), 0);
        assert_eq!(
            c.auth.device_policy,
            unimsg_core::config::DevicePolicy::Single
        );
        assert_eq!(c.messaging.recall_window_secs, 7);
        assert!(!c.auth.registration_open);
        assert_eq!(c.log.level, "unimsg_core=debug,info");
    }

    #[test]
    fn unknown_file_keys_are_errors() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c.toml");
        std::fs::write(&path, "[auth]\nregistration_opne = true\n").unwrap();
        assert!(Config::load(Some(&path), env(&[])).is_err());
    }

    /// `unimsg.example.toml` must show exactly the defaults: regenerate it
    /// with `unimsg config defaults > unimsg.example.toml` when this fails.
    #[test]
    fn example_file_is_current() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../unimsg.example.toml");
        let example =
            std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        let parsed = Config::load(Some(&path), env(&[])).unwrap();
        assert_eq!(
            parsed,
            Config::default(),
            "unimsg.example.toml differs from the defaults"
        );
        for key in known_keys() {
            let leaf = key.rsplit('.').next().unwrap_or(&key);
            assert!(
                example.contains(&format!("{leaf} =")),
                "unimsg.example.toml does not show `{key}`"
            );
        }
    }

    #[test]
    fn store_and_bus_urls_are_redacted_in_debug() {
        let mut config = Config::default();
        config.store.url = "postgres://u:hunter2@db/x".into();
        config.bus.url = "redis://:hunter2@cache:6379".into();
        let printed = format!("{config:?}");
        assert!(!printed.contains("hunter2"), "{printed}");
        assert!(printed.contains("[redacted]"));
    }
}
