//! The commit path: conflicts, atomic transactions, crash paths, restarts and bad input.

mod common;

use std::sync::Arc;

use common::{TableId, TestFloe, append_commit};
use floe::pgtemp::{PgCluster, PgOptions};
use serde_json::{Value, json};
use tokio::sync::Barrier;

async fn table_id(floe: &TestFloe, table: &str) -> TableId {
    TableId::of(
        &floe
            .get(&format!("/v1/wh/namespaces/ns/tables/{table}"))
            .await
            .expect(200),
    )
}

/// floe with table `ns.t`, and the table's UUID and location.
async fn floe_with_table() -> (TestFloe, TableId) {
    let floe = TestFloe::start().await;
    floe.create_namespace(&["ns"]).await;
    floe.create_table("ns", "t").await;
    let uuid = table_id(&floe, "t").await;
    (floe, uuid)
}

fn versions_of(log: &[Value], uuid: &str) -> Vec<i64> {
    log.iter()
        .filter(|e| e["table-uuid"] == uuid)
        .map(|e| e["table-version"].as_i64().unwrap())
        .collect()
}

#[tokio::test]
async fn empty_commit_succeeds_and_writes_nothing() {
    let floe = TestFloe::start().await;
    floe.create_namespace(&["ns"]).await;
    let created = floe.create_table("ns", "t").await;
    let uuid = created["metadata"]["table-uuid"].as_str().unwrap();
    let files = floe.warehouse_files();
    let log_len = floe.log().await.len();
    // As the Java client sends it after an expire_snapshots that expired nothing: no identifier.
    let reply = floe
        .post(
            "/v1/wh/namespaces/ns/tables/t",
            json!({
                "requirements": [{"type": "assert-table-uuid", "uuid": uuid}], "updates": []
            }),
        )
        .await
        .expect(200);
    assert_eq!(reply["metadata-location"], created["metadata-location"]);
    assert_eq!(floe.warehouse_files(), files);
    assert_eq!(floe.log().await.len(), log_len);
    // An identifier that disagrees with the path is refused.
    floe.post(
        "/v1/wh/namespaces/ns/tables/t",
        json!({
            "identifier": {"namespace": ["ns"], "name": "other"}, "requirements": [], "updates": []
        }),
    )
    .await
    .expect(400);
}

#[tokio::test]
async fn stale_ref_requirement_conflicts() {
    let (floe, uuid) = floe_with_table().await;
    floe.commit("ns", "t", append_commit(&uuid, None, 1, 1))
        .await
        .expect(200);
    let stale = floe
        .commit("ns", "t", append_commit(&uuid, None, 2, 2))
        .await;
    assert_eq!(stale.error_type(), "CommitFailedException");
    stale.expect(409);
    let other = TableId {
        uuid: "00000000-0000-0000-0000-000000000001".to_string(),
        ..uuid.clone()
    };
    let wrong_uuid = append_commit(&other, Some(1), 3, 2);
    floe.commit("ns", "t", wrong_uuid).await.expect(409);
    assert_eq!(versions_of(&floe.log().await, &uuid.uuid), [1, 2]);
}

