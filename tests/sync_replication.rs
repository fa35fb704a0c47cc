//! Synchronous replication (issue 14, item 4) with one real `floe serve` process per region: an
//! acknowledged commit is at the replica at once, even when its source is killed right after
//! answering; a commit its destinations cannot take fails within the rule's timeout and is applied
//! nowhere; a source killed between its commit and the destination's apply, or before its commit,
//! is settled before the table's next commit.

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use common::region::{Region, call, create_table_named, get, post, register_peer};
use common::relay;
use serde_json::{Value, json};

const A_TOKEN: &str = "region-a-token-0123456";

fn table_url(region: &Region, table: &str) -> String {
    format!("{}/v1/wh/namespaces/db/tables/{table}", region.base)
}

fn set_k(value: &str) -> Value {
    json!({ "requirements": [], "updates": [
        { "action": "set-properties", "updates": { "k": value } }] })
}

async fn commit_k(region: &Region, table: &str, value: &str) -> (u16, Value) {
    post(table_url(region, table), set_k(value)).await
}

/// The table as `region` serves it now (no wait).
async fn load(region: &Region, table: &str) -> Value {
    get(table_url(region, table)).await
}

async fn k_at(region: &Region, table: &str) -> Option<String> {
    load(region, table).await["metadata"]["properties"]["k"]
        .as_str()
        .map(str::to_string)
}

/// A rule of the source's warehouse `wh` to `destinations`, synchronous with these settings.
async fn sync_rule(source: &Region, destinations: Value, min_acks: u32, timeout_ms: u32) -> String {
    let (status, body) = post(
        format!("{}/management/v1/replication-rules", source.base),
        json!({ "warehouse": "wh", "destinations": destinations, "mode": "sync",
                "min-acks": min_acks, "timeout-ms": timeout_ms }),
    )
    .await;
    assert_eq!(status, 201, "{body}");
    assert_eq!(body["mode"], "sync", "{body}");
    body["id"].as_str().unwrap().to_string()
}

/// Waits until every destination of `db.<table>` at `source` is completed.
async fn wait_replicated(source: &Region, table: &str) {
    common::region::wait_completed_for(source, table, 30).await;
}

/// Two regions, `a` replicating `db.t` to `b` synchronously (one acknowledgement, `timeout_ms`),
/// the replica made.
async fn two_regions(timeout_ms: u32) -> (Region, Region) {
    let a = Region::start("a", &[], None).await;
    let b = Region::start("b", &[("a", A_TOKEN)], None).await;
    register_peer(&a, &b, "b", A_TOKEN).await;
    sync_rule(
        &a,
        json!([{ "peer": "b", "warehouse": "wh" }]),
        1,
        timeout_ms,
    )
    .await;
    create_table_named(&a, "t").await;
    wait_replicated(&a, "t").await;
    (a, b)
}

/// The table's log entries at `region`, in order.
async fn table_log(region: &Region, table: &str) -> Vec<Value> {
    let page = get(format!(
        "{}/management/v1/log?after=0&limit=1000",
        region.base
    ))
    .await;
    page["entries"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["table-name"] == table)
        .cloned()
        .collect()
}

fn versions(log: &[Value]) -> Vec<i64> {
    log.iter()
        .map(|e| e["table-version"].as_i64().unwrap())
        .collect()
}

