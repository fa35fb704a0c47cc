//! `floe bench auth`: what authentication adds to loadTable and commits. The same workloads as
//! `floe bench commits` (loadTable of a small table, metadata-only commits over 100 tables) run
//! against floe without auth, with a static bearer token, with an OpenID Connect JWT (RS256,
//! verified against a JWKS served over HTTP by an issuer in this process) and with a token floe
//! issued itself (HS256); then each credential's check alone, timed in-process: a token's first
//! check (its signature verified) and the checks after it (the verified token remembered).

use std::time::Instant;

use anyhow::{Context, bail};
use axum::Json;
use axum::routing::get;
use base64::Engine;
use jsonwebtoken::jwk::{Jwk, JwkSet};
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::json;

use super::commits::{self, CommitKind, ms};
use crate::auth::{Authenticator, Role};
use crate::config::{
    AuthSettings, OAuthClientSettings, OAuthSettings, OidcSettings, Settings, TokenSettings,
};

const STATIC_TOKEN: &str = "bench-static-token-0123456789";
const CLIENT_SECRET: &str = "bench-client-secret-0123456789";
const AUDIENCE: &str = "floe-bench";
const KEY_ID: &str = "bench";

#[derive(Debug, Clone)]
pub struct AuthBenchOptions {
    pub seconds: u64,
}

/// An OpenID Connect issuer on 127.0.0.1 with a fresh RSA key.
struct Issuer {
    url: String,
    key: EncodingKey,
    task: tokio::task::JoinHandle<()>,
}

impl Issuer {
    async fn start() -> anyhow::Result<Self> {
        let pair = aws_lc_rs::rsa::KeyPair::generate(aws_lc_rs::rsa::KeySize::Rsa2048)
            .map_err(|_| anyhow::anyhow!("cannot generate an RSA key"))?;
        let der = aws_lc_rs::encoding::AsDer::<aws_lc_rs::encoding::Pkcs8V1Der>::as_der(&pair)
            .map_err(|_| anyhow::anyhow!("cannot encode the RSA key"))?;
        let pem = format!(
            "-----BEGIN PRIVATE KEY-----\n{}\n-----END PRIVATE KEY-----\n",
            base64::engine::general_purpose::STANDARD.encode(der.as_ref())
        );
        let key = EncodingKey::from_rsa_pem(pem.as_bytes())?;
        let mut jwk = Jwk::from_encoding_key(&key, Algorithm::RS256)?;
        jwk.common.key_id = Some(KEY_ID.to_string());
        let keys = JwkSet { keys: vec![jwk] };
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let url = format!("http://{}", listener.local_addr()?);
        let discovery = json!({ "issuer": url, "jwks_uri": format!("{url}/jwks") });
        let app = axum::Router::new()
            .route(
                "/.well-known/openid-configuration",
                get(move || async move { Json(discovery) }),
            )
            .route("/jwks", get(move || async move { Json(keys) }));
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Ok(Self { url, key, task })
    }

    fn token(&self) -> anyhow::Result<String> {
        let now = chrono::Utc::now().timestamp();
        let claims = json!({ "iss": self.url, "aud": AUDIENCE, "sub": "bench-analyst",
            "roles": ["writer"], "iat": now, "nbf": now, "exp": now + 3600,
            "jti": uuid::Uuid::new_v4().to_string() });
        let mut header = Header::new(Algorithm::RS256);
        header.kid = Some(KEY_ID.to_string());
        Ok(jsonwebtoken::encode(&header, &claims, &self.key)?)
    }
}

impl Drop for Issuer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Every kind of credential, as the benchmark's floe accepts them.
fn auth_settings(issuer: &Issuer) -> AuthSettings {
    AuthSettings {
        tokens: vec![TokenSettings {
            principal: "bench".to_string(),
            token: STATIC_TOKEN.into(),
            roles: vec![Role::Admin],
            warehouses: None,
        }],
        oidc: vec![OidcSettings {
            issuer: issuer.url.clone(),
            audience: AUDIENCE.to_string(),
            jwks_url: None,
            principal_claim: "sub".to_string(),
            roles_claim: "roles".to_string(),
            leeway_seconds: 30,
            warehouses: None,
        }],
        oauth: Some(OAuthSettings {
            signing_key: uuid::Uuid::new_v4().simple().to_string().repeat(2).into(),
            token_lifetime_seconds: 3600,
            clients: vec![OAuthClientSettings {
                client_id: "bench-client".to_string(),
                client_secret: CLIENT_SECRET.into(),
                principal: None,
                roles: vec![Role::Writer],
                warehouses: None,
            }],
        }),
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    None,
    Static,
    Jwt,
    FloeIssued,
}

impl Mode {
    const ALL: [Mode; 4] = [Mode::None, Mode::Static, Mode::Jwt, Mode::FloeIssued];

    fn label(self) -> &'static str {
        match self {
            Mode::None => "no auth",
            Mode::Static => "static token",
            Mode::Jwt => "OIDC JWT (RS256, JWKS)",
            Mode::FloeIssued => "floe-issued token (HS256)",
        }
    }
}

/// One credential check that must pass.
async fn check(authenticator: &Authenticator, token: &str) -> anyhow::Result<()> {
    let header = axum::http::HeaderValue::from_str(&format!("Bearer {token}"))?;
    authenticator
        .authenticate(Some(&header))
        .await
        .map(|_| ())
        .map_err(|e| anyhow::anyhow!("{e}"))
}