/// Two writers race on one table for many rounds: exactly one wins each round, and the log has
/// every winning commit once, with versions 1..=n+1 and no gap.
#[tokio::test]
async fn concurrent_committers_to_one_table_serialise() {
    const ROUNDS: i64 = 25;
    let floe = Arc::new(TestFloe::start().await);
    floe.create_namespace(&["ns"]).await;
    floe.create_table("ns", "t").await;
    let uuid = table_id(&floe, "t").await;
    let barrier = Arc::new(Barrier::new(2));
    let mut tasks = Vec::new();
    for writer in 0..2i64 {
        let (floe, barrier, uuid) = (floe.clone(), barrier.clone(), uuid.clone());
        tasks.push(tokio::spawn(async move {
            let mut wins = Vec::new();
            for round in 0..ROUNDS {
                let current = floe.get("/v1/wh/namespaces/ns/tables/t").await.expect(200);
                let parent = current["metadata"]["current-snapshot-id"].as_i64();
                barrier.wait().await;
                let id = 1000 * (round + 1) + writer;
                let reply = floe
                    .commit("ns", "t", append_commit(&uuid, parent, id, round + 1))
                    .await;
                match reply.status.as_u16() {
                    200 => wins.push(round),
                    409 => {}
                    other => panic!("unexpected {other}: {}", reply.body),
                }
                barrier.wait().await;
            }
            wins
        }));
    }
    let mut wins = Vec::new();
    for task in tasks {
        wins.extend(task.await.unwrap());
    }
    wins.sort();
    assert_eq!(
        wins,
        (0..ROUNDS).collect::<Vec<_>>(),
        "exactly one winner per round"
    );
    let log = floe.log().await;
    assert_eq!(
        versions_of(&log, &uuid.uuid),
        (1..=ROUNDS + 1).collect::<Vec<_>>()
    );
    let seqs: Vec<i64> = log.iter().map(|e| e["seq"].as_i64().unwrap()).collect();
    assert!(seqs.windows(2).all(|w| w[0] < w[1]));
    let loaded = floe.get("/v1/wh/namespaces/ns/tables/t").await.expect(200);
    assert_eq!(
        loaded["metadata"]["snapshots"].as_array().unwrap().len() as i64,
        ROUNDS
    );
}

/// Writers on two instances commit to one table at once. Each instance queues its own commits,
/// so the two instances' commits race between reading the row and writing it: the loser of each
/// race plans again on the winner's state. Every commit lands, versions run without a gap, and the
/// metadata files of the attempts that lost are removed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn commits_through_two_instances_to_one_table_all_land() {
    const WRITERS: usize = 8;
    const COMMITS: usize = 10;
    let (floe, uuid) = floe_with_table().await;
    let second = floe::server::start(&floe.settings, Arc::new(floe::catalog::Faults::default()))
        .await
        .unwrap();
    let bases = [floe.server.base_url(), second.base_url()];
    let files_before = floe.warehouse_files();
    let writer = async |w: usize| {
        for i in 0..COMMITS {
            let body = json!({ "requirements": [], "updates": [{ "action": "set-properties",
                "updates": { format!("w{w}"): i.to_string() } }] });
            let reply = floe
                .http
                .post(format!("{}/v1/wh/namespaces/ns/tables/t", bases[w % 2]))
                .json(&body)
                .send()
                .await
                .unwrap();
            let status = reply.status().as_u16();
            assert_eq!(status, 200, "{}", reply.text().await.unwrap());
        }
    };
    futures::future::join_all((0..WRITERS).map(writer)).await;

    let commits = (WRITERS * COMMITS) as i64;
    assert_eq!(
        versions_of(&floe.log().await, &uuid.uuid),
        (1..=commits + 1).collect::<Vec<_>>()
    );
    let loaded = floe.get("/v1/wh/namespaces/ns/tables/t").await.expect(200);
    for w in 0..WRITERS {
        assert_eq!(
            loaded["metadata"]["properties"][format!("w{w}")],
            (COMMITS - 1).to_string(),
            "writer {w}'s last commit is in the table"
        );
    }
    assert_eq!(
        floe.warehouse_files(),
        files_before + commits as usize,
        "one metadata file per commit that landed, none from attempts that lost a race"
    );
}

