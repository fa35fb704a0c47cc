"""Replication between the two regions of `floe dev` (primary and replica, each with its own database
and warehouse), written by real clients at the primary and read by real clients at the replica."""
import json
import os
import textwrap
import time
import urllib.error
import urllib.request

import pyarrow as pa
from prometheus_client.parser import text_string_to_metric_families
import pytest

from conftest import Floe, http_json
from test_clients import duck, pyiceberg_catalog, run_spark_job, spark_env


def post_json(url, body):
    request = urllib.request.Request(url, data=json.dumps(body).encode(), method="POST",
                                     headers={"content-type": "application/json"})
    with urllib.request.urlopen(request, timeout=30) as r:
        return json.loads(r.read() or b"null")


def wait_completed(floe, namespace, table, timeout=60):
    """Waits until every destination of the table is `completed` at the source's version."""
    url = f"{floe.url}/management/v1/tables/demo/{namespace}/{table}/replication"
    deadline = time.time() + timeout
    while True:
        status = http_json(url)
        dests = status["destinations"]
        assert not any(d["state"] == "failed" for d in dests), status
        if dests and all(d["state"] == "completed" and d["applied-version"] == d["source-version"]
                         for d in dests):
            return status
        assert time.time() < deadline, f"replication of {namespace}.{table} did not complete: {status}"
        time.sleep(0.1)


def replica_of(floe):
    return Floe(floe.replica_url, "demo", floe.state_dir)


def assert_no_source_paths(floe, namespace, table):
    """Every path the replica's metadata, manifest lists and manifests name is in the replica's
    warehouse, and no file the replica's metadata reaches mentions the primary's warehouse."""
    tbl = pyiceberg_catalog(replica_of(floe), "replica-check").load_table((namespace, table))
    replica_root = "file://" + floe.replica_root
    assert tbl.metadata.location.startswith(replica_root)
    assert floe.primary_root not in open(tbl.metadata_location.removeprefix("file://")).read()
    for snapshot in tbl.metadata.snapshots:
        assert snapshot.manifest_list.startswith(replica_root)
        for manifest in snapshot.manifests(tbl.io):
            assert manifest.manifest_path.startswith(replica_root)
            for entry in manifest.fetch_manifest_entry(tbl.io, discard_deleted=False):
                assert entry.data_file.file_path.startswith(replica_root), entry.data_file.file_path
    for root, _, files in os.walk(floe.replica_root):
        for name in files:
            if name.endswith(".parquet") or name.endswith(".json"):
                with open(os.path.join(root, name), "rb") as f:
                    assert floe.primary_root.encode() not in f.read(), os.path.join(root, name)


