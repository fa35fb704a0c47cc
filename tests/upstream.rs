//! Proxy mode: floe in front of an independent Iceberg REST catalog (the Apache Iceberg
//! reference catalog, `common::java_catalog`), and in front of upstreams that misbehave
//! (nothing listening, no answer, answers that are not Iceberg's), served by plain sockets.

mod common;

use std::time::Duration;

use common::TestFloe;
use common::java_catalog::{self, JavaCatalog};
use floe::config::{Backend, Settings, UpstreamAuthMode, UpstreamSettings, WarehouseSettings};
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

fn upstream_settings(url: &str) -> UpstreamSettings {
    UpstreamSettings {
        timeout_ms: 5_000,
        // Off unless a test turns it on: it would catch up tables at times a test does not set.
        poll_interval_ms: 0,
        ..UpstreamSettings::new(url)
    }
}

/// floe with one builtin warehouse `wh` and one upstream warehouse `lake` in front of `upstream`.
async fn floe_in_front_of(upstream: UpstreamSettings, root: &std::path::Path) -> TestFloe {
    floe_in_front_of_with(upstream, root, |_| {}).await
}

/// As [`floe_in_front_of`], with `adjust` applied to floe's settings first.
async fn floe_in_front_of_with(
    upstream: UpstreamSettings,
    root: &std::path::Path,
    adjust: impl FnOnce(&mut Settings),
) -> TestFloe {
    let url = common::new_database().await;
    let own = tempfile::tempdir().unwrap();
    let mut settings = common::settings(&url, own.path());
    adjust(&mut settings);
    let mut lake = WarehouseSettings::builtin("lake", format!("file://{}", root.display()));
    lake.backend = Backend::Upstream;
    lake.upstream = Some(upstream);
    settings.warehouses.push(lake);
    TestFloe::start_with(settings, own).await
}

/// floe in front of `upstream` (as [`floe_in_front_of`]) with namespace `ns` made through it.
async fn floe_in_front_with_namespace(upstream: &JavaCatalog) -> TestFloe {
    let floe = floe_in_front_of(upstream_settings(&upstream.url), upstream.warehouse.path()).await;
    floe.post("/v1/lake/namespaces", json!({"namespace": ["ns"]}))
        .await
        .expect(200);
    floe
}

async fn upstream_get(catalog: &JavaCatalog, path: &str) -> (u16, Value) {
    let answer = reqwest::get(format!("{}{path}", catalog.url))
        .await
        .unwrap();
    let status = answer.status().as_u16();
    let text = answer.text().await.unwrap();
    (status, serde_json::from_str(&text).unwrap_or(Value::Null))
}

/// Namespaces and tables made, read, renamed and dropped through floe are the upstream's own:
/// the upstream, asked directly, agrees, and its ErrorModels reach the client as it sent them.
#[tokio::test]
async fn catalog_calls_pass_through_to_the_upstream() {
    let Some(upstream) = java_catalog::start().await else {
        return;
    };
    let floe = floe_in_front_of(upstream_settings(&upstream.url), upstream.warehouse.path()).await;

    let config = floe.get("/v1/config?warehouse=lake").await.expect(200);
    assert_eq!(config["overrides"]["prefix"], "lake", "{config}");
    let endpoints: Vec<&str> = config["endpoints"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e.as_str().unwrap())
        .collect();
    assert!(endpoints.contains(&"GET /v1/{prefix}/namespaces/{namespace}/tables/{table}"));
    assert!(endpoints.contains(&"POST /v1/{prefix}/transactions/commit"));

    floe.post(
        "/v1/lake/namespaces",
        json!({"namespace": ["sales"], "properties": {"owner": "ana"}}),
    )
    .await
    .expect(200);
    let (status, namespace) = upstream_get(&upstream, "/v1/namespaces/sales").await;
    assert_eq!(status, 200, "{namespace}");
    assert_eq!(namespace["properties"]["owner"], "ana");
    // The builtin warehouse beside it knows nothing of it.
    floe.get("/v1/wh/namespaces/sales").await.expect(404);

    let created = floe
        .post(
            "/v1/lake/namespaces/sales/tables",
            json!({"name": "orders", "schema": common::simple_schema()}),
        )
        .await
        .expect(200);
    let location = created["metadata-location"].as_str().unwrap().to_string();
    // The reference catalog spells its file URIs `file:/path`.
    let root = upstream.warehouse.path().to_str().unwrap();
    assert!(
        location.starts_with(&format!("file:{root}/")),
        "{location} is not in the upstream's warehouse {root}"
    );
    let loaded = floe
        .get("/v1/lake/namespaces/sales/tables/orders")
        .await
        .expect(200);
    assert_eq!(loaded["metadata-location"], location.as_str());
    let (status, direct) = upstream_get(&upstream, "/v1/namespaces/sales/tables/orders").await;
    assert_eq!(status, 200);
    assert_eq!(
        direct["metadata"]["table-uuid"],
        loaded["metadata"]["table-uuid"]
    );
    assert_eq!(
        floe.head("/v1/lake/namespaces/sales/tables/orders").await,
        204
    );

    let listed = floe
        .get("/v1/lake/namespaces/sales/tables")
        .await
        .expect(200);
    assert_eq!(
        listed["identifiers"],
        json!([{"namespace": ["sales"], "name": "orders"}])
    );

    let missing = floe.get("/v1/lake/namespaces/sales/tables/nope").await;
    assert_eq!(
        missing.error_type(),
        "NoSuchTableException",
        "{:?}",
        missing.body
    );
    missing.expect(404);

    floe.post(
        "/v1/lake/tables/rename",
        json!({"source": {"namespace": ["sales"], "name": "orders"},
               "destination": {"namespace": ["sales"], "name": "orders_v2"}}),
    )
    .await
    .expect(204);
    assert_eq!(
        upstream_get(&upstream, "/v1/namespaces/sales/tables/orders_v2")
            .await
            .0,
        200
    );
    floe.delete("/v1/lake/namespaces/sales/tables/orders_v2")
        .await
        .expect(204);
    assert_eq!(
        upstream_get(&upstream, "/v1/namespaces/sales/tables/orders_v2")
            .await
            .0,
        404
    );
}

fn set_property(key: &str, value: &str) -> Value {
    json!({"requirements": [], "updates": [{"action": "set-properties", "updates": {key: value}}]})
}

/// Writers committing through floe at once, to the same tables, some of their commits refused by
/// the upstream: each table's commits are forwarded one at a time (its change lock is held from
/// the intent to the settlement), every acknowledged one is logged once, in the order the
/// upstream made them, no refused one is, and no lock outlives its commit (the last commits,
/// made after the writers are done, do not wait).
#[tokio::test]
async fn concurrent_commits_through_floe_are_logged_once_each_in_order() {
    let Some(upstream) = java_catalog::start().await else {
        return;
    };
    let floe = floe_in_front_with_namespace(&upstream).await;
    let tables = ["t", "u"];
    for name in tables {
        floe.post(
            "/v1/lake/namespaces/ns/tables",
            json!({"name": name, "schema": common::simple_schema()}),
        )
        .await
        .expect(200);
    }
    const WRITERS: usize = 6;
    const COMMITS: usize = 4;
    let writer = |w: usize| {
        let floe = &floe;
        async move {
            let mut acknowledged = Vec::new();
            for i in 0..COMMITS {
                let table = tables[(w + i) % tables.len()];
                let path = format!("/v1/lake/namespaces/ns/tables/{table}");
                let value = format!("{w}-{i}");
                if i == 1 {
                    // Refused by the upstream: settled as failed, its locks given back.
                    let refused = floe
                        .post(
                            &path,
                            json!({"requirements": [{"type": "assert-table-uuid",
                                     "uuid": "00000000-0000-0000-0000-000000000000"}],
                                   "updates": [{"action": "set-properties",
                                                "updates": {"k": value}}]}),
                        )
                        .await;
                    refused.expect(409);
                    continue;
                }
                let answer = floe
                    .post(&path, set_property("k", &value))
                    .await
                    .expect(200);
                let location = answer["metadata-location"].as_str().unwrap().to_string();
                acknowledged.push((table, value, location));
            }
            acknowledged
        }
    };
    let acknowledged: Vec<_> = futures::future::join_all((0..WRITERS).map(writer))
        .await
        .into_iter()
        .flatten()
        .collect();
    assert_eq!(acknowledged.len(), WRITERS * (COMMITS - 1));
    let log = lake_log(&floe).await;
    for table in tables {
        let entries: Vec<Value> = log
            .iter()
            .filter(|e| e["table-name"] == table)
            .cloned()
            .collect();
        assert_eq!(entries[0]["kind"], "observe-table", "{entries:#?}");
        assert!(
            entries[1..].iter().all(|e| e["kind"] == "commit-table"),
            "{entries:#?}"
        );
        assert_chained(&entries);
        // Exactly the acknowledged commits, each once: the values they set, and the metadata
        // the upstream answered each with.
        let mut logged: Vec<(String, String)> = entries[1..]
            .iter()
            .map(|e| {
                (
                    e["changes"][0]["updates"]["k"]
                        .as_str()
                        .unwrap()
                        .to_string(),
                    e["new-metadata-location"].as_str().unwrap().to_string(),
                )
            })
            .collect();
        let mut expected: Vec<(String, String)> = acknowledged
            .iter()
            .filter(|(t, _, _)| *t == table)
            .map(|(_, value, location)| (value.clone(), location.clone()))
            .collect();
        logged.sort();
        expected.sort();
        assert_eq!(logged, expected);
        // In the upstream's order: the last entry is the table's state there.
        let (_, direct) =
            upstream_get(&upstream, &format!("/v1/namespaces/ns/tables/{table}")).await;
        assert_eq!(
            entries.last().unwrap()["new-metadata-location"],
            direct["metadata-location"]
        );
    }
    // No lock outlived its commit: a commit to both tables goes through at once.
    let answer = tokio::time::timeout(
        Duration::from_secs(10),
        floe.post(
            "/v1/lake/transactions/commit",
            set_property_of_t_and_u("after", "1"),
        ),
    )
    .await
    .expect("a table's lock outlived its commit");
    answer.expect(204);
    settled(floe.database_url()).await;
    let pool = sqlx::PgPool::connect(floe.database_url()).await.unwrap();
    let intents: Vec<(String, i64)> = sqlx::query_as(
        "SELECT state, count(*) FROM upstream_commit_intent GROUP BY state ORDER BY state",
    )
    .fetch_all(&pool)
    .await
    .unwrap();
    let acknowledged = i64::try_from(acknowledged.len()).unwrap();
    let refused = i64::try_from(WRITERS).unwrap();
    assert_eq!(
        intents,
        [
            ("done".to_string(), acknowledged + 1),
            ("failed".to_string(), refused)
        ]
    );
}