#[tokio::test]
async fn multi_table_transaction_is_all_or_nothing() {
    let floe = TestFloe::start().await;
    floe.create_namespace(&["ns"]).await;
    floe.create_table("ns", "a").await;
    floe.create_table("ns", "b").await;
    let (ua, ub) = (table_id(&floe, "a").await, table_id(&floe, "b").await);
    let change = |table: &str, uuid: &TableId, parent: Option<i64>, id: i64| {
        let mut c = append_commit(uuid, parent, id, 1);
        c["identifier"] = json!({"namespace": ["ns"], "name": table});
        c
    };
    let before_log = floe.log().await.len();
    let files = floe.warehouse_files();
    // b's requirement is stale (main does not point at 77): nothing of the transaction may apply.
    let reply = floe
        .post(
            "/v1/wh/transactions/commit",
            json!({"table-changes": [
                change("a", &ua, None, 1), change("b", &ub, Some(77), 2)
            ]}),
        )
        .await;
    reply.expect(409);
    assert_eq!(floe.log().await.len(), before_log);
    assert_eq!(
        floe.warehouse_files(),
        files,
        "metadata files of the failed transaction remain"
    );
    let a = floe.get("/v1/wh/namespaces/ns/tables/a").await.expect(200);
    assert!(a["metadata"]["current-snapshot-id"].is_null());

    floe.post(
        "/v1/wh/transactions/commit",
        json!({"table-changes": [
            change("a", &ua, None, 1), change("b", &ub, None, 2)
        ]}),
    )
    .await
    .expect(204);
    let log = floe.log().await;
    let tail = &log[log.len() - 2..];
    assert_eq!(tail[0]["txn-group"], tail[1]["txn-group"]);
    assert_eq!(versions_of(&log, &ua.uuid), [1, 2]);
    assert_eq!(versions_of(&log, &ub.uuid), [1, 2]);
    // The same table twice in one transaction is refused.
    floe.post(
        "/v1/wh/transactions/commit",
        json!({"table-changes": [
            change("a", &ua, Some(1), 3), change("a", &ua, Some(1), 4)
        ]}),
    )
    .await
    .expect(400);
}

/// A failure after the metadata file is written and before COMMIT: no log row, no pointer change,
/// the file is removed, the client gets a 5xx.
#[tokio::test]
async fn injected_failure_before_commit_changes_nothing() {
    let floe = TestFloe::start().await;
    floe.create_namespace(&["ns"]).await;
    let created = floe.create_table("ns", "t").await;
    let uuid = table_id(&floe, "t").await;
    let files = floe.warehouse_files();
    let log_len = floe.log().await.len();
    floe.faults
        .fail_before_commit
        .store(true, std::sync::atomic::Ordering::SeqCst);
    let reply = floe
        .commit("ns", "t", append_commit(&uuid, None, 1, 1))
        .await;
    assert!(reply.status.is_server_error());
    reply.expect(500);
    let failed_create = floe.create_table_reply("ns", "t2").await;
    assert!(failed_create.status.is_server_error());
    floe.faults
        .fail_before_commit
        .store(false, std::sync::atomic::Ordering::SeqCst);

    assert_eq!(floe.log().await.len(), log_len);
    assert_eq!(floe.warehouse_files(), files);
    let loaded = floe.get("/v1/wh/namespaces/ns/tables/t").await.expect(200);
    assert_eq!(loaded["metadata-location"], created["metadata-location"]);
    floe.get("/v1/wh/namespaces/ns/tables/t2").await.expect(404);
    // And the same commit goes through afterwards.
    floe.commit("ns", "t", append_commit(&uuid, None, 1, 1))
        .await
        .expect(200);
}

#[tokio::test]
async fn catalog_and_log_survive_a_restart() {
    let (floe, uuid) = floe_with_table().await;
    floe.commit("ns", "t", append_commit(&uuid, None, 1, 1))
        .await
        .expect(200);
    let before = floe.get("/v1/wh/namespaces/ns/tables/t").await.expect(200);
    let log_before = floe.log().await;

    let floe = floe.restart().await;
    assert_eq!(
        floe.get("/v1/wh/namespaces/ns/tables/t").await.expect(200),
        before
    );
    assert_eq!(floe.log().await, log_before);
    floe.commit("ns", "t", append_commit(&uuid, Some(1), 2, 2))
        .await
        .expect(200);
    assert_eq!(versions_of(&floe.log().await, &uuid.uuid), [1, 2, 3]);
}

