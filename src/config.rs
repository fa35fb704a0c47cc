//! Settings: built-in defaults, then an optional TOML file, then `FLOE_`-prefixed environment variables
//! (nested keys with `__`, e.g. `FLOE_DATABASE__MAX_CONNECTIONS=32`). The resulting [`Settings`] value is
//! passed down explicitly; nothing reads configuration from globals.

use std::net::SocketAddr;
use std::path::Path;

use figment::Figment;
use figment::providers::{Env, Format, Serialized, Toml};
use serde::{Deserialize, Serialize};

use crate::secret::Secret;

/// Everything floe needs to run one region. Its secrets are [`Secret`]s, so its `Debug` output
/// (and any log line built from it) shows none of them.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Settings {
    /// The name of this floe's region, recorded with every log entry's origin.
    pub region: String,
    /// Address the HTTP server binds. Loopback unless configured otherwise.
    pub listen: SocketAddr,
    /// PostgreSQL connection URL. It carries credentials, so it is never logged.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub database_url: Option<Secret>,
    pub database: DatabaseSettings,
    /// Largest request body accepted, in bytes; larger bodies get 413.
    pub max_body_bytes: usize,
    /// On SIGTERM or SIGINT, how long in-flight requests may run before floe exits anyway.
    pub shutdown_grace_seconds: u64,
    /// Memory for parsed table metadata, by metadata file (files are immutable: no invalidation).
    pub metadata_cache_bytes: u64,
    /// Largest metadata file floe reads (to register, load or replicate); larger ones get 400.
    pub max_metadata_bytes: u64,
    /// Largest manifest list, manifest, position-delete or Puffin file read into memory (purge,
    /// replication); a larger one fails the replication stream naming the file.
    pub max_manifest_bytes: u64,
    /// Warehouses served by this floe. Each is created in the database at start if missing.
    pub warehouses: Vec<WarehouseSettings>,
    /// The warehouse `/v1/config` answers for when a client names none.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub default_warehouse: Option<String>,
    pub auth: AuthSettings,
    /// Serve callers without credentials on a non-loopback address. Without any `auth` configured,
    /// floe refuses to listen beyond loopback unless this says so.
    pub allow_anonymous: bool,
    pub replication: ReplicationSettings,
    /// How long a retry may reuse an Idempotency-Key and get the first answer again (advertised
    /// by `/v1/config` as `idempotency-key-lifetime`).
    pub idempotency_key_lifetime_seconds: u64,
}

/// Cross-region replication: this floe as a source (the replicator) and as a destination (which
/// peers may push here).
#[derive(Clone, Debug, Serialize, Deserialize)]
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
    /// The replicator reads the log for changes this often when no NOTIFY arrives.
    pub poll_interval_ms: u64,
    /// First retry delay of a failing stream; doubles per attempt (with jitter) up to the maximum.
    pub retry_base_ms: u64,
    pub retry_max_ms: u64,
    /// Timeout of one call to a peer.
    pub peer_timeout_ms: u64,
    /// Peers allowed to replicate into this floe, each with the token it presents.
    pub accept: Vec<AcceptedPeer>,
    /// When set, the only hosts a peer's base URL may name (exact host names or IP addresses, or
    /// `*.example.com` for any host under a domain): floe pushes nowhere else.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub allowed_peer_hosts: Option<Vec<String>>,
}

/// A peer region allowed to push replicas here.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AcceptedPeer {
    pub region: String,
    pub token: Secret,
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
            allowed_peer_hosts: None,
        }
    }
}

/// A role, in increasing order of what it allows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// Catalog reads.
    Reader,
    /// Catalog reads and writes.
    Writer,
    /// The management API, and everything a writer may.
    Admin,
}

impl Role {
    pub(crate) fn parse(name: &str) -> Option<Self> {
        match name {
            "reader" => Some(Self::Reader),
            "writer" => Some(Self::Writer),
            "admin" => Some(Self::Admin),
            _ => None,
        }
    }
}

impl std::fmt::Display for Role {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::Reader => "reader",
            Self::Writer => "writer",
            Self::Admin => "admin",
        })
    }
}

/// Who may call this floe. With nothing configured here, every caller is `anonymous` with every
/// role (see [`Settings::allow_anonymous`] for when that is allowed).
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AuthSettings {
    /// Static bearer tokens.
    pub tokens: Vec<TokenSettings>,
    /// OpenID Connect issuers whose JWTs are accepted.
    pub oidc: Vec<OidcSettings>,
    /// floe's own token endpoint (`POST /v1/oauth/tokens`, client credentials).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub oauth: Option<OAuthSettings>,
}

