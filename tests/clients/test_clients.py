"""Real Iceberg clients against floe: PyIceberg 0.12, DuckDB 1.5.5 (iceberg extension) and Spark 3.5 with
Iceberg 1.10. Each client's writes are read back by another, and the update log is checked afterwards."""
import glob
import os
import shutil
import subprocess
import sys
import textwrap
import time

import duckdb
import pyarrow as pa
import pytest
from pyiceberg.catalog import load_catalog
from pyiceberg.types import StringType


def pyiceberg_catalog(floe, name="py"):
    return load_catalog(name, type="rest", uri=floe.url, warehouse=floe.warehouse)


def duck(floe, token=None):
    import duckdb_extension_avro
    import duckdb_extension_httpfs
    import duckdb_extension_iceberg

    con = duckdb.connect(config={"autoinstall_known_extensions": "false"})
    for mod, name in ((duckdb_extension_httpfs, "httpfs"), (duckdb_extension_avro, "avro"),
                      (duckdb_extension_iceberg, "iceberg")):
        path = glob.glob(os.path.join(os.path.dirname(mod.__file__), "extensions", "*", f"{name}.duckdb_extension"))[0]
        con.execute(f"LOAD '{path}'")
    auth = f"TOKEN '{token}'" if token else "AUTHORIZATION_TYPE 'none'"
    con.execute(f"ATTACH '{floe.warehouse}' AS cat (TYPE iceberg, ENDPOINT '{floe.url}', {auth})")
    return con


def assert_log_matches_history(floe, namespace, table):
    """Every metadata file in the table's history was written by exactly one log entry, in order, and the
    table's versions run 1, 2, 3, ... with no gap."""
    cat = pyiceberg_catalog(floe, "log-check")
    tbl = cat.load_table((namespace, table))
    entries = [e for e in floe.log() if e["table-uuid"] == str(tbl.metadata.table_uuid)]
    assert entries, "no log entries for the table"
    versions = [e["table-version"] for e in entries]
    assert versions == list(range(1, len(entries) + 1)), versions
    seqs = [e["seq"] for e in entries]
    assert seqs == sorted(seqs) and len(set(seqs)) == len(seqs)
    written = [e["new-metadata-location"] for e in entries if e["kind"] in ("create-table", "commit-table")]
    history = [m.metadata_file for m in tbl.metadata.metadata_log] + [tbl.metadata_location]
    # The metadata log may be trimmed at its front (write.metadata.previous-versions-max); its tail must
    # be exactly the files the log entries wrote, in the same order.
    assert written[-len(history):] == history
    assert len(written) == len(set(written))
    return entries


def test_pyiceberg_appends_schema_change_and_conflict_retry(any_floe):
    floe = any_floe
    cat = pyiceberg_catalog(floe)
    cat.create_namespace("py_ns")
    schema = pa.schema([pa.field("id", pa.int64()), pa.field("name", pa.string())])
    tbl = cat.create_table(("py_ns", "events"), schema=schema)
    for i in range(3):
        tbl.append(pa.table({"id": [i * 10 + j for j in range(10)], "name": [f"r{i}"] * 10}, schema=schema))
    with tbl.update_schema() as update:
        update.add_column("note", StringType())
    tbl = cat.load_table(("py_ns", "events"))
    assert tbl.scan().to_arrow().num_rows == 30
    assert len(tbl.metadata.snapshots) == 3
    assert [f.name for f in tbl.schema().fields] == ["id", "name", "note"]

    # Two writers from the same snapshot: the second gets a 409 and PyIceberg retries on fresh metadata.
    first = pyiceberg_catalog(floe, "a").load_table(("py_ns", "events"))
    second = pyiceberg_catalog(floe, "b").load_table(("py_ns", "events"))
    new_schema = first.schema().as_arrow()
    first.append(pa.table({"id": [100], "name": ["a"], "note": ["x"]}, schema=new_schema))
    second.append(pa.table({"id": [200], "name": ["b"], "note": ["y"]}, schema=new_schema))
    tbl = cat.load_table(("py_ns", "events"))
    assert sorted(tbl.scan().to_arrow().column("id").to_pylist())[-2:] == [100, 200]
    assert len(tbl.metadata.snapshots) == 5

    # Read by DuckDB too.
    con = duck(floe)
    assert con.execute("SELECT count(*) FROM cat.py_ns.events").fetchone()[0] == 32
    entries = assert_log_matches_history(floe, "py_ns", "events")
    assert [e["kind"] for e in entries] == ["create-table"] + ["commit-table"] * 6