/// The token endpoint's answer to the benchmark's client.
async fn floe_issued_token(base: &str) -> anyhow::Result<String> {
    let reply: serde_json::Value = reqwest::Client::new()
        .post(format!("{base}/v1/oauth/tokens"))
        .form(&[
            ("grant_type", "client_credentials"),
            ("client_id", "bench-client"),
            ("client_secret", CLIENT_SECRET),
        ])
        .send()
        .await?
        .json()
        .await?;
    reply["access_token"]
        .as_str()
        .map(str::to_string)
        .context("the token endpoint issued no token")
}

pub async fn run_auth(options: AuthBenchOptions) -> anyhow::Result<()> {
    super::with_throwaway_cluster(async |cluster, dir| {
        let issuer = Issuer::start().await?;
        let settings = auth_settings(&issuer);
        println!(
            "floe bench auth: {} s per scenario, PostgreSQL with fsync on, local warehouse, {} cores\n",
            options.seconds,
            std::thread::available_parallelism().map_or(0, |n| n.get())
        );
        println!("| credential | loadTable p50 ms (1 reader) | p99 ms | loads/s (8 readers) | p50 ms | p99 ms | commits/s (8 writers, 100 tables) | p50 ms | p99 ms |");
        println!("|---|---:|---:|---:|---:|---:|---:|---:|---:|");
        for mode in Mode::ALL {
            let configure = |s: &mut Settings| {
                if mode != Mode::None {
                    s.auth = settings.clone();
                }
            };
            let setup_token = (mode != Mode::None).then_some(STATIC_TOKEN);
            let name = format!("auth{}", mode as u8);
            let (server, setup) =
                commits::start_server_with(cluster, dir, &name, 8, configure, setup_token).await?;
            let bearer = match mode {
                Mode::None => None,
                Mode::Static => Some(STATIC_TOKEN.to_string()),
                Mode::Jwt => Some(issuer.token()?),
                Mode::FloeIssued => Some(floe_issued_token(&server.base_url()).await?),
            };
            let http = commits::client(bearer.as_deref())?;
            let result = async {
                let endpoint = commits::Endpoint::of_server(&server);
                commits::create_table(&setup, &endpoint, "load").await?;
                let one = commits::loads(&endpoint, &http, "load", 1, options.seconds).await?;
                let eight = commits::loads(&endpoint, &http, "load", 8, options.seconds).await?;
                let writes = commits::commits(&endpoint, &http, CommitKind::MetadataOnly, 8, 100, options.seconds).await?;
                Ok::<_, anyhow::Error>((one, eight, writes))
            }
            .await;
            server.stop().await;
            let (one, eight, writes) = result?;
            let rate = |o: &commits::Outcome| o.committed as f64 / o.elapsed.as_secs_f64();
            let q = |o: &commits::Outcome, q: f64| ms(o.latency_us.value_at_quantile(q));
            println!(
                "| {} | {:.3} | {:.3} | {:.0} | {:.3} | {:.3} | {:.0} | {:.2} | {:.2} |",
                mode.label(),
                q(&one, 0.5),
                q(&one, 0.99),
                rate(&eight),
                q(&eight, 0.5),
                q(&eight, 0.99),
                rate(&writes),
                q(&writes, 0.5),
                q(&writes, 0.99),
            );
        }

        println!("\n| credential check alone (in process, one thread) | p50 µs | p99 µs |");
        println!("|---|---:|---:|");
        let region = "bench";
        let authenticator = Authenticator::new(&settings, &[], region);
        let token_issuer =
            crate::auth::issuer::TokenIssuer::new(settings.oauth.as_ref().context("oauth")?, region);
        let floe_token = || -> anyhow::Result<String> {
            Ok(token_issuer
                .client_credentials("bench-client", CLIENT_SECRET)?
                .access_token)
        };
        let anonymous = Authenticator::new(&AuthSettings::default(), &[], region);
        // The first check of a token verifies it (the issuer's keys are fetched once, before);
        // checks of the same token again find it remembered.
        let first_jwt = issuer.token()?;
        check(&authenticator, &first_jwt).await?;
        let fresh_jwts = (0..2000).map(|_| issuer.token()).collect::<anyhow::Result<Vec<_>>>()?;
        let fresh_floe = (0..2000).map(|_| floe_token()).collect::<anyhow::Result<Vec<_>>>()?;
        let rows: [(&str, &Authenticator, Vec<Option<String>>); 6] = [
            (Mode::None.label(), &anonymous, vec![None; 2000]),
            (Mode::Static.label(), &authenticator, vec![Some(STATIC_TOKEN.to_string()); 2000]),
            ("OIDC JWT, first use (verified)", &authenticator, fresh_jwts.into_iter().map(Some).collect()),
            ("OIDC JWT, again (remembered)", &authenticator, vec![Some(first_jwt); 2000]),
            ("floe-issued token, first use (verified)", &authenticator, fresh_floe.into_iter().map(Some).collect()),
            ("floe-issued token, again (remembered)", &authenticator, vec![Some(floe_token()?); 2000]),
        ];
        for (label, authenticator, tokens) in rows {
            let mut latency = commits::histogram_ns();
            for token in &tokens {
                let header = token
                    .as_ref()
                    .map(|t| axum::http::HeaderValue::from_str(&format!("Bearer {t}")))
                    .transpose()?;
                let start = Instant::now();
                if authenticator.authenticate(header.as_ref()).await.is_err() {
                    bail!("{label} was refused");
                }
                latency.record((start.elapsed().as_nanos() as u64).max(1))?;
            }
            println!(
                "| {label} | {:.1} | {:.1} |",
                latency.value_at_quantile(0.5) as f64 / 1000.0,
                latency.value_at_quantile(0.99) as f64 / 1000.0
            );
        }
        Ok(())
    })
    .await
}
