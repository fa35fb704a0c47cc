"""Real clients through floe in front of an independent catalog (proxy mode): `floe dev` with an upstream
warehouse `lake` served by the Apache Iceberg reference catalog (../shared/tools/java-catalog, its own
database on floe dev's PostgreSQL). PyIceberg, DuckDB and Spark write through floe and read each other's
writes; writers that commit to the reference catalog directly are logged as observed, with changes that
replay; and the upstream warehouse replicates to floe dev's replica region, read there by DuckDB."""
import json
import os
import re
import signal
import subprocess
import tempfile
import textwrap
import time
import urllib.request

import pyarrow as pa
import pytest
from pydantic import TypeAdapter
from pyiceberg.catalog import load_catalog
from pyiceberg.table.metadata import TableMetadataUtil
from pyiceberg.table.update import TableUpdate, update_table_metadata

from conftest import free_port, http_json, start_dev, stop_dev
from test_clients import duck, run_spark_job, spark_env

SCHEMA = pa.schema([("id", pa.int64()), ("s", pa.string())])


def wait_for(what, check, seconds=60):
    deadline = time.time() + seconds
    while True:
        try:
            result = check()
            if result:
                return result
        except Exception:
            if time.time() > deadline:
                raise
        if time.time() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.2)


@pytest.fixture(scope="module")
def proxy():
    """floe dev whose warehouse `lake` fronts the reference catalog; yields (Floe, upstream URL)."""
    launcher = os.environ.get("FLOE_JAVA_CATALOG")
    if not launcher:
        if os.environ.get("FLOE_REQUIRE_UPSTREAM"):
            raise RuntimeError("the reference catalog is required (FLOE_JAVA_CATALOG)")
        pytest.skip("proxy client tests skipped: no reference catalog (tests/run.sh sets FLOE_JAVA_CATALOG)")
    work = tempfile.mkdtemp(prefix="floe-proxy-")
    upstream_root, demo_root = os.path.join(work, "upstream"), os.path.join(work, "demo")
    os.makedirs(upstream_root)
    os.makedirs(demo_root)
    upstream_port = free_port()
    upstream_url = f"http://127.0.0.1:{upstream_port}"
    config = os.path.join(work, "floe.toml")
    with open(config, "w") as f:
        f.write(textwrap.dedent(f"""
            [[warehouses]]
            name = "demo"
            root = "file://{demo_root}"

            [[warehouses]]
            name = "lake"
            backend = "upstream"
            root = "file://{upstream_root}"
            [warehouses.upstream]
            url = "{upstream_url}"
            poll_interval_ms = 500
        """))
    proc, floe = start_dev("--no-rule", config=config, warehouse="demo")
    java = None
    try:
        # The reference catalog keeps its tables in a database of its own on floe dev's server.
        dev_log = open(os.path.join(floe.state_dir, "floe.log")).read()
        server = re.search(r"PostgreSQL at postgres://postgres@127\.0\.0\.1:(\d+)/", dev_log)
        assert server, dev_log
        pg_port = server.group(1)
        subprocess.run(["psql", "-h", "127.0.0.1", "-p", pg_port, "-U", "postgres", "-q", "-c",
                        "CREATE DATABASE upstream"], check=True)
        java = subprocess.Popen(["bash", launcher, str(upstream_port),
                                 f"jdbc:postgresql://127.0.0.1:{pg_port}/upstream", "postgres",
                                 f"file://{upstream_root}"],
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
        wait_for("the reference catalog", lambda: http_json(f"{upstream_url}/v1/config"), seconds=180)
        floe.warehouse = "lake"
        yield floe, upstream_url
    finally:
        if java is not None:
            os.killpg(java.pid, signal.SIGKILL)
            java.wait()
        stop_dev(proc)


def lake_entries(floe, table):
    return [e for e in floe.log() if e["warehouse"] == "lake" and e["table-name"] == table
            and e["namespace"] == ["proxy_ns"]]


def assert_chained(entries):
    """Versions 1, 2, 3, ... and each entry starting from the state the one before ended in."""
    assert [e["table-version"] for e in entries] == list(range(1, len(entries) + 1)), entries
    for before, after in zip(entries, entries[1:]):
        assert after["previous-metadata-location"] == before["new-metadata-location"]


def test_clients_read_each_others_writes_through_floe_and_every_commit_is_logged(proxy):
    floe, upstream_url = proxy
    cat = load_catalog("py-proxy", type="rest", uri=floe.url, warehouse="lake")
    cat.create_namespace("proxy_ns")
    tbl = cat.create_table(("proxy_ns", "t"), schema=SCHEMA)
    tbl.append(pa.table({"id": [1, 2], "s": ["a", "b"]}, schema=SCHEMA))
    tbl.append(pa.table({"id": [3], "s": ["c"]}, schema=SCHEMA))

    con = duck(floe)
    assert sorted(r[0] for r in con.execute("SELECT id FROM cat.proxy_ns.t").fetchall()) == [1, 2, 3]
    con.execute("INSERT INTO cat.proxy_ns.t VALUES (4, 'd')")

    env, why = spark_env()
    if env is None:
        pytest.skip(f"the Spark part skipped: {why}")
    out = run_spark_job(env, textwrap.dedent("""
        spark.sql("INSERT INTO cat.proxy_ns.t VALUES (5, 'e')")
        out = {"ids": sorted(r[0] for r in spark.sql("SELECT id FROM cat.proxy_ns.t").collect())}
        print("RESULT " + json.dumps(out))
        spark.stop()
    """), floe.state_dir, "proxy_job", floe.url, "lake")
    assert out["ids"] == [1, 2, 3, 4, 5]

    # Read back by PyIceberg, through floe and at the upstream directly: the same table.
    tbl = cat.load_table(("proxy_ns", "t"))
    assert sorted(tbl.scan().to_arrow()["id"].to_pylist()) == [1, 2, 3, 4, 5]
    direct = load_catalog("py-direct", type="rest", uri=upstream_url).load_table(("proxy_ns", "t"))
    assert direct.metadata_location == tbl.metadata_location

    # One entry per acknowledged commit, in order: the create (seen as it passed through), then the
    # two PyIceberg appends, DuckDB's insert and Spark's, each a commit-table naming what it made.
    # (floe answers a commit before it writes its entry, so the last may take a moment to appear.)
    entries = wait_for("every commit's entry", lambda: (lambda e: e if len(e) >= 5 else None)(
        lake_entries(floe, "t")))
    assert_chained(entries)
    assert [e["kind"] for e in entries] == ["observe-table"] + ["commit-table"] * 4, entries
    assert entries[-1]["new-metadata-location"] == tbl.metadata_location
    history = [m.metadata_file for m in tbl.metadata.metadata_log] + [tbl.metadata_location]
    assert [e["new-metadata-location"] for e in entries] == history[-len(entries):]


def replayed(before, changes):
    updates = TypeAdapter(list[TableUpdate]).validate_python(changes)
    return update_table_metadata(before, tuple(updates))


def test_commits_past_floe_are_observed_in_order_and_their_changes_replay(proxy):
    floe, upstream_url = proxy
    via_floe = load_catalog("py-floe", type="rest", uri=floe.url, warehouse="lake")
    direct = load_catalog("py-upstream", type="rest", uri=upstream_url)
    direct.create_namespace_if_not_exists("proxy_ns")
    tbl = direct.create_table(("proxy_ns", "bypass"), schema=SCHEMA)
    for i in range(3):
        tbl.append(pa.table({"id": [i], "s": [str(i)]}, schema=SCHEMA))
    with tbl.transaction() as txn:
        txn.set_properties(owner="direct")
    via_floe.load_table(("proxy_ns", "bypass")).append(pa.table({"id": [9], "s": ["z"]}, schema=SCHEMA))

    # floe answers a commit before it writes its entry: wait for floe's own commit to be logged.
    entries = wait_for("floe's commit's entry", lambda: (lambda e: e if e and e[-1]["kind"] == "commit-table"
                                                         else None)(lake_entries(floe, "bypass")))
    assert_chained(entries)
    kinds = [e["kind"] for e in entries]
    # The create and the four direct commits observed (by the poll or by floe's own commit, which
    # catches up first), then floe's commit.
    assert kinds == ["observe-table"] * 5 + ["commit-table"], kinds
    assert entries[-1]["principal"] != "upstream"
    assert all(e["principal"] == "upstream" for e in entries[:5])
    # Each observed state is what its changes make of the state before.
    for before, after in zip(entries, entries[1:5]):
        state = replayed(TableMetadataUtil.parse_obj(before["metadata"]), after["changes"])
        expected = TableMetadataUtil.parse_obj(after["metadata"])
        assert sorted(s.snapshot_id for s in state.snapshots) == sorted(s.snapshot_id for s in expected.snapshots)
        assert state.current_snapshot_id == expected.current_snapshot_id
        assert state.refs == expected.refs
        assert state.properties == expected.properties
        assert state.schemas == expected.schemas
    assert json.loads(json.dumps(entries[4]["changes"])) == [
        {"action": "set-properties", "updates": {"owner": "direct"}}]
    final = via_floe.load_table(("proxy_ns", "bypass"))
    assert sorted(final.scan().to_arrow()["id"].to_pylist()) == [0, 1, 2, 9]


def test_an_upstream_warehouse_replicates_to_the_replica_region(proxy):
    floe, _ = proxy
    cat = load_catalog("py-repl", type="rest", uri=floe.url, warehouse="lake")
    cat.create_namespace_if_not_exists("proxy_ns")
    tbl = cat.create_table(("proxy_ns", "replicated"), schema=SCHEMA)
    tbl.append(pa.table({"id": [1, 2, 3], "s": ["a", "b", "c"]}, schema=SCHEMA))
    rule = json.dumps({"warehouse": "lake", "namespace": ["proxy_ns"], "table": "replicated",
                       "destinations": [{"peer": "replica", "warehouse": "demo"}]}).encode()
    request = urllib.request.Request(f"{floe.url}/management/v1/replication-rules", data=rule,
                                     headers={"Content-Type": "application/json"}, method="POST")
    with urllib.request.urlopen(request, timeout=10) as answer:
        assert answer.status == 201
    tbl.append(pa.table({"id": [4], "s": ["d"]}, schema=SCHEMA))

    def completed():
        status = http_json(f"{floe.url}/management/v1/tables/lake/proxy_ns/replicated/replication")
        return all(d["state"] == "completed" and d["applied-version"] == d["source-version"]
                   for d in status["destinations"]) and status["destinations"]
    wait_for("replication to the replica region", completed)

    class Replica:
        url, warehouse = floe.replica_url, "demo"
    con = duck(Replica)
    assert sorted(r[0] for r in con.execute("SELECT id FROM cat.proxy_ns.replicated").fetchall()) == [1, 2, 3, 4]
