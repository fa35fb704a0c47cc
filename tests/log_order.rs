//! The update log's order without a lock held through COMMIT: while 32 writers commit to 100
//! tables (single-table commits and three-table transactions), a reader paging
//! `GET /management/v1/log?after=` without pause is given every entry exactly once, in `seq`
//! order, and each table's versions run 1, 2, 3, ... along the log without a gap. The writers
//! go through two instances on one database.

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use common::TestFloe;
use serde_json::json;

const WRITERS: usize = 32;
const TABLES: usize = 100;
const COMMITS_PER_WRITER: usize = 15;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reader_paging_under_32_writers_skips_nothing_and_repeats_nothing() {
    let floe = TestFloe::start().await;
    floe.create_namespace(&["ns"]).await;
    for t in 0..TABLES {
        floe.create_table("ns", &format!("t{t}")).await;
    }
    let pool = sqlx::PgPool::connect(floe.database_url()).await.unwrap();
    // A second instance on the same database: the per-table order must hold across instances,
    // not only behind one process's table locks.
    let second = floe::server::start(&floe.settings, Arc::new(floe::catalog::Faults::default()))
        .await
        .unwrap();
    let bases = [floe.server.base_url(), second.base_url()];
    let writers_done = AtomicBool::new(false);

    let writers = async {
        let writer = |w: usize| {
            let (http, base) = (&floe.http, &bases[w % 2]);
            let send = async move |path: String, body: serde_json::Value, status: u16| {
                let response = http
                    .post(format!("{base}{path}"))
                    .json(&body)
                    .send()
                    .await
                    .unwrap();
                let got = response.status().as_u16();
                assert_eq!(got, status, "{path}: {}", response.text().await.unwrap());
            };
            async move {
                for i in 0..COMMITS_PER_WRITER {
                    let table = |k: usize| format!("t{}", (w * 7 + i * 13 + k * 31) % TABLES);
                    let updates = json!([{ "action": "set-properties",
                        "updates": { format!("w{w}"): i.to_string() } }]);
                    if i % 5 == 4 {
                        // A multi-table transaction: its tables' entries too stay in version
                        // order along the log.
                        let changes: Vec<_> = (0..3)
                            .map(|k| {
                                json!({ "identifier": { "namespace": ["ns"], "name": table(k) },
                                "requirements": [], "updates": updates })
                            })
                            .collect();
                        let body = json!({ "table-changes": changes });
                        send("/v1/wh/transactions/commit".into(), body, 204).await;
                    } else {
                        let body = json!({ "requirements": [], "updates": updates });
                        let path = format!("/v1/wh/namespaces/ns/tables/{}", table(0));
                        send(path, body, 200).await;
                    }
                }
            }
        };
        futures::future::join_all((0..WRITERS).map(writer)).await;
        writers_done.store(true, Ordering::SeqCst);
    };

    let reader = async {
        let (mut seen, mut after) = (Vec::<i64>::new(), 0i64);
        let mut writers_done_at: Option<Instant> = None;
        loop {
            let page = floe
                .get(&format!("/management/v1/log?after={after}&limit=1000"))
                .await
                .expect(200);
            let entries = page["entries"].as_array().unwrap();
            for entry in entries {
                seen.push(entry["seq"].as_i64().unwrap());
            }
            if let Some(next) = page["next-after"].as_i64() {
                after = next;
            }
            if writers_done.load(Ordering::SeqCst) && entries.is_empty() {
                // Every writer's commits are acknowledged: once the log holds nothing the reader
                // lacks, it is done. One that skipped entries never gets there; the comparison
                // below says which.
                let total: i64 = sqlx::query_scalar("SELECT count(*) FROM commit_log")
                    .fetch_one(&pool)
                    .await
                    .unwrap();
                let done_at = *writers_done_at.get_or_insert_with(Instant::now);
                if seen.len() as i64 >= total || done_at.elapsed() > Duration::from_secs(10) {
                    return seen;
                }
            }
        }
    };

    let ((), seen) = tokio::join!(writers, reader);
    let log: Vec<i64> = sqlx::query_scalar("SELECT seq FROM commit_log ORDER BY seq")
        .fetch_all(&pool)
        .await
        .unwrap();
    let transactions = WRITERS * (COMMITS_PER_WRITER / 5);
    assert_eq!(
        log.len(),
        1 + TABLES + WRITERS * COMMITS_PER_WRITER + 2 * transactions,
        "one namespace, the creates, every commit and three entries per transaction"
    );
    assert_eq!(seen.len(), log.len(), "skipped or repeated entries");
    assert_eq!(seen, log, "the reader's sequence differs from the log");

    let versions: Vec<(String, Vec<i64>)> = sqlx::query_as(
        "SELECT table_name, array_agg(table_version ORDER BY seq) FROM commit_log
         WHERE table_id IS NOT NULL GROUP BY table_name",
    )
    .fetch_all(&pool)
    .await
    .unwrap();
    assert_eq!(versions.len(), TABLES);
    for (table, versions) in versions {
        let expected: Vec<i64> = (1..=versions.len() as i64).collect();
        assert_eq!(versions, expected, "versions of {table}");
    }
    pool.close().await;
    second.stop().await;
    floe.server.stop().await;
}

/// The log waits only for its own database's transactions (`floe_log_horizon`): a transaction
/// holding an id in another database of the cluster (another application's, a report's) does not
/// hide an entry committed after it began, while one in floe's own database does until it ends.
#[tokio::test]
async fn only_this_databases_running_transactions_hold_the_log_back() {
    let floe = TestFloe::start().await;
    floe.create_namespace(&["ns"]).await;
    let own = sqlx::PgPool::connect(floe.database_url()).await.unwrap();
    let other = sqlx::PgPool::connect(&common::new_database().await)
        .await
        .unwrap();
    let names = |log: Vec<serde_json::Value>| -> Vec<String> {
        log.iter()
            .filter_map(|e| e["table-name"].as_str().map(str::to_string))
            .collect()
    };
    let holding_an_id = async |pool: &sqlx::PgPool| {
        let mut tx = pool.begin().await.unwrap();
        sqlx::query("SELECT pg_current_xact_id()")
            .execute(&mut *tx)
            .await
            .unwrap();
        tx
    };

    let elsewhere = holding_an_id(&other).await;
    floe.create_table("ns", "after_elsewhere").await;
    assert_eq!(
        names(floe.log().await),
        ["after_elsewhere"],
        "another database's open transaction held the log back"
    );
    elsewhere.rollback().await.unwrap();

    let here = holding_an_id(&own).await;
    floe.create_table("ns", "after_here").await;
    assert_eq!(
        names(floe.log().await),
        ["after_elsewhere"],
        "an entry above a running transaction of this database was given out"
    );
    here.rollback().await.unwrap();
    assert_eq!(names(floe.log().await), ["after_elsewhere", "after_here"]);
    own.close().await;
    other.close().await;
    floe.server.stop().await;
}