/// The crash test: the source is killed with SIGKILL right after each of 50 acknowledged
/// commits (every fifth an append with data files), and the replica holds each one, files
/// included, without waiting for anything.
#[tokio::test]
async fn every_acknowledged_commit_is_at_the_replica_when_the_source_dies_right_after() {
    let (mut a, b) = two_regions(10_000).await;
    let mut writer = floe::bench::files::SnapshotWriter::default();
    for i in 1..=50 {
        let value = format!("v{i}");
        if i % 5 == 0 {
            let loaded = load(&a, "t").await;
            let next =
                common::prepare_append(&loaded, &mut writer, &common::host_files(), 2, 512).await;
            let mut body = next.body.clone();
            body["updates"]
                .as_array_mut()
                .unwrap()
                .push(json!({ "action": "set-properties", "updates": { "k": value } }));
            let (status, reply) = post(table_url(&a, "t"), body).await;
            assert_eq!(status, 200, "commit {i}: {reply}");
            a.kill9();
            let replica = load(&b, "t").await;
            assert_eq!(
                replica["metadata"]["current-snapshot-id"], next.snapshot_id,
                "commit {i}: {replica}"
            );
            // Every file the replica's snapshot names is in the replica's storage.
            let files = common::files_under(&b.warehouse);
            let data_files = files
                .iter()
                .filter(|f| f.extension().is_some_and(|e| e == "parquet"))
                .count();
            assert!(
                data_files >= 2 * (i / 5) as usize,
                "commit {i}: {data_files} data files at the replica"
            );
        } else {
            let (status, reply) = commit_k(&a, "t", &value).await;
            assert_eq!(status, 200, "commit {i}: {reply}");
            a.kill9();
        }
        assert_eq!(
            k_at(&b, "t").await.as_deref(),
            Some(value.as_str()),
            "commit {i} acknowledged, then its source killed: not at the replica"
        );
        a.spawn().await;
    }
    // The replica's log holds every version once, in order.
    let log = table_log(&b, "t").await;
    assert_eq!(versions(&log), (1..=51).collect::<Vec<_>>(), "{log:#?}");
}

/// With the destination down, a commit fails within the rule's timeout with a 409 that says why,
/// and nothing changes: not the table, not its log, not its files; a two-table transaction too.
/// Once the destination is back, commits go through and are at the replica when acknowledged.
#[tokio::test]
async fn with_the_destination_down_commits_fail_within_the_timeout_and_change_nothing() {
    let (a, mut b) = two_regions(1_500).await;
    create_table_named(&a, "u").await;
    wait_replicated(&a, "u").await;
    let (status, _) = commit_k(&a, "t", "before").await;
    assert_eq!(status, 200);
    let before = load(&a, "t").await;
    let log_before = table_log(&a, "t").await;
    let files_before = files_in(&a.warehouse);

    b.kill9();
    let started = Instant::now();
    let (status, body) = commit_k(&a, "t", "lost").await;
    let took = started.elapsed();
    assert_eq!(status, 409, "{body}");
    assert_eq!(body["error"]["type"], "CommitFailedException", "{body}");
    let message = body["error"]["message"].as_str().unwrap();
    assert!(
        message.contains("not applied") && message.contains("b/wh"),
        "{message}"
    );
    assert!(
        took >= Duration::from_millis(1_400) && took < Duration::from_millis(4_000),
        "the commit failed after {took:?}, not within its 1.5 s timeout"
    );
    let (status, body) = post(
        format!("{}/v1/wh/transactions/commit", a.base),
        json!({ "table-changes": [
            { "identifier": { "namespace": ["db"], "name": "t" }, "requirements": [],
              "updates": [{ "action": "set-properties", "updates": { "k": "lost-txn" } }] },
            { "identifier": { "namespace": ["db"], "name": "u" }, "requirements": [],
              "updates": [{ "action": "set-properties", "updates": { "k": "lost-txn" } }] }] }),
    )
    .await;
    assert_eq!(status, 409, "{body}");

    let after = load(&a, "t").await;
    assert_eq!(after["metadata-location"], before["metadata-location"]);
    assert_eq!(after["metadata"]["properties"]["k"], "before");
    assert_eq!(k_at(&a, "u").await, None);
    assert_eq!(table_log(&a, "t").await.len(), log_before.len());
    assert_eq!(
        files_in(&a.warehouse),
        files_before,
        "a failed commit left files in the source's warehouse"
    );

    b.spawn().await;
    let (status, body) = commit_k(&a, "t", "after").await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(k_at(&b, "t").await.as_deref(), Some("after"));
    // The table's status says what the destination made of its synchronous commits: two applied
    // ("before", "after"), two missed (the commit and the transaction while it was down).
    let status = get(format!(
        "{}/management/v1/tables/wh/db/t/replication",
        a.base
    ))
    .await;
    let sync = &status["destinations"][0]["sync"];
    assert_eq!(sync["confirmed"], 2, "{status}");
    assert_eq!(sync["missed"], 2, "{status}");
    assert!(sync["last-missed-at"].is_string(), "{status}");
    assert!(
        !sync["last-missed"].as_str().unwrap_or_default().is_empty(),
        "{status}"
    );
    let replica_log = table_log(&b, "t").await;
    assert!(
        replica_log
            .iter()
            .all(|e| e["changes"].to_string().find("lost").is_none()),
        "{replica_log:#?}"
    );
}