/// A staged create through floe (DuckDB's and Spark's CTAS way to make a table), committed
/// with `assert-create`: the commit goes to a table neither floe nor the upstream has yet, is
/// forwarded once, and its entry makes the table in floe's log at version 1 with the metadata the
/// upstream made. A second such commit to the same name is refused by the upstream and logs
/// nothing; so is one to a name taken at the upstream past floe, which floe forwards without
/// reading the table first.
#[tokio::test]
async fn a_staged_create_committed_through_floe_is_logged_as_the_tables_first_entry() {
    let Some(upstream) = java_catalog::start().await else {
        return;
    };
    let floe = floe_in_front_with_namespace(&upstream).await;
    let staged = floe
        .post(
            "/v1/lake/namespaces/ns/tables",
            json!({"name": "s", "schema": common::simple_schema(), "stage-create": true}),
        )
        .await
        .expect(200);
    let location = staged["metadata"]["location"].as_str().unwrap().to_string();
    let create = |uuid: &str| {
        json!({"requirements": [{"type": "assert-create"}],
               "updates": [
                   {"action": "assign-uuid", "uuid": uuid},
                   {"action": "upgrade-format-version", "format-version": 2},
                   {"action": "add-schema", "schema": common::simple_schema(), "last-column-id": 2},
                   {"action": "set-current-schema", "schema-id": -1},
                   {"action": "add-spec", "spec": {"spec-id": 0, "fields": []}},
                   {"action": "set-default-spec", "spec-id": -1},
                   {"action": "add-sort-order", "sort-order": {"order-id": 0, "fields": []}},
                   {"action": "set-default-sort-order", "sort-order-id": -1},
                   {"action": "set-location", "location": location},
                   {"action": "set-properties", "updates": {"made": "staged"}}]})
    };
    let uuid = uuid::Uuid::new_v4().to_string();
    let made = floe
        .post("/v1/lake/namespaces/ns/tables/s", create(&uuid))
        .await
        .expect(200);
    assert_eq!(made["metadata"]["table-uuid"], uuid.as_str(), "{made}");
    let log: Vec<Value> = lake_log(&floe)
        .await
        .into_iter()
        .filter(|e| e["table-name"] == "s")
        .collect();
    assert_eq!(kinds(&log), ["create-table"], "{log:#?}");
    assert_eq!(log[0]["table-version"], 1);
    assert_eq!(log[0]["new-metadata-location"], made["metadata-location"]);
    assert_eq!(
        log[0]["metadata"]["properties"]["made"], "staged",
        "{}",
        log[0]
    );
    let (_, at_upstream) = upstream_get(&upstream, "/v1/namespaces/ns/tables/s").await;
    assert_eq!(at_upstream["metadata-location"], made["metadata-location"]);

    // The name is taken now: the upstream refuses a second create, and floe logs nothing more.
    let again = floe
        .post(
            "/v1/lake/namespaces/ns/tables/s",
            create(&uuid::Uuid::new_v4().to_string()),
        )
        .await;
    assert_eq!(again.status.as_u16(), 409, "{:?}", again.body);
    let after: Vec<Value> = lake_log(&floe)
        .await
        .into_iter()
        .filter(|e| e["table-name"] == "s")
        .collect();
    assert_eq!(after, log);

    // A name taken at the upstream directly, which floe has not seen: a staged create's commit
    // goes out without floe reading the table first (the upstream refuses it), and nothing of
    // the table is logged; the first commit that is not a create catches up first.
    let table = json!({"name": "d", "schema": common::simple_schema()});
    direct(
        &upstream,
        reqwest::Method::POST,
        "/v1/namespaces/ns/tables",
        Some(table),
    )
    .await;
    let refused = floe
        .post(
            "/v1/lake/namespaces/ns/tables/d",
            create(&uuid::Uuid::new_v4().to_string()),
        )
        .await;
    assert_eq!(refused.status.as_u16(), 409, "{:?}", refused.body);
    let of_d = |log: Vec<Value>| -> Vec<Value> {
        log.into_iter().filter(|e| e["table-name"] == "d").collect()
    };
    assert_eq!(of_d(lake_log(&floe).await), Vec::<Value>::new());
    assert_eq!(pending_intents(floe.database_url()).await, 0);
    floe.post("/v1/lake/namespaces/ns/tables/d", set_property("k", "v"))
        .await
        .expect(200);
    let log = of_d(lake_log(&floe).await);
    assert_eq!(kinds(&log), ["observe-table", "commit-table"], "{log:#?}");
    assert_chained(&log);
}

/// A transactions/commit body setting one property of tables `ns.t` and `ns.u`.
fn set_property_of_t_and_u(key: &str, value: &str) -> Value {
    let change = |name: &str| {
        json!({"identifier": {"namespace": ["ns"], "name": name}, "requirements": [],
               "updates": [{"action": "set-properties", "updates": {key: value}}]})
    };
    json!({"table-changes": [change("t"), change("u")]})
}

/// The log entries of warehouse `lake`, in order.
/// The log's entries of warehouse `lake`, once floe has settled the commits it answered.
async fn lake_log(floe: &TestFloe) -> Vec<Value> {
    settled(floe.database_url()).await;
    floe.log()
        .await
        .into_iter()
        .filter(|e| e["warehouse"] == "lake")
        .collect()
}

/// Each entry follows the one before: versions 1, 2, ... and every entry's previous metadata
/// location is the one before's new location.
fn assert_chained(entries: &[Value]) {
    for (i, entry) in entries.iter().enumerate() {
        assert_eq!(entry["table-version"], json!(i + 1), "{entry}");
        if i > 0 {
            assert_eq!(
                entry["previous-metadata-location"],
                entries[i - 1]["new-metadata-location"],
                "{entry}"
            );
        }
    }
}

