#!/usr/bin/env bash
# floe and its peers, measured by one tool in one run: `floe bench commits --url` against
#   - floe serve (this checkout's release build) on a throwaway PostgreSQL (fsync on);
#   - floe dev (the same build), whose replica region replicates every commit;
#   - the Apache Iceberg reference catalog (../shared/tools/java-catalog: Iceberg's own REST
#     handlers over a JdbcCatalog) on the same PostgreSQL;
#   - rustberg 0.3.0 (embedded redb), installed with cargo into ~/.cache/floe-peers if missing.
# Every server listens on 127.0.0.1 and is stopped at the end, PostgreSQL included.
# Usage: scripts/bench-peers.sh [floe bench commits options, e.g. --seconds 10 --writers 1,8,32]
# Needs: Rust, PostgreSQL's binaries, Java 17 and ../shared (as the Spark test does), run as root
# (PostgreSQL runs as `postgres`).
set -euo pipefail
cd "$(dirname "$0")/.."
repo=$PWD
bench_args=("$@")

pg_bin=$(ls -d /usr/lib/postgresql/*/bin | sort -V | tail -1)
peers=${FLOE_PEERS_DIR:-$HOME/.cache/floe-peers}
rustberg=$peers/bin/rustberg
[ -x "$rustberg" ] || cargo install rustberg@0.3.0 --locked --no-default-features \
  --features cli,storage-s3 --root "$peers"
cargo build --release --locked --bin floe
floe=$repo/target/release/floe

work=$(mktemp -d)
chmod 755 "$work"
pids=()
cleanup() {
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
  wait 2>/dev/null || true
  [ -f "$work/pg/postmaster.pid" ] && su postgres -c "$pg_bin/pg_ctl -D $work/pg -m fast -w stop" >/dev/null
  rm -rf "$work"
}
trap cleanup EXIT

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
wait_http() {  # URL LOG: wait until URL answers (120 s at most); else show the server's log
  for _ in $(seq 1200); do curl -sf -o /dev/null "$1" && return 0; sleep 0.1; done
  echo "no answer from $1; its log ends:" >&2; tail -20 "$2" >&2; exit 1
}

# PostgreSQL with its durable defaults.
pg_port=$(free_port)
mkdir -p "$work/pg" && chown postgres "$work/pg"
su postgres -c "$pg_bin/initdb -D $work/pg -A trust -U postgres" >/dev/null
su postgres -c "$pg_bin/pg_ctl -D $work/pg -l $work/pg/log -w start \
  -o '-c listen_addresses=127.0.0.1 -c port=$pg_port -c unix_socket_directories= -c max_connections=200'" >/dev/null
for db in floe iceberg; do
  su postgres -c "$pg_bin/createdb -h 127.0.0.1 -p $pg_port $db"
done

# floe.
floe_port=$(free_port)
mkdir -p "$work/floe-wh"
cat > "$work/floe.toml" <<TOML
listen = "127.0.0.1:$floe_port"
database_url = "postgres://postgres@127.0.0.1:$pg_port/floe"
allow_anonymous = true
default_warehouse = "bench"
[database]
max_connections = 40
[[warehouses]]
name = "bench"
root = "file://$work/floe-wh"
[replication]
enabled = false
TOML
FLOE_CONFIG=$work/floe.toml "$floe" serve > "$work/floe.log" 2>&1 &
pids+=($!)

# floe dev: the same build with its replica region running (a second region in the process,
# its own database on its own throwaway PostgreSQL, every commit replicated to it).
dev_port=$(free_port) dev_replica_port=$(free_port)
mkdir -p "$work/dev"
"$floe" dev --state-dir "$work/dev" --port "$dev_port" --replica-port "$dev_replica_port" \
  > "$work/dev.log" 2>&1 &
pids+=($!)

# The reference catalog.
java_port=$(free_port)
"$repo/../shared/tools/java-catalog/run.sh" "$java_port" "jdbc:postgresql://127.0.0.1:$pg_port/iceberg" \
  postgres "file://$work/java-wh" > "$work/java.log" 2>&1 &
pids+=($!)

# rustberg.
rustberg_port=$(free_port)
mkdir -p "$work/rustberg"
"$rustberg" --host 127.0.0.1 --port "$rustberg_port" --warehouse "file://$work/rustberg/wh" \
  --catalog-url "file://$work/rustberg/catalog.redb" --no-auth --dev --insecure-http \
  > "$work/rustberg.log" 2>&1 &
pids+=($!)

wait_http "http://127.0.0.1:$floe_port/v1/config" "$work/floe.log"
wait_http "http://127.0.0.1:$dev_port/v1/config" "$work/dev.log"
wait_http "http://127.0.0.1:$java_port/v1/config" "$work/java.log"
wait_http "http://127.0.0.1:$rustberg_port/v1/config" "$work/rustberg.log"

echo "# $(date -u +%FT%TZ), $(nproc) cores, PostgreSQL $("$pg_bin/postgres" --version | awk '{print $3}') with fsync on"
for target in "floe|$floe_port" "floe dev, replica region running|$dev_port" "Apache Iceberg reference catalog (JdbcCatalog, PostgreSQL)|$java_port" \
              "rustberg 0.3.0 (redb)|$rustberg_port"; do
  name=${target%|*} port=${target#*|}
  echo; echo "## $name"; echo
  "$floe" bench commits --url "http://127.0.0.1:$port" "${bench_args[@]}"
done
