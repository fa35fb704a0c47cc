//! From a request's bearer credential to an [`Identity`].
//!
//! In order: a peer's replication token (`replication.accept`) is a [`Identity::Peer`]; with no
//! client authentication configured every other caller is [`Identity::Anonymous`] and its
//! `Authorization` header is ignored (PyIceberg sends `Bearer None` when it has no credential);
//! otherwise the credential must be a static token, a JWT of a configured OpenID Connect issuer,
//! or a token floe issued itself, and anything else is refused. Static tokens are compared in
//! constant time; no credential is ever logged or put in an error message.
//!
//! A JWT whose signature and claims were verified is remembered until its `exp` (clients send the
//! same token with every request, so each is verified once rather than at every call): a token
//! stays valid until it expires, as JWTs do, even if its issuer drops the key meanwhile. Only the
//! exact token is remembered, so an altered one is verified afresh and fails.

use axum::http::HeaderValue;
use base64::Engine;
use serde_json::Value;

use super::issuer::TokenIssuer;
use super::oidc::OidcIssuer;
use super::{AuthError, Grant, Identity, constant_time_eq};
use crate::config::{AcceptedPeer, AuthSettings};

/// How many verified JWTs are remembered (a client's token each; the oldest are let go).
const VERIFIED_TOKENS: usize = 10_000;

/// A verified JWT's identity, and when the token expires (seconds since the epoch).
#[derive(Clone)]
struct Verified {
    identity: Identity,
    expires_at: i64,
}

struct StaticToken {
    principal: String,
    token: Vec<u8>,
    grants: Vec<Grant>,
}

/// Every way this floe accepts callers.
pub struct Authenticator {
    tokens: Vec<StaticToken>,
    /// (region, token) of peers allowed to replicate into this floe.
    peers: Vec<(String, Vec<u8>)>,
    oidc: Vec<OidcIssuer>,
    issuer: Option<TokenIssuer>,
    /// Whether client authentication is configured at all (else callers are anonymous).
    required: bool,
    verified: quick_cache::sync::Cache<String, Verified>,
}

impl std::fmt::Debug for Authenticator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Authenticator")
            .field("tokens", &self.tokens.len())
            .field("peers", &self.peers.len())
            .field("oidc", &self.oidc)
            .field("issuer", &self.issuer)
            .finish()
    }
}

impl Authenticator {
    pub fn new(settings: &AuthSettings, peers: &[AcceptedPeer], region: &str) -> Self {
        let http = reqwest::Client::builder()
            .timeout(std::time::Duration::from_secs(5))
            .build()
            .expect("the HTTP client builds");
        Self {
            tokens: settings
                .tokens
                .iter()
                .map(|t| StaticToken {
                    principal: t.principal.clone(),
                    token: t.token.expose().as_bytes().to_vec(),
                    grants: Grant::all(&t.roles, t.warehouses.as_deref()),
                })
                .collect(),
            peers: peers
                .iter()
                .map(|p| (p.region.clone(), p.token.expose().as_bytes().to_vec()))
                .collect(),
            oidc: settings
                .oidc
                .iter()
                .map(|o| OidcIssuer::new(o.clone(), http.clone()))
                .collect(),
            issuer: settings.oauth.as_ref().map(|o| TokenIssuer::new(o, region)),
            required: settings.is_configured(),
            verified: quick_cache::sync::Cache::new(VERIFIED_TOKENS),
        }
    }

    /// floe's own token issuer, when `auth.oauth` is configured.
    pub fn issuer(&self) -> Option<&TokenIssuer> {
        self.issuer.as_ref()
    }

    /// The identity of a request with this `Authorization` header.
    pub async fn authenticate(
        &self,
        authorization: Option<&HeaderValue>,
    ) -> Result<Identity, AuthError> {
        let presented = bearer(authorization);
        if let Some(region) = presented.and_then(|token| find(&self.peers, token)) {
            return Ok(Identity::Peer {
                region: region.clone(),
            });
        }
        if !self.required {
            return Ok(Identity::Anonymous);
        }
        let token = presented.ok_or_else(|| {
            AuthError::Invalid(
                "Authentication required: send `Authorization: Bearer <token>`".to_string(),
            )
        })?;
        let mut found = None;
        for candidate in &self.tokens {
            if constant_time_eq(token.as_bytes(), &candidate.token) {
                found = Some(candidate);
            }
        }
        if let Some(found) = found {
            return Ok(Identity::Principal {
                name: found.principal.clone(),
                grants: found.grants.clone(),
            });
        }
        if token.split('.').count() == 3 {
            return self.verify_jwt(token).await;
        }
        Err(AuthError::Invalid(
            "The bearer token is not valid for this catalog".to_string(),
        ))
    }

    async fn verify_jwt(&self, token: &str) -> Result<Identity, AuthError> {
        let now = chrono::Utc::now().timestamp();
        if let Some(hit) = self.verified.get(token).filter(|v| v.expires_at > now) {
            return Ok(hit.identity);
        }
        let header = jsonwebtoken::decode_header(token)
            .map_err(|e| AuthError::Invalid(format!("the bearer token is not a valid JWT: {e}")))?;
        let claims = unverified_claims(token).ok_or_else(|| {
            AuthError::Invalid(
                "the bearer token is not a valid JWT: its claims do not parse".into(),
            )
        })?;
        let issuer = claims["iss"].as_str().ok_or_else(|| {
            AuthError::Invalid("the bearer token is a JWT without an `iss` claim".to_string())
        })?;
        let identity = if let Some(own) = self.issuer.as_ref().filter(|own| own.issuer() == issuer)
        {
            own.verify(token)
                .map_err(|e| AuthError::Invalid(format!("the token is not valid: {e}")))?
        } else {
            match self.oidc.iter().find(|o| o.issuer() == issuer) {
                Some(oidc) => oidc.verify(token, &header).await?,
                None => {
                    return Err(AuthError::Invalid(format!(
                        "tokens of issuer `{}` are not accepted here",
                        issuer.chars().take(200).collect::<String>()
                    )));
                }
            }
        };
        // Verification required `exp`; the claims are the ones just verified.
        if let Some(expires_at) = claims["exp"].as_i64() {
            let verified = Verified {
                identity: identity.clone(),
                expires_at,
            };
            self.verified.insert(token.to_string(), verified);
        }
        Ok(identity)
    }
}

fn find<'a>(list: &'a [(String, Vec<u8>)], presented: &str) -> Option<&'a String> {
    let mut found = None;
    for (name, token) in list {
        if constant_time_eq(presented.as_bytes(), token) {
            found = Some(name);
        }
    }
    found
}

fn bearer(authorization: Option<&HeaderValue>) -> Option<&str> {
    authorization
        .and_then(|v| v.to_str().ok())
        .and_then(|v| {
            v.strip_prefix("Bearer ")
                .or_else(|| v.strip_prefix("bearer "))
        })
        .map(str::trim)
}

/// The claims of a JWT before its signature is checked: only to pick the issuer whose keys then
/// verify it (and, once verified, its expiry).
fn unverified_claims(token: &str) -> Option<Value> {
    let payload = token.split('.').nth(1)?;
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(payload.trim_end_matches('='))
        .ok()?;
    serde_json::from_slice(&bytes).ok()
}
