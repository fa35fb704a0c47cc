#!/usr/bin/env bash
# The whole test suite. Needs Rust, PostgreSQL's binaries and Python 3 (and Java 17 plus ../shared for
# the Spark test, which is skipped with a message without them); starts everything it uses itself:
#   1. Rust unit and integration tests, each binary against its own throwaway PostgreSQL (and the S3
#      tests against s3s-fs, an S3-compatible server checking signatures, installed once with cargo);
#      and the proxy tests against the Apache Iceberg reference catalog (../shared/tools/java-catalog);
#   2. the real clients (PyIceberg, DuckDB, Spark), installed into a venv, against `floe dev`; and
#      the operator's dashboard in headless Chromium (Debian's package, driven by Playwright), which
#      is required where Chromium is installed.
set -euo pipefail
cd "$(dirname "$0")/.."

s3s_fs=${FLOE_S3S_FS:-$HOME/.cargo/bin/s3s-fs}
[ -x "$s3s_fs" ] || cargo install s3s-fs@0.14.1 --locked --features binary --root "$(dirname "$(dirname "$s3s_fs")")"
export FLOE_S3S_FS=$s3s_fs FLOE_REQUIRE_S3=1

# The Apache Iceberg reference catalog, the independent upstream of the proxy tests, needs Java,
# the Spark client's jars and PostgreSQL's JDBC driver; where they are, its tests are required.
java_catalog=../shared/tools/java-catalog/run.sh
if [ -f "$java_catalog" ] && command -v java >/dev/null && [ -f /usr/share/java/postgresql.jar ]; then
  bash ../shared/tools/spark/setup.sh >/dev/null
  export FLOE_JAVA_CATALOG=$PWD/$java_catalog FLOE_REQUIRE_UPSTREAM=1
else
  echo "the upstream (proxy) tests will be skipped: they need $java_catalog, Java 17 and libpostgresql-jdbc-java" >&2
fi

cargo build --locked --bins
cargo test --locked --no-fail-fast

if command -v chromium >/dev/null; then
  export FLOE_REQUIRE_BROWSER=1
fi
venv=${FLOE_CLIENTS_VENV:-$HOME/.cache/floe-clients}
[ -x "$venv/bin/python" ] || python3 -m venv "$venv"
"$venv/bin/pip" install -q --disable-pip-version-check -r tests/clients/requirements.txt
FLOE_BIN=$PWD/target/debug/floe "$venv/bin/python" -m pytest -q -rs -p no:cacheprovider tests/clients