def test_backfill_then_tail_read_by_duckdb(floe_no_rule):
    floe = floe_no_rule
    cat = pyiceberg_catalog(floe)
    cat.create_namespace("bf")
    schema = pa.schema([pa.field("id", pa.int64()), pa.field("v", pa.string())])
    tbl = cat.create_table(("bf", "events"), schema=schema)
    for i in range(10):
        tbl.append(pa.table({"id": list(range(i * 10, i * 10 + 10)), "v": [f"s{i}"] * 10}, schema=schema))
    source_ids = sorted(s.snapshot_id for s in tbl.metadata.snapshots)
    assert len(source_ids) == 10

    # The rule comes after the data: the replica is backfilled.
    post_json(f"{floe.url}/management/v1/replication-rules", {
        "warehouse": "demo", "namespace": ["bf"],
        "destinations": [{"peer": "replica", "warehouse": "demo"}]})
    status = wait_completed(floe, "bf", "events")
    assert status["destinations"][0]["lag-versions"] == 0

    con = duck(replica_of(floe))
    assert con.execute("SELECT count(*) FROM cat.bf.events").fetchone()[0] == 100
    snapshots = con.execute("SELECT snapshot_id FROM iceberg_snapshots(cat.bf.events)").fetchall()
    assert sorted(s[0] for s in snapshots) == source_ids
    assert_no_source_paths(floe, "bf", "events")

    # The live tail: one more append reaches the replica with no further action.
    tbl.append(pa.table({"id": [1000], "v": ["tail"]}, schema=schema))
    wait_completed(floe, "bf", "events")
    con = duck(replica_of(floe))
    assert con.execute("SELECT count(*) FROM cat.bf.events").fetchone()[0] == 101
    assert len(con.execute("SELECT * FROM iceberg_snapshots(cat.bf.events)").fetchall()) == 11

    # The replica's /v1/config advertises only reads, so PyIceberg does not even try to write...
    replica_cat = pyiceberg_catalog(replica_of(floe), "replica-writer")
    replica_tbl = replica_cat.load_table(("bf", "events"))
    try:
        replica_tbl.append(pa.table({"id": [1], "v": ["x"]}, schema=schema))
        raise AssertionError("the replica accepted a write")
    except NotImplementedError as e:
        assert "POST /v1/{prefix}/namespaces/{namespace}/tables/{table}" in str(e), e
    # ...and a client that writes anyway gets a 403 naming the region to write to.
    try:
        post_json(f"{floe.replica_url}/v1/demo/namespaces/bf/tables/events",
                  {"requirements": [], "updates": [{"action": "set-properties", "updates": {"a": "b"}}]})
        raise AssertionError("the replica accepted a commit")
    except urllib.error.HTTPError as e:
        body = json.loads(e.read())
        assert e.code == 403 and body["error"]["type"] == "ForbiddenException", body
        assert "primary" in body["error"]["message"] and floe.url in body["error"]["message"], body
    assert pyiceberg_catalog(replica_of(floe), "r2").load_table(("bf", "events")).scan().to_arrow().num_rows == 101

    # The metrics, read by Prometheus' own parser: the request histogram by route, the commit
    # counter, the replication lag histogram, and the streams' gauges.
    with urllib.request.urlopen(f"{floe.url}/management/v1/metrics", timeout=10) as r:
        families = {f.name: f for f in text_string_to_metric_families(r.read().decode())}
    requests = families["floe_http_request_duration_seconds"]
    assert requests.type == "histogram"
    commit_route = "/v1/{prefix}/namespaces/{namespace}/tables/{table}"
    assert any(s.labels.get("route") == commit_route and s.labels.get("method") == "POST"
               for s in requests.samples), requests.samples
    commits = [s.value for s in families["floe_commits"].samples
               if s.name == "floe_commits_total" and s.labels["warehouse"] == "demo"]
    assert commits and commits[0] >= 11, commits
    lag = families["floe_replication_end_to_end_lag_seconds"]
    assert lag.type == "histogram"
    assert any(s.name.endswith("_count") and s.value >= 1 for s in lag.samples), lag.samples
    assert families["floe_replication_lag_versions"].type == "gauge"


def test_namespace_properties_set_by_pyiceberg_appear_at_the_replica(floe):
    """Namespace properties PyIceberg sets at the primary (at creation, then changed and removed with
    no table involved) are what PyIceberg reads at the replica; a write there is refused."""
    from pyiceberg.exceptions import NoSuchNamespaceError

    source = pyiceberg_catalog(floe, "ns-src")
    source.create_namespace("ns_props", {"owner": "data-eng", "comment": "raw events"})
    target = pyiceberg_catalog(replica_of(floe), "ns-dst")

    def replica_properties(ready):
        deadline = time.time() + 30
        while True:
            try:
                properties = target.load_namespace_properties("ns_props")
                if ready(properties):
                    return properties
            except NoSuchNamespaceError:
                properties = None
            assert time.time() < deadline, f"the replica's properties: {properties}"
            time.sleep(0.1)

    properties = replica_properties(lambda p: p.get("owner") == "data-eng")
    assert properties == {"owner": "data-eng", "comment": "raw events"}, properties
    source.update_namespace_properties("ns_props", removals={"comment"}, updates={"owner": "analytics"})
    properties = replica_properties(lambda p: "comment" not in p)
    assert properties == {"owner": "analytics"}, properties
    try:
        post_json(f"{floe.replica_url}/v1/demo/namespaces/ns_props/properties",
                  {"updates": {"owner": "me"}, "removals": []})
        raise AssertionError("the replica accepted a namespace change")
    except urllib.error.HTTPError as e:
        body = json.loads(e.read())
        assert e.code == 403 and "primary" in body["error"]["message"], body


