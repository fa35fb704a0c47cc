//! Settings: built-in defaults, then an optional TOML file, then `FLOE_`-prefixed environment variables
//! (nested keys with `__`, e.g. `FLOE_DATABASE__MAX_CONNECTIONS=32`). The resulting [`Settings`] value is
//! passed down explicitly; nothing reads configuration from globals.

use std::net::SocketAddr;
use std::path::Path;

use figment::Figment;
use figment::providers::{Env, Format, Serialized, Toml};
use serde::{Deserialize, Serialize};

/// Everything floe needs to run one region.
#[derive(Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Settings {
    /// The name of this floe's region, recorded with every log entry's origin.
    pub region: String,
    /// Address the HTTP server binds. Loopback unless configured otherwise.
    pub listen: SocketAddr,
    /// PostgreSQL connection URL. It carries credentials, so it is never logged.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub database_url: Option<String>,
    pub database: DatabaseSettings,
    /// Largest request body accepted, in bytes; larger bodies get 413.
    pub max_body_bytes: usize,
    /// Memory for parsed table metadata, by metadata file (files are immutable: no invalidation).
    pub metadata_cache_bytes: u64,
    /// Warehouses served by this floe. Each is created in the database at start if missing.
    pub warehouses: Vec<WarehouseSettings>,
    /// The warehouse `/v1/config` answers for when a client names none.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub default_warehouse: Option<String>,
    pub auth: AuthSettings,
    pub replication: ReplicationSettings,
}

/// Cross-region replication: this floe as a source (the replicator) and as a destination (which
/// peers may push here).
#[derive(Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ReplicationSettings {
    /// Run the replicator (push this region's changes to peers per the rules).
    pub enabled: bool,
    /// This floe's URL as clients reach it, named in the read-only answers of replicas.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub public_url: Option<String>,
    /// Streams (table x destination) worked on at once by this instance.
    pub workers: usize,
    /// Files copied at once per stream.
    pub parallel_files: usize,
    /// How long a lease lasts without a heartbeat before another instance may take the stream.
    pub lease_seconds: f64,
    /// The replicator polls this often when no NOTIFY arrives (and re-reads the rules).
    pub poll_interval_ms: u64,
    /// First retry delay of a failing stream; doubles per attempt (with jitter) up to the maximum.
    pub retry_base_ms: u64,
    pub retry_max_ms: u64,
    /// Timeout of one call to a peer.
    pub peer_timeout_ms: u64,
    /// Peers allowed to replicate into this floe, each with the token it presents.
    pub accept: Vec<AcceptedPeer>,
}

/// A peer region allowed to push replicas here.
#[derive(Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AcceptedPeer {
    pub region: String,
    pub token: String,
}

impl Default for ReplicationSettings {
    fn default() -> Self {
        Self {
            enabled: true,
            public_url: None,
            workers: 8,
            parallel_files: 16,
            lease_seconds: 30.0,
            poll_interval_ms: 1_000,
            retry_base_ms: 200,
            retry_max_ms: 60_000,
            peer_timeout_ms: 60_000,
            accept: Vec::new(),
        }
    }
}

/// Tokens are secrets: Debug names only the accepted regions.
impl std::fmt::Debug for ReplicationSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ReplicationSettings")
            .field("enabled", &self.enabled)
            .field("public_url", &self.public_url)
            .field("workers", &self.workers)
            .field("parallel_files", &self.parallel_files)
            .field("lease_seconds", &self.lease_seconds)
            .field("poll_interval_ms", &self.poll_interval_ms)
            .field(
                "accept",
                &self.accept.iter().map(|p| &p.region).collect::<Vec<_>>(),
            )
            .finish()
    }
}

/// Bearer-token authentication. With no tokens, every caller is `anonymous`.
#[derive(Clone, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AuthSettings {
    pub tokens: Vec<TokenSettings>,
}

/// One accepted token and the principal it stands for (recorded in the update log).
#[derive(Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TokenSettings {
    pub principal: String,
    pub token: String,
}

/// Tokens are secrets: their Debug output names only the principals.
impl std::fmt::Debug for AuthSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AuthSettings")
            .field(
                "principals",
                &self.tokens.iter().map(|t| &t.principal).collect::<Vec<_>>(),
            )
            .finish()
    }
}

/// Written by hand so the database URL, which may carry a password, never reaches a log.
impl std::fmt::Debug for Settings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Settings")
            .field("region", &self.region)
            .field("listen", &self.listen)
            .field(
                "database_url",
                &self.database_url.as_ref().map(|_| "<redacted>"),
            )
            .field("database", &self.database)
            .field("max_body_bytes", &self.max_body_bytes)
            .field("metadata_cache_bytes", &self.metadata_cache_bytes)
            .field("warehouses", &self.warehouses)
            .field("default_warehouse", &self.default_warehouse)
            .field("auth", &self.auth)
            .field("replication", &self.replication)
            .finish()
    }
}