def files_under(directory):
    return [os.path.join(d, f) for d, _, files in os.walk(directory) for f in files]


def test_pyiceberg_purge_deletes_the_tables_files(any_floe):
    floe = any_floe
    cat = pyiceberg_catalog(floe)
    cat.create_namespace_if_not_exists("purge_ns")
    schema = pa.schema([pa.field("id", pa.int64())])
    tbl = cat.create_table(("purge_ns", "gone"), schema=schema)
    tbl.append(pa.table({"id": [1, 2]}, schema=schema))
    tbl.append(pa.table({"id": [3]}, schema=schema))
    tbl = cat.load_table(("purge_ns", "gone"))
    data_files = [t.file.file_path for t in tbl.scan().plan_files()]
    manifest_lists = [s.manifest_list for s in tbl.metadata.snapshots]
    # A data file no snapshot references, as a writer whose commit failed leaves behind.
    orphan = f"{tbl.metadata.location}/data/orphan-of-a-failed-commit.parquet"
    with tbl.io.new_output(orphan).create() as out:
        out.write(b"never committed")
    # Another table in the namespace, which must survive.
    kept = cat.create_table(("purge_ns", "kept"), schema=schema)
    kept.append(pa.table({"id": [9]}, schema=schema))
    files = data_files + manifest_lists + [orphan]
    assert len(data_files) == 2 and all(os.path.exists(floe.local_path(f)) for f in files)

    cat.purge_table(("purge_ns", "gone"))
    assert not cat.table_exists(("purge_ns", "gone"))
    # The purge runs after the drop's answer (a durable job). It deletes the metadata files last
    # and, on a file system, the empty directories after them: wait for all of it.
    files.append(tbl.metadata_location)
    location = floe.local_path(tbl.metadata.location)
    on_s3 = tbl.metadata.location.startswith("s3://")

    def purged():
        return not any(os.path.exists(floe.local_path(f)) for f in files) and (
            on_s3 or not os.path.exists(location)
        )

    deadline = time.time() + 20
    while not purged() and time.time() < deadline:
        time.sleep(0.1)
    left = [f for f in files if os.path.exists(floe.local_path(f))]
    assert left == [], left
    assert files_under(location) == [], "files remain at the location"
    if not on_s3:
        assert not os.path.exists(location), "empty directories remain"
    assert cat.load_table(("purge_ns", "kept")).scan().to_arrow().column("id").to_pylist() == [9]


def test_duckdb_create_insert_delete_and_snapshots(any_floe):
    floe = any_floe
    con = duck(floe)
    con.execute("CREATE SCHEMA cat.duck_ns")
    con.execute("CREATE TABLE cat.duck_ns.t (id BIGINT, s VARCHAR)")
    con.execute("INSERT INTO cat.duck_ns.t VALUES (1, 'a'), (2, 'b')")
    con.execute("INSERT INTO cat.duck_ns.t VALUES (3, 'c')")
    assert con.execute("SELECT sum(id) FROM cat.duck_ns.t").fetchone()[0] == 6
    con.execute("DELETE FROM cat.duck_ns.t WHERE id = 2")
    assert sorted(con.execute("SELECT id FROM cat.duck_ns.t").fetchall()) == [(1,), (3,)]
    snapshots = con.execute("SELECT * FROM iceberg_snapshots(cat.duck_ns.t)").fetchall()
    assert len(snapshots) == 3

    # Read back by PyIceberg.
    tbl = pyiceberg_catalog(floe).load_table(("duck_ns", "t"))
    assert sorted(tbl.scan().to_arrow().column("id").to_pylist()) == [1, 3]
    assert len(tbl.metadata.snapshots) == 3
    entries = assert_log_matches_history(floe, "duck_ns", "t")
    assert entries[0]["kind"] == "create-table"