/// Commits through floe reach the upstream and are logged, one entry per acknowledged commit,
/// in order; a commit the upstream refuses (409) is passed back as it sent it and not logged;
/// a transaction's tables are logged together.
#[tokio::test]
async fn commits_through_floe_are_logged_once_each_in_order() {
    let Some(upstream) = java_catalog::start().await else {
        return;
    };
    let floe = floe_in_front_of(upstream_settings(&upstream.url), upstream.warehouse.path()).await;
    let config = floe.get("/v1/config?warehouse=lake").await.expect(200);
    assert!(
        config["endpoints"]
            .as_array()
            .unwrap()
            .contains(&json!("POST /v1/{prefix}/transactions/commit")),
        "{config}"
    );
    floe.post("/v1/lake/namespaces", json!({"namespace": ["ns"]}))
        .await
        .expect(200);
    for name in ["t", "u"] {
        floe.post(
            "/v1/lake/namespaces/ns/tables",
            json!({"name": name, "schema": common::simple_schema()}),
        )
        .await
        .expect(200);
    }
    let mut acknowledged = Vec::new();
    for i in 0..3 {
        let answer = floe
            .post(
                "/v1/lake/namespaces/ns/tables/t",
                set_property("k", &i.to_string()),
            )
            .await
            .expect(200);
        acknowledged.push(answer["metadata-location"].as_str().unwrap().to_string());
    }
    let refused = floe
        .post(
            "/v1/lake/namespaces/ns/tables/t",
            json!({"requirements": [{"type": "assert-table-uuid",
                                     "uuid": "00000000-0000-0000-0000-000000000000"}],
                   "updates": [{"action": "set-properties", "updates": {"k": "no"}}]}),
        )
        .await;
    assert_eq!(
        refused.error_type(),
        "CommitFailedException",
        "{:?}",
        refused.body
    );
    refused.expect(409);
    let bad = floe
        .post(
            "/v1/lake/namespaces/ns/tables/t",
            json!({"updates": "none"}),
        )
        .await;
    bad.expect(400);

    // (`u`'s create is logged too, as the observer sees it pass through.)
    let log: Vec<Value> = lake_log(&floe)
        .await
        .into_iter()
        .filter(|e| e["table-name"] == "t")
        .collect();
    let kinds = kinds(&log);
    assert_eq!(
        kinds,
        [
            "observe-table",
            "commit-table",
            "commit-table",
            "commit-table"
        ],
        "{log:#?}"
    );
    assert_chained(&log);
    let new: Vec<&str> = log[1..]
        .iter()
        .map(|e| e["new-metadata-location"].as_str().unwrap())
        .collect();
    assert_eq!(new, acknowledged);
    assert_eq!(log[3]["changes"][0]["updates"]["k"], "2", "{}", log[3]);
    let (_, direct) = upstream_get(&upstream, "/v1/namespaces/ns/tables/t").await;
    assert_eq!(direct["metadata-location"], acknowledged[2].as_str());
    assert_eq!(direct["metadata"]["properties"]["k"], "2");

    floe.post(
        "/v1/lake/transactions/commit",
        set_property_of_t_and_u("txn", "1"),
    )
    .await
    .expect(204);
    let log = lake_log(&floe).await;
    let last_two = &log[log.len() - 2..];
    assert!(
        last_two.iter().all(|e| e["kind"] == "commit-table"),
        "{log:#?}"
    );
    assert_eq!(last_two[0]["txn-group"], last_two[1]["txn-group"]);
    // Marked as one transaction's, so that replication applies the two together.
    assert!(
        last_two.iter().all(|e| e["details"]["group-size"] == 2),
        "{last_two:#?}"
    );
    for table in ["t", "u"] {
        let entries: Vec<Value> = log
            .iter()
            .filter(|e| e["table-name"] == table)
            .cloned()
            .collect();
        assert_chained(&entries);
        let (_, direct) =
            upstream_get(&upstream, &format!("/v1/namespaces/ns/tables/{table}")).await;
        assert_eq!(
            entries.last().unwrap()["new-metadata-location"],
            direct["metadata-location"]
        );
    }
}

/// Commits made directly at the upstream, past floe, are found when floe next commits to the
/// table: the log holds every state in order, the ones floe did not make as `observe-table`
/// entries with the metadata of that state.
#[tokio::test]
async fn commits_that_bypass_floe_are_logged_as_observed() {
    let Some(upstream) = java_catalog::start().await else {
        return;
    };
    let floe = floe_in_front_with_namespace(&upstream).await;
    floe.post(
        "/v1/lake/namespaces/ns/tables",
        json!({"name": "t", "schema": common::simple_schema()}),
    )
    .await
    .expect(200);
    floe.post(
        "/v1/lake/namespaces/ns/tables/t",
        set_property("via", "floe"),
    )
    .await
    .expect(200);
    let http = reqwest::Client::new();
    let mut direct_locations = Vec::new();
    for i in 0..3 {
        let answer: Value = http
            .post(format!("{}/v1/namespaces/ns/tables/t", upstream.url))
            .json(&set_property("direct", &i.to_string()))
            .send()
            .await
            .unwrap()
            .error_for_status()
            .unwrap()
            .json()
            .await
            .unwrap();
        direct_locations.push(answer["metadata-location"].as_str().unwrap().to_string());
    }
    floe.post(
        "/v1/lake/namespaces/ns/tables/t",
        set_property("via", "floe again"),
    )
    .await
    .expect(200);

    let log = lake_log(&floe).await;
    let kinds = kinds(&log);
    assert_eq!(
        kinds,
        [
            "observe-table",
            "commit-table",
            "observe-table",
            "observe-table",
            "observe-table",
            "commit-table"
        ],
        "{log:#?}"
    );
    assert_chained(&log);
    for (entry, location) in log[2..5].iter().zip(&direct_locations) {
        assert_eq!(entry["new-metadata-location"], location.as_str());
        assert_eq!(entry["principal"], "upstream");
    }
    for (i, entry) in log[2..5].iter().enumerate() {
        assert_eq!(
            entry["metadata"]["properties"]["direct"],
            i.to_string(),
            "{entry}"
        );
    }
    assert_eq!(log[5]["changes"][0]["updates"]["via"], "floe again");
}