impl AuthSettings {
    /// Whether any way for clients to authenticate is configured.
    pub fn is_configured(&self) -> bool {
        !self.tokens.is_empty()
            || !self.oidc.is_empty()
            || self.oauth.as_ref().is_some_and(|o| !o.clients.is_empty())
    }
}

fn writer_role() -> Vec<Role> {
    vec![Role::Writer]
}

/// One accepted token, the principal it stands for (recorded in the update log) and its roles.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TokenSettings {
    pub principal: String,
    pub token: Secret,
    /// `reader`, `writer` (the default) or `admin`.
    #[serde(default = "writer_role")]
    pub roles: Vec<Role>,
    /// Limits the roles to these warehouses; every warehouse when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub warehouses: Option<Vec<String>>,
}

/// An OpenID Connect issuer: its JWTs are verified against its published keys (JWKS).
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OidcSettings {
    /// The `iss` of its tokens, e.g. `https://idp.example/realms/lake`.
    pub issuer: String,
    /// The `aud` its tokens must carry for this floe.
    pub audience: String,
    /// Where its keys are published; by default the `jwks_uri` of
    /// `<issuer>/.well-known/openid-configuration`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub jwks_url: Option<String>,
    /// The claim naming the principal.
    #[serde(default = "default_principal_claim")]
    pub principal_claim: String,
    /// The claim holding the roles (`reader`, `writer`, `admin`, each optionally `:<warehouse>`),
    /// a list or a space-separated string; a dotted path reaches into objects
    /// (`realm_access.roles`).
    #[serde(default = "default_roles_claim")]
    pub roles_claim: String,
    /// Clock skew allowed on `exp` and `nbf`.
    #[serde(default = "default_leeway_seconds")]
    pub leeway_seconds: u64,
    /// Limits every role of this issuer's tokens to these warehouses.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub warehouses: Option<Vec<String>>,
}

fn default_principal_claim() -> String {
    "sub".to_string()
}
fn default_roles_claim() -> String {
    "roles".to_string()
}
fn default_leeway_seconds() -> u64 {
    30
}
fn default_token_lifetime_seconds() -> u64 {
    3600
}

/// floe's own OAuth2 token endpoint: configured clients trade their credentials for short-lived
/// tokens that floe signs (HS256 with `signing_key`) and validates.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OAuthSettings {
    /// At least 32 bytes; the same for every instance of the region. Never logged.
    pub signing_key: Secret,
    #[serde(default = "default_token_lifetime_seconds")]
    pub token_lifetime_seconds: u64,
    #[serde(default)]
    pub clients: Vec<OAuthClientSettings>,
}

/// A client of the token endpoint (`credential=<client_id>:<client_secret>` in Spark and PyIceberg).
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OAuthClientSettings {
    pub client_id: String,
    /// At least 16 characters. Never logged.
    pub client_secret: Secret,
    /// The principal its tokens name; the client id by default.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub principal: Option<String>,
    #[serde(default = "writer_role")]
    pub roles: Vec<Role>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub warehouses: Option<Vec<String>>,
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
    /// Who serves the warehouse's catalog: floe itself (`builtin`, the default) or an existing
    /// Iceberg REST catalog floe fronts (`upstream`, configured under `upstream`).
    #[serde(default)]
    pub backend: Backend,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub upstream: Option<UpstreamSettings>,
}

impl WarehouseSettings {
    /// An `upstream` warehouse names its catalog and the settings its auth mode needs; a
    /// `builtin` one has no `upstream` section.
    fn validate_backend(&self) -> Result<(), SettingsError> {
        let bad = |message: String| {
            Err(SettingsError(format!(
                "warehouse `{}`: {message}",
                self.name
            )))
        };
        let upstream = match (self.backend, &self.upstream) {
            (Backend::Builtin, None) => return Ok(()),
            (Backend::Builtin, Some(_)) => {
                return bad("has an `upstream` section but `backend` is not \"upstream\"".into());
            }
            (Backend::Upstream, None) => {
                return bad(
                    "backend \"upstream\" needs an `upstream` section with its `url`".into(),
                );
            }
            (Backend::Upstream, Some(upstream)) => upstream,
        };
        match url::Url::parse(&upstream.url) {
            Ok(url) if matches!(url.scheme(), "http" | "https") && url.query().is_none() => {}
            _ => {
                return bad(format!(
                    "upstream.url `{}` must be an http(s) URL with no query",
                    upstream.url
                ));
            }
        }
        if upstream.timeout_ms == 0 {
            return bad("upstream.timeout_ms must be at least 1".into());
        }
        match upstream.auth {
            UpstreamAuthMode::PassThrough => Ok(()),
            UpstreamAuthMode::Token if upstream.token.is_some() => Ok(()),
            UpstreamAuthMode::Token => bad("upstream.auth = \"token\" needs upstream.token".into()),
            UpstreamAuthMode::Oauth2 => {
                let token_url = upstream.token_url.as_deref().map(url::Url::parse);
                if !matches!(&token_url, Some(Ok(u)) if matches!(u.scheme(), "http" | "https"))
                    || upstream.client_id.is_none()
                    || upstream.client_secret.is_none()
                {
                    return bad(
                        "upstream.auth = \"oauth2\" needs an http(s) upstream.token_url, \
                         upstream.client_id and upstream.client_secret"
                            .into(),
                    );
                }
                Ok(())
            }
        }
    }