# The start of every Spark job: a local session with floe (argv[1], warehouse argv[2]) as catalog `cat`.
SPARK_SESSION = textwrap.dedent("""
    import os, sys, json
    from pyspark.sql import SparkSession
    uri, wh = sys.argv[1], sys.argv[2]
    spark = (SparkSession.builder.master("local[1]").appName("floe-test")
      .config("spark.ui.enabled", "false")
      .config("spark.driver.host", "127.0.0.1").config("spark.driver.bindAddress", "127.0.0.1")
      .config("spark.jars", os.environ["SPARK_JARS"])
      .config("spark.sql.extensions", "org.apache.iceberg.spark.extensions.IcebergSparkSessionExtensions")
      .config("spark.sql.catalog.cat", "org.apache.iceberg.spark.SparkCatalog")
      .config("spark.sql.catalog.cat.type", "rest")
      .config("spark.sql.catalog.cat.uri", uri)
      .config("spark.sql.catalog.cat.warehouse", wh)
      .getOrCreate())
    spark.sparkContext.setLogLevel("ERROR")
""")


def run_spark_job(env, body, state_dir, name, uri, warehouse):
    """Runs SPARK_SESSION + body with Spark's Python; returns the JSON the job prints after `RESULT `."""
    import json
    job = os.path.join(state_dir, f"{name}.py")
    with open(job, "w") as f:
        f.write(SPARK_SESSION + body)
    proc = subprocess.run([env["SPARK_PY"], job, uri, warehouse], env=env,
                          capture_output=True, text=True, timeout=600)
    result = [l for l in proc.stdout.splitlines() if l.startswith("RESULT ")]
    assert proc.returncode == 0 and result, proc.stderr[-4000:]
    return json.loads(result[-1][len("RESULT "):])


SPARK_JOB = textwrap.dedent("""
    out = {}
    spark.sql("CREATE NAMESPACE IF NOT EXISTS cat.spark_ns")
    spark.sql("CREATE TABLE cat.spark_ns.t (id BIGINT, v STRING) USING iceberg PARTITIONED BY (bucket(4, id)) "
              "TBLPROPERTIES ('format-version'='2', 'write.delete.mode'='merge-on-read')")
    spark.sql("INSERT INTO cat.spark_ns.t VALUES (1,'a'),(2,'b'),(3,'c')")
    spark.sql("INSERT INTO cat.spark_ns.t VALUES (4,'d')")
    spark.sql("DELETE FROM cat.spark_ns.t WHERE id = 2")
    spark.sql("ALTER TABLE cat.spark_ns.t ADD COLUMN w INT")
    spark.sql("INSERT INTO cat.spark_ns.t VALUES (5,'e',50)")
    out["ids"] = sorted(r[0] for r in spark.sql("SELECT id FROM cat.spark_ns.t").collect())
    snaps = spark.sql("SELECT snapshot_id FROM cat.spark_ns.t.snapshots ORDER BY committed_at").collect()
    out["snapshots"] = len(snaps)
    keep = snaps[-1][0]
    out["expired"] = [list(r) for r in spark.sql(
        "CALL cat.system.expire_snapshots(table => 'spark_ns.t', older_than => TIMESTAMP '2999-01-01 00:00:00', retain_last => 1)").collect()]
    out["after_expire"] = spark.sql("SELECT count(*) FROM cat.spark_ns.t.snapshots").collect()[0][0]
    # Partition evolution, a branch with its own commit, and a tag, for replication to carry.
    spark.sql("CREATE TABLE cat.spark_ns.evo (id BIGINT, v STRING) USING iceberg PARTITIONED BY (v)")
    spark.sql("INSERT INTO cat.spark_ns.evo VALUES (1,'a'),(2,'b')")
    spark.sql("ALTER TABLE cat.spark_ns.evo ADD PARTITION FIELD bucket(2, id)")
    spark.sql("INSERT INTO cat.spark_ns.evo VALUES (3,'c')")
    spark.sql("ALTER TABLE cat.spark_ns.evo CREATE TAG v1")
    spark.sql("ALTER TABLE cat.spark_ns.evo CREATE BRANCH audit")
    spark.sql("INSERT INTO cat.spark_ns.evo.branch_audit VALUES (4,'d')")
    # A v3 table: Spark's merge-on-read delete writes a deletion vector (Puffin).
    spark.sql("CREATE TABLE cat.spark_ns.v3 (id BIGINT, v STRING) USING iceberg "
              "TBLPROPERTIES ('format-version'='3', 'write.delete.mode'='merge-on-read')")
    spark.sql("INSERT INTO cat.spark_ns.v3 VALUES (1,'a'),(2,'b'),(3,'c')")
    spark.sql("DELETE FROM cat.spark_ns.v3 WHERE id = 2")
    out["v3_ids"] = sorted(r[0] for r in spark.sql("SELECT id FROM cat.spark_ns.v3").collect())
    out["evo_refs"] = sorted(r[0] for r in spark.sql("SELECT name FROM cat.spark_ns.evo.refs").collect())
    # Read the table DuckDB wrote, if it exists.
    try:
        out["duck_ids"] = sorted(r[0] for r in spark.sql("SELECT id FROM cat.duck_ns.t").collect())
    except Exception as e:
        out["duck_ids"] = str(e)
    print("RESULT " + json.dumps(out))
    spark.stop()
""")