#[tokio::test]
async fn bad_input_gets_error_models_and_changes_nothing() {
    let (floe, uuid) = floe_with_table().await;
    let log_len = floe.log().await.len();
    let raw = |body: &'static str| {
        floe.http
            .post(floe.url("/v1/wh/namespaces/ns/tables/t"))
            .header("content-type", "application/json")
            .body(body)
            .send()
    };
    for body in ["{not json", "{\"requirements\": []}", "[]"] {
        let reply = raw(body).await.unwrap();
        assert_eq!(reply.status(), 400, "{body}");
        let model: Value = reply.json().await.unwrap();
        assert_eq!(model["error"]["code"], 400);
        assert_eq!(model["error"]["type"], "BadRequestException");
    }
    floe.post(
        "/v1/wh/namespaces/ns/tables/t",
        json!({"requirements": [], "updates": [{"action": "explode"}]}),
    )
    .await
    .expect(400);
    floe.post(
        "/v1/wh/namespaces/ns/tables/t",
        json!({"requirements": [{"type": "assert-mood"}], "updates": []}),
    )
    .await
    .expect(400);
    floe.post(
        "/v1/wh/namespaces/ns/tables/t",
        json!({"requirements": [], "updates": [
            {"action": "set-current-schema", "schema-id": 42}
        ]}),
    )
    .await
    .expect(400);
    floe.post(
        "/v1/wh/namespaces/ns/tables/t",
        json!({"requirements": [], "updates": [
            {"action": "set-location", "location": "file:///etc"}
        ]}),
    )
    .await
    .expect(400);
    floe.get("/v1/nowhere/namespaces").await.expect(404);
    floe.get("/v1/wh/namespaces/ghost/tables").await.expect(404);
    floe.commit("ns", "ghost", append_commit(&uuid, None, 1, 1))
        .await
        .expect(404);
    floe.post("/v1/wh/namespaces", json!({"namespace": [""]}))
        .await
        .expect(400);
    floe.post("/v1/wh/namespaces", json!({"namespace": ["a/b"]}))
        .await
        .expect(400);
    floe.post("/v1/wh/namespaces", json!({"namespace": ["tab\there"]}))
        .await
        .expect(400);
    floe.post(
        "/v1/wh/namespaces/ns/tables",
        json!({"name": "bad\u{1}", "schema": common::simple_schema()}),
    )
    .await
    .expect(400);
    floe.get("/v1/wh/namespaces?pageSize=0").await.expect(400);
    floe.delete("/v1/wh/namespaces/ns/tables/t?purgeRequested=maybe")
        .await
        .expect(400);
    floe.get("/management/v1/log?limit=0").await.expect(400);
    floe.call(reqwest::Method::PUT, "/v1/wh/namespaces", None)
        .await
        .expect(405);
    // Bodies over the limit (1 MiB in tests) get 413.
    let huge = json!({"requirements": [], "updates": [
        {"action": "set-properties", "updates": {"k": "x".repeat(2 * 1024 * 1024)}}
    ]});
    floe.post("/v1/wh/namespaces/ns/tables/t", huge)
        .await
        .expect(413);

    assert_eq!(floe.log().await.len(), log_len, "bad input changed the log");
    let loaded = floe.get("/v1/wh/namespaces/ns/tables/t").await.expect(200);
    assert!(loaded["metadata"]["properties"]["k"].is_null());
    assert_eq!(loaded["metadata"]["current-schema-id"], 0);
}

