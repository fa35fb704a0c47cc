"""Views through floe with Spark 3.5 (Iceberg's Java REST client): CREATE VIEW, SELECT from it,
CREATE OR REPLACE VIEW, SHOW VIEWS and DROP VIEW, each change one entry in floe's log."""
import textwrap

import pytest

from conftest import http_json
from test_clients import run_spark_job, spark_env

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
