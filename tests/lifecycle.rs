//! The process lifecycle: `floe serve` under SIGTERM while writers commit (every request completes
//! or fails cleanly, no acknowledged commit is lost, no replication lease stays held), and `floe
//! dev` started again after it was killed with SIGKILL (it stops the PostgreSQL the killed run left
//! and comes back with its data).

mod common;

use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use common::region::{
    Region, create_rule, create_table_named, free_port, register_peer, wait_until_serving,
};
use nix::sys::signal::Signal;
use serde_json::{Value, json};

const TOKEN: &str = "source-to-replica-token";

#[derive(Default, Debug)]
struct Outcomes {
    acknowledged: usize,
    conflicts: usize,
    /// Requests that got no HTTP answer (the connection was refused or closed).
    unanswered: usize,
    server_errors: Vec<String>,
}

#[tokio::test]
async fn sigterm_drains_requests_and_releases_leases() {
    let replica = Region::start("replica", &[("source", TOKEN)], None).await;
    let mut source = Region::start("source", &[], None).await;
    register_peer(&source, &replica, "replica", TOKEN).await;
    create_rule(&source, json!([{ "peer": "replica", "warehouse": "wh" }])).await;
    for t in 0..8 {
        create_table_named(&source, &format!("t{t}")).await;
    }
    let stop = Arc::new(AtomicBool::new(false));
    let mut writers = Vec::new();
    for w in 0..8 {
        let (base, stop) = (source.base.clone(), stop.clone());
        writers.push(tokio::spawn(async move {
            let http = reqwest::Client::new();
            let url = format!("{base}/v1/wh/namespaces/db/tables/t{w}");
            let mut outcomes = Outcomes::default();
            let mut i = 0;
            // Writers go on past the signal, until the server no longer answers at all.
            while !stop.load(Ordering::SeqCst) || outcomes.unanswered == 0 {
                i += 1;
                let body = json!({ "requirements": [], "updates": [
                    { "action": "set-properties", "updates": { "i": i.to_string() } }] });
                match http.post(&url).json(&body).send().await {
                    Ok(reply) => {
                        let status = reply.status().as_u16();
                        let text = reply.text().await.unwrap_or_default();
                        match status {
                            200 => outcomes.acknowledged += 1,
                            409 => outcomes.conflicts += 1,
                            s if s >= 500 => outcomes.server_errors.push(format!("{s} {text}")),
                            other => panic!("unexpected {other}: {text}"),
                        }
                    }
                    Err(_) if stop.load(Ordering::SeqCst) => outcomes.unanswered += 1,
                    Err(e) => panic!("a request failed before the signal: {e}"),
                }
                if outcomes.unanswered > 0 {
                    break;
                }
            }
            outcomes
        }));
    }
    tokio::time::sleep(Duration::from_millis(1500)).await;
    stop.store(true, Ordering::SeqCst);
    let (took, status) = source.signal_and_wait(Signal::SIGTERM, 40);
    assert!(status.success(), "floe exited with {status}");
    let mut acknowledged = 0;
    for writer in writers {
        let outcomes = writer.await.unwrap();
        assert!(outcomes.server_errors.is_empty(), "{outcomes:?}");
        assert!(outcomes.acknowledged > 0, "{outcomes:?}");
        acknowledged += outcomes.acknowledged;
    }
    let pool = sqlx::PgPool::connect(&source.database_url()).await.unwrap();
    let held: i64 =
        sqlx::query_scalar("SELECT count(*) FROM replication_stream WHERE lease_owner IS NOT NULL")
            .fetch_one(&pool)
            .await
            .unwrap();
    assert_eq!(held, 0, "a lease outlived the shutdown");
    let logged: i64 =
        sqlx::query_scalar("SELECT count(*) FROM commit_log WHERE kind = 'commit-table'")
            .fetch_one(&pool)
            .await
            .unwrap();
    assert!(
        logged as usize >= acknowledged,
        "{logged} logged, {acknowledged} acknowledged"
    );
    pool.close().await;
    eprintln!("floe exited {took:?} after SIGTERM; {acknowledged} commits acknowledged");
}

