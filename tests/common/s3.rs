//! s3s-fs, an S3-compatible server that checks SigV4 signatures, for tests: started on 127.0.0.1
//! over a temporary directory (objects are files under `<root>/<bucket>/`), stopped when dropped.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use floe::storage::S3Settings;

pub const ACCESS_KEY: &str = "floe-test-key";
pub const SECRET_KEY: &str = "floe-test-secret-0123456789";
pub const BUCKET: &str = "lake";

/// s3s-fs on 127.0.0.1, stopped when dropped.
pub struct S3Server {
    child: Child,
    pub endpoint: String,
    pub root: tempfile::TempDir,
}

impl Drop for S3Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn s3s_fs() -> Option<PathBuf> {
    if let Ok(path) = std::env::var("FLOE_S3S_FS") {
        return Some(PathBuf::from(path));
    }
    let home = std::env::var("HOME").ok()?;
    let installed = PathBuf::from(home).join(".cargo/bin/s3s-fs");
    installed.exists().then_some(installed)
}

/// The server, or `None` (with a message) where s3s-fs is not installed and not required.
pub async fn start_s3() -> Option<S3Server> {
    let Some(binary) = s3s_fs() else {
        assert!(
            std::env::var("FLOE_REQUIRE_S3").is_err(),
            "s3s-fs is required: cargo install s3s-fs@0.14.1 --locked --features binary"
        );
        eprintln!("S3 tests skipped: s3s-fs is not installed (tests/run.sh installs it)");
        return None;
    };
    let root = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(root.path().join(BUCKET)).unwrap();
    let port = super::region::free_port();
    let server = S3Server {
        child: Command::new(binary)
            .args(["--host", "127.0.0.1", "--port", &port.to_string()])
            .args(["--access-key", ACCESS_KEY, "--secret-key", SECRET_KEY])
            .arg(root.path())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start s3s-fs"),
        endpoint: format!("http://127.0.0.1:{port}"),
        root,
    };
    for _ in 0..100 {
        if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
            return Some(server);
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    drop(server);
    panic!("s3s-fs did not start");
}

pub fn s3_settings(server: &S3Server, secret: &str) -> S3Settings {
    S3Settings {
        endpoint: Some(server.endpoint.clone()),
        region: Some("us-east-1".to_string()),
        path_style: true,
        access_key_id: Some(ACCESS_KEY.to_string()),
        secret_access_key: Some(secret.into()),
    }
}

/// Every object in the bucket, as the files s3s-fs keeps.
pub fn objects(server: &S3Server) -> Vec<PathBuf> {
    super::files_under(&server.root.path().join(BUCKET))
}