/// PostgreSQL stops: requests get 503 ErrorModels; it returns: floe recovers by itself.
#[tokio::test]
async fn lost_database_gives_503_and_recovers() {
    let dir = tempfile::tempdir().unwrap();
    let cluster = tokio::task::spawn_blocking({
        let path = dir.path().join("pg");
        move || {
            PgCluster::start(
                &path,
                &PgOptions {
                    fast_unsafe: true,
                    ..PgOptions::default()
                },
            )
            .unwrap()
        }
    })
    .await
    .unwrap();
    cluster.ensure_database("floe").await.unwrap();
    let warehouse_dir = tempfile::tempdir().unwrap();
    let mut settings = common::settings(&cluster.url("floe"), warehouse_dir.path());
    settings.database.acquire_timeout_ms = 1000;
    let floe = TestFloe::start_with(settings, warehouse_dir).await;
    floe.create_namespace(&["ns"]).await;

    let cluster = tokio::task::spawn_blocking(move || {
        cluster.stop().unwrap();
        cluster
    })
    .await
    .unwrap();
    let reply = floe.get("/v1/wh/namespaces/ns").await;
    assert_eq!(reply.error_type(), "ServiceUnavailableException");
    reply.expect(503);
    floe.post("/v1/wh/namespaces", json!({"namespace": ["down"]}))
        .await
        .expect(503);

    let cluster = tokio::task::spawn_blocking(move || {
        cluster.restart().unwrap();
        cluster
    })
    .await
    .unwrap();
    floe.get("/v1/wh/namespaces/ns").await.expect(200);
    floe.create_namespace(&["up"]).await;
    floe.get("/v1/wh/namespaces/down").await.expect(404);
    tokio::task::spawn_blocking(move || cluster.stop().unwrap())
        .await
        .unwrap();
}

/// When PostgreSQL drops every connection at once (a restart, an operator terminating backends),
/// at most the request that first meets a dead connection answers 503: the connections that sat
/// idle in the pool meanwhile are tested before their next use instead of each failing a request.
/// (The pool tests a connection idle for over a second anyway; this runs well within that.)
#[tokio::test]
async fn dropped_connections_fail_at_most_one_request() {
    let url = common::new_database().await;
    let warehouse_dir = tempfile::tempdir().unwrap();
    let floe =
        TestFloe::start_with(common::settings(&url, warehouse_dir.path()), warehouse_dir).await;
    floe.create_namespace(&["ns"]).await;
    let warm = futures::future::join_all((0..8).map(|_| floe.get("/v1/wh/namespaces/ns"))).await;
    for reply in warm {
        reply.expect(200);
    }

    let admin = sqlx::PgPool::connect(&url).await.unwrap();
    let terminated: i64 = sqlx::query_scalar(
        "SELECT count(*) FILTER (WHERE pg_terminate_backend(pid)) FROM pg_stat_activity \
         WHERE datname = current_database() AND application_name = 'floe' \
         AND pid <> pg_backend_pid()",
    )
    .fetch_one(&admin)
    .await
    .unwrap();
    assert!(terminated >= 2, "the pool held {terminated} connections");

    let mut unavailable = 0;
    for _ in 0..terminated + 2 {
        let reply = floe.get("/v1/wh/namespaces/ns").await;
        match reply.status.as_u16() {
            200 => {}
            503 => unavailable += 1,
            other => panic!("unexpected {other}: {:?}", reply.body),
        }
    }
    assert!(
        unavailable <= 1,
        "{unavailable} requests met a dead pooled connection"
    );
    admin.close().await;
}

/// Several instances migrating one database at once each succeed, and migrations apply once.
#[tokio::test]
async fn concurrent_migrations_are_safe() {
    let url = common::new_database().await;
    let mut tasks = Vec::new();
    for _ in 0..4 {
        let url = url.clone();
        tasks.push(tokio::spawn(async move {
            let pool = floe::db::connect_lazy(&url, &Default::default()).unwrap();
            floe::db::migrate(&pool).await
        }));
    }
    for task in tasks {
        task.await.unwrap().expect("migrate");
    }
    let pool = floe::db::connect_lazy(&url, &Default::default()).unwrap();
    let applied: i64 = sqlx::query_scalar("SELECT count(*) FROM _sqlx_migrations")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(applied as usize, floe::db::MIGRATOR.iter().count());
}

/// floe's connections ask PostgreSQL to probe them when idle, so that a session whose floe host
/// vanished (and the change locks an intercepted commit holds across its forward) ends within
/// about a minute rather than the kernel's two hours.
#[tokio::test]
async fn connections_are_probed_so_a_vanished_host_lets_go_of_its_locks() {
    let url = common::new_database().await;
    let pool = floe::db::connect_lazy(&url, &Default::default()).unwrap();
    for (setting, expected) in [
        ("tcp_keepalives_idle", "30"),
        ("tcp_keepalives_interval", "10"),
        ("tcp_keepalives_count", "3"),
    ] {
        let value: String = sqlx::query_scalar("SELECT current_setting($1)")
            .bind(setting)
            .fetch_one(&pool)
            .await
            .unwrap();
        assert_eq!(value, expected, "{setting}");
    }
}

