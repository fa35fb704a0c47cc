//! What floe measures of itself, recorded with the `metrics` crate and rendered in the Prometheus
//! text format by `metrics-exporter-prometheus` (`GET /management/v1/metrics`, beside the
//! replication gauges `replication::admin` derives from the database).
//!
//! The recorder is the process's (one per process, installed by the first server started), so
//! every figure here is this instance's: requests it served, commits it made, changes it pushed.
//! Every name and its help text is declared here, once; callers use the `record_*` functions, so
//! a metric cannot be spelt two ways. Labels take only bounded values (route templates, warehouse
//! and peer names, outcome words), never a table name or a client's input.

use std::sync::OnceLock;
use std::time::Duration;

use metrics::{
    Unit, counter, describe_counter, describe_gauge, describe_histogram, gauge, histogram,
};
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};

const HTTP_REQUESTS: &str = "floe_http_requests_total";
const HTTP_DURATION: &str = "floe_http_request_duration_seconds";
const COMMITS: &str = "floe_commits_total";
const COMMIT_CONFLICTS: &str = "floe_commit_conflicts_total";
const LOG_APPEND: &str = "floe_log_append_duration_seconds";
const POOL_CONNECTIONS: &str = "floe_db_pool_connections";
const POOL_MAX: &str = "floe_db_pool_max_connections";
const APPLY_DURATION: &str = "floe_replication_apply_duration_seconds";
const END_TO_END: &str = "floe_replication_end_to_end_lag_seconds";
const BYTES_COPIED: &str = "floe_replication_bytes_copied_total";
const ROLE_CHANGES: &str = "floe_table_role_changes_total";
const REPLICA_GROUPS: &str = "floe_replica_transaction_groups_total";
const SYNC_COMMITS: &str = "floe_sync_commits_total";
const SYNC_ANSWERS: &str = "floe_sync_destination_answers_total";
const SYNC_WAIT: &str = "floe_sync_commit_wait_seconds";

/// Histogram buckets, in seconds: from a millisecond (a load from cache) to five minutes (a
/// replica's lag behind a busy source).
const BUCKETS: [f64; 16] = [
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0,
];

static HANDLE: OnceLock<Option<PrometheusHandle>> = OnceLock::new();

/// Installs the process's recorder (once; later calls do nothing). `None` when another recorder
/// was installed first (an embedding program's own), whose exporter then has floe's figures.
fn handle() -> Option<&'static PrometheusHandle> {
    HANDLE
        .get_or_init(|| {
            let recorder = PrometheusBuilder::new()
                .set_buckets(&BUCKETS)
                .expect("the buckets are not empty")
                .build_recorder();
            let handle = recorder.handle();
            metrics::set_global_recorder(recorder).ok()?;
            describe();
            Some(handle)
        })
        .as_ref()
}

/// Installs the recorder (see [`handle`]): called when a server starts.
pub fn install() {
    handle();
}

fn describe() {
    describe_counter!(
        ROLE_CHANGES,
        "Tables whose role changed here: promoted to primary, or fenced by a promotion elsewhere."
    );
    describe_counter!(
        HTTP_REQUESTS,
        "HTTP requests served, by route, method and status."
    );
    describe_histogram!(
        HTTP_DURATION,
        Unit::Seconds,
        "Time to answer an HTTP request, by route, method and status."
    );
    describe_counter!(
        COMMITS,
        "Tables committed (one per table of a transaction), by warehouse."
    );
    describe_counter!(
        COMMIT_CONFLICTS,
        "Commits refused because a requirement no longer held (409), by warehouse."
    );
    describe_histogram!(
        LOG_APPEND,
        Unit::Seconds,
        "Time of a commit's one statement: the pointer swap and its log entries."
    );
    describe_gauge!(
        POOL_CONNECTIONS,
        "PostgreSQL connections of the pool, by state."
    );
    describe_gauge!(POOL_MAX, "The most PostgreSQL connections the pool opens.");
    describe_histogram!(
        APPLY_DURATION,
        Unit::Seconds,
        "Time for a destination to apply one replicated change, by peer."
    );
    describe_histogram!(
        END_TO_END,
        Unit::Seconds,
        "From a change's commit at this region to its apply at the destination, by peer and \
         destination warehouse."
    );
    describe_counter!(
        BYTES_COPIED,
        "Bytes of table files copied to replica storage."
    );
    describe_counter!(
        REPLICA_GROUPS,
        "Multi-table transactions received as a replica, by outcome: `together` (every table's \
         update applied in one transaction), `partial` (those still expected, the others had \
         moved on) or `given-up` (an update applied apart, the rest never came in time)."
    );
    describe_counter!(
        SYNC_COMMITS,
        "Commits under a synchronous replication rule, by outcome: `acknowledged` (applied by \
         the destinations the rule requires), `refused` (they could not take it in time: \
         committed nowhere, 409) or `unconfirmed` (committed here, but they did not confirm \
         in time: 500, and their streams deliver it)."
    );
    describe_counter!(
        SYNC_ANSWERS,
        "Synchronous commits' destinations, by peer, phase (`prepare`: would the change apply; \
         `confirm`: applied once committed) and outcome (`ack`, `timeout`, or `refused`)."
    );
    describe_histogram!(
        SYNC_WAIT,
        Unit::Seconds,
        "Time a synchronous commit waited for its destinations, both phases, by outcome."
    );
}

