//! OpenID Connect: JWTs from a configured issuer, verified with `jsonwebtoken` against the keys the
//! issuer publishes (its JWKS).
//!
//! A token is accepted only if its signature verifies with one of the issuer's keys under an
//! asymmetric algorithm (never HMAC: the issuer's public keys must not double as a shared secret),
//! and its `iss`, `aud`, `exp` and `nbf` hold (with the configured leeway). Keys are fetched on
//! first use (discovery through `/.well-known/openid-configuration` unless `jwks_url` names them),
//! kept, fetched again when a token names a key id not among them (the issuer rotated its keys;
//! at most once per [`MIN_REFRESH`], so unknown ids cannot make floe hammer the issuer) and when
//! they are older than [`MAX_KEY_AGE`]. Answers from the issuer are read under a size bound.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use jsonwebtoken::jwk::{Jwk, JwkSet};
use jsonwebtoken::{Algorithm, DecodingKey, Header, Validation};
use serde_json::Value;
use tokio::sync::{Mutex, RwLock};

use super::{AuthError, Grant, Identity};
use crate::config::OidcSettings;

/// The shortest time between two key fetches from one issuer.
const MIN_REFRESH: Duration = Duration::from_secs(10);
/// Keys older than this are fetched again before use (a revoked key stops working).
const MAX_KEY_AGE: Duration = Duration::from_secs(3600);
/// The largest discovery document or key set read from an issuer.
const MAX_DOCUMENT_BYTES: usize = 1024 * 1024;

/// The algorithms an issuer's tokens may use: asymmetric ones only.
const ASYMMETRIC: &[Algorithm] = &[
    Algorithm::RS256,
    Algorithm::RS384,
    Algorithm::RS512,
    Algorithm::PS256,
    Algorithm::PS384,
    Algorithm::PS512,
    Algorithm::ES256,
    Algorithm::ES384,
    Algorithm::EdDSA,
];

#[derive(Default)]
struct Keys {
    by_id: HashMap<String, DecodingKey>,
    /// Keys published without a `kid`.
    unnamed: Vec<DecodingKey>,
    fetched_at: Option<Instant>,
}

/// One configured issuer and its cached keys.
pub struct OidcIssuer {
    settings: OidcSettings,
    http: reqwest::Client,
    keys: RwLock<Keys>,
    /// Held while fetching, so concurrent requests wait for one fetch instead of each making one.
    fetching: Mutex<()>,
}

impl std::fmt::Debug for OidcIssuer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OidcIssuer")
            .field("issuer", &self.settings.issuer)
            .finish_non_exhaustive()
    }
}

impl OidcIssuer {
    pub fn new(settings: OidcSettings, http: reqwest::Client) -> Self {
        Self {
            settings,
            http,
            keys: RwLock::default(),
            fetching: Mutex::new(()),
        }
    }

    pub fn issuer(&self) -> &str {
        &self.settings.issuer
    }

    /// Verifies a token of this issuer and reads its principal and roles.
    pub async fn verify(&self, token: &str, header: &Header) -> Result<Identity, AuthError> {
        if !ASYMMETRIC.contains(&header.alg) {
            return Err(AuthError::Invalid(format!(
                "tokens of issuer `{}` must be signed with an asymmetric algorithm, not {:?}",
                self.settings.issuer, header.alg
            )));
        }
        let key = self.key(header.kid.as_deref()).await?;
        let mut validation = Validation::new(header.alg);
        validation.set_issuer(&[&self.settings.issuer]);
        validation.set_audience(&[&self.settings.audience]);
        validation.set_required_spec_claims(&["exp", "iss", "aud"]);
        validation.validate_nbf = true;
        validation.leeway = self.settings.leeway_seconds;
        let claims = jsonwebtoken::decode::<Value>(token, &key, &validation)
            .map_err(|e| AuthError::Invalid(format!("the token is not valid: {e}")))?
            .claims;
        let name = claims_at(&claims, &self.settings.principal_claim)
            .and_then(Value::as_str)
            .filter(|name| !name.is_empty())
            .ok_or_else(|| {
                AuthError::Invalid(format!(
                    "the token has no `{}` claim to name its principal",
                    self.settings.principal_claim
                ))
            })?;
        let roles: Vec<&str> = match claims_at(&claims, &self.settings.roles_claim) {
            Some(Value::Array(items)) => items.iter().filter_map(Value::as_str).collect(),
            Some(Value::String(text)) => text.split_whitespace().collect(),
            _ => Vec::new(),
        };
        let grants = roles
            .into_iter()
            .filter_map(Grant::parse)
            .filter_map(|g| g.within(self.settings.warehouses.as_deref()))
            .collect();
        Ok(Identity::Principal {
            name: name.to_string(),
            grants,
        })
    }

