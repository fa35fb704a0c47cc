//! Replication into an S3 warehouse served by a real S3-compatible server (s3s-fs, which checks
//! SigV4 signatures): the replica region's own warehouse is on S3, and the source writes replica
//! files there with the destination's own keys. s3s-fs keeps objects as files under its root, so the
//! test can read what landed.

mod common;

use std::path::PathBuf;
use std::time::Duration;

use common::iceberg_files::files_mentioning;
use common::s3::{ACCESS_KEY, BUCKET, S3Server, SECRET_KEY, objects, s3_settings, start_s3};
use common::{TestFloe, replication_completed, snapshot_ids};
use floe::bench::files::SnapshotWriter;
use serde_json::{Value, json};

const TOKEN: &str = "primary-to-replica-token";

/// A primary on the local filesystem and a replica region whose warehouse is `s3://lake/replica`.
async fn regions(server: &S3Server, peer_secret: &str) -> (TestFloe, TestFloe) {
    let primary = TestFloe::start_region("primary", &[]).await;
    let url = common::new_database().await;
    let dir = tempfile::tempdir().unwrap();
    let mut settings = common::settings(&url, dir.path());
    settings.region = "replica".to_string();
    settings.warehouses[0].root = format!("s3://{BUCKET}/replica");
    settings.warehouses[0].s3 = Some(s3_settings(server, SECRET_KEY));
    settings.replication.accept = vec![floe::config::AcceptedPeer {
        region: "primary".to_string(),
        token: TOKEN.into(),
    }];
    let replica = TestFloe::start_with(settings, dir).await;
    let s3 = serde_json::to_value(s3_settings(server, peer_secret)).unwrap();
    primary
        .put(
            "/management/v1/peers/replica",
            json!({ "region": "replica", "base-url": replica.server.base_url(), "credential": TOKEN,
                "warehouses": [{ "warehouse": "wh", "storage-root": format!("s3://{BUCKET}/replica"),
                                 "s3": s3 }] }),
        )
        .await
        .expect(200);
    (primary, replica)
}

async fn append(floe: &TestFloe, files: &mut SnapshotWriter, size: usize) -> i64 {
    let loaded = floe.get("/v1/wh/namespaces/db/tables/t").await.expect(200);
    let next = common::prepare_append(&loaded, files, &common::host_files(), 2, size).await;
    floe.commit("db", "t", next.body).await.expect(200);
    next.snapshot_id
}