    /// A warehouse floe serves itself, its files under `root`, with no S3 settings.
    pub fn builtin(name: &str, root: String) -> Self {
        Self {
            name: name.to_string(),
            root,
            s3: None,
            vend_credentials: false,
            client_s3_endpoint: None,
            backend: Backend::Builtin,
            upstream: None,
        }
    }
}

/// Who serves a warehouse's catalog.
#[derive(Clone, Copy, Debug, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum Backend {
    #[default]
    Builtin,
    Upstream,
}

/// The Iceberg REST catalog an `upstream` warehouse fronts.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct UpstreamSettings {
    /// The catalog's base URL, the one its clients would be given (`/v1/config` is under it).
    pub url: String,
    /// Sent as `?warehouse=` to its `/v1/config`; the prefix it answers is used for every call.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub warehouse: Option<String>,
    /// How floe authenticates to it: `pass-through` (the default), `token` or `oauth2`.
    #[serde(default)]
    pub auth: UpstreamAuthMode,
    /// The bearer token of `auth = "token"`. Never logged.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token: Option<Secret>,
    /// `auth = "oauth2"`: the client-credentials grant against `token_url`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token_url: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_id: Option<String>,
    /// Never logged.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_secret: Option<Secret>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scope: Option<String>,
    /// How long one call to the upstream may take before the client gets 504.
    #[serde(default = "default_upstream_timeout_ms")]
    pub timeout_ms: u64,
    /// How often floe visits every table of the upstream to find commits that bypassed it
    /// (`upstream::observer`); 0 turns the poll off (loadTable answers and commits through floe
    /// still catch up).
    #[serde(default = "default_upstream_poll_interval_ms")]
    pub poll_interval_ms: u64,
}

impl UpstreamSettings {
    /// The catalog at `url`, with the client's own credentials passed through and the defaults.
    pub fn new(url: &str) -> Self {
        Self {
            url: url.to_string(),
            warehouse: None,
            auth: UpstreamAuthMode::PassThrough,
            token: None,
            token_url: None,
            client_id: None,
            client_secret: None,
            scope: None,
            timeout_ms: default_upstream_timeout_ms(),
            poll_interval_ms: default_upstream_poll_interval_ms(),
        }
    }
}

fn default_upstream_timeout_ms() -> u64 {
    30_000
}

fn default_upstream_poll_interval_ms() -> u64 {
    60_000
}