#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct DatabaseSettings {
    pub max_connections: u32,
    /// How long a request waits for a pooled connection before answering 503.
    pub acquire_timeout_ms: u64,
    /// Longest a single statement may run before PostgreSQL cancels it.
    pub statement_timeout_ms: u64,
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct WarehouseSettings {
    pub name: String,
    /// Storage root, e.g. `file:///var/lib/floe/wh` or `s3://bucket/prefix`.
    pub root: String,
    /// How to reach the bucket of an `s3://` root.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub s3: Option<crate::storage::S3Settings>,
    /// Give clients that ask for it (`X-Iceberg-Access-Delegation: vended-credentials`) the S3 keys
    /// in loadTable's `config`. Off by default: clients then bring their own credentials.
    #[serde(default)]
    pub vend_credentials: bool,
    /// The S3 endpoint clients should use, when it differs from floe's own (floe inside a container
    /// network, clients outside it); `s3.endpoint` by default.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_s3_endpoint: Option<String>,
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            region: "local".to_string(),
            listen: SocketAddr::from(([127, 0, 0, 1], 8181)),
            database_url: None,
            database: DatabaseSettings::default(),
            max_body_bytes: 16 * 1024 * 1024,
            metadata_cache_bytes: 256 * 1024 * 1024,
            warehouses: Vec::new(),
            default_warehouse: None,
            auth: AuthSettings::default(),
            replication: ReplicationSettings::default(),
        }
    }
}

impl Default for DatabaseSettings {
    fn default() -> Self {
        Self {
            max_connections: 16,
            acquire_timeout_ms: 3_000,
            statement_timeout_ms: 30_000,
        }
    }
}

/// `FLOE_*` variables that are not settings (the log filter, the config path, test tooling).
/// Every other `FLOE_*` variable must name a setting, so a typo is an error rather than ignored.
const RESERVED_ENV: &[&str] = &[
    "LOG",
    "CONFIG",
    "PG_BIN",
    "BIN",
    "SPARK_HOME",
    "CLIENTS_VENV",
    "S3S_FS",
    "REQUIRE_S3",
];

#[derive(Debug, thiserror::Error)]
#[error("invalid settings: {0}")]
pub struct SettingsError(String);

impl Settings {
    /// Loads settings from defaults, the TOML file (if given) and `FLOE_*` environment variables.
    pub fn load(file: Option<&Path>) -> Result<Self, SettingsError> {
        let mut figment = Figment::from(Serialized::defaults(Settings::default()));
        if let Some(file) = file {
            if !file.exists() {
                return Err(SettingsError(format!(
                    "config file {} does not exist",
                    file.display()
                )));
            }
            figment = figment.merge(Toml::file(file));
        }
        let settings: Settings = figment
            .merge(Env::prefixed("FLOE_").ignore(RESERVED_ENV).split("__"))
            .extract()
            .map_err(|e| SettingsError(e.to_string()))?;
        settings.validate()?;
        Ok(settings)
    }

    /// Checks what serde cannot: warehouse names and roots, the default warehouse.
    pub fn validate(&self) -> Result<(), SettingsError> {
        for wh in &self.warehouses {
            crate::names::validate_warehouse_name(&wh.name)
                .map_err(|e| SettingsError(e.to_string()))?;
            crate::storage::validate_root(&wh.root).map_err(|e| SettingsError(e.to_string()))?;
        }
        for token in &self.auth.tokens {
            if token.principal.trim().is_empty() || token.token.len() < 16 {
                return Err(SettingsError(
                    "each auth token needs a principal and a token of at least 16 characters"
                        .to_string(),
                ));
            }
        }
        for peer in &self.replication.accept {
            if peer.region.trim().is_empty() || peer.token.len() < 16 {
                return Err(SettingsError(
                    "each replication.accept entry needs a region and a token of at least 16 \
                     characters"
                        .to_string(),
                ));
            }
        }
        if self.replication.workers == 0 || self.replication.parallel_files == 0 {
            return Err(SettingsError(
                "replication.workers and replication.parallel_files must be at least 1".to_string(),
            ));
        }
        if let Some(default) = &self.default_warehouse
            && !self.warehouses.iter().any(|w| &w.name == default)
        {
            return Err(SettingsError(format!(
                "default_warehouse `{default}` is not among the configured warehouses"
            )));
        }
        Ok(())
    }

    /// The database URL, or a clear error naming the setting to provide.
    pub fn require_database_url(&self) -> Result<&str, SettingsError> {
        self.database_url.as_deref().ok_or_else(|| {
            SettingsError(
                "no database URL: set `database_url` in the config file or FLOE_DATABASE_URL \
                 (or use `floe dev`, which starts a throwaway PostgreSQL)"
                    .to_string(),
            )
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_output_hides_secrets() {
        let settings = Settings {
            database_url: Some("postgres://floe:hunter2@db/floe".to_string()),
            auth: AuthSettings {
                tokens: vec![TokenSettings {
                    principal: "etl".to_string(),
                    token: "s3cr3t-s3cr3t-s3cr3t".to_string(),
                }],
            },
            ..Settings::default()
        };
        let shown = format!("{settings:?}");
        assert!(!shown.contains("hunter2"), "{shown}");
        assert!(!shown.contains("s3cr3t"), "{shown}");
        assert!(shown.contains("<redacted>") && shown.contains("etl"));
    }
}