/// A commit's status, or `None` when no answer came (the server died).
async fn try_commit(url: String, body: Value) -> Option<u16> {
    let answer = reqwest::Client::new().post(url).json(&body).send().await;
    answer.ok().map(|answer| answer.status().as_u16())
}

fn files_in(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut files = common::files_under(dir);
    files.sort();
    files
}

/// With two destinations and `min-acks` 2, one of them down: the commit fails and the other,
/// which was up and answered, did not apply it either (nothing is applied anywhere before the
/// source commits). With `min-acks` 1 the commit goes through without waiting for the one that
/// is down, which catches up from its stream.
#[tokio::test]
async fn a_commit_short_of_its_acknowledgements_is_applied_at_no_destination() {
    let a = Region::start("a", &[], None).await;
    let b = Region::start("b", &[("a", A_TOKEN)], None).await;
    let mut c = Region::start("c", &[("a", A_TOKEN)], None).await;
    register_peer(&a, &b, "b", A_TOKEN).await;
    register_peer(&a, &c, "c", A_TOKEN).await;
    let destinations =
        json!([{ "peer": "b", "warehouse": "wh" }, { "peer": "c", "warehouse": "wh" }]);
    let rule = sync_rule(&a, destinations.clone(), 2, 1_000).await;
    create_table_named(&a, "t").await;
    wait_replicated(&a, "t").await;
    let (status, body) = commit_k(&a, "t", "both").await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(k_at(&b, "t").await.as_deref(), Some("both"));
    assert_eq!(k_at(&c, "t").await.as_deref(), Some("both"));

    c.kill9();
    let (status, body) = commit_k(&a, "t", "short").await;
    assert_eq!(status, 409, "{body}");
    assert!(
        body["error"]["message"].as_str().unwrap().contains("c/wh"),
        "{body}"
    );
    assert_eq!(k_at(&a, "t").await.as_deref(), Some("both"));
    assert_eq!(
        k_at(&b, "t").await.as_deref(),
        Some("both"),
        "a destination applied a commit that failed"
    );

    let (status, body) = call(
        reqwest::Method::PUT,
        format!("{}/management/v1/replication-rules/{rule}", a.base),
        Some(
            json!({ "warehouse": "wh", "destinations": destinations, "mode": "sync",
                     "min-acks": 1, "timeout-ms": 5000 }),
        ),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    // One acknowledgement is enough: the commit does not wait out the timeout for `c`.
    let started = Instant::now();
    let (status, body) = commit_k(&a, "t", "one").await;
    assert_eq!(status, 200, "{body}");
    assert!(
        started.elapsed() < Duration::from_millis(4_000),
        "the commit waited {:?} for the destination that is down",
        started.elapsed()
    );
    assert_eq!(k_at(&b, "t").await.as_deref(), Some("one"));
    c.spawn().await;
    wait_replicated(&a, "t").await;
    assert_eq!(k_at(&c, "t").await.as_deref(), Some("one"));
}

/// A destination behind its source (its stream lagged while the rule was asynchronous) is caught
/// up before a synchronous commit goes on, in order.
#[tokio::test]
async fn a_lagging_destination_is_caught_up_before_the_commit_goes_on() {
    let a = Region::start("a", &[], None).await;
    let mut b = Region::start("b", &[("a", A_TOKEN)], None).await;
    register_peer(&a, &b, "b", A_TOKEN).await;
    let rule = common::region::create_rule(&a, json!([{ "peer": "b", "warehouse": "wh" }])).await;
    create_table_named(&a, "t").await;
    wait_replicated(&a, "t").await;
    b.kill9();
    for i in 1..=3 {
        let (status, body) = commit_k(&a, "t", &format!("async-{i}")).await;
        assert_eq!(status, 200, "{body}");
    }
    let (status, body) = call(
        reqwest::Method::PUT,
        format!("{}/management/v1/replication-rules/{rule}", a.base),
        Some(
            json!({ "warehouse": "wh", "destinations": [{ "peer": "b", "warehouse": "wh" }],
                     "mode": "sync", "timeout-ms": 20000 }),
        ),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["min-acks"], 1, "{body}");
    b.spawn().await;
    let (status, body) = commit_k(&a, "t", "sync").await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(k_at(&b, "t").await.as_deref(), Some("sync"));
    let log = table_log(&b, "t").await;
    assert_eq!(versions(&log), [1, 2, 3, 4, 5], "{log:#?}");
}

/// A transaction over two tables is acknowledged only once both are at the replica.
#[tokio::test]
async fn a_transaction_is_at_the_replica_whole_when_acknowledged() {
    let (a, b) = two_regions(10_000).await;
    create_table_named(&a, "u").await;
    wait_replicated(&a, "u").await;
    for round in 1..=5 {
        let value = format!("round-{round}");
        let (status, body) = post(
            format!("{}/v1/wh/transactions/commit", a.base),
            json!({ "table-changes": [
                { "identifier": { "namespace": ["db"], "name": "t" }, "requirements": [],
                  "updates": [{ "action": "set-properties", "updates": { "k": value } }] },
                { "identifier": { "namespace": ["db"], "name": "u" }, "requirements": [],
                  "updates": [{ "action": "set-properties", "updates": { "k": value } }] }] }),
        )
        .await;
        assert_eq!(status, 204, "{body}");
        assert_eq!(k_at(&b, "t").await.as_deref(), Some(value.as_str()));
        assert_eq!(k_at(&b, "u").await.as_deref(), Some(value.as_str()));
        // Each stream records the apply the commit made, so it has nothing to send again.
        for table in ["t", "u"] {
            let status = get(format!(
                "{}/management/v1/tables/wh/db/{table}/replication",
                a.base
            ))
            .await;
            let destination = &status["destinations"][0];
            assert_eq!(destination["mode"], "sync", "{status}");
            assert_eq!(
                destination["applied-version"], destination["source-version"],
                "{status}"
            );
        }
    }
}

/// The source killed after its commit but before the destination applied it (the apply held in a
/// relay), then restarted: the commit was not acknowledged, and the table's next commit goes on
/// only once the replica has it, in order. Killed before its commit (the question held): the
/// commit is nowhere, and the next one makes that version again, at both.
#[tokio::test]
async fn a_source_killed_mid_way_is_settled_before_the_next_commit() {
    let mut a = Region::start("a", &[], None).await;
    let b = Region::start("b", &[("a", A_TOKEN)], None).await;
    let relay = Relay::start(&b.base).await;
    let (status, body) = call(
        reqwest::Method::PUT,
        format!("{}/management/v1/peers/b", a.base),
        Some(
            json!({ "region": "b", "base-url": relay.url, "credential": A_TOKEN,
                     "warehouses": [{ "warehouse": "wh", "storage-root": b.root() }] }),
        ),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    sync_rule(&a, json!([{ "peer": "b", "warehouse": "wh" }]), 1, 10_000).await;
    create_table_named(&a, "t").await;
    wait_replicated(&a, "t").await;
    let (status, _) = commit_k(&a, "t", "one").await; // version 2
    assert_eq!(status, 200);

    // Killed after its commit: the apply is held on its way to b (the stream's own task has
    // recorded everything before, so the only apply now is of the commit below, sent once it is
    // committed here).
    wait_replicated(&a, "t").await;
    relay.hold_applies(true);
    let pending = tokio::spawn(try_commit(
        table_url(&a, "t"),
        set_k("committed-unconfirmed"),
    ));
    relay.wait_held(1).await;
    a.kill9();
    assert_eq!(pending.await.unwrap(), None, "the commit was answered");
    relay.hold_applies(false);
    a.spawn().await;
    assert_eq!(
        k_at(&a, "t").await.as_deref(),
        Some("committed-unconfirmed"),
        "committed at the source before it was killed"
    );
    let (status, body) = commit_k(&a, "t", "next").await; // version 4
    assert_eq!(status, 200, "{body}");
    assert_eq!(k_at(&b, "t").await.as_deref(), Some("next"));
    let log = table_log(&b, "t").await;
    assert_eq!(versions(&log), [1, 2, 3, 4], "{log:#?}");
    assert!(
        log[2]["changes"]
            .to_string()
            .contains("committed-unconfirmed")
    );

    // Killed before its commit: the question is held on its way to b.
    relay.hold_prepares(true);
    let pending = tokio::spawn(try_commit(table_url(&a, "t"), set_k("never")));
    relay.wait_held(2).await;
    a.kill9();
    assert_eq!(pending.await.unwrap(), None, "the commit was answered");
    relay.hold_prepares(false);
    a.spawn().await;
    assert_eq!(k_at(&a, "t").await.as_deref(), Some("next"));
    let (status, body) = commit_k(&a, "t", "again").await; // version 5, again
    assert_eq!(status, 200, "{body}");
    assert_eq!(k_at(&b, "t").await.as_deref(), Some("again"));
    let source_log = table_log(&a, "t").await;
    let replica_log = table_log(&b, "t").await;
    assert_eq!(versions(&source_log), [1, 2, 3, 4, 5]);
    assert_eq!(versions(&replica_log), [1, 2, 3, 4, 5]);
    assert!(
        !replica_log
            .iter()
            .any(|e| e["changes"].to_string().contains("never")),
        "{replica_log:#?}"
    );
}

/// A destination that promoted its replica (forced, its source thought lost) refuses the old
/// primary's next synchronous commit, which fails committed nowhere and naming the new primary;
/// the old primary learns of the promotion from it, and refuses its writers from then on.
#[tokio::test]
async fn a_promotion_at_the_destination_ends_commits_at_the_old_primary() {
    let (a, b) = two_regions(5_000).await;
    let (status, _) = commit_k(&a, "t", "before").await;
    assert_eq!(status, 200);
    let (status, body) = post(
        format!("{}/management/v1/tables/wh/db/t/promote", b.base),
        json!({ "mode": "forced" }),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let (status, body) = commit_k(&a, "t", "after").await;
    assert_eq!(status, 409, "{body}");
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("promoted"),
        "{body}"
    );
    assert_eq!(k_at(&a, "t").await.as_deref(), Some("before"));
    assert_eq!(k_at(&b, "t").await.as_deref(), Some("before"));
    let mut last = (0, Value::Null);
    for _ in 0..50 {
        last = commit_k(&a, "t", "after").await;
        if last.0 == 403 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let (status, body) = last;
    assert_eq!(status, 403, "{body}");
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("region `b`"),
        "{body}"
    );
}

/// The question a source asks before a synchronous commit is a peer's to ask, about a table
/// update, and changes nothing: answered yes when the update follows the replica, 409 with the
/// replica's position when it does not.
#[tokio::test]
async fn the_question_is_for_peers_about_updates_and_changes_nothing() {
    let (a, b) = two_regions(5_000).await;
    let (status, _) = commit_k(&a, "t", "one").await; // version 2
    assert_eq!(status, 200);
    let source_log = table_log(&a, "t").await;
    let table_id = source_log[0]["table-id"].as_str().unwrap();
    let replica_before = load(&b, "t").await;
    let log_before = table_log(&b, "t").await;
    let question = |from: i64, action: Value| {
        json!({ "source-region": "a", "origin-region": "a", "source-table-id": table_id,
                "warehouse": "wh", "namespace": ["db"], "name": "t", "generation": 1,
                "lease-token": i64::MAX, "from": { "version": from, "step": 0 },
                "to": { "version": from + 1, "step": 0 }, "action": action })
    };
    let update = json!({ "type": "update", "updates": [
        { "action": "set-properties", "updates": { "k": "asked" } }] });
    let prepare = format!("{}/internal/v1/replication/prepare", b.base);
    let ask = |body: Value, token: Option<&'static str>| {
        let mut request = reqwest::Client::new().post(prepare.clone()).json(&body);
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        async move {
            let answer = request.send().await.unwrap();
            let status = answer.status().as_u16();
            (status, answer.json::<Value>().await.unwrap_or(Value::Null))
        }
    };

    let (status, body) = ask(question(2, update.clone()), None).await;
    assert_eq!(status, 403, "{body}");
    let mut claims_c = question(2, update.clone());
    claims_c["source-region"] = json!("c");
    let (status, body) = ask(claims_c, Some(A_TOKEN)).await;
    assert_eq!(status, 403, "{body}");
    let (status, body) = ask(question(2, json!({ "type": "orphan" })), Some(A_TOKEN)).await;
    assert_eq!(status, 400, "{body}");
    let (status, body) = ask(question(5, update.clone()), Some(A_TOKEN)).await;
    assert_eq!(status, 409, "{body}");
    assert_eq!(body["replica-position"]["position"]["version"], 2, "{body}");
    let (status, body) = ask(question(2, update), Some(A_TOKEN)).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["applied"], false, "{body}");

    // Nothing changed: not the replica, not its log, not its fence (a's stream still applies).
    assert_eq!(load(&b, "t").await, replica_before);
    assert_eq!(table_log(&b, "t").await, log_before);
    let (status, _) = commit_k(&a, "t", "two").await;
    assert_eq!(status, 200);
    assert_eq!(k_at(&b, "t").await.as_deref(), Some("two"));
}

