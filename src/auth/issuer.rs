//! floe's own OAuth2 tokens (`POST /v1/oauth/tokens`), for clients configured with
//! `credential=<client_id>:<client_secret>` (Spark's and PyIceberg's OAuth2 flow).
//!
//! A configured client trades its id and secret (client-credentials grant) for a short-lived JWT
//! that floe signs with HS256 and the region's `signing_key`; the token names the client's
//! principal and carries its grants, so validating it needs no lookup. A token-exchange grant
//! whose subject is such a token (how Spark refreshes before expiry) yields a fresh one with the
//! same principal and grants. Secrets are compared in constant time and never leave this module.

use std::time::{SystemTime, UNIX_EPOCH};

use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::{Deserialize, Serialize};

use super::{Grant, Identity, constant_time_eq};
use crate::config::OAuthSettings;

/// The audience of every token floe issues.
const AUDIENCE: &str = "floe";

/// A token endpoint failure, as RFC 6749 names them (the spec's `OAuthError`).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum OAuthError {
    #[error("unknown client or wrong secret")]
    InvalidClient,
    #[error("{0}")]
    InvalidGrant(String),
    #[error("{0}")]
    InvalidRequest(String),
    #[error("grant type `{0}` is not supported: use client_credentials or token-exchange")]
    UnsupportedGrantType(String),
}

impl OAuthError {
    /// The `error` code of the answer.
    pub fn code(&self) -> &'static str {
        match self {
            Self::InvalidClient => "invalid_client",
            Self::InvalidGrant(_) => "invalid_grant",
            Self::InvalidRequest(_) => "invalid_request",
            Self::UnsupportedGrantType(_) => "unsupported_grant_type",
        }
    }
}

#[derive(Debug, Serialize, Deserialize)]
struct Claims {
    iss: String,
    sub: String,
    aud: String,
    iat: u64,
    nbf: u64,
    exp: u64,
    jti: String,
    roles: Vec<String>,
}

struct Client {
    id: String,
    secret: Vec<u8>,
    principal: String,
    grants: Vec<Grant>,
}

/// A token handed out, and how long it lasts.
#[derive(Debug)]
pub struct IssuedToken {
    pub access_token: String,
    pub expires_in: u64,
}

/// Issues and validates floe's own tokens.
pub struct TokenIssuer {
    issuer: String,
    encoding: EncodingKey,
    decoding: DecodingKey,
    lifetime_seconds: u64,
    clients: Vec<Client>,
}

impl std::fmt::Debug for TokenIssuer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TokenIssuer")
            .field("issuer", &self.issuer)
            .field(
                "clients",
                &self.clients.iter().map(|c| &c.id).collect::<Vec<_>>(),
            )
            .finish_non_exhaustive()
    }
}

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

impl TokenIssuer {
    pub fn new(settings: &OAuthSettings, region: &str) -> Self {
        Self {
            issuer: format!("floe:{region}"),
            encoding: EncodingKey::from_secret(settings.signing_key.expose().as_bytes()),
            decoding: DecodingKey::from_secret(settings.signing_key.expose().as_bytes()),
            lifetime_seconds: settings.token_lifetime_seconds,
            clients: settings
                .clients
                .iter()
                .map(|c| Client {
                    id: c.client_id.clone(),
                    secret: c.client_secret.expose().as_bytes().to_vec(),
                    principal: c.principal.clone().unwrap_or_else(|| c.client_id.clone()),
                    grants: Grant::all(&c.roles, c.warehouses.as_deref()),
                })
                .collect(),
        }
    }

    /// The `iss` of floe's tokens.
    pub fn issuer(&self) -> &str {
        &self.issuer
    }

    /// The client-credentials grant.
    pub fn client_credentials(
        &self,
        client_id: &str,
        client_secret: &str,
    ) -> Result<IssuedToken, OAuthError> {
        // Every client's secret is compared, so the time taken does not tell which ids exist.
        let mut found = None;
        for client in &self.clients {
            let secret_matches = constant_time_eq(client_secret.as_bytes(), &client.secret);
            if secret_matches && client.id == client_id {
                found = Some(client);
            }
        }
        let client = found.ok_or(OAuthError::InvalidClient)?;
        self.sign(&client.principal, &client.grants)
    }

    /// The token-exchange grant: a valid floe token for a fresh one.
    pub fn exchange(&self, subject_token: &str) -> Result<IssuedToken, OAuthError> {
        let claims = self.claims(subject_token).map_err(|e| {
            OAuthError::InvalidGrant(format!("the subject token is not valid: {e}"))
        })?;
        let grants: Vec<Grant> = claims
            .roles
            .iter()
            .filter_map(|r| Grant::parse(r))
            .collect();
        self.sign(&claims.sub, &grants)
    }

    /// The identity a floe token stands for.
    pub fn verify(&self, token: &str) -> Result<Identity, String> {
        let claims = self.claims(token)?;
        Ok(Identity::Principal {
            name: claims.sub,
            grants: claims
                .roles
                .iter()
                .filter_map(|r| Grant::parse(r))
                .collect(),
        })
    }

    fn claims(&self, token: &str) -> Result<Claims, String> {
        let mut validation = Validation::new(Algorithm::HS256);
        validation.set_issuer(&[&self.issuer]);
        validation.set_audience(&[AUDIENCE]);
        validation.set_required_spec_claims(&["exp", "iss", "aud", "sub"]);
        validation.validate_nbf = true;
        validation.leeway = 5;
        jsonwebtoken::decode::<Claims>(token, &self.decoding, &validation)
            .map(|data| data.claims)
            .map_err(|e| e.to_string())
    }

    fn sign(&self, principal: &str, grants: &[Grant]) -> Result<IssuedToken, OAuthError> {
        let issued_at = now();
        let claims = Claims {
            iss: self.issuer.clone(),
            sub: principal.to_string(),
            aud: AUDIENCE.to_string(),
            iat: issued_at,
            nbf: issued_at,
            exp: issued_at + self.lifetime_seconds,
            jti: uuid::Uuid::new_v4().to_string(),
            roles: grants.iter().flat_map(Grant::to_strings).collect(),
        };
        let access_token =
            jsonwebtoken::encode(&Header::new(Algorithm::HS256), &claims, &self.encoding)
                .map_err(|e| OAuthError::InvalidRequest(format!("cannot sign a token: {e}")))?;
        Ok(IssuedToken {
            access_token,
            expires_in: self.lifetime_seconds,
        })
    }
}