SPARK_READ_REPLICA = textwrap.dedent("""
    ids = lambda q: sorted(r[0] for r in spark.sql(q).collect())
    out = {
      "v3": ids("SELECT id FROM cat.spark_ns.v3"),
      "evo": ids("SELECT id FROM cat.spark_ns.evo"),
      "evo_audit": ids("SELECT id FROM cat.spark_ns.evo VERSION AS OF 'audit'"),
      "evo_v1": ids("SELECT id FROM cat.spark_ns.evo VERSION AS OF 'v1'"),
      "t": ids("SELECT id FROM cat.spark_ns.t"),
    }
    print("RESULT " + json.dumps(out))
    spark.stop()
""")


def test_spark_reads_replicas_of_v3_branches_tags_and_partition_evolution(floe):
    """Spark's tables (a v3 table with a deletion vector, partition evolution, a branch and a tag, and
    position deletes) read by Spark at the replica exactly as at the source."""
    env, why = spark_env()
    if env is None:
        pytest.skip(f"Spark test skipped: {why}")
    for table in ("v3", "evo", "t"):
        wait_completed(floe, "spark_ns", table)
    out = run_spark_job(env, SPARK_READ_REPLICA, floe.state_dir, "spark_replica_job", floe.replica_url, "demo")
    assert out == {"v3": [1, 3], "evo": [1, 2, 3], "evo_audit": [1, 2, 3, 4], "evo_v1": [1, 2, 3],
                   "t": [1, 3, 4, 5]}, out
    assert_no_source_paths(floe, "spark_ns", "evo")
    # The deletion vector's Puffin file names the replica's data file, not the source's.
    for root, _, files in os.walk(floe.replica_root):
        for name in files:
            if name.endswith(".puffin"):
                with open(os.path.join(root, name), "rb") as f:
                    content = f.read()
                assert floe.primary_root.encode() not in content
                assert floe.replica_root.encode() in content


def test_replicas_of_client_written_tables_match(floe):
    """The session's `floe dev` replicates its whole warehouse: the tables PyIceberg, DuckDB and Spark
    wrote (appends, schema changes, position deletes, expiry) read the same at the replica."""
    source = pyiceberg_catalog(floe, "src")
    target = pyiceberg_catalog(replica_of(floe), "dst")
    checked = 0
    for namespace in source.list_namespaces():
        for identifier in source.list_tables(namespace):
            ns, name = ".".join(identifier[:-1]), identifier[-1]
            wait_completed(floe, ns, name)
            a, b = source.load_table(identifier), target.load_table(identifier)
            assert a.metadata.table_uuid == b.metadata.table_uuid
            assert a.metadata.current_snapshot_id == b.metadata.current_snapshot_id
            assert a.metadata.format_version == b.metadata.format_version
            assert [f.name for f in a.schema().fields] == [f.name for f in b.schema().fields]
            assert {s.spec_id: s.fields for s in a.metadata.partition_specs} == \
                {s.spec_id: s.fields for s in b.metadata.partition_specs}
            # Every branch and tag, at the same snapshot, reads the same rows.
            assert {n: r.snapshot_id for n, r in a.metadata.refs.items()} == \
                {n: r.snapshot_id for n, r in b.metadata.refs.items()}
            key = a.schema().fields[0].name
            # PyIceberg 0.12 cannot read v3 deletion vectors: Spark reads those (test above).
            for ref in a.metadata.refs.values() if a.metadata.format_version < 3 else []:
                rows_a = a.scan(snapshot_id=ref.snapshot_id).to_arrow().sort_by([(key, "ascending")])
                rows_b = b.scan(snapshot_id=ref.snapshot_id).to_arrow().sort_by([(key, "ascending")])
                assert rows_a.equals(rows_b), f"{identifier}@{ref.snapshot_id}: {rows_a} != {rows_b}"
            assert_no_source_paths(floe, ns, name)
            checked += 1
    assert checked >= 1


