//! How floe authenticates to an upstream catalog: the client's own `Authorization` passed
//! through, a static token, or OAuth2 client credentials traded for tokens that are cached until
//! shortly before they expire. Tokens and secrets are [`Secret`]s: no `Debug` output shows them.

use std::time::{Duration, Instant};

use axum::http::HeaderValue;
use serde::Deserialize;
use tokio::sync::Mutex;

use super::errors::UpstreamError;
use crate::config::{UpstreamAuthMode, UpstreamSettings};
use crate::secret::Secret;

/// A token obtained by the client-credentials grant is renewed this long before it expires.
const RENEW_BEFORE_EXPIRY: Duration = Duration::from_secs(30);
/// The lifetime assumed for a token answer without `expires_in`.
const DEFAULT_TOKEN_LIFETIME: Duration = Duration::from_secs(300);

#[derive(Debug)]
pub enum UpstreamAuth {
    PassThrough,
    Token(Secret),
    ClientCredentials(ClientCredentials),
}

#[derive(Debug)]
pub struct ClientCredentials {
    token_url: String,
    client_id: String,
    client_secret: Secret,
    scope: Option<String>,
    cached: Mutex<Option<(Secret, Instant)>>,
}

#[derive(Deserialize)]
struct TokenAnswer {
    access_token: String,
    expires_in: Option<u64>,
}

impl UpstreamAuth {
    /// From validated settings (`Settings::validate` checked that each mode has what it needs).
    pub fn from_settings(settings: &UpstreamSettings) -> Self {
        match settings.auth {
            UpstreamAuthMode::PassThrough => Self::PassThrough,
            UpstreamAuthMode::Token => Self::Token(settings.token.clone().unwrap_or_default()),
            UpstreamAuthMode::Oauth2 => Self::ClientCredentials(ClientCredentials {
                token_url: settings.token_url.clone().unwrap_or_default(),
                client_id: settings.client_id.clone().unwrap_or_default(),
                client_secret: settings.client_secret.clone().unwrap_or_default(),
                scope: settings.scope.clone(),
                cached: Mutex::new(None),
            }),
        }
    }

    /// The `Authorization` to send upstream for a request that carried `from_client`.
    pub async fn authorization(
        &self,
        http: &reqwest::Client,
        from_client: Option<&HeaderValue>,
    ) -> Result<Option<HeaderValue>, UpstreamError> {
        match self {
            Self::PassThrough => Ok(from_client.cloned()),
            Self::Token(token) => bearer(token.expose()).map(Some),
            Self::ClientCredentials(credentials) => {
                let token = credentials.token(http).await?;
                bearer(token.expose()).map(Some)
            }
        }
    }
}

fn bearer(token: &str) -> Result<HeaderValue, UpstreamError> {
    let mut value = HeaderValue::from_str(&format!("Bearer {token}")).map_err(|_| {
        UpstreamError::Auth("the upstream token is not a valid header value".into())
    })?;
    value.set_sensitive(true);
    Ok(value)
}

impl ClientCredentials {
    async fn token(&self, http: &reqwest::Client) -> Result<Secret, UpstreamError> {
        let mut cached = self.cached.lock().await;
        if let Some((token, renew_at)) = cached.as_ref()
            && Instant::now() < *renew_at
        {
            return Ok(token.clone());
        }
        let mut form = vec![
            ("grant_type", "client_credentials"),
            ("client_id", self.client_id.as_str()),
            ("client_secret", self.client_secret.expose()),
        ];
        if let Some(scope) = &self.scope {
            form.push(("scope", scope));
        }
        let answer = http
            .post(&self.token_url)
            .form(&form)
            .send()
            .await
            .map_err(|e| UpstreamError::Auth(format!("token endpoint {}: {e}", self.token_url)))?;
        let status = answer.status();
        if !status.is_success() {
            return Err(UpstreamError::Auth(format!(
                "token endpoint {} refused floe's client credentials with {status}",
                self.token_url
            )));
        }
        let answer: TokenAnswer = answer.json().await.map_err(|e| {
            UpstreamError::Auth(format!(
                "token endpoint {} answered no access_token: {e}",
                self.token_url
            ))
        })?;
        let lifetime = answer
            .expires_in
            .map_or(DEFAULT_TOKEN_LIFETIME, Duration::from_secs);
        let renew_at = Instant::now() + lifetime.saturating_sub(RENEW_BEFORE_EXPIRY);
        let token = Secret::from(answer.access_token);
        *cached = Some((token.clone(), renew_at));
        Ok(token)
    }
}
