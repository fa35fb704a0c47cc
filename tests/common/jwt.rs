//! A stand-in OpenID Connect issuer on 127.0.0.1: its discovery document and JWKS served over real
//! HTTP, and tokens signed with its RSA key (a test key in tests/fixtures, good for nothing else).

use axum::Json;
use axum::Router;
use axum::routing::get;
use jsonwebtoken::jwk::{Jwk, JwkSet};
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::{Value, json};

pub const KEY_ID: &str = "floe-test-key";
pub const AUDIENCE: &str = "floe-tests";

pub fn issuer_key() -> EncodingKey {
    EncodingKey::from_rsa_pem(include_bytes!("../fixtures/jwt-issuer-key.pem")).unwrap()
}

/// A key the issuer does not publish: tokens signed with it must be refused.
pub fn other_key() -> EncodingKey {
    EncodingKey::from_rsa_pem(include_bytes!("../fixtures/jwt-other-key.pem")).unwrap()
}

pub struct TestIssuer {
    pub url: String,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for TestIssuer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl TestIssuer {
    pub async fn start() -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let mut jwk = Jwk::from_encoding_key(&issuer_key(), Algorithm::RS256).unwrap();
        jwk.common.key_id = Some(KEY_ID.to_string());
        let keys = JwkSet { keys: vec![jwk] };
        let discovery = json!({ "issuer": url, "jwks_uri": format!("{url}/jwks") });
        let app = Router::new()
            .route(
                "/.well-known/openid-configuration",
                get(move || async move { Json(discovery) }),
            )
            .route("/jwks", get(move || async move { Json(keys) }));
        let task = tokio::spawn(async move {
            axum::serve(listener, app).await.unwrap();
        });
        Self { url, task }
    }

    /// The `[[auth.oidc]]` entry that accepts this issuer's tokens.
    pub fn settings(&self) -> floe::config::OidcSettings {
        serde_json::from_value(json!({ "issuer": self.url, "audience": AUDIENCE })).unwrap()
    }

    /// Claims of a token valid for the next hour, naming `subject` with `roles`.
    pub fn claims(&self, subject: &str, roles: &[&str]) -> Value {
        let now = chrono::Utc::now().timestamp();
        json!({ "iss": self.url, "aud": AUDIENCE, "sub": subject, "roles": roles,
                "iat": now, "nbf": now, "exp": now + 3600 })
    }

    /// `claims` signed with `key` (the issuer's unless a test wants a bad signature).
    pub fn sign(claims: &Value, key: &EncodingKey) -> String {
        let mut header = Header::new(Algorithm::RS256);
        header.kid = Some(KEY_ID.to_string());
        jsonwebtoken::encode(&header, claims, key).unwrap()
    }

    pub fn token(&self, subject: &str, roles: &[&str]) -> String {
        Self::sign(&self.claims(subject, roles), &issuer_key())
    }
}
