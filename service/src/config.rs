//! Configuration: defaults in code, then an optional TOML file, then `FWB__SECTION__KEY` environment variables.
//!
//! Every field has a default, so the service runs with no configuration at all on the embedded backend
//! (SQLite file and blob directory under `./data`, in-process cache).

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use figment::Figment;
use figment::providers::{Env, Format, Serialized, Toml};
use secrecy::{ExposeSecret, SecretString};
use serde::{Deserialize, Serialize};

/// The merged configuration of one service instance.
#[derive(Debug, Clone, Deserialize, Serialize, Default)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    pub server: ServerConfig,
    pub storage: StorageConfig,
    pub database: DatabaseConfig,
    pub cache: CacheConfig,
    pub blob: BlobConfig,
    pub audit: AuditConfig,
    pub upload: UploadConfig,
    pub download: DownloadConfig,
    pub cors: CorsConfig,
    pub share: ShareConfig,
    pub rate_limit: RateLimitConfig,
    pub thumbnail: ThumbnailConfig,
    pub log: LogConfig,
    pub telemetry: TelemetryConfig,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct ServerConfig {
    /// Address to listen on; port 0 picks a free port (tests use it).
    pub bind: SocketAddr,
    /// How long in-flight requests may run after SIGTERM/SIGINT before the process exits anyway.
    pub shutdown_timeout_secs: u64,
    /// Proxies (IPs or CIDR blocks) whose `X-Forwarded-For` is believed when telling the client's address.
    pub trusted_proxies: TrustedProxies,
    /// Connections open at once; one more is answered 503 and closed without being read.
    pub max_connections: usize,
    /// How long a connection may take to send a complete request head, counted from when it starts waiting
    /// for one: on a new connection, and between the requests of a kept-alive one (so this is also how long
    /// an idle keep-alive connection stays open).
    pub header_read_timeout_secs: u64,
    /// A request body that sends nothing for this long is dropped (408); an upload's temporary file goes with it.
    pub body_idle_timeout_secs: u64,
    /// Largest JSON request body (renames, shares, users); more is a 413 before it is read further.
    pub max_json_bytes: usize,
    /// Requests handled at once; past that, requests get a fast 503 with `Retry-After` instead of a queue
    /// (admission control). Health, metrics and the API description are not counted.
    pub max_in_flight: usize,
}

