//! `POST /v1/oauth/tokens`: the spec's OAuth2 token endpoint, for clients configured with
//! `credential=<client_id>:<client_secret>` (Spark, PyIceberg). The request is form-encoded; the
//! answer is an `OAuthTokenResponse`, or an `OAuthError` (`{"error", "error_description"}`, which
//! the spec defines for this endpoint instead of the ErrorModel). The grants themselves live in
//! `auth::issuer`.

use std::collections::HashMap;
use std::sync::Arc;

use axum::Json;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use base64::Engine;
use serde_json::json;

use super::AppState;
use super::routes::{Route, route};
use crate::auth::Access;
use crate::auth::issuer::OAuthError;

/// The spec's path of the token endpoint.
pub const TOKENS_PATH: &str = "/v1/oauth/tokens";
const CLIENT_CREDENTIALS: &str = "client_credentials";
const TOKEN_EXCHANGE: &str = "urn:ietf:params:oauth:grant-type:token-exchange";
const ACCESS_TOKEN_TYPE: &str = "urn:ietf:params:oauth:token-type:access_token";

pub fn routes() -> Vec<Route> {
    // Public: a client calls it to obtain its credential.
    vec![route(
        Method::POST,
        TOKENS_PATH,
        Access::Public,
        "oauth.token",
        tokens,
    )]
}

fn error(err: &OAuthError) -> Response {
    let status = match err {
        OAuthError::InvalidClient => StatusCode::UNAUTHORIZED,
        _ => StatusCode::BAD_REQUEST,
    };
    let body = json!({ "error": err.code(), "error_description": err.to_string() });
    (status, Json(body)).into_response()
}

/// `Authorization: Basic base64(id:secret)` (client_secret_basic), when a client sends it.
fn basic_credentials(headers: &HeaderMap) -> Option<(String, String)> {
    let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let encoded = value
        .strip_prefix("Basic ")
        .or_else(|| value.strip_prefix("basic "))?;
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(encoded.trim())
        .ok()?;
    let (id, secret) = std::str::from_utf8(&decoded).ok()?.split_once(':')?;
    Some((id.to_string(), secret.to_string()))
}

async fn tokens(State(state): State<Arc<AppState>>, headers: HeaderMap, body: Bytes) -> Response {
    let Some(issuer) = state.authenticator.issuer() else {
        return error(&OAuthError::InvalidRequest(
            "this floe issues no tokens: configure clients under auth.oauth".to_string(),
        ));
    };
    let form: HashMap<String, String> = url::form_urlencoded::parse(&body).into_owned().collect();
    let field = |name: &str| form.get(name).map(String::as_str).filter(|v| !v.is_empty());
    let issued = match field("grant_type") {
        Some(CLIENT_CREDENTIALS) => {
            let (id, secret) = match (field("client_id"), field("client_secret")) {
                (Some(id), Some(secret)) => (id.to_string(), secret.to_string()),
                _ => match basic_credentials(&headers) {
                    Some(credentials) => credentials,
                    None => {
                        return error(&OAuthError::InvalidRequest(
                            "client_credentials needs client_id and client_secret".to_string(),
                        ));
                    }
                },
            };
            issuer.client_credentials(&id, &secret)
        }
        Some(TOKEN_EXCHANGE) => match field("subject_token") {
            Some(subject) => issuer.exchange(subject),
            None => Err(OAuthError::InvalidRequest(
                "token-exchange needs a subject_token".to_string(),
            )),
        },
        Some(other) => Err(OAuthError::UnsupportedGrantType(
            other.chars().take(100).collect(),
        )),
        None => Err(OAuthError::InvalidRequest(
            "the form needs a grant_type".to_string(),
        )),
    };
    match issued {
        Ok(token) => (
            // RFC 6749 5.1: a token is never cached on the way.
            [(header::CACHE_CONTROL, "no-store")],
            Json(json!({
                "access_token": token.access_token,
                "token_type": "bearer",
                "expires_in": token.expires_in,
                "issued_token_type": ACCESS_TOKEN_TYPE,
            })),
        )
            .into_response(),
        Err(err) => error(&err),
    }
}
