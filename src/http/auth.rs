//! Who is calling. With tokens configured, every request needs `Authorization: Bearer <token>` and is
//! refused with 401 otherwise; the token's principal is recorded with each log entry. With none
//! configured, every caller is `anonymous` and `Authorization` headers are ignored (PyIceberg sends
//! `Bearer None` when it has no credential). Tokens are never logged.
//!
//! Peer regions that replicate into this floe present their own tokens (`replication.accept`);
//! such a request carries a [`PeerIdentity`], which only the internal replication endpoint accepts.

use std::sync::Arc;

use axum::extract::{FromRequestParts, Request, State};
use axum::http::request::Parts;
use axum::http::{HeaderValue, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use super::errors::ApiError;
use crate::config::{AcceptedPeer, AuthSettings};

/// The principal recorded with each log entry.
#[derive(Debug, Clone)]
pub struct Principal(pub String);

/// The region of a peer that authenticated with its replication token.
#[derive(Debug, Clone)]
pub struct PeerIdentity(pub String);

const ANONYMOUS: &str = "anonymous";

/// The accepted tokens.
#[derive(Clone, Default)]
pub struct Authenticator {
    tokens: Vec<(String, Vec<u8>)>,
    /// (region, token) of peers allowed to replicate into this floe.
    peers: Vec<(String, Vec<u8>)>,
}

impl std::fmt::Debug for Authenticator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Authenticator")
            .field("tokens", &self.tokens.len())
            .field("peers", &self.peers.len())
            .finish()
    }
}

/// Compares in time independent of where the inputs differ, so a token cannot be guessed byte by byte.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

impl Authenticator {
    pub fn new(settings: &AuthSettings, peers: &[AcceptedPeer]) -> Self {
        Self {
            tokens: settings
                .tokens
                .iter()
                .map(|t| (t.principal.clone(), t.token.as_bytes().to_vec()))
                .collect(),
            peers: peers
                .iter()
                .map(|p| (p.region.clone(), p.token.as_bytes().to_vec()))
                .collect(),
        }
    }

    fn find<'a>(list: &'a [(String, Vec<u8>)], presented: &str) -> Option<&'a String> {
        let mut found = None;
        for (name, token) in list {
            if constant_time_eq(presented.trim().as_bytes(), token) {
                found = Some(name);
            }
        }
        found
    }

    /// A peer's region, when the request carries one of the peer tokens.
    fn peer(&self, authorization: Option<&HeaderValue>) -> Option<PeerIdentity> {
        let presented = bearer(authorization)?;
        Self::find(&self.peers, presented).map(|region| PeerIdentity(region.clone()))
    }

    /// The principal of a request, or the reason to refuse it.
    fn authenticate(&self, authorization: Option<&HeaderValue>) -> Result<Principal, ApiError> {
        if self.tokens.is_empty() {
            return Ok(Principal(ANONYMOUS.to_string()));
        }
        let unauthorized = |message: &str| {
            ApiError::new(StatusCode::UNAUTHORIZED, "NotAuthorizedException", message)
        };
        let presented = bearer(authorization).ok_or_else(|| {
            unauthorized("Authentication required: send `Authorization: Bearer <token>`")
        })?;
        Self::find(&self.tokens, presented)
            .map(|p| Principal(p.clone()))
            .ok_or_else(|| unauthorized("The bearer token is not valid for this catalog"))
    }
}

fn bearer(authorization: Option<&HeaderValue>) -> Option<&str> {
    authorization.and_then(|v| v.to_str().ok()).and_then(|v| {
        v.strip_prefix("Bearer ")
            .or_else(|| v.strip_prefix("bearer "))
    })
}

/// Middleware: authenticates every request and leaves its principal in the request's extensions.
pub async fn require_auth(
    State(authenticator): State<Arc<Authenticator>>,
    mut request: Request,
    next: Next,
) -> Response {
    if let Some(peer) = authenticator.peer(request.headers().get(header::AUTHORIZATION)) {
        request
            .extensions_mut()
            .insert(Principal(format!("peer:{}", peer.0)));
        request.extensions_mut().insert(peer);
        return next.run(request).await;
    }
    match authenticator.authenticate(request.headers().get(header::AUTHORIZATION)) {
        Ok(principal) => {
            request.extensions_mut().insert(principal);
            next.run(request).await
        }
        Err(error) => {
            let mut response = error.into_response();
            response
                .headers_mut()
                .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
            response
        }
    }
}

impl<S: Send + Sync> FromRequestParts<S> for Principal {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Self::Rejection> {
        Ok(parts
            .extensions
            .get::<Principal>()
            .cloned()
            .unwrap_or_else(|| Principal(ANONYMOUS.to_string())))
    }
}