    /// The key a token names, fetching the issuer's keys when they are missing, stale, or lack it.
    async fn key(&self, kid: Option<&str>) -> Result<DecodingKey, AuthError> {
        if let Some(key) = self.cached(kid, false).await {
            return Ok(key);
        }
        let _fetching = self.fetching.lock().await;
        // Another request may have fetched while this one waited.
        if let Some(key) = self.cached(kid, false).await {
            return Ok(key);
        }
        let recently = self
            .keys
            .read()
            .await
            .fetched_at
            .is_some_and(|at| at.elapsed() < MIN_REFRESH);
        if !recently {
            let fetched = self.fetch().await?;
            *self.keys.write().await = fetched;
        }
        self.cached(kid, true).await.ok_or_else(|| {
            AuthError::Invalid(format!(
                "the token's signing key {} is not among the keys of issuer `{}`",
                kid.map(|k| format!("`{k}`"))
                    .unwrap_or_else(|| "(no kid)".to_string()),
                self.settings.issuer
            ))
        })
    }

    /// The cached key for `kid`; with `stale_ok`, even keys past [`MAX_KEY_AGE`].
    async fn cached(&self, kid: Option<&str>, stale_ok: bool) -> Option<DecodingKey> {
        let keys = self.keys.read().await;
        let fresh = keys
            .fetched_at
            .is_some_and(|at| stale_ok || at.elapsed() < MAX_KEY_AGE);
        if !fresh {
            return None;
        }
        match kid {
            Some(kid) => keys.by_id.get(kid).cloned(),
            // A token without a key id: only unambiguous when the issuer has a single key.
            None => match (keys.unnamed.as_slice(), keys.by_id.len()) {
                ([only], 0) => Some(only.clone()),
                ([], 1) => keys.by_id.values().next().cloned(),
                _ => None,
            },
        }
    }

    async fn fetch(&self) -> Result<Keys, AuthError> {
        let jwks_url = match &self.settings.jwks_url {
            Some(url) => url.clone(),
            None => {
                let discovery = format!(
                    "{}/.well-known/openid-configuration",
                    self.settings.issuer.trim_end_matches('/')
                );
                let document = self.get_json(&discovery).await?;
                document["jwks_uri"]
                    .as_str()
                    .ok_or_else(|| {
                        AuthError::Unavailable(format!(
                            "the discovery document of issuer `{}` names no jwks_uri",
                            self.settings.issuer
                        ))
                    })?
                    .to_string()
            }
        };
        let set: JwkSet = serde_json::from_value(self.get_json(&jwks_url).await?).map_err(|e| {
            AuthError::Unavailable(format!("the key set at {jwks_url} does not parse: {e}"))
        })?;
        let mut keys = Keys {
            fetched_at: Some(Instant::now()),
            ..Keys::default()
        };
        for jwk in &set.keys {
            let Some(key) = usable(jwk) else { continue };
            match &jwk.common.key_id {
                Some(kid) => {
                    keys.by_id.insert(kid.clone(), key);
                }
                None => keys.unnamed.push(key),
            }
        }
        tracing::info!(issuer = %self.settings.issuer, keys = keys.by_id.len() + keys.unnamed.len(),
            "fetched the issuer's signing keys");
        Ok(keys)
    }

    /// A JSON document from the issuer, read under [`MAX_DOCUMENT_BYTES`].
    async fn get_json(&self, url: &str) -> Result<Value, AuthError> {
        let unavailable = |message: String| {
            AuthError::Unavailable(format!(
                "cannot read {url} for issuer `{}`: {message}",
                self.settings.issuer
            ))
        };
        let mut response = self
            .http
            .get(url)
            .send()
            .await
            .map_err(|e| unavailable(e.to_string()))?;
        if !response.status().is_success() {
            return Err(unavailable(format!("answered {}", response.status())));
        }
        let mut body = Vec::new();
        while let Some(chunk) = response
            .chunk()
            .await
            .map_err(|e| unavailable(e.to_string()))?
        {
            body.extend_from_slice(&chunk);
            if body.len() > MAX_DOCUMENT_BYTES {
                return Err(unavailable(format!(
                    "the answer is larger than {MAX_DOCUMENT_BYTES} bytes"
                )));
            }
        }
        serde_json::from_slice(&body).map_err(|e| unavailable(format!("not JSON: {e}")))
    }
}

/// A verification key from a JWK, unless it is symmetric or unusable.
fn usable(jwk: &Jwk) -> Option<DecodingKey> {
    if matches!(
        jwk.algorithm,
        jsonwebtoken::jwk::AlgorithmParameters::OctetKey(_)
    ) {
        return None;
    }
    DecodingKey::from_jwk(jwk).ok()
}

/// The claim at a dotted path (`realm_access.roles`), or at the literal name.
fn claims_at<'a>(claims: &'a Value, path: &str) -> Option<&'a Value> {
    if let Some(value) = claims.get(path) {
        return Some(value);
    }
    path.split('.')
        .try_fold(claims, |value, key| value.get(key))
}