/// Rules that cannot work are refused with 400 and change nothing.
#[tokio::test]
async fn impossible_synchronous_rules_are_refused() {
    let a = Region::start("a", &[], None).await;
    let b = Region::start("b", &[("a", A_TOKEN)], None).await;
    register_peer(&a, &b, "b", A_TOKEN).await;
    let rules = format!("{}/management/v1/replication-rules", a.base);
    let one = json!([{ "peer": "b", "warehouse": "wh" }]);
    for (body, says) in [
        (
            json!({ "warehouse": "wh", "destinations": one, "mode": "sync", "min-acks": 2 }),
            "min-acks must be between 1 and",
        ),
        (
            json!({ "warehouse": "wh", "destinations": one, "mode": "sync", "min-acks": 0 }),
            "min-acks must be between 1 and",
        ),
        (
            json!({ "warehouse": "wh", "destinations": one, "mode": "sync", "timeout-ms": 0 }),
            "timeout-ms must be between 1 and",
        ),
        (
            json!({ "warehouse": "wh", "destinations": one, "min-acks": 1 }),
            "synchronous rules only",
        ),
        (
            json!({ "warehouse": "wh", "destinations": one, "mode": "eventually" }),
            "expected `async` or `sync`",
        ),
    ] {
        let (status, answer) = post(rules.clone(), body.clone()).await;
        assert_eq!(status, 400, "{body} -> {answer}");
        let message = answer["error"]["message"].as_str().unwrap();
        assert!(message.contains(says), "{body} -> {message}");
    }
    let listed = get(rules).await;
    assert_eq!(listed.as_array().map(Vec::len), Some(0), "{listed}");
}