/// How floe authenticates to an upstream catalog.
#[derive(Clone, Copy, Debug, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "kebab-case")]
pub enum UpstreamAuthMode {
    /// Forward the client's own `Authorization` header (and send none when it sent none).
    #[default]
    PassThrough,
    /// Send `upstream.token` as a bearer token, whoever the client is.
    Token,
    /// Trade `client_id`/`client_secret` for tokens at `token_url` (OAuth2 client credentials).
    Oauth2,
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            region: "local".to_string(),
            listen: SocketAddr::from(([127, 0, 0, 1], 8181)),
            database_url: None,
            database: DatabaseSettings::default(),
            max_body_bytes: 16 * 1024 * 1024,
            shutdown_grace_seconds: 30,
            metadata_cache_bytes: 256 * 1024 * 1024,
            max_metadata_bytes: 64 * 1024 * 1024,
            max_manifest_bytes: 64 * 1024 * 1024,
            warehouses: Vec::new(),
            default_warehouse: None,
            auth: AuthSettings::default(),
            allow_anonymous: false,
            replication: ReplicationSettings::default(),
            idempotency_key_lifetime_seconds: 30 * 60,
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
    "JAVA_CATALOG",
    "REQUIRE_UPSTREAM",
    "REQUIRE_BROWSER",
    "TEST_ARTIFACTS",
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
            crate::storage::parse_root(&wh.root).map_err(|e| SettingsError(e.to_string()))?;
            wh.validate_backend()?;
        }
        self.validate_auth()?;
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

    /// The `auth` section: secrets long enough, roles named, warehouse names valid, and no
    /// anonymous service beyond loopback unless `allow_anonymous` says so.
    fn validate_auth(&self) -> Result<(), SettingsError> {
        let bad = |message: String| Err(SettingsError(message));
        // Warehouses a role is limited to are names; they need not be configured yet (`floe dev`
        // adds its warehouse after loading the settings).
        let valid_names =
            |warehouses: &Option<Vec<String>>, whose: &str| -> Result<(), SettingsError> {
                for name in warehouses.iter().flatten() {
                    crate::names::validate_warehouse_name(name)
                        .map_err(|e| SettingsError(format!("{whose}: {e}")))?;
                }
                Ok(())
            };
        for token in &self.auth.tokens {
            if token.principal.trim().is_empty() || token.token.len() < 16 {
                return bad(
                    "each auth token needs a principal and a token of at least 16 characters"
                        .to_string(),
                );
            }
            if token.roles.is_empty() {
                return bad(format!("auth token of `{}` names no role", token.principal));
            }
            valid_names(
                &token.warehouses,
                &format!("auth token of `{}`", token.principal),
            )?;
        }
        for issuer in &self.auth.oidc {
            let url = url::Url::parse(&issuer.issuer).map_err(|e| {
                SettingsError(format!(
                    "auth.oidc issuer `{}` is not a URL: {e}",
                    issuer.issuer
                ))
            })?;
            if !matches!(url.scheme(), "http" | "https") {
                return bad(format!(
                    "auth.oidc issuer `{}` must be http(s)",
                    issuer.issuer
                ));
            }
            if issuer.audience.trim().is_empty() {
                return bad(format!(
                    "auth.oidc issuer `{}` needs an audience",
                    issuer.issuer
                ));
            }
            valid_names(
                &issuer.warehouses,
                &format!("auth.oidc issuer `{}`", issuer.issuer),
            )?;
        }
        if let Some(oauth) = &self.auth.oauth {
            if oauth.signing_key.len() < 32 {
                return bad("auth.oauth.signing_key must be at least 32 characters".to_string());
            }
            if oauth.token_lifetime_seconds == 0 {
                return bad("auth.oauth.token_lifetime_seconds must be at least 1".to_string());
            }
            for client in &oauth.clients {
                if client.client_id.trim().is_empty() || client.client_secret.len() < 16 {
                    return bad(
                        "each auth.oauth client needs a client_id and a client_secret of at least \
                         16 characters"
                            .to_string(),
                    );
                }
                if client.roles.is_empty() {
                    return bad(format!(
                        "auth.oauth client `{}` names no role",
                        client.client_id
                    ));
                }
                valid_names(
                    &client.warehouses,
                    &format!("auth.oauth client `{}`", client.client_id),
                )?;
            }
        }
        if !self.auth.is_configured() && !self.allow_anonymous && !self.listen.ip().is_loopback() {
            return bad(format!(
                "no auth is configured, so every caller would be anonymous with every role, and \
                 `listen` is {}, beyond loopback: configure `auth` (tokens, oidc or oauth \
                 clients), listen on 127.0.0.1, or set allow_anonymous = true",
                self.listen
            ));
        }
        Ok(())
    }

    /// The database URL, or a clear error naming the setting to provide.
    pub fn require_database_url(&self) -> Result<&str, SettingsError> {
        self.database_url
            .as_ref()
            .map(Secret::expose)
            .ok_or_else(|| {
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
            database_url: Some("postgres://floe:hunter2@db/floe".into()),
            auth: AuthSettings {
                tokens: vec![TokenSettings {
                    principal: "etl".to_string(),
                    token: "s3cr3t-s3cr3t-s3cr3t".into(),
                    roles: writer_role(),
                    warehouses: None,
                }],
                oidc: Vec::new(),
                oauth: Some(OAuthSettings {
                    signing_key: "k3y-k3y-k3y-k3y-k3y-k3y-k3y-k3y-k3y".into(),
                    token_lifetime_seconds: 60,
                    clients: vec![OAuthClientSettings {
                        client_id: "spark".to_string(),
                        client_secret: "cl13nt-cl13nt-cl13nt".into(),
                        principal: None,
                        roles: writer_role(),
                        warehouses: None,
                    }],
                }),
            },
            ..Settings::default()
        };
        let shown = format!("{settings:?}");
        assert!(!shown.contains("hunter2"), "{shown}");
        assert!(!shown.contains("s3cr3t"), "{shown}");
        assert!(
            !shown.contains("k3y") && !shown.contains("cl13nt"),
            "{shown}"
        );
        assert!(shown.contains("<redacted>") && shown.contains("etl"));
    }
}