/// The PostgreSQL processes running on `data_dir`.
fn postgres_on(data_dir: &std::path::Path) -> Vec<i32> {
    let needle = data_dir.to_string_lossy().into_owned();
    std::fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<i32>().ok())
        .filter(|pid| {
            std::fs::read(format!("/proc/{pid}/cmdline"))
                .is_ok_and(|c| String::from_utf8_lossy(&c).contains(&needle))
        })
        .collect()
}

fn start_dev(state: &std::path::Path, port: u16) -> std::process::Child {
    Command::new(env!("CARGO_BIN_EXE_floe"))
        .args([
            "dev",
            "--state-dir",
            state.to_str().unwrap(),
            "--port",
            &port.to_string(),
        ])
        .args(["--replica-port", &free_port().to_string()])
        .env("FLOE_LOG", "error")
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap()
}

#[tokio::test]
async fn floe_dev_starts_again_after_sigkill_with_its_data() {
    let state = tempfile::tempdir().unwrap();
    // The cluster runs as `postgres` where floe runs as root: let it reach the state directory.
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(state.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let data_dir = state.path().canonicalize().unwrap().join("postgres/data");
    let port = free_port();
    let base = format!("http://127.0.0.1:{port}");
    let mut dev = start_dev(state.path(), port);
    wait_until_serving(&base).await;
    let http = reqwest::Client::new();
    let created = http
        .post(format!("{base}/v1/demo/namespaces"))
        .json(&json!({ "namespace": ["survives"] }))
        .send()
        .await
        .unwrap();
    assert_eq!(created.status(), 200);
    dev.kill().unwrap();
    dev.wait().unwrap();
    assert!(
        !postgres_on(&data_dir).is_empty(),
        "the killed run left no PostgreSQL to find"
    );

    let mut again = start_dev(state.path(), port);
    wait_until_serving(&base).await;
    let namespace: Value = http
        .get(format!("{base}/v1/demo/namespaces/survives"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(namespace["namespace"], json!(["survives"]), "{namespace}");
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(again.id() as i32),
        Signal::SIGINT,
    )
    .unwrap();
    let status = again.wait().unwrap();
    assert!(status.success(), "floe dev exited with {status}");
    assert!(
        postgres_on(&data_dir).is_empty(),
        "floe dev left its PostgreSQL running"
    );
}

/// A purge cut short by SIGKILL resumes after the restart and finishes: the drop recorded it, so
/// no file of the dropped table is left behind.
#[tokio::test]
async fn a_purge_interrupted_by_sigkill_finishes_after_restart() {
    let mut source = Region::start("source", &[], None).await;
    create_table_named(&source, "big").await;
    let mut writer = floe::bench::files::SnapshotWriter::default();
    common::region::append_to(&source, "big", &mut writer, 3000, 1).await;
    let data_files = |region: &Region| {
        common::files_under(&region.warehouse)
            .into_iter()
            .filter(|p| p.extension().is_some_and(|e| e == "parquet"))
            .count()
    };
    assert_eq!(data_files(&source), 3000);
    let dropped = reqwest::Client::new()
        .delete(format!(
            "{}/v1/wh/namespaces/db/tables/big?purgeRequested=true",
            source.base
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(dropped.status(), 204);
    source.kill9();
    let left = data_files(&source);
    assert!(
        left > 0,
        "the purge finished before the kill; nothing was interrupted"
    );
    let pool = sqlx::PgPool::connect(&source.database_url()).await.unwrap();
    let jobs: i64 = sqlx::query_scalar("SELECT count(*) FROM purge_job")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(jobs, 1, "the drop did not record its purge");

    source.spawn().await;
    for _ in 0..400 {
        let jobs: i64 = sqlx::query_scalar("SELECT count(*) FROM purge_job")
            .fetch_one(&pool)
            .await
            .unwrap();
        if jobs == 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(
        data_files(&source),
        0,
        "{left} files were left at the kill; some still are"
    );
    let everything = common::files_under(&source.warehouse);
    assert!(everything.is_empty(), "the purge left {everything:?}");
    pool.close().await;
}