def wait_failed(floe, namespace, table, timeout=60):
    url = f"{floe.url}/management/v1/tables/demo/{namespace}/{table}/replication"
    deadline = time.time() + timeout
    while True:
        status = http_json(url)
        if status["destinations"] and status["destinations"][0]["state"] == "failed":
            return status
        assert time.time() < deadline, f"the stream of {namespace}.{table} did not fail: {status}"
        time.sleep(0.1)


def test_a_snapshot_without_its_files_stops_the_stream_not_the_replica(floe_no_rule):
    """A commit at the source whose new snapshot names a manifest list that does not exist: the
    stream fails naming the file, the replica keeps its 5 snapshots and rows (read by PyIceberg and
    DuckDB) and its log does not grow; once the snapshot is removed at the source and the stream
    resumed, replication goes on."""
    floe = floe_no_rule
    cat = pyiceberg_catalog(floe)
    cat.create_namespace("safe")
    schema = pa.schema([pa.field("id", pa.int64())])
    tbl = cat.create_table(("safe", "t"), schema=schema)
    for i in range(5):
        tbl.append(pa.table({"id": list(range(i * 10, i * 10 + 10))}, schema=schema))
    post_json(f"{floe.url}/management/v1/replication-rules", {
        "warehouse": "demo", "namespace": ["safe"],
        "destinations": [{"peer": "replica", "warehouse": "demo"}]})
    wait_completed(floe, "safe", "t")
    replica = replica_of(floe)
    replica_log = len(replica.log())

    tbl = cat.load_table(("safe", "t"))
    good = tbl.metadata.current_snapshot_id
    missing = f"{tbl.metadata.location}/metadata/snap-404-missing.avro"
    post_json(f"{floe.url}/v1/demo/namespaces/safe/tables/t", {
        "requirements": [{"type": "assert-ref-snapshot-id", "ref": "main", "snapshot-id": good}],
        "updates": [
            {"action": "add-snapshot", "snapshot": {
                "snapshot-id": 404, "parent-snapshot-id": good,
                "sequence-number": tbl.metadata.last_sequence_number + 1,
                "timestamp-ms": int(time.time() * 1000), "manifest-list": missing,
                "summary": {"operation": "append"}, "schema-id": 0}},
            {"action": "set-snapshot-ref", "ref-name": "main", "type": "branch", "snapshot-id": 404}]})
    status = wait_failed(floe, "safe", "t")
    assert "snap-404-missing.avro" in status["destinations"][0]["failure"], status

    copy = pyiceberg_catalog(replica, "replica-reader").load_table(("safe", "t"))
    assert len(copy.metadata.snapshots) == 5
    assert copy.scan().to_arrow().num_rows == 50
    assert duck(replica).execute("SELECT count(*) FROM cat.safe.t").fetchone()[0] == 50
    assert len(replica.log()) == replica_log

    # Repaired at the source (main back, the snapshot removed), resumed: it goes on.
    post_json(f"{floe.url}/v1/demo/namespaces/safe/tables/t", {"requirements": [], "updates": [
        {"action": "set-snapshot-ref", "ref-name": "main", "type": "branch", "snapshot-id": good},
        {"action": "remove-snapshots", "snapshot-ids": [404]}]})
    post_json(f"{floe.url}/management/v1/tables/demo/safe/t/replication/resume", {})
    wait_completed(floe, "safe", "t")
    cat.load_table(("safe", "t")).append(pa.table({"id": [1000]}, schema=schema))
    wait_completed(floe, "safe", "t")
    copy = pyiceberg_catalog(replica, "replica-reader-2").load_table(("safe", "t"))
    assert len(copy.metadata.snapshots) == 6
    assert 404 not in [s.snapshot_id for s in copy.metadata.snapshots]
    assert copy.scan().to_arrow().num_rows == 51
    assert duck(replica).execute("SELECT count(*) FROM cat.safe.t").fetchone()[0] == 51
