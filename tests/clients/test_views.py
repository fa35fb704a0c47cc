"""Views through floe with Spark 3.5 (Iceberg's Java REST client): CREATE VIEW, SELECT from it,
CREATE OR REPLACE VIEW, SHOW VIEWS and DROP VIEW, each change one entry in floe's log; the replaced
view read through `floe dev`'s replica region, where a view write is refused."""
import json
import textwrap
import urllib.error

import pytest

from conftest import http_json
from test_clients import run_spark_job, spark_env
from test_replication import post_json, wait_completed

SPARK_VIEWS = textwrap.dedent("""
    out = {}
    spark.sql("CREATE NAMESPACE IF NOT EXISTS cat.view_ns")
    spark.sql("CREATE TABLE cat.view_ns.t (id BIGINT, v STRING) USING iceberg")
    spark.sql("INSERT INTO cat.view_ns.t VALUES (1,'a'),(2,'b'),(3,'c')")
    spark.sql("CREATE VIEW cat.view_ns.small AS SELECT id FROM cat.view_ns.t WHERE id < 3")
    out["first"] = sorted(r[0] for r in spark.sql("SELECT id FROM cat.view_ns.small").collect())
    spark.sql("CREATE OR REPLACE VIEW cat.view_ns.small AS SELECT id, v FROM cat.view_ns.t WHERE id > 1")
    out["replaced"] = sorted([r[0], r[1]] for r in spark.sql("SELECT * FROM cat.view_ns.small").collect())
    spark.sql("CREATE VIEW cat.view_ns.gone AS SELECT 1 AS one")
    out["views"] = sorted(r[1] for r in spark.sql("SHOW VIEWS IN cat.view_ns").collect())
    spark.sql("DROP VIEW cat.view_ns.gone")
    out["after_drop"] = sorted(r[1] for r in spark.sql("SHOW VIEWS IN cat.view_ns").collect())
    try:
        spark.sql("CREATE VIEW cat.view_ns.t AS SELECT 1 AS one")
        out["clash"] = "created"
    except Exception as e:
        out["clash"] = type(e).__name__ + ": " + str(e)[:300]
    print("RESULT " + json.dumps(out))
    spark.stop()
""")

SPARK_VIEWS_AT_REPLICA = textwrap.dedent("""
    out = {}
    out["rows"] = sorted([r[0], r[1]] for r in spark.sql("SELECT * FROM cat.view_ns.small").collect())
    out["views"] = sorted(r[1] for r in spark.sql("SHOW VIEWS IN cat.view_ns").collect())
    try:
        spark.sql("CREATE OR REPLACE VIEW cat.view_ns.small AS SELECT 1 AS one")
        out["write"] = "replaced"
    except Exception as e:
        out["write"] = type(e).__name__ + ": " + str(e)[:300]
    print("RESULT " + json.dumps(out))
    spark.stop()
""")


def test_spark_creates_replaces_lists_and_drops_views(floe):
    env, why = spark_env()
    if env is None:
        pytest.skip(f"Spark test skipped: {why}")
    out = run_spark_job(env, SPARK_VIEWS, floe.state_dir, "spark_views", floe.url, floe.warehouse)
    assert out["first"] == [1, 2]
    assert out["replaced"] == [[2, "b"], [3, "c"]]
    assert out["views"] == ["gone", "small"]
    assert out["after_drop"] == ["small"]
    assert "already exists" in out["clash"], out["clash"]

    loaded = http_json(f"{floe.url}/v1/{floe.warehouse}/namespaces/view_ns/views/small")
    metadata = loaded["metadata"]
    assert len(metadata["versions"]) == 2
    current = next(v for v in metadata["versions"] if v["version-id"] == metadata["current-version-id"])
    assert "id > 1" in current["representations"][0]["sql"]

    log = http_json(f"{floe.url}/management/v1/log?after=0&limit=1000")["entries"]
    views = [(e["kind"], e["table-name"], e["table-version"]) for e in log
             if e["namespace"] == ["view_ns"] and e["kind"].endswith("-view")]
    assert views == [("create-view", "small", 1), ("replace-view", "small", 2),
                     ("create-view", "gone", 1), ("drop-view", "gone", 2)], views

    # The replaced view, and the table it reads, through the replica region; writes refused there.
    wait_completed(floe, "view_ns", "t")
    wait_completed(floe, "view_ns", "small")
    at_replica = run_spark_job(env, SPARK_VIEWS_AT_REPLICA, floe.state_dir, "spark_views_replica",
                               floe.replica_url, floe.warehouse)
    assert at_replica["rows"] == [[2, "b"], [3, "c"]], at_replica
    # floe dev's rule keeps replicas of what the source drops.
    assert at_replica["views"] == ["gone", "small"], at_replica
    # The replica region advertises only reads, so Spark refuses the write itself; floe refuses it
    # too when a client sends it anyway.
    assert "does not support endpoint: POST" in at_replica["write"], at_replica
    with pytest.raises(urllib.error.HTTPError) as refused:
        post_json(f"{floe.replica_url}/v1/{floe.warehouse}/namespaces/view_ns/views/small",
                  {"requirements": [], "updates": [{"action": "set-properties", "updates": {"a": "b"}}]})
    assert refused.value.code == 403
    assert "read-only replica" in json.loads(refused.value.read())["error"]["message"]
    replica_view = http_json(f"{floe.replica_url}/v1/{floe.warehouse}/namespaces/view_ns/views/small")
    by_id = lambda versions: sorted(versions, key=lambda v: v["version-id"])  # noqa: E731
    assert by_id(replica_view["metadata"]["versions"]) == by_id(metadata["versions"])
    assert replica_view["metadata"]["location"].startswith("file://" + floe.replica_root)