/// The figures in the Prometheus text format (empty without floe's recorder).
pub fn render() -> String {
    handle().map(PrometheusHandle::render).unwrap_or_default()
}

pub fn record_request(route: &str, method: &str, status: u16, elapsed: Duration) {
    let labels = [
        ("route", route.to_string()),
        ("method", method.to_string()),
        ("status", status.to_string()),
    ];
    counter!(HTTP_REQUESTS, &labels).increment(1);
    histogram!(HTTP_DURATION, &labels).record(elapsed);
}

/// A commit's outcome for `tables` tables of `warehouse`: made, or refused by a requirement.
pub fn record_commit(warehouse: &str, tables: usize, conflict: bool) {
    let labels = [("warehouse", warehouse.to_string())];
    if conflict {
        counter!(COMMIT_CONFLICTS, &labels).increment(1);
    } else {
        counter!(COMMITS, &labels).increment(tables as u64);
    }
}

pub fn record_log_append(elapsed: Duration) {
    histogram!(LOG_APPEND).record(elapsed);
}

pub fn set_pool(size: u32, idle: usize, max: u32) {
    let idle = idle as f64;
    gauge!(POOL_CONNECTIONS, "state" => "idle").set(idle);
    gauge!(POOL_CONNECTIONS, "state" => "in-use").set((f64::from(size) - idle).max(0.0));
    gauge!(POOL_MAX).set(f64::from(max));
}

pub fn record_apply(peer: &str, elapsed: Duration) {
    histogram!(APPLY_DURATION, "peer" => peer.to_string()).record(elapsed);
}

pub fn record_end_to_end(peer: &str, destination_warehouse: &str, lag: Duration) {
    let labels = [
        ("peer", peer.to_string()),
        ("destination_warehouse", destination_warehouse.to_string()),
    ];
    histogram!(END_TO_END, &labels).record(lag);
}

pub fn record_bytes_copied(bytes: u64) {
    counter!(BYTES_COPIED).increment(bytes);
}

/// A transaction group's outcome at this destination (see the description of the metric).
pub fn record_replica_group(outcome: &'static str) {
    counter!(REPLICA_GROUPS, "outcome" => outcome).increment(1);
}

/// A table's role changed here: `promoted` (a replica became the primary) or `fenced` (a
/// promotion elsewhere made this primary a replica).
pub fn record_role_change(change: &'static str) {
    counter!(ROLE_CHANGES, "change" => change).increment(1);
}

/// A synchronous commit's outcome, and how long it waited for its destinations.
pub fn record_sync_commit(outcome: &'static str, waited: Duration) {
    counter!(SYNC_COMMITS, "outcome" => outcome).increment(1);
    histogram!(SYNC_WAIT, "outcome" => outcome).record(waited);
}

/// One destination's answer to a synchronous commit's phase.
pub fn record_sync_answer(peer: &str, phase: &'static str, outcome: &'static str) {
    let labels = [
        ("peer", peer.to_string()),
        ("phase", phase.to_string()),
        ("outcome", outcome.to_string()),
    ];
    counter!(SYNC_ANSWERS, &labels).increment(1);
}