async fn status_until(floe: &TestFloe, done: impl Fn(&Value) -> bool) -> Value {
    let mut last = Value::Null;
    for _ in 0..400 {
        last = floe
            .get("/management/v1/tables/wh/db/t/replication")
            .await
            .expect(200);
        if done(&last) {
            return last;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("replication did not reach the expected state: {last}");
}

#[tokio::test]
async fn replicates_from_a_local_warehouse_into_s3_with_paths_rewritten() {
    let Some(server) = start_s3().await else {
        return;
    };
    let (primary, replica) = regions(&server, SECRET_KEY).await;
    primary.create_namespace(&["db"]).await;
    primary.create_table("db", "t").await;
    let mut files = SnapshotWriter::default();
    append(&primary, &mut files, 4096).await;
    // Larger than one multipart part (8 MiB): uploaded in parts.
    append(&primary, &mut files, 9 * 1024 * 1024).await;
    primary
        .post(
            "/management/v1/replication-rules",
            json!({ "warehouse": "wh", "destinations": [{ "peer": "replica", "warehouse": "wh" }] }),
        )
        .await
        .expect(201);
    status_until(&primary, replication_completed).await;
    let last = append(&primary, &mut files, 1024).await;
    status_until(&primary, replication_completed).await;

    let source = primary
        .get("/v1/wh/namespaces/db/tables/t")
        .await
        .expect(200);
    let copy = replica
        .get("/v1/wh/namespaces/db/tables/t")
        .await
        .expect(200);
    assert_eq!(copy["metadata"]["current-snapshot-id"], last);
    let (mut a, mut b) = (snapshot_ids(&source), snapshot_ids(&copy));
    a.sort_unstable();
    b.sort_unstable();
    assert_eq!(a, b);
    assert!(
        copy["metadata-location"]
            .as_str()
            .unwrap()
            .starts_with(&format!("s3://{BUCKET}/replica/db/t-")),
        "{}",
        copy["metadata-location"]
    );
    // Every data file landed in the bucket at its full size, and no object names the source.
    let landed = objects(&server);
    let data: Vec<&PathBuf> = landed
        .iter()
        .filter(|p| p.extension().is_some_and(|e| e == "parquet"))
        .collect();
    assert_eq!(data.len(), 6, "{landed:?}");
    assert!(
        data.iter()
            .any(|p| std::fs::metadata(p).unwrap().len() == 9 * 1024 * 1024)
    );
    let source_root = primary.warehouse_dir.path().display().to_string();
    let leaks = files_mentioning(&server.root.path().join(BUCKET), &source_root);
    assert!(leaks.is_empty(), "{leaks:?}");
    // The secret is never returned.
    let peers = primary.get("/management/v1/peers").await.expect(200);
    assert!(!peers.to_string().contains(SECRET_KEY), "{peers}");
    assert_eq!(peers[0]["warehouses"][0]["s3"]["access_key_id"], ACCESS_KEY);
    primary.server.stop().await;
    replica.server.stop().await;
}

#[tokio::test]
async fn wrong_destination_credentials_fail_the_stream_clearly_and_write_nothing() {
    let Some(server) = start_s3().await else {
        return;
    };
    let (primary, replica) = regions(&server, "not-the-secret-at-all").await;
    primary.create_namespace(&["db"]).await;
    primary.create_table("db", "t").await;
    let mut files = SnapshotWriter::default();
    append(&primary, &mut files, 4096).await;
    primary
        .post(
            "/management/v1/replication-rules",
            json!({ "warehouse": "wh", "destinations": [{ "peer": "replica", "warehouse": "wh" }] }),
        )
        .await
        .expect(201);
    let status = status_until(&primary, |s| s["destinations"][0]["state"] == "failed").await;
    let failure = status["destinations"][0]["failure"]
        .as_str()
        .unwrap_or_default();
    assert!(failure.contains("refused access"), "{failure}");
    assert!(
        failure.contains("peer `replica` warehouse `wh`"),
        "{failure}"
    );
    assert!(
        failure.contains(&format!("s3://{BUCKET}/replica")),
        "{failure}"
    );
    // Nothing of the table reached the bucket.
    assert!(objects(&server).is_empty(), "{:?}", objects(&server));
    replica
        .get("/v1/wh/namespaces/db/tables/t")
        .await
        .expect(404);
    primary.server.stop().await;
    replica.server.stop().await;
}

/// A region whose warehouse `wh` is on S3 at `root`.
async fn s3_region(server: &S3Server, region: &str, root: &str, accept: bool) -> TestFloe {
    let url = common::new_database().await;
    let dir = tempfile::tempdir().unwrap();
    let mut settings = common::settings(&url, dir.path());
    settings.region = region.to_string();
    settings.warehouses[0].root = root.to_string();
    settings.warehouses[0].s3 = Some(s3_settings(server, SECRET_KEY));
    settings.replication.poll_interval_ms = 200;
    if accept {
        settings.replication.accept = vec![floe::config::AcceptedPeer {
            region: "primary".to_string(),
            token: TOKEN.into(),
        }];
    }
    TestFloe::start_with(settings, dir).await
}

#[tokio::test]
async fn replicates_from_s3_to_another_bucket_and_to_a_local_warehouse() {
    let Some(server) = start_s3().await else {
        return;
    };
    std::fs::create_dir_all(server.root.path().join("lake2")).unwrap();
    let primary = s3_region(&server, "primary", &format!("s3://{BUCKET}/src"), false).await;
    let in_bucket = s3_region(&server, "bucket-replica", "s3://lake2/replica", true).await;
    let on_disk = TestFloe::start_region("disk-replica", &[("primary", TOKEN)]).await;
    let s3 = serde_json::to_value(s3_settings(&server, SECRET_KEY)).unwrap();
    for (region, floe, warehouse) in [
        (
            "bucket-replica",
            &in_bucket,
            json!({ "warehouse": "wh",
            "storage-root": "s3://lake2/replica", "s3": s3 }),
        ),
        (
            "disk-replica",
            &on_disk,
            json!({ "warehouse": "wh",
            "storage-root": on_disk.warehouse_root() }),
        ),
    ] {
        primary
            .put(
                &format!("/management/v1/peers/{region}"),
                json!({ "region": region, "base-url": floe.server.base_url(),
                        "credential": TOKEN, "warehouses": [warehouse] }),
            )
            .await
            .expect(200);
    }
    primary.create_namespace(&["db"]).await;
    primary.create_table("db", "t").await;
    // The source's files are objects in the source bucket, uploaded as a writer would.
    let storage = floe::storage::S3Storage::new(
        &s3_settings(&server, SECRET_KEY),
        floe::storage::Location::parse(&format!("s3://{BUCKET}")).unwrap(),
    )
    .await;
    let mut files = SnapshotWriter::default();
    let mut last = 0;
    for _ in 0..2 {
        let loaded = primary
            .get("/v1/wh/namespaces/db/tables/t")
            .await
            .expect(200);
        let next = common::prepare_append(&loaded, &mut files, &storage, 2, 4096).await;
        last = next.snapshot_id;
        primary.commit("db", "t", next.body).await.expect(200);
    }
    primary
        .post(
            "/management/v1/replication-rules",
            json!({ "warehouse": "wh", "destinations": [
                { "peer": "bucket-replica", "warehouse": "wh" },
                { "peer": "disk-replica", "warehouse": "wh" }] }),
        )
        .await
        .expect(201);
    let status = status_until(&primary, replication_completed).await;
    assert_eq!(status["destinations"].as_array().unwrap().len(), 2);

    for replica in [&in_bucket, &on_disk] {
        let copy = replica
            .get("/v1/wh/namespaces/db/tables/t")
            .await
            .expect(200);
        assert_eq!(copy["metadata"]["current-snapshot-id"], last);
        assert_eq!(snapshot_ids(&copy).len(), 2);
    }
    let count_data = |dir: &std::path::Path| {
        common::files_under(dir)
            .into_iter()
            .filter(|p| p.extension().is_some_and(|e| e == "parquet"))
            .count()
    };
    // S3 to S3 (copied on the server's side) and S3 to a local directory (streamed).
    assert_eq!(count_data(&server.root.path().join("lake2")), 4);
    assert_eq!(count_data(on_disk.warehouse_dir.path()), 4);
    for dir in [
        server.root.path().join("lake2"),
        on_disk.warehouse_dir.path().to_path_buf(),
    ] {
        let leaks = files_mentioning(&dir, &format!("{BUCKET}/src"));
        assert!(leaks.is_empty(), "{leaks:?}");
    }
    for floe in [primary, in_bucket, on_disk] {
        floe.server.stop().await;
    }
}
