//! No secret from the settings, and no credential a caller presents or floe issues, appears in
//! floe's logs, at debug level for every crate: a real `floe serve` with an S3 warehouse (s3s-fs),
//! static tokens, a JWT issuer, an OAuth client, a peer it pushes to with a credential, and a
//! database URL with a password, driven through all of them.

mod common;

use std::process::{Command, Stdio};
use std::time::Duration;

use common::TestFloe;
use common::jwt::TestIssuer;
use common::region::free_port;
use common::s3::{ACCESS_KEY, BUCKET, SECRET_KEY, start_s3};
use serde_json::{Value, json};

const ADMIN_TOKEN: &str = "admin-static-token-5ecret-0001";
const ACCEPTED_PEER_TOKEN: &str = "accepted-peer-5ecret-0002";
const PEER_CREDENTIAL: &str = "peer-credential-5ecret-0003";
const SIGNING_KEY: &str = "oauth-signing-key-5ecret-0004-0123456789";
const CLIENT_SECRET: &str = "oauth-client-5ecret-0005";
const DB_PASSWORD: &str = "db-password-5ecret-0006";

#[tokio::test]
async fn debug_logs_carry_no_secret() {
    let Some(s3) = start_s3().await else {
        return;
    };
    let issuer = TestIssuer::start().await;
    // The replica region floe pushes to, in-process, accepting the peer credential.
    let replica = TestFloe::start_region("replica", &[("source", PEER_CREDENTIAL)]).await;
    let database = common::new_database().await;
    // Trust authentication ignores the password, but floe must still never show it.
    let database = database.replacen("postgres@", &format!("postgres:{DB_PASSWORD}@"), 1);
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let base = format!("http://127.0.0.1:{port}");
    let config = format!(
        r#"
region = "source"
listen = "127.0.0.1:{port}"
database_url = "{database}"

[[warehouses]]
name = "wh"
root = "s3://{BUCKET}/wh"
vend_credentials = true
[warehouses.s3]
endpoint = "{endpoint}"
region = "us-east-1"
path_style = true
access_key_id = "{ACCESS_KEY}"
secret_access_key = "{SECRET_KEY}"

[[auth.tokens]]
principal = "ops"
token = "{ADMIN_TOKEN}"
roles = ["admin"]

[[auth.oidc]]
issuer = "{issuer}"
audience = "{audience}"

[auth.oauth]
signing_key = "{SIGNING_KEY}"
[[auth.oauth.clients]]
client_id = "etl"
client_secret = "{CLIENT_SECRET}"

[replication]
poll_interval_ms = 200

[[replication.accept]]
region = "elsewhere"
token = "{ACCEPTED_PEER_TOKEN}"
"#,
        endpoint = s3.endpoint,
        issuer = issuer.url,
        audience = common::jwt::AUDIENCE,
    );
    let config_file = dir.path().join("floe.toml");
    std::fs::write(&config_file, config).unwrap();
    let log_file = dir.path().join("floe.log");
    let mut child = Command::new(env!("CARGO_BIN_EXE_floe"))
        .args(["--config", config_file.to_str().unwrap(), "serve"])
        .env("FLOE_LOG", "debug")
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log_file).unwrap())
        .spawn()
        .unwrap();

    let http = reqwest::Client::new();
    let send = async |method: reqwest::Method, path: &str, bearer: &str, body: Option<Value>| {
        let mut request = http
            .request(method, format!("{base}{path}"))
            .bearer_auth(bearer);
        if let Some(body) = body {
            request = request.json(&body);
        }
        let response = request.send().await.unwrap();
        (
            response.status().as_u16(),
            response.json::<Value>().await.unwrap_or(Value::Null),
        )
    };
    let wait = async || {
        for _ in 0..200 {
            if http.get(format!("{base}/v1/config")).send().await.is_ok() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    };
    wait().await;

    // The static token, a JWT, a floe-issued token, and refused ones of each kind.
    use reqwest::Method as M;
    let (status, reply) = send(
        M::POST,
        "/v1/wh/namespaces",
        ADMIN_TOKEN,
        Some(json!({"namespace": ["db"]})),
    )
    .await;
    assert_eq!(status, 200, "{reply}");
    let jwt = issuer.token("analyst", &["writer"]);
    let (status, reply) = send(
        M::POST,
        "/v1/wh/namespaces/db/tables",
        &jwt,
        Some(json!({"name": "t", "schema": common::simple_schema()})),
    )
    .await;
    assert_eq!(status, 200, "{reply}");
    let (status, _) = send(M::GET, "/v1/wh/namespaces", &format!("{jwt}x"), None).await;
    assert_eq!(status, 401);
    let issued: Value = http
        .post(format!("{base}/v1/oauth/tokens"))
        .form(&[
            ("grant_type", "client_credentials"),
            ("client_id", "etl"),
            ("client_secret", CLIENT_SECRET),
        ])
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let access_token = issued["access_token"].as_str().unwrap().to_string();
    let (status, loaded) = send(M::GET, "/v1/wh/namespaces/db/tables/t", &access_token, None).await;
    assert_eq!(status, 200, "{loaded}");
    let wrong_client = http
        .post(format!("{base}/v1/oauth/tokens"))
        .form(&[
            ("grant_type", "client_credentials"),
            ("client_id", "etl"),
            ("client_secret", "not-the-secret-at-all"),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(wrong_client.status(), 401);
    let (status, _) = send(M::GET, "/v1/wh/namespaces", ACCEPTED_PEER_TOKEN, None).await;
    assert_eq!(status, 403, "a peer token opens no catalog route");
    let (status, _) = send(
        M::GET,
        "/management/v1/log",
        "a-wrong-static-token-0000",
        None,
    )
    .await;
    assert_eq!(status, 401);

    // A peer with a credential, replicated to: the credential goes out with every push.
    let (status, reply) = send(
        M::PUT,
        "/management/v1/peers/replica",
        ADMIN_TOKEN,
        Some(json!({
        "region": "replica", "base-url": replica.server.base_url(), "credential": PEER_CREDENTIAL,
        "warehouses": [{ "warehouse": "wh", "storage-root": replica.warehouse_root() }] })),
    )
    .await;
    assert_eq!(status, 200, "{reply}");
    let (status, reply) = send(
        M::POST,
        "/management/v1/replication-rules",
        ADMIN_TOKEN,
        Some(json!({
        "warehouse": "wh", "destinations": [{ "peer": "replica", "warehouse": "wh" }] })),
    )
    .await;
    assert_eq!(status, 201, "{reply}");
    let mut replicated = Value::Null;
    for _ in 0..200 {
        let (_, status) = send(
            M::GET,
            "/management/v1/tables/wh/db/t/replication",
            ADMIN_TOKEN,
            None,
        )
        .await;
        replicated = status;
        if common::replication_completed(&replicated) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(common::replication_completed(&replicated), "{replicated}");
    let (status, _) = send(
        M::DELETE,
        "/v1/wh/namespaces/db/tables/t?purgeRequested=true",
        ADMIN_TOKEN,
        None,
    )
    .await;
    assert_eq!(status, 204);

    child.kill().unwrap();
    child.wait().unwrap();
    replica.server.stop().await;
    let log = std::fs::read_to_string(&log_file).unwrap();
    assert!(
        log.lines().filter(|l| l.contains("DEBUG")).count() > 50,
        "the log is not at debug level:\n{log}"
    );
    assert!(log.contains("replica"), "the log does not cover the push");
    for (name, secret) in [
        ("static token", ADMIN_TOKEN),
        ("accepted peer token", ACCEPTED_PEER_TOKEN),
        ("peer credential", PEER_CREDENTIAL),
        ("signing key", SIGNING_KEY),
        ("client secret", CLIENT_SECRET),
        ("database password", DB_PASSWORD),
        ("S3 secret key", SECRET_KEY),
        ("JWT", jwt.as_str()),
        ("floe-issued token", access_token.as_str()),
    ] {
        let found: Vec<&str> = log.lines().filter(|l| l.contains(secret)).take(3).collect();
        assert!(
            found.is_empty(),
            "the {name} appears in floe's log: {found:#?}"
        );
    }
}
