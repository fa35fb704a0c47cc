"""PyIceberg and DuckDB on an s3:// warehouse (s3s-fs, which checks signatures), reading and writing
with nothing but the `config` floe returns with each table (endpoint, region, path style, vended keys)."""
import os

import pyarrow as pa

from conftest import S3_KEY, S3_SECRET
from test_clients import duck, pyiceberg_catalog


def test_pyiceberg_and_duckdb_write_and_read_through_vended_config(floe_s3):
    cat = pyiceberg_catalog(floe_s3, "s3-py")
    cat.create_namespace("s3ns")
    schema = pa.schema([pa.field("id", pa.int64()), pa.field("v", pa.string())])
    tbl = cat.create_table(("s3ns", "t"), schema=schema)
    assert tbl.metadata.location.startswith("s3://lake/wh/s3ns/t-")
    for i in range(2):
        tbl.append(pa.table({"id": [i * 10 + j for j in range(10)], "v": [f"b{i}"] * 10}, schema=schema))
    assert cat.load_table(("s3ns", "t")).scan().to_arrow().num_rows == 20

    # loadCredentials: PyIceberg picks the credential whose prefix covers the table's files.
    creds = cat.load_credentials(("s3ns", "t"), tbl.metadata_location)
    assert creds["s3.access-key-id"] == S3_KEY and creds["s3.secret-access-key"] == S3_SECRET, creds
    assert creds["s3.endpoint"].startswith("http://127.0.0.1:"), creds

    # DuckDB reads PyIceberg's table and writes its own, from the vended config alone.
    con = duck(floe_s3)
    assert con.execute("SELECT count(*) FROM cat.s3ns.t").fetchone()[0] == 20
    con.execute("CREATE TABLE cat.s3ns.d (id BIGINT, s VARCHAR)")
    con.execute("INSERT INTO cat.s3ns.d VALUES (1, 'a'), (2, 'b')")
    assert sorted(cat.load_table(("s3ns", "d")).scan().to_arrow().column("id").to_pylist()) == [1, 2]

    # Every file is an object in the bucket; none went to the local disk.
    objects = [os.path.join(d, f) for d, _, files in os.walk(floe_s3.local_path("s3://lake")) for f in files]
    assert sum(1 for o in objects if o.endswith(".parquet")) >= 3, objects
    assert sum(1 for o in objects if o.endswith(".metadata.json")) >= 4, objects