#[test]
fn management_openapi_document_is_checked_in() {
    let checked_in = include_str!("../openapi/management.json");
    assert_eq!(
        checked_in.trim(),
        floe::http::management::openapi_json().trim(),
        "openapi/management.json is stale: regenerate it with `cargo run -- openapi > openapi/management.json`"
    );
}

/// A commit holds only its own table's row lock: while table `a` is locked, `b` commits at once
/// and `a`'s commit waits for the lock.
#[tokio::test]
async fn commits_to_different_tables_do_not_wait_for_each_other() {
    let floe = Arc::new(TestFloe::start().await);
    floe.create_namespace(&["ns"]).await;
    floe.create_table("ns", "a").await;
    floe.create_table("ns", "b").await;
    let (ua, ub) = (table_id(&floe, "a").await, table_id(&floe, "b").await);

    let pool = sqlx::PgPool::connect(floe.database_url()).await.unwrap();
    let mut holder = pool.begin().await.unwrap();
    sqlx::query("SELECT 1 FROM iceberg_table WHERE name = 'a' FOR UPDATE")
        .execute(&mut *holder)
        .await
        .unwrap();

    let b = tokio::time::timeout(
        std::time::Duration::from_secs(10),
        floe.commit("ns", "b", append_commit(&ub, None, 2, 1)),
    )
    .await
    .expect("a commit to b waited for a's lock");
    b.expect(200);

    let waiting = tokio::spawn({
        let floe = floe.clone();
        async move {
            floe.commit("ns", "a", append_commit(&ua, None, 1, 1))
                .await
                .status
        }
    });
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    assert!(
        !waiting.is_finished(),
        "a's commit did not wait for its row lock"
    );
    holder.rollback().await.unwrap();
    assert_eq!(waiting.await.unwrap(), 200);
    pool.close().await;
}

/// Each commit NOTIFYs `floe_log` after its COMMIT, not inside its transaction, with the
/// committing instance's id: other instances' replicators wake on it. A commit that fails before
/// COMMIT notifies nobody.
#[tokio::test]
async fn commits_notify_listeners_after_they_commit() {
    let (floe, uuid) = floe_with_table().await;
    let instance = floe.server.catalog.log_wake().instance().to_string();
    let mut listener = sqlx::postgres::PgListener::connect(floe.database_url())
        .await
        .unwrap();
    listener.listen(floe::log::NOTIFY_CHANNEL).await.unwrap();

    floe.commit("ns", "t", append_commit(&uuid, None, 1, 1))
        .await
        .expect(200);
    let notification = tokio::time::timeout(std::time::Duration::from_secs(10), listener.recv())
        .await
        .expect("no NOTIFY after a commit")
        .unwrap();
    assert_eq!(notification.payload(), instance);

    floe.faults
        .fail_before_commit
        .store(true, std::sync::atomic::Ordering::SeqCst);
    floe.commit("ns", "t", append_commit(&uuid, Some(1), 2, 2))
        .await
        .expect(500);
    floe.faults
        .fail_before_commit
        .store(false, std::sync::atomic::Ordering::SeqCst);
    let quiet = tokio::time::timeout(std::time::Duration::from_millis(500), listener.recv()).await;
    assert!(quiet.is_err(), "the failed commit notified: {quiet:?}");
    floe.commit("ns", "t", append_commit(&uuid, Some(1), 3, 2))
        .await
        .expect(200);
    let next = tokio::time::timeout(std::time::Duration::from_secs(10), listener.recv())
        .await
        .expect("no NOTIFY after the second commit")
        .unwrap();
    assert_eq!(next.payload(), instance);
}