impl Default for ServerConfig {
    fn default() -> Self {
        Self {
            bind: SocketAddr::from(([127, 0, 0, 1], 8080)),
            shutdown_timeout_secs: 30,
            trusted_proxies: TrustedProxies::default(),
            // Well under the descriptor limit a service is usually given (this machine's is 20 000), leaving
            // room for blobs, the database pool and Redis.
            max_connections: 8192,
            // Longer than load balancers' usual idle timeout is not needed here: a closed idle connection
            // costs a client one reconnect, an open one costs us a descriptor.
            header_read_timeout_secs: 30,
            body_idle_timeout_secs: 30,
            max_json_bytes: 64 * 1024,
            // Past ~2500 req/s this service is CPU-bound on two cores, and more requests in flight only add
            // waiting. Measured at twice that rate (peak.toml at 5000 req/s, PostgreSQL + Redis, this 2-core
            // machine): 128 held the admitted API p95 at 69 ms with 3878 req/s served; 256 let it reach 142 ms
            // and served fewer (3578 req/s).
            max_in_flight: 128,
        }
    }
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct StorageConfig {
    /// Root of everything the embedded backend keeps on disk.
    pub data_dir: PathBuf,
}

impl Default for StorageConfig {
    fn default() -> Self {
        Self { data_dir: PathBuf::from("./data") }
    }
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct DatabaseConfig {
    /// `sqlite://…` or `postgres://…`; empty means the SQLite file `<data_dir>/filewallball.db`.
    #[serde(serialize_with = "mask_secret")]
    pub url: SecretString,
    /// Connections kept for steady load (the performance guide's `pool_size`; SQLite uses it as its whole pool).
    pub pool_size: u32,
    /// Extra connections allowed under bursts, closed again when idle (the performance guide's `max_overflow`).
    pub max_overflow: u32,
    /// How long a request waits for a connection before it is answered 503.
    pub pool_timeout_secs: u64,
    /// Connections older than this are replaced.
    pub pool_recycle_secs: u64,
    /// Check a connection is alive before handing it out.
    pub pool_pre_ping: bool,
}

impl Default for DatabaseConfig {
    fn default() -> Self {
        Self {
            url: SecretString::from(""),
            pool_size: 20,
            max_overflow: 30,
            pool_timeout_secs: 30,
            pool_recycle_secs: 3600,
            pool_pre_ping: true,
        }
    }
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct CacheConfig {
    /// Redis URL for the shared cache; empty means the in-process cache.
    #[serde(serialize_with = "mask_secret")]
    pub redis_url: SecretString,
    /// Prefix of every cache key, so tests and several deployments can share one cache server.
    pub namespace: String,
    /// Upper bound of the in-process cache, in bytes of cached values.
    pub memory_capacity_bytes: u64,
    /// Longest wait for one Redis command before it counts as failed and the request goes to the database.
    pub timeout_ms: u64,
    /// Consecutive Redis failures that open the circuit (Redis is then not asked for `circuit_open_secs`).
    pub circuit_failures: u32,
    pub circuit_open_secs: u64,
    /// With Redis: bytes of hot entries kept in the process in front of it (the near cache), kept coherent by
    /// Redis's client tracking; 0 turns it off.
    pub near_capacity_bytes: u64,
    /// The longest an entry stays in the near cache.
    pub near_ttl_secs: u64,
    /// Fault injection for tests, settable from code only: how long a load waits between reading the database
    /// and filling the cache, so a test can change the row through another instance in between.
    #[serde(skip)]
    #[doc(hidden)]
    pub fill_delay: std::time::Duration,
}

impl Default for CacheConfig {
    fn default() -> Self {
        Self {
            redis_url: SecretString::from(""),
            namespace: "fwb".to_owned(),
            memory_capacity_bytes: 256 * 1024 * 1024,
            timeout_ms: 100,
            circuit_failures: 5,
            circuit_open_secs: 5,
            near_capacity_bytes: 64 * 1024 * 1024,
            near_ttl_secs: 60,
            fill_delay: std::time::Duration::ZERO,
        }
    }
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct BlobConfig {
    /// Directory of content-addressed blobs; empty means `<data_dir>/blobs`.
    pub dir: PathBuf,
    /// How often the sweep looks for bytes no row refers to (left by a crash between bytes and row) and
    /// removes them; 0 turns it off. The first sweep runs shortly after startup.
    pub sweep_interval_secs: u64,
    /// Blobs and temporary files younger than this are never swept: uploads in flight are.
    pub sweep_grace_secs: u64,
}

impl Default for BlobConfig {
    fn default() -> Self {
        Self { dir: PathBuf::new(), sweep_interval_secs: 3600, sweep_grace_secs: 3600 }
    }
}

/// The audit log.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct AuditConfig {
    /// Rows older than this many days are deleted (hourly); 0 keeps them forever.
    pub retention_days: u64,
}

impl Default for AuditConfig {
    fn default() -> Self {
        Self { retention_days: 90 }
    }
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct UploadConfig {
    /// Largest accepted file, in bytes.
    pub max_bytes: u64,
    /// Content types, as sniffed from the bytes, that are refused with 415.
    pub deny_mime_types: Vec<String>,
}

impl Default for UploadConfig {
    fn default() -> Self {
        Self {
            max_bytes: 100 * 1024 * 1024,
            // Native executables of the common platforms, as `infer` names them.
            deny_mime_types: [
                "application/x-executable",
                "application/vnd.microsoft.portable-executable",
                "application/x-mach-binary",
                "application/vnd.android.dex",
                "application/x-msdownload",
            ]
            .map(str::to_owned)
            .to_vec(),
        }
    }
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct DownloadConfig {
    /// Files up to this size are served from the `file:content` cache.
    pub cache_max_bytes: u64,
}

impl Default for DownloadConfig {
    fn default() -> Self {
        Self { cache_max_bytes: 256 * 1024 }
    }
}

/// Requests allowed per API key (per client address without a key) and minute, by route class;
/// 0 turns a class's limit off. The whole minute's allowance may be spent at once (burst), then it refills evenly.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct RateLimitConfig {
    pub api_per_minute: u32,
    pub download_per_minute: u32,
    pub upload_per_minute: u32,
    /// Refused keys (401) one client address may present in a minute; past that, its requests with a key this
    /// instance does not know are answered 429 before any lookup, and are not written to the audit log.
    pub refusals_per_minute: u32,
}

impl Default for RateLimitConfig {
    fn default() -> Self {
        Self { api_per_minute: 1200, download_per_minute: 600, upload_per_minute: 120, refusals_per_minute: 30 }
    }
}

/// Diagnostics beyond logs and metrics.
#[derive(Debug, Clone, Deserialize, Serialize, Default)]
#[serde(deny_unknown_fields, default)]
pub struct TelemetryConfig {
    /// Where tokio-console can attach (e.g. `127.0.0.1:6669`); unset: no console layer at all.
    pub console_addr: Option<SocketAddr>,
}

/// Background thumbnailing of images.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct ThumbnailConfig {
    /// Images decoded at once; 0 leaves uploads pending (for another instance to do).
    pub workers: usize,
    /// Jobs waiting beyond the workers; more stay pending in the database for the next sweep.
    pub queue: usize,
    /// Images wider or taller than this are not decoded (and get no thumbnails).
    pub max_dimension: u32,
    /// Most memory one decode may allocate; what needs more is refused, not decoded.
    pub max_decode_bytes: u64,
}

impl Default for ThumbnailConfig {
    fn default() -> Self {
        Self { workers: 2, queue: 1000, max_dimension: 16_384, max_decode_bytes: 512 * 1024 * 1024 }
    }
}

/// Share links.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct ShareConfig {
    /// Key that signs share tokens; every instance needs the same one. Empty: a random key per process,
    /// so links die with it (fine for one embedded instance, logged as a warning).
    #[serde(serialize_with = "mask_secret")]
    pub secret: SecretString,
    /// Lifetime of a link when the request names none, and the longest allowed.
    pub default_ttl_secs: u64,
    pub max_ttl_secs: u64,
}

impl Default for ShareConfig {
    fn default() -> Self {
        Self { secret: SecretString::from(""), default_ttl_secs: 86_400, max_ttl_secs: 30 * 86_400 }
    }
}

/// Cross-origin access from browsers; off unless origins are listed.
#[derive(Debug, Clone, Deserialize, Serialize, Default)]
#[serde(deny_unknown_fields, default)]
pub struct CorsConfig {
    /// Origins allowed to call the API from a browser, e.g. `https://app.example.com`; empty turns CORS off.
    pub allowed_origins: Vec<String>,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct LogConfig {
    /// `tracing_subscriber` filter; `RUST_LOG` overrides it.
    pub filter: String,
    /// `text` or `json`.
    pub format: LogFormat,
}

impl Default for LogConfig {
    fn default() -> Self {
        Self { filter: "info,sqlx=warn".to_owned(), format: LogFormat::Text }
    }
}

#[derive(Debug, Clone, Copy, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    Text,
    Json,
}

fn mask_secret<S: serde::Serializer>(secret: &SecretString, s: S) -> Result<S::Ok, S::Error> {
    let raw = secret.expose_secret();
    if raw.is_empty() { s.serialize_str("") } else { s.serialize_str("********") }
}

/// The one line that stops startup when configuration is wrong.
#[derive(Debug, thiserror::Error)]
#[error("invalid configuration: {0}")]
pub struct ConfigError(String);

impl Config {
    /// Merges defaults, the optional TOML file and `FWB__…` environment variables, then validates.
    pub fn load(file: Option<&Path>) -> Result<Self, ConfigError> {
        let mut figment = Figment::from(Serialized::defaults(Config::default()));
        if let Some(path) = file {
            if !path.exists() {
                return Err(ConfigError(format!("config file {} does not exist", path.display())));
            }
            figment = figment.merge(Toml::file_exact(path));
        }
        Self::from_figment(figment.merge(Env::prefixed("FWB__").split("__")))
    }

