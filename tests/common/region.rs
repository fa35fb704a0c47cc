//! Regions as real `floe serve` processes (each its own database, warehouse and port on 127.0.0.1),
//! for tests that kill a region or want one process per region.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use floe::bench::files::SnapshotWriter;
use serde_json::{Value, json};

pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Waits (up to 10 s) until a `floe serve` at `base` answers `/v1/config` (a 400 too: with
/// several warehouses and no default, it asks which).
pub async fn wait_until_serving(base: &str) {
    let http = reqwest::Client::new();
    for _ in 0..200 {
        if let Ok(r) = http.get(format!("{base}/v1/config")).send().await
            && (r.status().is_success() || r.status() == reqwest::StatusCode::BAD_REQUEST)
        {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("floe did not start at {base}");
}

/// One region's `floe serve` process and what it needs to restart.
pub struct Region {
    child: Option<Child>,
    config: PathBuf,
    pub base: String,
    pub warehouse: PathBuf,
    _dir: tempfile::TempDir,
}

impl Region {
    /// A region on a fresh database and warehouse, or another instance beside `sibling` (its
    /// database and warehouse, as instances behind one load balancer share them).
    pub async fn start(region: &str, accept: &[(&str, &str)], sibling: Option<&Region>) -> Self {
        Self::start_with(region, accept, sibling, "").await
    }

    /// As [`Region::start`], with `extra` appended to the configuration file (more warehouses).
    pub async fn start_with(
        region: &str,
        accept: &[(&str, &str)],
        sibling: Option<&Region>,
        extra: &str,
    ) -> Self {
        let url = match sibling {
            Some(sibling) => sibling.database_url(),
            None => super::new_database().await,
        };
        let dir = tempfile::tempdir().unwrap();
        let warehouse = match sibling {
            Some(sibling) => sibling.warehouse.clone(),
            None => dir.path().join("wh"),
        };
        std::fs::create_dir_all(&warehouse).unwrap();
        let port = free_port();
        let mut text = format!(
            "region = \"{region}\"\nlisten = \"127.0.0.1:{port}\"\ndatabase_url = \"{url}\"\n\n\
             [[warehouses]]\nname = \"wh\"\nroot = \"file://{}\"\n\n[replication]\n\
             poll_interval_ms = 200\nretry_base_ms = 50\nretry_max_ms = 500\nlease_seconds = 2\n\
             public_url = \"http://127.0.0.1:{port}\"\n",
            warehouse.display()
        );
        for (source, token) in accept {
            text.push_str(&format!(
                "\n[[replication.accept]]\nregion = \"{source}\"\ntoken = \"{token}\"\n"
            ));
        }
        text.push_str(extra);
        let config = dir.path().join("floe.toml");
        std::fs::write(&config, text).unwrap();
        let mut region = Self {
            child: None,
            config,
            base: format!("http://127.0.0.1:{port}"),
            warehouse,
            _dir: dir,
        };
        region.spawn().await;
        region
    }

    pub fn database_url(&self) -> String {
        let text = std::fs::read_to_string(&self.config).unwrap();
        text.lines()
            .find_map(|l| l.strip_prefix("database_url = "))
            .unwrap()
            .trim_matches('"')
            .to_string()
    }

    /// Starts the region's process (again). Its log goes to the test's stderr at level `error`,
    /// or at the `FLOE_LOG` filter given in `TEST_FLOE_LOG` (to see what a region did).
    pub async fn spawn(&mut self) {
        let child = Command::new(env!("CARGO_BIN_EXE_floe"))
            .args(["--config", self.config.to_str().unwrap(), "serve"])
            .env(
                "FLOE_LOG",
                std::env::var("TEST_FLOE_LOG").unwrap_or("error".into()),
            )
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("spawn floe");
        self.child = Some(child);
        wait_until_serving(&self.base).await;
    }

    /// Sends `signal` to the process and waits (up to `seconds`) for it to exit; returns how
    /// long that took and its exit status.
    pub fn signal_and_wait(
        &mut self,
        signal: nix::sys::signal::Signal,
        seconds: u64,
    ) -> (Duration, std::process::ExitStatus) {
        let mut child = self.child.take().expect("a running process");
        let pid = nix::unistd::Pid::from_raw(child.id() as i32);
        let sent = std::time::Instant::now();
        nix::sys::signal::kill(pid, signal).unwrap();
        loop {
            if let Some(status) = child.try_wait().unwrap() {
                return (sent.elapsed(), status);
            }
            if sent.elapsed() > Duration::from_secs(seconds) {
                let _ = child.kill();
                let _ = child.wait();
                panic!("floe did not exit within {seconds} s of {signal}");
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    pub fn kill9(&mut self) {
        if let Some(mut child) = self.child.take() {
            child.kill().unwrap();
            child.wait().unwrap();
        }
    }

    pub fn root(&self) -> String {
        format!("file://{}", self.warehouse.display())
    }
}

impl Drop for Region {
    fn drop(&mut self) {
        self.kill9();
    }
}

pub async fn call(method: reqwest::Method, url: String, body: Option<Value>) -> (u16, Value) {
    let mut request = reqwest::Client::new().request(method, url);
    if let Some(body) = body {
        request = request.json(&body);
    }
    let response = request.send().await.expect("request");
    let status = response.status().as_u16();
    let text = response.text().await.unwrap();
    (status, serde_json::from_str(&text).unwrap_or(Value::Null))
}

pub async fn post(url: String, body: Value) -> (u16, Value) {
    call(reqwest::Method::POST, url, Some(body)).await
}

pub async fn get(url: String) -> Value {
    let (status, body) = call(reqwest::Method::GET, url, None).await;
    assert_eq!(status, 200, "{body}");
    body
}

/// Registers `destination` as peer `region` of `source` (its warehouse `wh`) with `token`.
pub async fn register_peer(source: &Region, destination: &Region, region: &str, token: &str) {
    let (status, body) = call(
        reqwest::Method::PUT,
        format!("{}/management/v1/peers/{region}", source.base),
        Some(
            json!({ "region": region, "base-url": destination.base, "credential": token,
            "warehouses": [{ "warehouse": "wh", "storage-root": destination.root() }] }),
        ),
    )
    .await;
    assert_eq!(status, 200, "{body}");
}

/// Creates a rule of the source's warehouse `wh` to these destinations; returns its id.
pub async fn create_rule(source: &Region, destinations: Value) -> String {
    let (status, body) = post(
        format!("{}/management/v1/replication-rules", source.base),
        json!({ "warehouse": "wh", "destinations": destinations }),
    )
    .await;
    assert_eq!(status, 201, "{body}");
    body["id"].as_str().unwrap().to_string()
}

/// Creates `db.<table>` (and `db` if missing) at the source.
pub async fn create_table_named(source: &Region, table: &str) {
    post(
        format!("{}/v1/wh/namespaces", source.base),
        json!({ "namespace": ["db"] }),
    )
    .await;
    let (status, body) = post(
        format!("{}/v1/wh/namespaces/db/tables", source.base),
        json!({ "name": table, "schema": super::simple_schema() }),
    )
    .await;
    assert_eq!(status, 200, "{body}");
}

/// Appends a snapshot with `files` real data files to `db.<table>`; returns its id.
pub async fn append_to(
    source: &Region,
    table: &str,
    writer: &mut SnapshotWriter,
    files: usize,
    size: usize,
) -> i64 {
    let url = format!("{}/v1/wh/namespaces/db/tables/{table}", source.base);
    let loaded = get(url.clone()).await;
    let next = super::prepare_append(&loaded, writer, &super::host_files(), files, size).await;
    let (status, reply) = post(url, next.body).await;
    assert_eq!(status, 200, "{reply}");
    next.snapshot_id
}

/// Waits until every destination of `db.<table>` is completed at the source's version.
pub async fn wait_completed_for(source: &Region, table: &str, seconds: u64) -> Value {
    let url = format!(
        "{}/management/v1/tables/wh/db/{table}/replication",
        source.base
    );
    let mut last = Value::Null;
    for _ in 0..seconds * 10 {
        last = get(url.clone()).await;
        let destinations = last["destinations"].as_array().cloned().unwrap_or_default();
        assert!(
            destinations.iter().all(|d| d["state"] != "failed"),
            "{last}"
        );
        if super::replication_completed(&last) {
            return last;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("replication did not complete: {last}");
}