/// The log of warehouse `lake` once it holds `len` entries (waiting up to 20 s).
async fn lake_log_of_len(floe: &TestFloe, len: usize) -> Vec<Value> {
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    loop {
        let log = lake_log(floe).await;
        if log.len() >= len || std::time::Instant::now() > deadline {
            assert_eq!(log.len(), len, "{log:#?}");
            return log;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// A call made directly at the upstream, past floe; its answer's JSON.
async fn direct(
    upstream: &JavaCatalog,
    method: reqwest::Method,
    path: &str,
    body: Option<Value>,
) -> Value {
    let mut request = reqwest::Client::new().request(method, format!("{}{path}", upstream.url));
    if let Some(body) = body {
        request = request.json(&body);
    }
    let answer = request.send().await.unwrap();
    let status = answer.status();
    let text = answer.text().await.unwrap();
    assert!(status.is_success(), "{path}: {status} {text}");
    serde_json::from_str(&text).unwrap_or(Value::Null)
}

/// Namespace `ns` and table `ns.t` made directly at the upstream; the create's answer.
async fn direct_create(upstream: &JavaCatalog) -> Value {
    let namespace = json!({"namespace": ["ns"]});
    direct(
        upstream,
        reqwest::Method::POST,
        "/v1/namespaces",
        Some(namespace),
    )
    .await;
    let table = json!({"name": "t", "schema": common::simple_schema()});
    direct(
        upstream,
        reqwest::Method::POST,
        "/v1/namespaces/ns/tables",
        Some(table),
    )
    .await
}

/// The kinds of the entries, in order.
fn kinds(log: &[Value]) -> Vec<&str> {
    log.iter().map(|e| e["kind"].as_str().unwrap()).collect()
}

fn actions(entry: &Value) -> Vec<&str> {
    entry["changes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["action"].as_str().unwrap())
        .collect()
}

/// The poll finds what writers did at the upstream directly: a new table (with the changes that
/// made it), its commits (the changes derived from the metadata before and after), and its drop,
/// in order; and it deletes commit intents settled more than an hour ago.
#[tokio::test]
async fn the_poll_logs_what_writers_did_past_floe() {
    let Some(upstream) = java_catalog::start().await else {
        return;
    };
    let mut settings = upstream_settings(&upstream.url);
    settings.poll_interval_ms = 200;
    let floe = floe_in_front_of(settings, upstream.warehouse.path()).await;
    let created = direct_create(&upstream).await;
    let log = lake_log_of_len(&floe, 1).await;
    assert_eq!(log[0]["kind"], "observe-table", "{log:#?}");
    assert_eq!(log[0]["table-name"], "t");
    assert_eq!(
        log[0]["new-metadata-location"],
        created["metadata-location"]
    );
    for action in [
        "assign-uuid",
        "add-schema",
        "set-current-schema",
        "set-location",
    ] {
        assert!(
            actions(&log[0]).contains(&action),
            "{action}: {}",
            log[0]["changes"]
        );
    }

    let committed = direct(
        &upstream,
        reqwest::Method::POST,
        "/v1/namespaces/ns/tables/t",
        Some(set_property("direct", "1")),
    )
    .await;
    let log = lake_log_of_len(&floe, 2).await;
    assert_chained(&log);
    assert_eq!(log[1]["kind"], "observe-table");
    assert_eq!(
        log[1]["new-metadata-location"],
        committed["metadata-location"]
    );
    assert_eq!(
        log[1]["changes"],
        json!([{"action": "set-properties", "updates": {"direct": "1"}}]),
        "{}",
        log[1]
    );

    // A commit through floe: its intent, once settled for an hour, is deleted by the poll.
    let through = floe
        .post(
            "/v1/lake/namespaces/ns/tables/t",
            set_property("via", "floe"),
        )
        .await
        .expect(200);
    assert_eq!(lake_log_of_len(&floe, 3).await[2]["kind"], "commit-table");
    let url = floe.database_url().to_string();
    let pool = sqlx::PgPool::connect(&url).await.unwrap();
    let intents = async || -> i64 {
        sqlx::query_scalar("SELECT count(*) FROM upstream_commit_intent")
            .fetch_one(&pool)
            .await
            .unwrap()
    };
    assert_eq!(intents().await, 1);
    sqlx::query("UPDATE upstream_commit_intent SET settled_at = settled_at - interval '2 hours'")
        .execute(&pool)
        .await
        .unwrap();
    for _ in 0..100 {
        if intents().await == 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(intents().await, 0, "a settled intent outlived its hour");
    pool.close().await;

    direct(
        &upstream,
        reqwest::Method::DELETE,
        "/v1/namespaces/ns/tables/t",
        None,
    )
    .await;
    let log = lake_log_of_len(&floe, 4).await;
    assert_eq!(log[3]["kind"], "drop-table", "{log:#?}");
    assert_eq!(log[3]["table-version"], 4);
    assert_eq!(log[3]["table-id"], log[0]["table-id"]);
    assert_eq!(
        log[3]["previous-metadata-location"],
        through["metadata-location"]
    );
    assert_eq!(log[3]["principal"], "upstream");
    // Nothing more happens, and nothing more is logged.
    tokio::time::sleep(Duration::from_millis(800)).await;
    assert_eq!(lake_log(&floe).await.len(), 4);
}

/// With the poll off, what passes through floe is enough: a loadTable answer naming a state floe
/// has not logged makes it catch up (the states before it included), a drop forwarded through
/// floe is logged, and a create before its answer comes back; a loadTable of a state already
/// logged adds nothing.
#[tokio::test]
async fn what_passes_through_floe_is_observed() {
    let Some(upstream) = java_catalog::start().await else {
        return;
    };
    let relay = Relay::start(&upstream.url).await;
    let floe = floe_in_front_of(upstream_settings(&relay.url), upstream.warehouse.path()).await;
    direct_create(&upstream).await;
    direct(
        &upstream,
        reqwest::Method::POST,
        "/v1/namespaces/ns/tables/t",
        Some(set_property("direct", "1")),
    )
    .await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(
        lake_log(&floe).await.is_empty(),
        "logged before anything passed through"
    );

    let loaded = floe
        .get("/v1/lake/namespaces/ns/tables/t")
        .await
        .expect(200);
    let log = lake_log_of_len(&floe, 2).await;
    assert_chained(&log);
    assert_eq!(log[1]["new-metadata-location"], loaded["metadata-location"]);
    floe.get("/v1/lake/namespaces/ns/tables/t")
        .await
        .expect(200);
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(
        lake_log(&floe).await.len(),
        2,
        "a load of a logged state was logged"
    );

    floe.delete("/v1/lake/namespaces/ns/tables/t")
        .await
        .expect(204);
    let log = lake_log_of_len(&floe, 3).await;
    assert_eq!(log[2]["kind"], "drop-table", "{log:#?}");

    // A create through floe is logged from its answer before the answer comes back (so the
    // table's first commit need not read it from the upstream); a staged create makes nothing
    // at the upstream and logs nothing.
    let created = floe
        .post(
            "/v1/lake/namespaces/ns/tables",
            json!({"name": "u", "schema": common::simple_schema()}),
        )
        .await
        .expect(200);
    let log = lake_log(&floe).await;
    assert_eq!(log.len(), 4, "{log:#?}");
    assert_eq!(log[3]["kind"], "observe-table", "{log:#?}");
    assert_eq!(log[3]["table-name"], "u");
    assert_eq!(log[3]["table-version"], 1);
    assert_eq!(
        log[3]["new-metadata-location"],
        created["metadata-location"]
    );
    let loads_of_u: Vec<String> = relay
        .passed()
        .into_iter()
        .filter(|line| line.starts_with("GET /v1/namespaces/ns/tables/u "))
        .collect();
    assert_eq!(
        loads_of_u,
        Vec::<String>::new(),
        "read back from the upstream"
    );
    floe.post(
        "/v1/lake/namespaces/ns/tables",
        json!({"name": "staged", "schema": common::simple_schema(), "stage-create": true}),
    )
    .await
    .expect(200);
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(lake_log(&floe).await.len(), 4, "a staged create was logged");
}

/// A create whose answer is larger than floe's body limit is not logged from its answer: the
/// answer still reaches the client whole, as the upstream sent it.
#[tokio::test]
async fn a_create_answer_over_the_body_limit_reaches_the_client_whole() {
    let Some(upstream) = java_catalog::start().await else {
        return;
    };
    // Room for the create's request, not for the table's metadata in its answer.
    let floe = floe_in_front_of_with(
        upstream_settings(&upstream.url),
        upstream.warehouse.path(),
        |settings| settings.max_body_bytes = 512,
    )
    .await;
    floe.post("/v1/lake/namespaces", json!({"namespace": ["ns"]}))
        .await
        .expect(200);
    let created = floe
        .post(
            "/v1/lake/namespaces/ns/tables",
            json!({"name": "big", "schema": common::simple_schema()}),
        )
        .await
        .expect(200);
    assert!(created.to_string().len() > 512, "{created}");
    let (_, at_upstream) = upstream_get(&upstream, "/v1/namespaces/ns/tables/big").await;
    assert_eq!(
        created["metadata-location"],
        at_upstream["metadata-location"]
    );
    assert_eq!(created["metadata"], at_upstream["metadata"]);
    let logged: Vec<Value> = lake_log(&floe)
        .await
        .into_iter()
        .filter(|e| e["table-name"] == "big")
        .collect();
    assert_eq!(logged, Vec::<Value>::new());
    floe.server.stop().await;
}

const REPLICA_TOKEN: &str = "lake-to-replica-token";

/// Registers `replica` as `primary`'s peer `replica`, its warehouse `warehouse` (files under
/// `root`) the destination.
async fn register_replica(primary: &TestFloe, replica: &TestFloe, warehouse: &str, root: &str) {
    let peer = json!({
        "region": "replica",
        "base-url": replica.server.base_url(),
        "credential": REPLICA_TOKEN,
        "warehouses": [{ "warehouse": warehouse, "storage-root": root }]
    });
    primary
        .put("/management/v1/peers/replica", peer)
        .await
        .expect(200);
}

/// The replication status of `lake.db.<table>` once every destination has applied the source's
/// version and `done` holds for the replica's copy (waiting up to 30 s).
async fn wait_replicated(
    primary: &TestFloe,
    replica: &TestFloe,
    table: &str,
    done: impl Fn(&Value) -> bool,
) -> Value {
    let status_path = format!("/management/v1/tables/lake/db/{table}/replication");
    let copy_path = format!("/v1/wh/namespaces/db/tables/{table}");
    let mut last = Value::Null;
    for _ in 0..600 {
        last = primary.get(&status_path).await.expect(200);
        if common::replication_completed(&last) {
            let copy = replica.get(&copy_path).await;
            if copy.status == 200 && done(&copy.body) {
                return copy.body;
            }
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("replication did not complete: {last}");
}

/// floe in region `primary` with warehouse `lake` in front of `upstream`, polling it every 200 ms.
async fn primary_in_front_of(upstream: &JavaCatalog) -> TestFloe {
    let (mut settings, own) = common::region_settings("primary", &[]).await;
    let mut lake = WarehouseSettings::builtin(
        "lake",
        format!("file://{}", upstream.warehouse.path().display()),
    );
    lake.backend = Backend::Upstream;
    let mut upstream_config = upstream_settings(&upstream.url);
    upstream_config.poll_interval_ms = 200;
    lake.upstream = Some(upstream_config);
    settings.warehouses.push(lake);
    TestFloe::start_with(settings, own).await
}

/// Namespace `db` and table `lake.db.events`, made through `floe`.
async fn create_events(floe: &TestFloe) {
    floe.post("/v1/lake/namespaces", json!({"namespace": ["db"]}))
        .await
        .expect(200);
    floe.post(
        "/v1/lake/namespaces/db/tables",
        json!({"name": "events", "schema": common::simple_schema()}),
    )
    .await
    .expect(200);
}

/// Appends a snapshot of two data files to `lake.db.events` through `floe`; returns its id.
async fn append_to_events(floe: &TestFloe, files: &mut floe::bench::files::SnapshotWriter) -> i64 {
    let mut loaded = floe
        .get("/v1/lake/namespaces/db/tables/events")
        .await
        .expect(200);
    // The reference catalog writes -1 for "no current snapshot".
    if loaded["metadata"]["current-snapshot-id"] == -1 {
        loaded["metadata"]["current-snapshot-id"] = Value::Null;
    }
    let next = common::prepare_append(&loaded, files, &common::host_files(), 2, 4096).await;
    floe.post("/v1/lake/namespaces/db/tables/events", next.body)
        .await
        .expect(200);
    next.snapshot_id
}

/// An upstream warehouse replicates as a builtin one does: a rule on it backfills what floe has
/// logged, commits through floe and commits past it follow, the data files are copied with
/// their paths rewritten, and the replica is read-only.
#[tokio::test]
async fn an_upstream_warehouse_replicates_like_a_builtin_one() {
    let Some(upstream) = java_catalog::start().await else {
        return;
    };
    let replica = TestFloe::start_region("replica", &[("primary", REPLICA_TOKEN)]).await;
    let primary = primary_in_front_of(&upstream).await;
    register_replica(&primary, &replica, "wh", &replica.warehouse_root()).await;

    create_events(&primary).await;
    let mut files = floe::bench::files::SnapshotWriter::default();
    let set_owner_directly = async |owner: &str| {
        let path = "/v1/namespaces/db/tables/events";
        direct(
            &upstream,
            reqwest::Method::POST,
            path,
            Some(set_property("owner", owner)),
        )
        .await
    };
    let first = append_to_events(&primary, &mut files).await;
    set_owner_directly("ops").await;

    primary
        .post(
            "/management/v1/replication-rules",
            json!({"warehouse": "lake", "destinations": [{"peer": "replica", "warehouse": "wh"}]}),
        )
        .await
        .expect(201);
    let copy = wait_replicated(&primary, &replica, "events", |copy| {
        copy["metadata"]["properties"]["owner"] == "ops"
    })
    .await;
    let (_, source) = upstream_get(&upstream, "/v1/namespaces/db/tables/events").await;
    assert_eq!(
        copy["metadata"]["table-uuid"],
        source["metadata"]["table-uuid"]
    );
    assert_eq!(copy["metadata"]["current-snapshot-id"], first);
    assert!(
        copy["metadata"]["location"]
            .as_str()
            .unwrap()
            .starts_with(&replica.warehouse_root()),
        "{}",
        copy["metadata"]["location"]
    );

    // The tail: a commit through floe and one past it reach the replica without any action.
    let newest = append_to_events(&primary, &mut files).await;
    set_owner_directly("data").await;
    let copy = wait_replicated(&primary, &replica, "events", |copy| {
        copy["metadata"]["properties"]["owner"] == "data"
    })
    .await;
    assert_eq!(copy["metadata"]["current-snapshot-id"], newest);
    assert_eq!(common::snapshot_ids(&copy).len(), 2);
    let parquet = common::files_under(replica.warehouse_dir.path())
        .into_iter()
        .filter(|p| p.extension().is_some_and(|e| e == "parquet"))
        .count();
    assert_eq!(parquet, 4, "2 snapshots x 2 data files copied");
    let source_root = upstream.warehouse.path().display().to_string();
    let leaks = common::iceberg_files::files_mentioning(replica.warehouse_dir.path(), &source_root);
    assert!(leaks.is_empty(), "replica files name the source: {leaks:?}");

    let refused = replica
        .post(
            "/v1/wh/namespaces/db/tables/events",
            set_property("owner", "replica"),
        )
        .await;
    assert_eq!(
        refused.error_type(),
        "ForbiddenException",
        "{}",
        refused.body
    );
    refused.expect(403);
    primary.server.stop().await;
    replica.server.stop().await;
}

/// floe in front of `upstream` through a relay (whose mode a test sets), with table `ns.t`
/// made through it.
async fn floe_with_table_behind_relay(upstream: &JavaCatalog) -> (Relay, TestFloe) {
    let relay = Relay::start(&upstream.url).await;
    let floe = floe_in_front_of(upstream_settings(&relay.url), upstream.warehouse.path()).await;
    floe.post("/v1/lake/namespaces", json!({"namespace": ["ns"]}))
        .await
        .expect(200);
    let table = json!({"name": "t", "schema": common::simple_schema()});
    floe.post("/v1/lake/namespaces/ns/tables", table)
        .await
        .expect(200);
    (relay, floe)
}

/// Commits `k = value` to `ns.t` through floe with the upstream's answer lost on its way back:
/// the client is told the outcome is unknown; returns the upstream's loadTable after it.
async fn commit_with_answer_lost(
    relay: &Relay,
    floe: &TestFloe,
    upstream: &JavaCatalog,
    value: &str,
) -> Value {
    relay.set(RelayMode::LoseCommitAnswers);
    let lost = floe
        .post("/v1/lake/namespaces/ns/tables/t", set_property("k", value))
        .await;
    assert_eq!(
        lost.error_type(),
        "CommitStateUnknownException",
        "{:?}",
        lost.body
    );
    assert!(lost.status.is_server_error(), "{:?}", lost.body);
    upstream_get(upstream, "/v1/namespaces/ns/tables/t").await.1
}

/// The replica's loadTable at its own catalog, asked directly, once `done` holds for it and the
/// source's stream has completed (waiting up to 30 s).
async fn wait_held_upstream(
    primary: &TestFloe,
    holder: &JavaCatalog,
    done: impl Fn(&Value) -> bool,
) -> Value {
    let mut last = Value::Null;
    for _ in 0..600 {
        let status = primary
            .get("/management/v1/tables/lake/db/events/replication")
            .await
            .expect(200);
        if common::replication_completed(&status) {
            let (code, held) = upstream_get(holder, "/v1/namespaces/db/tables/events").await;
            if code == 200 && done(&held) {
                return held;
            }
        }
        last = status;
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("the replica did not reach its catalog: {last}");
}

/// A peer's destination warehouse that fronts its own catalog keeps the replica there: the
/// backfill registers it, the tail commits to it (commits through floe and past it at the
/// source, data files copied, paths rewritten), readers of that catalog and of floe see it, and
/// it is read-only through floe. A write made at that catalog directly is divergence: the next
/// replicated change is refused, the stream fails saying so, and the catalog's table is left as
/// that writer left it.
#[tokio::test]
async fn an_upstream_catalog_holds_replicas_and_reports_divergence() {
    let Some(source) = java_catalog::start().await else {
        return;
    };
    let Some(holder) = java_catalog::start().await else {
        return;
    };
    let holder_root = format!("file://{}", holder.warehouse.path().display());
    let replica = {
        let (mut settings, dir) =
            common::region_settings("replica", &[("primary", REPLICA_TOKEN)]).await;
        let mut lake = WarehouseSettings::builtin("lake", holder_root.clone());
        lake.backend = Backend::Upstream;
        // The observer polls the replica's catalog too: it must leave replicas alone.
        let mut upstream_config = upstream_settings(&holder.url);
        upstream_config.poll_interval_ms = 200;
        lake.upstream = Some(upstream_config);
        settings.warehouses = vec![lake];
        TestFloe::start_with(settings, dir).await
    };
    let primary = primary_in_front_of(&source).await;
    register_replica(&primary, &replica, "lake", &holder_root).await;
    create_events(&primary).await;
    let mut files = floe::bench::files::SnapshotWriter::default();
    let first = append_to_events(&primary, &mut files).await;
    primary
        .post(
            "/management/v1/replication-rules",
            json!({"warehouse": "lake", "destinations": [{"peer": "replica", "warehouse": "lake"}]}),
        )
        .await
        .expect(201);
    let held = wait_held_upstream(&primary, &holder, |held| {
        held["metadata"]["current-snapshot-id"] == first
    })
    .await;
    let (_, at_source) = upstream_get(&source, "/v1/namespaces/db/tables/events").await;
    assert_eq!(
        held["metadata"]["table-uuid"],
        at_source["metadata"]["table-uuid"]
    );
    for location in [&held["metadata-location"], &held["metadata"]["location"]] {
        assert!(
            location.as_str().unwrap().starts_with(&holder_root),
            "{location}"
        );
    }

    // The tail: a commit through floe and one made at the source's catalog directly.
    let newest = append_to_events(&primary, &mut files).await;
    direct(
        &source,
        reqwest::Method::POST,
        "/v1/namespaces/db/tables/events",
        Some(set_property("owner", "data")),
    )
    .await;
    let held = wait_held_upstream(&primary, &holder, |held| {
        held["metadata"]["properties"]["owner"] == "data"
    })
    .await;
    assert_eq!(held["metadata"]["current-snapshot-id"], newest);
    assert_eq!(common::snapshot_ids(&held).len(), 2);
    let through_floe = replica
        .get("/v1/lake/namespaces/db/tables/events")
        .await
        .expect(200);
    assert_eq!(through_floe["metadata-location"], held["metadata-location"]);
    let parquet = common::files_under(holder.warehouse.path())
        .into_iter()
        .filter(|p| p.extension().is_some_and(|e| e == "parquet"))
        .count();
    assert_eq!(parquet, 4, "2 snapshots x 2 data files copied");
    let source_root = source.warehouse.path().display().to_string();
    let leaks = common::iceberg_files::files_mentioning(holder.warehouse.path(), &source_root);
    assert!(leaks.is_empty(), "replica files name the source: {leaks:?}");
    // The replica's log holds what replication made, one entry per source commit after the
    // backfill (the direct one followed as a commit, not a new backfill; the observer, polling,
    // logged nothing of its own), each entry the one after the one before.
    let log = lake_log(&replica).await;
    assert_eq!(
        kinds(&log),
        ["create-table", "commit-table", "commit-table"],
        "{log:#?}"
    );
    assert!(
        log.iter()
            .all(|e| e["details"]["replicated-from"] == "primary")
    );
    assert_chained(&log);
    assert_eq!(log[2]["new-metadata-location"], held["metadata-location"]);

    // A change placed in the catalog whose recording then fails (as a crash between the two
    // would leave it): the source sends it again, and floe adopts the state the catalog holds,
    // neither committing it twice nor taking it for divergence.
    let path = "/v1/lake/namespaces/db/tables/events";
    let fail_before_commit = |on: bool| {
        replica
            .faults
            .fail_before_commit
            .store(on, std::sync::atomic::Ordering::SeqCst)
    };
    let files_before = held["metadata"]["metadata-log"].as_array().unwrap().len();
    fail_before_commit(true);
    primary
        .post(path, set_property("stage", "adopted"))
        .await
        .expect(200);
    let status_path = "/management/v1/tables/lake/db/events/replication";
    let mut status = Value::Null;
    for _ in 0..600 {
        status = primary.get(status_path).await.expect(200);
        let (_, now) = upstream_get(&holder, "/v1/namespaces/db/tables/events").await;
        let failure = status["destinations"][0]["failure"].as_str();
        if now["metadata"]["properties"]["stage"] == "adopted"
            && failure.is_some_and(|f| f.contains("injected"))
        {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(
        status.to_string().contains("injected"),
        "the change was not placed and then refused: {status}"
    );
    fail_before_commit(false);
    let held = wait_held_upstream(&primary, &holder, |held| {
        held["metadata"]["properties"]["stage"] == "adopted"
    })
    .await;
    let files_after = held["metadata"]["metadata-log"].as_array().unwrap().len();
    assert_eq!(files_after, files_before + 1, "committed once: {held}");
    let log = lake_log(&replica).await;
    assert_eq!(log.len(), 4, "{log:#?}");
    assert_chained(&log);
    assert_eq!(log[3]["new-metadata-location"], held["metadata-location"]);

    // Read-only through floe: its /v1/config advertises reads only (the warehouse holds nothing
    // but replicas), and a commit, a drop and a rename are refused before they reach the catalog.
    let config = replica.get("/v1/config?warehouse=lake").await.expect(200);
    let endpoints: Vec<&str> = config["endpoints"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e.as_str().unwrap())
        .collect();
    assert!(endpoints.contains(&"GET /v1/{prefix}/namespaces/{namespace}/tables/{table}"));
    assert!(
        !endpoints.contains(&"POST /v1/{prefix}/namespaces/{namespace}/tables/{table}"),
        "{endpoints:?}"
    );
    let refused = replica.post(path, set_property("owner", "replica")).await;
    assert_eq!(
        refused.error_type(),
        "ForbiddenException",
        "{}",
        refused.body
    );
    replica.delete(path).await.expect(403);
    let rename = json!({"source": {"namespace": ["db"], "name": "events"},
                        "destination": {"namespace": ["db"], "name": "moved"}});
    replica
        .post("/v1/lake/tables/rename", rename)
        .await
        .expect(403);
    let (_, unchanged) = upstream_get(&holder, "/v1/namespaces/db/tables/events").await;
    assert_eq!(unchanged["metadata-location"], held["metadata-location"]);

    // A write at the replica's catalog directly, then a change at the source.
    direct(
        &holder,
        reqwest::Method::POST,
        "/v1/namespaces/db/tables/events",
        Some(set_property("owner", "someone")),
    )
    .await;
    primary
        .post(path, set_property("owner", "source"))
        .await
        .expect(200);
    for _ in 0..600 {
        status = primary.get(status_path).await.expect(200);
        if status["destinations"][0]["state"] == "failed" {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(status["destinations"][0]["state"], "failed", "{status}");
    assert!(status.to_string().contains("diverged"), "{status}");
    let (_, kept) = upstream_get(&holder, "/v1/namespaces/db/tables/events").await;
    assert_eq!(kept["metadata"]["properties"]["owner"], "someone");
    assert_eq!(lake_log(&replica).await.len(), 4);
    primary.server.stop().await;
    replica.server.stop().await;
}

/// A commit whose answer floe never saw (the connection to the upstream broke after the commit
/// went out, as when floe is killed there) is settled from the upstream's state before the
/// table's next commit: logged once when the upstream applied it, not at all when it never
/// arrived; the client was told the outcome is unknown.
#[tokio::test]
async fn commits_with_lost_answers_are_settled_from_the_upstream() {
    let Some(upstream) = java_catalog::start().await else {
        return;
    };
    let (relay, floe) = floe_with_table_behind_relay(&upstream).await;

    // Applied by the upstream, its answer lost.
    let direct = commit_with_answer_lost(&relay, &floe, &upstream, "applied").await;
    assert_eq!(direct["metadata"]["properties"]["k"], "applied");
    let applied = direct["metadata-location"].clone();

    // Never reached the upstream.
    relay.set(RelayMode::LoseCommitRequests);
    let lost = floe
        .post(
            "/v1/lake/namespaces/ns/tables/t",
            set_property("k", "never"),
        )
        .await;
    assert_eq!(
        lost.error_type(),
        "CommitStateUnknownException",
        "{:?}",
        lost.body
    );
    assert_eq!(
        upstream_get(&upstream, "/v1/namespaces/ns/tables/t")
            .await
            .1["metadata-location"],
        applied
    );
    assert_eq!(pending_intents(floe.database_url()).await, 1);

    relay.set(RelayMode::Pass);
    floe.post("/v1/lake/namespaces/ns/tables/t", set_property("k", "next"))
        .await
        .expect(200);
    let log = lake_log(&floe).await;
    let kinds = kinds(&log);
    assert_eq!(
        kinds,
        ["observe-table", "commit-table", "commit-table"],
        "{log:#?}"
    );
    assert_chained(&log);
    assert_eq!(log[1]["new-metadata-location"], applied);
    assert_eq!(log[1]["changes"][0]["updates"]["k"], "applied");
    assert_eq!(log[2]["changes"][0]["updates"]["k"], "next");
    assert_eq!(pending_intents(floe.database_url()).await, 0);
}

/// A commit whose answer is lost, forwarded when a commit made past floe had already landed
/// (floe did not know of it: the commit went out on the last state floe logged), is found after
/// that one: the log holds the commit past floe as observed, then floe's, then the next.
#[tokio::test]
async fn a_lost_answer_behind_a_commit_past_floe_is_found_after_it() {
    let Some(upstream) = java_catalog::start().await else {
        return;
    };
    let (relay, floe) = floe_with_table_behind_relay(&upstream).await;
    floe.post(
        "/v1/lake/namespaces/ns/tables/t",
        set_property("k", "first"),
    )
    .await
    .expect(200);
    let past = direct(
        &upstream,
        reqwest::Method::POST,
        "/v1/namespaces/ns/tables/t",
        Some(set_property("direct", "1")),
    )
    .await;

    let applied = commit_with_answer_lost(&relay, &floe, &upstream, "applied").await;
    assert_eq!(applied["metadata"]["properties"]["k"], "applied");
    assert_eq!(applied["metadata"]["properties"]["direct"], "1");

    relay.set(RelayMode::Pass);
    floe.post("/v1/lake/namespaces/ns/tables/t", set_property("k", "next"))
        .await
        .expect(200);
    let log = lake_log(&floe).await;
    let kinds = kinds(&log);
    assert_eq!(
        kinds,
        [
            "observe-table",
            "commit-table",
            "observe-table",
            "commit-table",
            "commit-table"
        ],
        "{log:#?}"
    );
    assert_chained(&log);
    assert_eq!(log[2]["new-metadata-location"], past["metadata-location"]);
    assert_eq!(
        log[3]["new-metadata-location"],
        applied["metadata-location"]
    );
    assert_ne!(log[3]["principal"], "upstream");
    assert_eq!(pending_intents(floe.database_url()).await, 0);
}

/// A transaction's answer (204) names no state, so floe reads its tables back: a commit made
/// directly at the upstream in between is not taken for the transaction's. The log holds the
/// transaction's own state, then the direct commit as observed.
#[tokio::test]
async fn a_commit_past_floe_right_after_a_transaction_is_not_taken_for_it() {
    let Some(upstream) = java_catalog::start().await else {
        return;
    };
    let (relay, floe) = floe_with_table_behind_relay(&upstream).await;
    floe.post(
        "/v1/lake/namespaces/ns/tables/t",
        set_property("k", "first"),
    )
    .await
    .expect(200);
    relay.set(RelayMode::CommitPastFloeAfterTransactions);
    floe.post(
        "/v1/lake/transactions/commit",
        json!({"table-changes": [{"identifier": {"namespace": ["ns"], "name": "t"},
            "requirements": [], "updates": [{"action": "set-properties", "updates": {"k": "txn"}}]}]}),
    )
    .await
    .expect(204);
    relay.set(RelayMode::Pass);
    floe.post("/v1/lake/namespaces/ns/tables/t", set_property("k", "next"))
        .await
        .expect(200);

    let log = lake_log(&floe).await;
    let kinds = kinds(&log);
    assert_eq!(
        kinds,
        [
            "observe-table",
            "commit-table",
            "commit-table",
            "observe-table",
            "commit-table"
        ],
        "{log:#?}"
    );
    assert_chained(&log);
    let state = |entry: &Value| -> Value {
        let location = entry["new-metadata-location"].as_str().unwrap();
        let path = location
            .trim_start_matches("file:")
            .trim_start_matches("//");
        serde_json::from_slice(&std::fs::read(path).unwrap()).unwrap()
    };
    assert_eq!(state(&log[2])["properties"]["k"], "txn");
    assert!(
        state(&log[2])["properties"].get("direct").is_none(),
        "{}",
        log[2]
    );
    assert_eq!(state(&log[3])["properties"]["direct"], "after");
    assert_eq!(log[3]["principal"], "upstream");
}

/// kill -9 of a `floe serve` process while a commit's answer is on its way back (the upstream
/// has applied or refused it; floe has not logged it), and after floe answered a commit but before
/// it wrote the commit's entry, each time followed by a restart: the applied and the answered
/// commits are in the log exactly once, as floe's, the refused one not at all.
#[tokio::test]
async fn a_commit_interrupted_by_kill_9_is_logged_once_or_not_at_all() {
    let Some(upstream) = java_catalog::start().await else {
        return;
    };
    let relay = Relay::start(&upstream.url).await;
    let lake = format!(
        "\n[[warehouses]]\nname = \"lake\"\nbackend = \"upstream\"\nroot = \"file://{}\"\n\
         [warehouses.upstream]\nurl = \"{}\"\ntimeout_ms = 60000\n",
        upstream.warehouse.path().display(),
        relay.url
    );
    let mut floe = common::region::Region::start_with("r1", &[], None, &lake).await;
    let lake_url = |path: &str| format!("{}/v1/lake{path}", floe.base);
    let (status, body) =
        common::region::post(lake_url("/namespaces"), json!({"namespace": ["ns"]})).await;
    assert_eq!(status, 200, "{body}");
    let (status, _) = common::region::post(
        lake_url("/namespaces/ns/tables"),
        json!({"name": "t", "schema": common::simple_schema()}),
    )
    .await;
    assert_eq!(status, 200);
    let table = lake_url("/namespaces/ns/tables/t");

    let interrupted = |body: Value| {
        let table = table.clone();
        tokio::spawn(async move { common::region::post(table, body).await })
    };
    let wait_held = |count: usize| {
        let held = relay.held.clone();
        async move {
            for _ in 0..200 {
                if held.load(std::sync::atomic::Ordering::SeqCst) >= count {
                    return;
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            panic!("no commit answer was held");
        }
    };

    // Applied at the upstream, floe killed before it logged it.
    relay.set(RelayMode::HoldCommitAnswers);
    let pending = interrupted(set_property("k", "applied"));
    wait_held(1).await;
    floe.kill9();
    pending.abort();
    let (_, direct) = upstream_get(&upstream, "/v1/namespaces/ns/tables/t").await;
    assert_eq!(direct["metadata"]["properties"]["k"], "applied");
    relay.set(RelayMode::Pass);
    floe.spawn().await;

    // Refused at the upstream, floe killed before it settled it.
    relay.set(RelayMode::HoldCommitAnswers);
    let pending = interrupted(json!({
        "requirements": [{"type": "assert-table-uuid",
                          "uuid": "00000000-0000-0000-0000-000000000000"}],
        "updates": [{"action": "set-properties", "updates": {"k": "refused"}}]}));
    wait_held(2).await;
    floe.kill9();
    pending.abort();
    relay.set(RelayMode::Pass);
    floe.spawn().await;

    // Answered, floe killed before its entry was written: the settlement is held back by a lock
    // on the log, and its session ends with floe (terminated, as PostgreSQL would once it saw
    // the connection gone) before the lock is let go.
    let pool = sqlx::PgPool::connect(&floe.database_url()).await.unwrap();
    let mut blocker = pool.begin().await.unwrap();
    sqlx::query("LOCK TABLE commit_log IN SHARE MODE")
        .execute(&mut *blocker)
        .await
        .unwrap();
    let answered = tokio::time::timeout(
        Duration::from_secs(30),
        common::region::post(table.clone(), set_property("k", "answered")),
    )
    .await
    .expect("the commit was not answered while its entry could not be written");
    assert_eq!(answered.0, 200, "{}", answered.1);
    let settling = "SELECT pid FROM pg_stat_activity WHERE wait_event_type = 'Lock' \
                    AND query LIKE '%floe_upstream_settle_commit%'";
    let mut held = Vec::new();
    for _ in 0..200 {
        held = sqlx::query_scalar::<_, i32>(settling)
            .fetch_all(&pool)
            .await
            .unwrap();
        if !held.is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(
        held.len(),
        1,
        "the answered commit's settlement is not waiting"
    );
    floe.kill9();
    sqlx::query("SELECT pg_terminate_backend($1)")
        .bind(held[0])
        .execute(&pool)
        .await
        .unwrap();
    blocker.rollback().await.unwrap();
    floe.spawn().await;

    let (status, _) = common::region::post(table.clone(), set_property("k", "after")).await;
    assert_eq!(status, 200);
    settled(&floe.database_url()).await;
    let log: Vec<Value> = common::region::get(format!(
        "{}/management/v1/log?after=0&limit=1000",
        floe.base
    ))
    .await["entries"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["warehouse"] == "lake")
        .cloned()
        .collect();
    let kinds = kinds(&log);
    assert_eq!(
        kinds,
        [
            "observe-table",
            "commit-table",
            "commit-table",
            "commit-table"
        ],
        "{log:#?}"
    );
    assert_chained(&log);
    assert_eq!(log[1]["new-metadata-location"], direct["metadata-location"]);
    assert_eq!(log[1]["changes"][0]["updates"]["k"], "applied");
    assert_eq!(log[2]["changes"][0]["updates"]["k"], "answered");
    assert_eq!(
        log[2]["new-metadata-location"],
        answered.1["metadata-location"]
    );
    assert_ne!(log[2]["principal"], "upstream");
    assert_eq!(log[3]["changes"][0]["updates"]["k"], "after");
    let states: Vec<String> =
        sqlx::query_scalar("SELECT state FROM upstream_commit_intent ORDER BY created_at")
            .fetch_all(&pool)
            .await
            .unwrap();
    pool.close().await;
    assert_eq!(states, ["done", "failed", "done", "done"]);
}

/// Waits until floe has settled the commits it answered (it answers a commit before it writes
/// the commit's entry); an intent a test leaves pending on purpose is waited for 5 s at most.
async fn settled(database_url: &str) {
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while pending_intents(database_url).await > 0 && std::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn pending_intents(database_url: &str) -> i64 {
    let pool = sqlx::PgPool::connect(database_url).await.unwrap();
    let pending =
        sqlx::query_scalar("SELECT count(*) FROM upstream_commit_intent WHERE state = 'pending'")
            .fetch_one(&pool)
            .await
            .unwrap();
    pool.close().await;
    pending
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum RelayMode {
    Pass,
    /// Commits (POSTs to a table) are forwarded, and their answers dropped.
    LoseCommitAnswers,
    /// Commits are dropped before they reach the upstream.
    LoseCommitRequests,
    /// Commits are forwarded, and their answers held back for ever (counted in `held`).
    HoldCommitAnswers,
    /// A transaction is forwarded, then `ns.t` is committed to directly (`direct = after`)
    /// before the transaction's answer goes back.
    CommitPastFloeAfterTransactions,
}

/// An HTTP relay in front of an upstream, one request per connection, that can lose commits'
/// requests or answers (the connection closes without an answer).
struct Relay {
    url: String,
    mode: std::sync::Arc<std::sync::Mutex<RelayMode>>,
    held: std::sync::Arc<std::sync::atomic::AtomicUsize>,
    /// The request line of every request passed on, in order.
    passed: std::sync::Arc<std::sync::Mutex<Vec<String>>>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Relay {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Relay {
    async fn start(upstream_url: &str) -> Relay {
        let target = upstream_url
            .trim_start_matches("http://")
            .trim_end_matches('/')
            .to_string();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let mode = std::sync::Arc::new(std::sync::Mutex::new(RelayMode::Pass));
        let held = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let passed = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let (shared, counted, lines) = (mode.clone(), held.clone(), passed.clone());
        let task = tokio::spawn(async move {
            loop {
                let Ok((client, _)) = listener.accept().await else {
                    return;
                };
                let (target, mode, held, lines) = (
                    target.clone(),
                    shared.clone(),
                    counted.clone(),
                    lines.clone(),
                );
                tokio::spawn(async move {
                    let _ = relay_one(client, &target, &mode, &held, &lines).await;
                });
            }
        });
        Relay {
            url,
            mode,
            held,
            passed,
            task,
        }
    }

    fn set(&self, mode: RelayMode) {
        *self.mode.lock().unwrap() = mode;
    }

    /// The request lines passed on so far, e.g. `GET /v1/namespaces/ns/tables/t HTTP/1.1`.
    fn passed(&self) -> Vec<String> {
        self.passed.lock().unwrap().clone()
    }
}

async fn relay_one(
    mut client: tokio::net::TcpStream,
    target: &str,
    mode: &std::sync::Mutex<RelayMode>,
    held: &std::sync::atomic::AtomicUsize,
    passed: &std::sync::Mutex<Vec<String>>,
) -> std::io::Result<()> {
    let Some(request) = common::relay::read_request(&mut client).await? else {
        return Ok(());
    };
    let line = request.line();
    passed.lock().unwrap().push(line.to_string());
    let commit = line.starts_with("POST ") && line.contains("/tables/");
    let mode = *mode.lock().unwrap();
    if commit && mode == RelayMode::LoseCommitRequests {
        return Ok(());
    }
    let answer = common::relay::forward(target, &request).await?;
    if commit && mode == RelayMode::LoseCommitAnswers {
        return Ok(());
    }
    let transaction = line.starts_with("POST ") && line.contains("/transactions/commit ");
    if transaction && mode == RelayMode::CommitPastFloeAfterTransactions {
        reqwest::Client::new()
            .post(format!("http://{target}/v1/namespaces/ns/tables/t"))
            .json(&set_property("direct", "after"))
            .send()
            .await
            .unwrap()
            .error_for_status()
            .unwrap();
    }
    if commit && mode == RelayMode::HoldCommitAnswers {
        held.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        std::future::pending::<()>().await;
    }
    common::relay::answer(&mut client, &answer).await
}

/// A name that would reach another endpoint of the upstream once decoded is refused by floe.
#[tokio::test]
async fn names_that_would_leave_the_endpoint_are_refused_before_forwarding() {
    let requests = hits_counter().await;
    let floe = floe_in_front_of(
        upstream_settings(&requests.url),
        tempfile::tempdir().unwrap().path(),
    )
    .await;
    // Sent as raw bytes: an HTTP client library would resolve the `%2E%2E` segments itself.
    for path in [
        "/v1/lake/namespaces/%2E%2E/tables/t",
        "/v1/lake/namespaces/ns/tables/%2E%2E",
        "/v1/lake/namespaces/ns%1F..",
        "/v1/lake/namespaces/a%2Fb",
    ] {
        let status = raw_get(&floe.url(""), path).await;
        assert_eq!(status, 400, "GET {path}");
    }
    assert_eq!(requests.count(), 0, "a request reached the upstream");
}

/// An upstream nobody listens at is 503 naming it; once it is up, floe serves it by itself.
#[tokio::test]
async fn an_unreachable_upstream_is_503_naming_it_and_recovers() {
    let port = common::region::free_port();
    let url = format!("http://127.0.0.1:{port}");
    let root = tempfile::tempdir().unwrap();
    let floe = floe_in_front_of(upstream_settings(&url), root.path()).await;
    let down = floe.get("/v1/lake/namespaces").await;
    assert_eq!(down.error_type(), "ServiceUnavailableException");
    let message = down.expect(503)["error"]["message"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(
        message.contains(&url) && message.contains("lake"),
        "{message}"
    );
    let config = floe.get("/v1/config?warehouse=lake").await;
    config.expect(503);
    let commit = floe
        .post("/v1/lake/namespaces/ns/tables/t", set_property("k", "v"))
        .await;
    let message = commit.expect(503)["error"]["message"].clone();
    assert!(message.as_str().unwrap().contains(&url), "{message}");
    assert!(
        lake_log(&floe).await.is_empty(),
        "a commit that never left was logged"
    );

    let Some(_upstream) = java_catalog::start_on(port).await else {
        return;
    };
    floe.get("/v1/config?warehouse=lake").await.expect(200);
    floe.get("/v1/lake/namespaces").await.expect(200);
    floe.post("/v1/lake/namespaces", json!({"namespace": ["ns"]}))
        .await
        .expect(200);
    assert!(lake_log(&floe).await.is_empty());
}

/// No answer in time is 504; an answer that is not an Iceberg ErrorModel is 502; both name the
/// upstream.
#[tokio::test]
async fn a_silent_upstream_is_504_and_a_foreign_answer_502() {
    let silent = raw_server(None).await;
    let mut settings = upstream_settings(&silent.url);
    settings.timeout_ms = 300;
    let floe = floe_in_front_of(settings, tempfile::tempdir().unwrap().path()).await;
    let timed_out = floe.get("/v1/lake/namespaces").await;
    assert_eq!(timed_out.error_type(), "GatewayTimeoutException");
    assert!(
        timed_out.expect(504)["error"]["message"]
            .as_str()
            .unwrap()
            .contains(&silent.url)
    );

    let html = "HTTP/1.1 500 Internal Server Error\r\ncontent-type: text/html\r\ncontent-length: 21\r\nconnection: close\r\n\r\n<html>oops</html>\r\n\r\n";
    let foreign = raw_server(Some(html)).await;
    let floe = floe_in_front_of(
        upstream_settings(&foreign.url),
        tempfile::tempdir().unwrap().path(),
    )
    .await;
    let bad = floe.get("/v1/lake/namespaces").await;
    assert_eq!(bad.error_type(), "BadGatewayException");
    let message = bad.expect(502)["error"]["message"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(
        message.contains(&foreign.url) && message.contains("oops"),
        "{message}"
    );
}

/// The client's `Authorization` reaches the upstream in pass-through mode; with `auth = "token"`
/// the configured token does instead, whatever the client sent.
#[tokio::test]
async fn authorization_follows_the_auth_mode() {
    let seen = header_recorder().await;
    let floe = floe_in_front_of(
        upstream_settings(&seen.url),
        tempfile::tempdir().unwrap().path(),
    )
    .await;
    let reply = floe
        .http
        .get(floe.url("/v1/lake/namespaces"))
        .bearer_auth("client-token")
        .send()
        .await
        .unwrap();
    assert_eq!(reply.status(), 200);
    assert_eq!(
        seen.last("authorization").as_deref(),
        Some("Bearer client-token")
    );

    let mut settings = upstream_settings(&seen.url);
    settings.auth = UpstreamAuthMode::Token;
    settings.token = Some("upstream-token-0123456789".into());
    let floe = floe_in_front_of(settings, tempfile::tempdir().unwrap().path()).await;
    let reply = floe
        .http
        .get(floe.url("/v1/lake/namespaces"))
        .bearer_auth("client-token")
        .send()
        .await
        .unwrap();
    assert_eq!(reply.status(), 200);
    assert_eq!(
        seen.last("authorization").as_deref(),
        Some("Bearer upstream-token-0123456789")
    );
}

/// The status of a GET of `path` sent as written.
async fn raw_get(base: &str, path: &str) -> u16 {
    let address = base.trim_start_matches("http://").trim_end_matches('/');
    let mut socket = tokio::net::TcpStream::connect(address).await.unwrap();
    let request = format!("GET {path} HTTP/1.1\r\nhost: {address}\r\nconnection: close\r\n\r\n");
    socket.write_all(request.as_bytes()).await.unwrap();
    let mut answer = Vec::new();
    socket.read_to_end(&mut answer).await.unwrap();
    let answer = String::from_utf8_lossy(&answer);
    answer
        .split(' ')
        .nth(1)
        .and_then(|status| status.parse().ok())
        .unwrap_or_else(|| panic!("not an HTTP answer: {answer}"))
}

struct RawServer {
    url: String,
    hits: std::sync::Arc<std::sync::Mutex<Vec<String>>>,
}

impl RawServer {
    fn count(&self) -> usize {
        self.hits.lock().unwrap().len()
    }

    /// The value of `header` in the last request that was not for `/v1/config`.
    fn last(&self, header: &str) -> Option<String> {
        let hits = self.hits.lock().unwrap();
        let request = hits
            .iter()
            .rev()
            .find(|r| !r.starts_with("GET /v1/config"))?;
        request.lines().find_map(|line| {
            let (name, value) = line.split_once(':')?;
            name.eq_ignore_ascii_case(header)
                .then(|| value.trim().to_string())
        })
    }
}

/// A plain-socket HTTP server that records each request's head and answers `answer` (raw), or
/// never answers.
async fn raw_server(answer: Option<&'static str>) -> RawServer {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let hits = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let recorded = hits.clone();
    tokio::spawn(async move {
        loop {
            let Ok((mut socket, _)) = listener.accept().await else {
                return;
            };
            let recorded = recorded.clone();
            tokio::spawn(async move {
                let mut head = Vec::new();
                let mut buf = [0u8; 4096];
                while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                    match socket.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => head.extend_from_slice(&buf[..n]),
                    }
                }
                recorded
                    .lock()
                    .unwrap()
                    .push(String::from_utf8_lossy(&head).to_string());
                match answer {
                    Some(answer) => {
                        let _ = socket.write_all(answer.as_bytes()).await;
                    }
                    None => tokio::time::sleep(Duration::from_secs(30)).await,
                }
            });
        }
    });
    RawServer { url, hits }
}

const CONFIG_OR_EMPTY_LIST: &str = "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: 17\r\nconnection: close\r\n\r\n{\"namespaces\":[]}";

/// Answers every request with `{"namespaces":[]}` (which also parses as an empty config).
async fn header_recorder() -> RawServer {
    raw_server(Some(CONFIG_OR_EMPTY_LIST)).await
}

async fn hits_counter() -> RawServer {
    raw_server(Some(CONFIG_OR_EMPTY_LIST)).await
}
