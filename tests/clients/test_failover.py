"""Failover between the two regions of `floe dev`, which are each other's peers: a planned
switchover of a table PyIceberg writes, after which the old primary refuses PyIceberg's writes
naming the new primary, PyIceberg writes at the new primary, and DuckDB reads those writes at the
old primary, its replica now. And synchronous replication: each PyIceberg append under a
synchronous rule is at the replica region, for DuckDB to read, when PyIceberg's commit returns."""
import time
import urllib.request

import pyarrow as pa
import pytest
from pyiceberg.exceptions import ForbiddenError

from conftest import http_json
from test_clients import duck, pyiceberg_catalog
from test_replication import post_json, replica_of, wait_completed


def test_planned_switchover_reverses_the_stream_for_pyiceberg_and_duckdb(floe_no_rule):
    floe = floe_no_rule
    cat = pyiceberg_catalog(floe, "fo-primary")
    cat.create_namespace("fo")
    schema = pa.schema([pa.field("id", pa.int64())])
    tbl = cat.create_table(("fo", "events"), schema=schema)
    for i in range(3):
        tbl.append(pa.table({"id": list(range(i * 10, i * 10 + 10))}, schema=schema))
    post_json(f"{floe.url}/management/v1/replication-rules", {
        "warehouse": "demo", "namespace": ["fo"],
        "destinations": [{"peer": "replica", "warehouse": "demo"}]})
    wait_completed(floe, "fo", "events")

    replica = replica_of(floe)
    promoted = post_json(f"{replica.url}/management/v1/tables/demo/fo/events/promote",
                         {"mode": "planned"})
    assert promoted["epoch"] == 2, promoted
    assert promoted["previous-primary"] == "primary", promoted
    assert isinstance(promoted["writes-refused-ms"], int), promoted
    assert promoted["replicates-back"], promoted

    # The old primary refuses PyIceberg's write, naming the new primary's catalog.
    stale = cat.load_table(("fo", "events"))
    with pytest.raises(ForbiddenError) as refused:
        stale.append(pa.table({"id": [-1]}, schema=schema))
    assert "region `replica`" in str(refused.value) and replica.url in str(refused.value)

    # PyIceberg writes at the new primary.
    new_primary = pyiceberg_catalog(replica, "fo-new-primary")
    moved = new_primary.load_table(("fo", "events"))
    assert moved.scan().to_arrow().num_rows == 30
    moved.append(pa.table({"id": [100, 101]}, schema=schema))
    assert new_primary.load_table(("fo", "events")).scan().to_arrow().num_rows == 32

    # The old primary follows: DuckDB reads the new primary's write there.
    url = f"{floe.url}/management/v1/tables/demo/fo/events/replication"
    deadline = time.time() + 60
    while True:
        role = http_json(url)["role"]
        count = duck(floe).execute("SELECT count(*) FROM cat.fo.events").fetchone()[0]
        if role["role"] == "replica" and count == 32:
            break
        # Never less than it had: the old state until the new one lands.
        assert count in (30, 32), count
        assert time.time() < deadline, f"the old primary did not follow: {role}, {count} rows"
        time.sleep(0.2)
    assert role["primary-region"] == "replica", role
    assert role["diverged"]["commits"] == [], role


def test_pyiceberg_appends_under_a_synchronous_rule_are_at_the_replica_when_they_return(floe):
    rule = post_json(f"{floe.url}/management/v1/replication-rules", {
        "warehouse": "demo", "namespace": ["sy"], "mode": "sync", "min-acks": 1,
        "timeout-ms": 20000, "destinations": [{"peer": "replica", "warehouse": "demo"}]})
    assert rule["mode"] == "sync", rule
    cat = pyiceberg_catalog(floe, "sync-primary")
    cat.create_namespace("sy")
    schema = pa.schema([pa.field("id", pa.int64())])
    tbl = cat.create_table(("sy", "events"), schema=schema)
    reader = duck(replica_of(floe))
    for i in range(4):
        tbl.append(pa.table({"id": list(range(i * 10, i * 10 + 10))}, schema=schema))
        # No waiting: the commit returned, so the replica region has it, data files included.
        count = reader.execute("SELECT count(*) FROM cat.sy.events").fetchone()[0]
        assert count == (i + 1) * 10, (i, count)
    status = http_json(f"{floe.url}/management/v1/tables/demo/sy/events/replication")
    assert [d["mode"] for d in status["destinations"]] == ["sync"], status
    metrics = urllib.request.urlopen(f"{floe.url}/management/v1/metrics", timeout=10).read().decode()
    assert 'floe_sync_commits_total{outcome="acknowledged"}' in metrics, metrics
