"""Real clients against a floe with authentication: PyIceberg, DuckDB and Spark with a static bearer
token and with a JWT from an OpenID Connect issuer (a JWKS served over HTTP here), PyIceberg and Spark
with client credentials through floe's own `/v1/oauth/tokens`. The update log names each principal;
a caller without a credential, or without the role, is refused."""
import json
import os
import subprocess
import tempfile
import textwrap
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import jwt
import pyarrow as pa
import pytest
from cryptography.hazmat.primitives import serialization
from pyiceberg.catalog import load_catalog
from pyiceberg.exceptions import ForbiddenError, OAuthError, UnauthorizedError

from conftest import free_port, start_dev, stop_dev
from test_clients import duck, spark_env

ADMIN = "client-tests-admin-token-0123"
WRITER = "client-tests-writer-token-0123"
READER = "client-tests-reader-token-0123"
PY_CLIENT, PY_SECRET = "py-client", "py-client-secret-0123456789"
SPARK_CLIENT, SPARK_SECRET = "spark-client", "spark-client-secret-0123456789"
AUDIENCE = "floe-client-tests"
KEY_FILE = os.path.join(os.path.dirname(__file__), "../fixtures/jwt-issuer-key.pem")


class Issuer:
    """An OpenID Connect issuer: discovery and JWKS over HTTP on 127.0.0.1, tokens signed here."""

    def __init__(self):
        with open(KEY_FILE, "rb") as f:
            self.key = serialization.load_pem_private_key(f.read(), password=None)
        port = free_port()
        self.url = f"http://127.0.0.1:{port}"
        public = json.loads(jwt.algorithms.RSAAlgorithm.to_jwk(self.key.public_key()))
        public.update({"kid": "client-tests", "alg": "RS256", "use": "sig"})
        documents = {
            "/.well-known/openid-configuration": {"issuer": self.url, "jwks_uri": f"{self.url}/jwks"},
            "/jwks": {"keys": [public]},
        }

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self):
                body = json.dumps(documents.get(self.path, {})).encode()
                self.send_response(200 if self.path in documents else 404)
                self.send_header("content-type", "application/json")
                self.send_header("content-length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def token(self, subject, roles):
        now = int(time.time())
        claims = {"iss": self.url, "aud": AUDIENCE, "sub": subject, "roles": roles,
                  "iat": now, "nbf": now, "exp": now + 3600}
        return jwt.encode(claims, self.key, algorithm="RS256", headers={"kid": "client-tests"})


@pytest.fixture(scope="module")
def secured():
    issuer = Issuer()
    config = os.path.join(tempfile.mkdtemp(prefix="floe-auth-"), "floe-auth.toml")
    with open(config, "w") as f:
        f.write(textwrap.dedent(f"""
            [[auth.tokens]]
            principal = "ops"
            token = "{ADMIN}"
            roles = ["admin"]
            [[auth.tokens]]
            principal = "static-writer"
            token = "{WRITER}"
            [[auth.tokens]]
            principal = "static-reader"
            token = "{READER}"
            roles = ["reader"]

            [[auth.oidc]]
            issuer = "{issuer.url}"
            audience = "{AUDIENCE}"

            [auth.oauth]
            signing_key = "client-tests-signing-key-0123456789abcdef"
            [[auth.oauth.clients]]
            client_id = "{PY_CLIENT}"
            client_secret = "{PY_SECRET}"
            [[auth.oauth.clients]]
            client_id = "{SPARK_CLIENT}"
            client_secret = "{SPARK_SECRET}"
        """))
    proc, floe = start_dev("--no-rule", config=config, bearer=READER)
    floe.issuer = issuer
    yield floe
    stop_dev(proc)
    issuer.server.shutdown()


def catalog(floe, name, **credentials):
    if "credential" in credentials:
        # Where PyIceberg trades the credential for a token (its default is deprecated).
        credentials["oauth2-server-uri"] = f"{floe.url}/v1/oauth/tokens"
    return load_catalog(name, type="rest", uri=floe.url, warehouse=floe.warehouse, **credentials)


def principals(floe, namespace):
    return [e["principal"] for e in floe.log(bearer=ADMIN) if e["namespace"][:1] == [namespace]]


SCHEMA = pa.schema([pa.field("id", pa.int64()), pa.field("v", pa.string())])


def pyiceberg_and_duckdb_round_trip(floe, namespace, credentials, duck_token):
    cat = catalog(floe, f"py-{namespace}", **credentials)
    cat.create_namespace(namespace)
    tbl = cat.create_table((namespace, "t"), schema=SCHEMA)
    tbl.append(pa.table({"id": [1, 2], "v": ["a", "b"]}, schema=SCHEMA))
    con = duck(floe, token=duck_token)
    assert con.execute(f"SELECT count(*) FROM cat.{namespace}.t").fetchone()[0] == 2
    con.execute(f"CREATE TABLE cat.{namespace}.d (id BIGINT)")
    con.execute(f"INSERT INTO cat.{namespace}.d VALUES (7)")
    assert cat.load_table((namespace, "d")).scan().to_arrow().column("id").to_pylist() == [7]


def test_pyiceberg_and_duckdb_with_a_static_token(secured):
    pyiceberg_and_duckdb_round_trip(secured, "static_ns", {"token": WRITER}, WRITER)
    assert set(principals(secured, "static_ns")) == {"static-writer"}


def test_pyiceberg_and_duckdb_with_a_jwt(secured):
    token = secured.issuer.token("analyst@lake", ["writer"])
    pyiceberg_and_duckdb_round_trip(secured, "jwt_ns", {"token": token}, token)
    assert set(principals(secured, "jwt_ns")) == {"analyst@lake"}


def test_pyiceberg_with_client_credentials(secured):
    cat = catalog(secured, "py-cred", credential=f"{PY_CLIENT}:{PY_SECRET}")
    cat.create_namespace("cred_ns")
    tbl = cat.create_table(("cred_ns", "t"), schema=SCHEMA)
    tbl.append(pa.table({"id": [3], "v": ["c"]}, schema=SCHEMA))
    assert catalog(secured, "py-cred-2", token=READER).load_table(("cred_ns", "t")).scan().to_arrow().num_rows == 1
    assert set(principals(secured, "cred_ns")) == {PY_CLIENT}


def test_callers_without_a_credential_or_the_role_are_refused(secured):
    with pytest.raises(UnauthorizedError):
        catalog(secured, "anon", auth={"type": "noop"}).list_namespaces()
    with pytest.raises(UnauthorizedError):
        catalog(secured, "wrong", token="not-a-token-of-this-floe").list_namespaces()
    # The token endpoint answers an OAuthError (`invalid_client`), which PyIceberg raises as such.
    with pytest.raises(OAuthError, match="invalid_client"):
        catalog(secured, "bad-cred", credential=f"{PY_CLIENT}:wrong-secret-0123456789").list_namespaces()
    writer = catalog(secured, "writer", token=WRITER)
    writer.create_namespace("refusal_ns")
    writer.create_table(("refusal_ns", "t"), schema=SCHEMA)
    # A reader reads what the writer made, and may not write.
    reader = catalog(secured, "reader", token=READER)
    assert ("refusal_ns",) in reader.list_namespaces()
    tbl = reader.load_table(("refusal_ns", "t"))
    with pytest.raises(ForbiddenError):
        reader.create_namespace("reader_ns")
    with pytest.raises(ForbiddenError):
        tbl.append(pa.table({"id": [1], "v": ["x"]}, schema=SCHEMA))
    assert principals(secured, "reader_ns") == []
    assert set(principals(secured, "refusal_ns")) == {"static-writer"}


SPARK_AUTH_SESSION = textwrap.dedent("""
    import os, sys, json
    from pyspark.sql import SparkSession
    uri, wh, token, jwt_token, credential = sys.argv[1:6]
    builder = (SparkSession.builder.master("local[1]").appName("floe-auth-test")
      .config("spark.ui.enabled", "false")
      .config("spark.driver.host", "127.0.0.1").config("spark.driver.bindAddress", "127.0.0.1")
      .config("spark.jars", os.environ["SPARK_JARS"])
      .config("spark.sql.extensions", "org.apache.iceberg.spark.extensions.IcebergSparkSessionExtensions"))
    for name, key, value in (("by_token", "token", token), ("by_jwt", "token", jwt_token),
                             ("by_cred", "credential", credential)):
        builder = (builder.config(f"spark.sql.catalog.{name}", "org.apache.iceberg.spark.SparkCatalog")
          .config(f"spark.sql.catalog.{name}.type", "rest")
          .config(f"spark.sql.catalog.{name}.uri", uri)
          .config(f"spark.sql.catalog.{name}.warehouse", wh)
          # Each catalog reads what the others wrote: no cached table versions.
          .config(f"spark.sql.catalog.{name}.cache-enabled", "false")
          .config(f"spark.sql.catalog.{name}.{key}", value))
    spark = builder.getOrCreate()
    spark.sparkContext.setLogLevel("ERROR")
    out = {}
    spark.sql("CREATE NAMESPACE by_token.spark_auth")
    spark.sql("CREATE TABLE by_jwt.spark_auth.t (id BIGINT, v STRING) USING iceberg")
    spark.sql("INSERT INTO by_cred.spark_auth.t VALUES (1, 'a'), (2, 'b')")
    spark.sql("INSERT INTO by_token.spark_auth.t VALUES (3, 'c')")
    for name in ("by_token", "by_jwt", "by_cred"):
        out[name] = sorted(r[0] for r in spark.sql(f"SELECT id FROM {name}.spark_auth.t").collect())
    print("RESULT " + json.dumps(out))
    spark.stop()
""")


def test_spark_with_a_static_token_a_jwt_and_client_credentials(secured):
    env, why = spark_env()
    if env is None:
        pytest.skip(f"Spark test skipped: {why}")
    jwt_token = secured.issuer.token("spark-analyst", ["writer"])
    job = os.path.join(secured.state_dir, "spark_auth.py")
    with open(job, "w") as f:
        f.write(SPARK_AUTH_SESSION)
    proc = subprocess.run([env["SPARK_PY"], job, secured.url, secured.warehouse, WRITER, jwt_token,
                           f"{SPARK_CLIENT}:{SPARK_SECRET}"], env=env, capture_output=True, text=True,
                          timeout=600)
    result = [line for line in proc.stdout.splitlines() if line.startswith("RESULT ")]
    assert proc.returncode == 0 and result, proc.stderr[-4000:]
    out = json.loads(result[-1][len("RESULT "):])
    assert out == {"by_token": [1, 2, 3], "by_jwt": [1, 2, 3], "by_cred": [1, 2, 3]}
    by = {}
    for entry in secured.log(bearer=ADMIN):
        if entry["namespace"][:1] == ["spark_auth"]:
            by.setdefault(entry["kind"], set()).add(entry["principal"])
    assert by["create-namespace"] == {"static-writer"}
    assert by["create-table"] == {"spark-analyst"}
    assert by["commit-table"] == {SPARK_CLIENT, "static-writer"}