    pub(crate) fn from_figment(figment: Figment) -> Result<Self, ConfigError> {
        // figment names the key and the source (file or variable) in its message.
        let config: Config = figment.extract().map_err(|e| ConfigError(first_line(&e.to_string())))?;
        config.validate()?;
        Ok(config)
    }

    fn validate(&self) -> Result<(), ConfigError> {
        let bad = |key: &str, why: &str| Err(ConfigError(format!("{key}: {why}")));
        for (key, value) in [
            ("upload.max_bytes", self.upload.max_bytes),
            ("server.max_connections", self.server.max_connections as u64),
            ("server.header_read_timeout_secs", self.server.header_read_timeout_secs),
            ("server.body_idle_timeout_secs", self.server.body_idle_timeout_secs),
            ("server.max_json_bytes", self.server.max_json_bytes as u64),
            ("server.max_in_flight", self.server.max_in_flight as u64),
            ("database.pool_size", u64::from(self.database.pool_size)),
            ("cache.timeout_ms", self.cache.timeout_ms),
        ] {
            if value == 0 {
                return bad(key, "must be greater than 0");
            }
        }
        if self.storage.data_dir.as_os_str().is_empty() {
            return bad("storage.data_dir", "must not be empty");
        }
        let url = self.database.url.expose_secret();
        if !(url.is_empty() || ["sqlite:", "postgres:", "postgresql:"].iter().any(|p| url.starts_with(p))) {
            return bad("database.url", "must start with sqlite:, postgres: or postgresql:");
        }
        let redis = self.cache.redis_url.expose_secret();
        if !(redis.is_empty() || redis.starts_with("redis://") || redis.starts_with("rediss://")) {
            return bad("cache.redis_url", "must start with redis:// or rediss://");
        }
        for origin in &self.cors.allowed_origins {
            let valid = (origin.starts_with("https://") || origin.starts_with("http://"))
                && !origin.ends_with('/')
                && http::HeaderValue::from_str(origin).is_ok();
            if !valid {
                return bad(
                    "cors.allowed_origins",
                    "each origin is scheme://host[:port] with no path or trailing slash",
                );
            }
        }
        if self.cache.namespace.is_empty() || self.cache.namespace.contains(char::is_whitespace) {
            return bad("cache.namespace", "must be non-empty and contain no whitespace");
        }
        Ok(())
    }