/// An HTTP relay in front of a destination floe that can hold the source's applies or its
/// questions (never forwarding them), one request per connection.
struct Relay {
    url: String,
    hold_applies: Arc<AtomicBool>,
    hold_prepares: Arc<AtomicBool>,
    held: Arc<AtomicUsize>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Relay {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Relay {
    async fn start(target: &str) -> Relay {
        let target = target.trim_start_matches("http://").to_string();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let hold_applies = Arc::new(AtomicBool::new(false));
        let hold_prepares = Arc::new(AtomicBool::new(false));
        let held = Arc::new(AtomicUsize::new(0));
        let (applies, prepares, counted) =
            (hold_applies.clone(), hold_prepares.clone(), held.clone());
        let task = tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                let (target, applies, prepares, counted) = (
                    target.clone(),
                    applies.clone(),
                    prepares.clone(),
                    counted.clone(),
                );
                tokio::spawn(async move {
                    let hold = |line: &str| {
                        (applies.load(Ordering::SeqCst)
                            && line.starts_with("POST /internal/v1/replication/apply "))
                            || (prepares.load(Ordering::SeqCst)
                                && line.starts_with("POST /internal/v1/replication/prepare "))
                    };
                    let _ = relay_one(client, &target, hold, &counted).await;
                });
            }
        });
        Relay {
            url,
            hold_applies,
            hold_prepares,
            held,
            task,
        }
    }

    fn hold_applies(&self, on: bool) {
        self.hold_applies.store(on, Ordering::SeqCst);
    }

    fn hold_prepares(&self, on: bool) {
        self.hold_prepares.store(on, Ordering::SeqCst);
    }

    /// Waits (up to 10 s) until `count` requests have been held in all.
    async fn wait_held(&self, count: usize) {
        for _ in 0..200 {
            if self.held.load(Ordering::SeqCst) >= count {
                return;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("no request was held");
    }
}

async fn relay_one(
    mut client: tokio::net::TcpStream,
    target: &str,
    hold: impl Fn(&str) -> bool,
    held: &AtomicUsize,
) -> std::io::Result<()> {
    let Some(request) = relay::read_request(&mut client).await? else {
        return Ok(());
    };
    if hold(request.line()) {
        held.fetch_add(1, Ordering::SeqCst);
        std::future::pending::<()>().await;
    }
    let answer = relay::forward(target, &request).await?;
    relay::answer(&mut client, &answer).await
}