def spark_env():
    """The Spark client from ../shared/tools/spark, or None (with the reason) where it cannot run."""
    setup = os.path.join(os.path.dirname(__file__), "../../../shared/tools/spark/setup.sh")
    if not os.path.exists(setup):
        return None, "../shared/tools/spark is absent"
    if shutil.which("java") is None:
        return None, "Java is absent"
    home = os.environ.get("FLOE_SPARK_HOME", os.path.expanduser("~/.cache/floe-spark"))
    subprocess.run(["bash", setup, home], check=True, stdout=subprocess.DEVNULL)
    env = dict(os.environ)
    for line in open(os.path.join(home, "env.sh")):
        key, _, value = line.removeprefix("export ").strip().partition("=")
        env[key] = value.strip('"')
    return env, None


def test_spark_partitioned_table_deletes_alter_and_expire(floe):
    env, why = spark_env()
    if env is None:
        pytest.skip(f"Spark test skipped: {why}")
    # DuckDB's table must exist for Spark to read it back.
    con = duck(floe)
    con.execute("CREATE SCHEMA IF NOT EXISTS cat.duck_ns")
    con.execute("CREATE TABLE IF NOT EXISTS cat.duck_ns.t (id BIGINT, s VARCHAR)")
    expected_duck = sorted(r[0] for r in con.execute("SELECT id FROM cat.duck_ns.t").fetchall())

    out = run_spark_job(env, SPARK_JOB, floe.state_dir, "spark_job", floe.url, floe.warehouse)
    assert out["ids"] == [1, 3, 4, 5]
    assert out["snapshots"] == 4
    assert out["after_expire"] == 1
    assert out["duck_ids"] == expected_duck
    assert out["evo_refs"] == ["audit", "main", "v1"]
    assert out["v3_ids"] == [1, 3]

    # Spark's writes (including its position deletes) read back by PyIceberg and DuckDB.
    tbl = pyiceberg_catalog(floe).load_table(("spark_ns", "t"))
    assert sorted(tbl.scan().to_arrow().column("id").to_pylist()) == [1, 3, 4, 5]
    assert [f.name for f in tbl.schema().fields] == ["id", "v", "w"]
    assert sorted(r[0] for r in con.execute("SELECT id FROM cat.spark_ns.t").fetchall()) == [1, 3, 4, 5]
    entries = assert_log_matches_history(floe, "spark_ns", "t")
    assert any(c["action"] == "remove-snapshots" for e in entries for c in e["changes"])
