#!/usr/bin/env bash
# The floor under an intercepted commit's PostgreSQL part (src/upstream/commit.rs), measured with
# pgbench on a throwaway PostgreSQL (fsync on): the least any implementation of the protocol
# writes, in the two round trips it needs, with none of floe's own SQL:
#   1. before forwarding: take the table's lock (session level), check that nothing is pending,
#      record the intent (its commit not waiting for the WAL flush);
#   2. after the answer: move the table's pointer, append the log entry, settle the intent, give
#      the lock back, and commit, waiting for the WAL flush (the client is acknowledged after).
# 100 tables, each round picking one at random, by 1 and by 8 clients, 10 s each. Prints pgbench's
# latency per round (both round trips) and per statement.
# Usage: scripts/proxy-commit-floor.sh   (as root: PostgreSQL runs as `postgres`)
set -euo pipefail
pg_bin=$(ls -d /usr/lib/postgresql/*/bin | sort -V | tail -1)
work=$(mktemp -d)
chmod 755 "$work"
port=54${RANDOM:0:2}
trap 'su postgres -c "$pg_bin/pg_ctl -D $work/data -m immediate stop" >/dev/null 2>&1 || true; rm -rf "$work"' EXIT
chown postgres "$work"
su postgres -c "$pg_bin/initdb -D $work/data -A trust -U postgres" >/dev/null
su postgres -c "$pg_bin/pg_ctl -D $work/data -l $work/log -w -o '-p $port -k $work -c listen_addresses=127.0.0.1' start" >/dev/null
psql=(psql -h 127.0.0.1 -p "$port" -U postgres -q)
"${psql[@]}" -c "CREATE DATABASE floor"
"${psql[@]}" -d floor <<'EOF'
CREATE TABLE tbl (id int PRIMARY KEY, version bigint NOT NULL, metadata_location text NOT NULL);
INSERT INTO tbl SELECT g, 1, 'file:///wh/ns/t' || g || '/metadata/00001.metadata.json'
  FROM generate_series(1, 100) g;
CREATE TABLE intent (intent_id uuid PRIMARY KEY, tbl int NOT NULL, state text NOT NULL,
  tables jsonb NOT NULL, outcome text);
CREATE INDEX ON intent (tbl) WHERE state = 'pending';
CREATE TABLE log (seq bigserial PRIMARY KEY, tbl int NOT NULL, version bigint NOT NULL,
  changes jsonb NOT NULL, previous text, next text, UNIQUE (tbl, version));
EOF
cat > "$work/round.sql" <<'EOF'
\set t random(1, 100)
\set id random(1, 1000000000)
SET synchronous_commit = off \; SELECT pg_advisory_lock(:t) \; INSERT INTO intent SELECT md5(:id::text || clock_timestamp()::text)::uuid, :t, 'pending', '[{"namespace":["ns"],"name":"t","previous":"file:///wh/ns/t/metadata/00001.metadata.json","requirements":[{"type":"assert-table-uuid","uuid":"3b8f4c52-9e3f-4c1a-8a5e-0d0e6c1f2a11"}],"updates":[{"action":"set-properties","updates":{"k":"v"}}]}]' FROM tbl WHERE id = :t AND NOT EXISTS (SELECT 1 FROM intent WHERE tbl = :t AND state = 'pending') RETURNING intent_id;
SET synchronous_commit = on \; BEGIN \; WITH r AS (UPDATE tbl SET version = version + 1, metadata_location = 'file:///wh/ns/t/metadata/' || md5(random()::text) || '.metadata.json' WHERE id = :t RETURNING version, metadata_location) INSERT INTO log (tbl, version, changes, previous, next) SELECT :t, version, '[{"action":"set-properties","updates":{"k":"v"}}]', 'file:///wh/ns/t/metadata/00001.metadata.json', metadata_location FROM r \; UPDATE intent SET state = 'done', outcome = 'acknowledged' WHERE tbl = :t AND state = 'pending' \; SELECT pg_advisory_unlock(:t) \; COMMIT;
EOF
for clients in 1 8; do
  echo "## $clients client(s)"
  "$pg_bin/pgbench" -h 127.0.0.1 -p "$port" -U postgres -n -r -f "$work/round.sql" -c "$clients" \
    -j "$((clients < 2 ? 1 : 2))" -T 10 floor 2>&1 | grep -E "^tps|latency average|^ +[0-9.]+ +[0-9]+ +SET"
done
