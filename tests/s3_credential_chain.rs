//! An S3 warehouse configured without keys takes them from the default AWS credential chain. Each
//! case runs `floe serve` as its own process, so the environment it is given is all it sees.

mod common;

use std::process::{Child, Command, Stdio};

use common::region::{free_port, wait_until_serving};
use common::s3::{ACCESS_KEY, BUCKET, S3Server, SECRET_KEY, objects, start_s3};
use serde_json::json;

/// `floe serve` with an S3 warehouse that names no keys, under exactly `env` (plus PATH), killed
/// when dropped.
struct Serve {
    child: Child,
    base: String,
    _dir: tempfile::TempDir,
}

impl Drop for Serve {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

async fn serve(server: &S3Server, env: &[(&str, String)]) -> Serve {
    let dir = tempfile::tempdir().unwrap();
    let url = common::new_database().await;
    let port = free_port();
    let config = dir.path().join("floe.toml");
    std::fs::write(
        &config,
        format!(
            "listen = \"127.0.0.1:{port}\"\ndatabase_url = \"{url}\"\n\n[[warehouses]]\n\
             name = \"wh\"\nroot = \"s3://{BUCKET}/wh\"\n[warehouses.s3]\nendpoint = \"{}\"\n\
             region = \"us-east-1\"\npath_style = true\n",
            server.endpoint
        ),
    )
    .unwrap();
    // Nothing from the machine's own AWS setup: no home directory files, no instance metadata.
    let empty = dir.path().join("empty");
    std::fs::write(&empty, "").unwrap();
    let mut command = Command::new(env!("CARGO_BIN_EXE_floe"));
    command
        .args(["--config", config.to_str().unwrap(), "serve"])
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("FLOE_LOG", "error")
        .env("AWS_CONFIG_FILE", &empty)
        .env("AWS_SHARED_CREDENTIALS_FILE", &empty)
        .env("AWS_EC2_METADATA_DISABLED", "true")
        .stdout(Stdio::null())
        .stderr(Stdio::inherit());
    for (key, value) in env {
        command.env(key, value);
    }
    let serve = Serve {
        child: command.spawn().expect("spawn floe"),
        base: format!("http://127.0.0.1:{port}"),
        _dir: dir,
    };
    wait_until_serving(&serve.base).await;
    serve
}

/// Creates `db.<table>`; returns the status and the body.
async fn create_table(serve: &Serve, table: &str) -> (u16, serde_json::Value) {
    let http = reqwest::Client::new();
    let namespace = http
        .post(format!("{}/v1/wh/namespaces", serve.base))
        .json(&json!({ "namespace": ["db"] }))
        .send()
        .await
        .unwrap();
    assert!(matches!(namespace.status().as_u16(), 200 | 409));
    let response = http
        .post(format!("{}/v1/wh/namespaces/db/tables", serve.base))
        .json(&json!({ "name": table, "schema": common::simple_schema() }))
        .send()
        .await
        .unwrap();
    (
        response.status().as_u16(),
        response.json().await.unwrap_or_default(),
    )
}

fn metadata_objects(server: &S3Server, table: &str) -> usize {
    objects(server)
        .iter()
        .filter(|p| p.to_string_lossy().contains(&format!("/db/{table}-")))
        .count()
}

#[tokio::test]
async fn keys_come_from_the_environment() {
    let Some(server) = start_s3().await else {
        return;
    };
    let serve = serve(
        &server,
        &[
            ("AWS_ACCESS_KEY_ID", ACCESS_KEY.to_string()),
            ("AWS_SECRET_ACCESS_KEY", SECRET_KEY.to_string()),
        ],
    )
    .await;
    let (status, body) = create_table(&serve, "from_env").await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(metadata_objects(&server, "from_env"), 1);
}

#[tokio::test]
async fn keys_come_from_a_named_profile() {
    let Some(server) = start_s3().await else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let credentials = dir.path().join("credentials");
    std::fs::write(
        &credentials,
        format!(
            "[default]\naws_access_key_id = wrong\naws_secret_access_key = wrong\n\n\
             [lake]\naws_access_key_id = {ACCESS_KEY}\naws_secret_access_key = {SECRET_KEY}\n"
        ),
    )
    .unwrap();
    let path = credentials.to_str().unwrap().to_string();
    let serve = serve(
        &server,
        &[
            ("AWS_SHARED_CREDENTIALS_FILE", path),
            ("AWS_PROFILE", "lake".to_string()),
        ],
    )
    .await;
    let (status, body) = create_table(&serve, "from_profile").await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(metadata_objects(&server, "from_profile"), 1);
}

#[tokio::test]
async fn wrong_keys_from_the_chain_name_the_warehouse_and_write_nothing() {
    let Some(server) = start_s3().await else {
        return;
    };
    let serve = serve(
        &server,
        &[
            ("AWS_ACCESS_KEY_ID", ACCESS_KEY.to_string()),
            ("AWS_SECRET_ACCESS_KEY", "not-the-secret".to_string()),
        ],
    )
    .await;
    let (status, body) = create_table(&serve, "refused").await;
    assert_eq!(status, 503, "{body}");
    let message = body["error"]["message"].as_str().unwrap();
    assert!(message.contains("warehouse `wh`"), "{message}");
    assert_eq!(metadata_objects(&server, "refused"), 0);
}