    /// The database URL to open: the configured one, or the SQLite file under the data directory.
    pub fn database_url(&self) -> String {
        let url = self.database.url.expose_secret();
        if url.is_empty() {
            format!("sqlite://{}", self.storage.data_dir.join("filewallball.db").display())
        } else {
            url.to_owned()
        }
    }

    /// The blob directory: the configured one, or `<data_dir>/blobs`.
    pub fn blob_dir(&self) -> PathBuf {
        if self.blob.dir.as_os_str().is_empty() { self.storage.data_dir.join("blobs") } else { self.blob.dir.clone() }
    }

    pub(crate) fn pool_settings(&self) -> crate::db::PoolSettings {
        let db = &self.database;
        crate::db::PoolSettings {
            size: db.pool_size,
            overflow: db.max_overflow,
            timeout: Duration::from_secs(db.pool_timeout_secs),
            recycle: Duration::from_secs(db.pool_recycle_secs),
            pre_ping: db.pool_pre_ping,
        }
    }

    pub fn shutdown_timeout(&self) -> Duration {
        Duration::from_secs(self.server.shutdown_timeout_secs)
    }

    /// The merged configuration as TOML, secrets masked.
    pub fn to_masked_toml(&self) -> String {
        toml_string(self)
    }
}

fn toml_string(config: &Config) -> String {
    toml::to_string_pretty(config).unwrap_or_else(|e| format!("# cannot render configuration: {e}"))
}

fn first_line(s: &str) -> String {
    s.lines().next().unwrap_or_default().to_owned()
}

/// `server.trusted_proxies`: IP addresses or CIDR blocks, parsed when the configuration is read.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(try_from = "Vec<String>", into = "Vec<String>")]
pub struct TrustedProxies(Vec<ipnet::IpNet>);

impl TrustedProxies {
    /// Whether `ip` is one of the trusted proxies.
    pub fn contains(&self, ip: &std::net::IpAddr) -> bool {
        self.0.iter().any(|net| net.contains(ip))
    }
}

impl TryFrom<Vec<String>> for TrustedProxies {
    type Error = String;
    fn try_from(list: Vec<String>) -> Result<Self, String> {
        list.iter()
            .map(|s| {
                s.parse::<ipnet::IpNet>()
                    .or_else(|_| s.parse::<std::net::IpAddr>().map(ipnet::IpNet::from))
                    .map_err(|_| format!("{s:?} is not an IP address or CIDR block"))
            })
            .collect::<Result<_, _>>()
            .map(TrustedProxies)
    }
}

impl From<TrustedProxies> for Vec<String> {
    fn from(proxies: TrustedProxies) -> Self {
        proxies.0.iter().map(ToString::to_string).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_valid_and_embedded() {
        let config = Config::from_figment(Figment::from(Serialized::defaults(Config::default()))).unwrap();
        assert!(config.database_url().ends_with("data/filewallball.db"));
        assert_eq!(config.upload.max_bytes, 100 * 1024 * 1024);
    }

    #[test]
    fn a_bad_value_names_its_key() {
        let figment = Figment::from(Serialized::defaults(Config::default()))
            .merge(Toml::string("[upload]\nmax_bytes = \"lots\""));
        let err = Config::from_figment(figment).unwrap_err().to_string();
        assert!(err.contains("upload.max_bytes"), "{err}");
        assert_eq!(err.lines().count(), 1);
    }

    #[test]
    fn production_urls_are_accepted_and_others_refused() {
        let with = |toml: &str| {
            Config::from_figment(Figment::from(Serialized::defaults(Config::default())).merge(Toml::string(toml)))
        };
        with("[database]\nurl = \"postgres://u@h/db\"\n[cache]\nredis_url = \"redis://h:6379\"").unwrap();
        let err = with("[database]\nurl = \"mysql://h/db\"").unwrap_err().to_string();
        assert!(err.contains("database.url"), "{err}");
        let err = with("[cache]\nredis_url = \"http://h\"").unwrap_err().to_string();
        assert!(err.contains("cache.redis_url"), "{err}");
    }

    #[test]
    fn an_unknown_key_is_refused() {
        let figment =
            Figment::from(Serialized::defaults(Config::default())).merge(Toml::string("[upload]\nmax_byte = 5"));
        let err = Config::from_figment(figment).unwrap_err().to_string();
        assert!(err.contains("max_byte"), "{err}");
    }

    #[test]
    fn secrets_are_masked_when_printed() {
        let mut config = Config::default();
        config.database.url = SecretString::from("sqlite://secret-place.db");
        let printed = config.to_masked_toml();
        assert!(!printed.contains("secret-place"), "{printed}");
        assert!(printed.contains("********"));
    }
}
