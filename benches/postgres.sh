#!/usr/bin/env bash
# PostgreSQL metadata benchmarks (issue 14). Run by hand: benches/postgres.sh [OUTDIR]
# Release build, loopback; a private PostgreSQL cluster (Debian's package, 15 or later)
# started in a temporary folder with durable commits (fsync=on, synchronous_commit=on,
# full_page_writes=on: the defaults, set explicitly); medians of RUNS runs; never a test.
#
#  1. One-event write transactions per second (wrk, benches/write.lua, 2 threads, 16
#     connections, WRK_SECS s) on one `vellum serve` over PostgreSQL, next to pgbench
#     inserting one row per transaction into a simple table (-c 16 -j 2 -T WRK_SECS -n, a
#     custom script) on the same cluster in the same run. Goal: vellum >= 0.5x pgbench.
#     For reference, the same load on one node on SQLite (no DATABASE_URL, SYNCHRONOUS=full).
#  2. The same load spread over 2 and 3 nodes sharing one database (one wrk per node, run
#     at once, 16 connections in all: 8+8, 6+5+5), into the same folder as on one node.
#     Folder creates carry no file content, so no node needs another's blobs. Goal: total
#     >= 0.8x one node (no collapse), on this machine's cores shared by all the processes.
#  3. GET /list of a folder of CHILDREN children (default each with its own Rego policy, as
#     benches/run.sh on SQLite; LIST_MODE=plain for labels only) on one node over
#     PostgreSQL, filled by POST /write of BATCH creates each: time to first byte and total
#     (a new caller each run, so no policy result is cached). Goals 50 ms / 1,500 ms.
#
# Each write measurement gets a fresh database, and starts after a CHECKPOINT (PostgreSQL)
# or a `sync` (SQLite), so none pays for what the one before left to write back.
# Env: RUNS (3), WRK_SECS (10), CHILDREN (100000), BATCH (1000), LIST_MODE (rego|plain),
# BUILD=0 to skip the release build, VELLUM_BIN, PG_BIN (a PostgreSQL bin folder).
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=${1:-bench-results}
mkdir -p "$OUT"
RUNS=${RUNS:-3}
WRK_SECS=${WRK_SECS:-10}
CHILDREN=${CHILDREN:-100000}
BATCH=${BATCH:-1000}
LIST_MODE=${LIST_MODE:-rego}
case "$LIST_MODE" in rego) GEN_MODE=rego ;; plain) GEN_MODE= ;; *) echo "LIST_MODE is rego or plain" >&2; exit 2 ;; esac
command -v wrk >/dev/null || { apt-get update -qq && apt-get install -y -qq wrk >/dev/null; }
[ "${BUILD:-1}" = 0 ] || cargo build --release --quiet --bin vellum
BIN=$(realpath "${VELLUM_BIN:-target/release/vellum}")
PG_BIN=${PG_BIN:-$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -1)}
[ -x "$PG_BIN/initdb" ] || { echo "no PostgreSQL (initdb) found; set PG_BIN" >&2; exit 1; }
PGBENCH=$PG_BIN/pgbench; [ -x "$PGBENCH" ] || PGBENCH=$(command -v pgbench)
PSQL=$PG_BIN/psql; [ -x "$PSQL" ] || PSQL=$(command -v psql)

WORK=$(mktemp -d)
PIDS=""  # vellum servers and wrk instances of ours still running
PG_UP=
# initdb refuses root: the cluster then runs as the `postgres` user, in a folder of its own.
as_pg() { if [ "$(id -u)" = 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi; }
cleanup() {
  for p in $PIDS; do kill "$p" 2>/dev/null || true; done
  for p in $PIDS; do wait "$p" 2>/dev/null || true; done
  [ -z "$PG_UP" ] || as_pg "$PG_BIN/pg_ctl" stop -m immediate -D "$WORK/pg/data" >/dev/null 2>&1 || true
  rm -rf "$WORK"
}
trap cleanup EXIT
forget() { local x keep=""; for x in $PIDS; do [ "$x" = "$1" ] || keep="$keep $x"; done; PIDS=$keep; }
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
median() { sort -g | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }
oid_of() { python3 -c 'import json,sys; print(json.load(sys.stdin)[0]["oid"])'; }

# --- the cluster
chmod 711 "$WORK"
mkdir "$WORK/pg"
[ "$(id -u)" != 0 ] || chown postgres: "$WORK/pg"
export PGPASSWORD=bench-$RANDOM$RANDOM
echo "$PGPASSWORD" >"$WORK/pg/password"; chmod 644 "$WORK/pg/password"
as_pg "$PG_BIN/initdb" -D "$WORK/pg/data" -U postgres --auth-local=trust --auth-host=scram-sha-256 \
  --pwfile="$WORK/pg/password" -E UTF8 >"$WORK/pg/initdb.log" 2>&1 || { cat "$WORK/pg/initdb.log" >&2; exit 1; }
PGPORT=$(free_port)
as_pg "$PG_BIN/pg_ctl" start -w -t 60 -D "$WORK/pg/data" -l "$WORK/pg/server.log" \
  -o "-h 127.0.0.1 -p $PGPORT -k $WORK/pg -c fsync=on -c synchronous_commit=on -c full_page_writes=on -c max_connections=300" \
  >/dev/null || { cat "$WORK/pg/server.log" >&2; exit 1; }
PG_UP=1
PGBASE=postgres://postgres:$PGPASSWORD@127.0.0.1:$PGPORT
sql() { "$PSQL" -qAtX -v ON_ERROR_STOP=1 "$PGBASE/${2:-postgres}" -c "$1"; }
echo "PostgreSQL $(sql 'SHOW server_version') on port $PGPORT: fsync=$(sql 'SHOW fsync'), synchronous_commit=$(sql 'SHOW synchronous_commit'), wal_sync_method=$(sql 'SHOW wal_sync_method')"

# --- the nodes: one signing key (the development key of a folder of its own, whose public
# half every node is given) and one master key, so a token or an object of one node is
# good on the others.
ROOT=$("$BIN" token --claims fixtures/claims/root.json --ttl 12h --data-dir "$WORK/keys")
JWT_PUB_FILE=$WORK/keys/dev-jwt-es256.pub.pem
MASTERKEY=$(head -c 32 /dev/urandom | base64)
URLS=(); NODE_PIDS=()
start_nodes() { # n database-name (empty: one node on SQLite)
  URLS=(); NODE_PIDS=()
  local i port
  for i in $(seq 0 $(($1 - 1))); do
    port=$(free_port)
    rm -rf "$WORK/node$i"
    # One at a time: the first creates the schema.
    env RUST_LOG=warn SYNCHRONOUS=full JWT_PUB="$JWT_PUB_FILE" MASTERKEY="$MASTERKEY" \
      ${2:+DATABASE_URL=$PGBASE/$2} \
      "$BIN" serve --listen 127.0.0.1:$port --data-dir "$WORK/node$i" >"$WORK/node$i.log" 2>&1 &
    NODE_PIDS+=($!); PIDS="$PIDS $!"
    URLS+=(http://127.0.0.1:$port)
    for _ in $(seq 200); do curl -sf "http://127.0.0.1:$port/healthz" >/dev/null && break; sleep 0.05; done
    curl -sf "http://127.0.0.1:$port/healthz" >/dev/null || { cat "$WORK/node$i.log" >&2; echo "node $i did not start" >&2; exit 1; }
  done
}
stop_nodes() {
  local p
  for p in "${NODE_PIDS[@]}"; do kill "$p"; wait "$p" 2>/dev/null || true; forget "$p"; done
  NODE_PIDS=()
}
folder() { # url parent name -> oid
  curl -sf -H "userpolicy: $ROOT" \
    -F "m=[{\"action\":\"C\",\"parentoid\":\"$2\",\"name\":\"$3\"}];type=application/json" "$1/write" | oid_of
}
fresh_db() { sql "CREATE DATABASE $1"; }
# 16 connections over the running nodes, one wrk per node at once, all into folder $1;
# sets WRK_TOTAL to the total of their rates.
wrk_nodes() { # parent
  local n=${#URLS[@]} i c t pids=""
  for i in $(seq 0 $((n - 1))); do
    c=$((16 / n + (i < 16 % n ? 1 : 0))); t=$((n == 1 ? 2 : 1))
    TOKEN=$ROOT PARENT=$1 PREFIX="n$i-" wrk -t$t -c$c -d${WRK_SECS}s -s benches/write.lua "${URLS[$i]}" \
      >"$WORK/wrk$i.txt" 2>&1 &
    pids="$pids $!"; PIDS="$PIDS $!"
  done
  for p in $pids; do wait "$p"; forget "$p"; done
  for i in $(seq 0 $((n - 1))); do
    ! grep -q 'Non-2xx' "$WORK/wrk$i.txt" || { cat "$WORK/wrk$i.txt" >&2; echo "error answers on node $i" >&2; exit 1; }
    ! grep -q 'Socket errors' "$WORK/wrk$i.txt" || echo "node $i of $n: $(grep 'Socket errors' "$WORK/wrk$i.txt")" >&2
  done
  WRK_TOTAL=$(for i in $(seq 0 $((n - 1))); do cat "$WORK/wrk$i.txt"; done | awk '/Requests\/sec/ {s += $2} END {printf "%.1f\n", s}')
}

echo "== 1./2. one-event writes/s, 16 connections: pgbench, vellum on 1/2/3 nodes over PostgreSQL, 1 on SQLite ($RUNS x ${WRK_SECS} s each)"
cat >"$WORK/insert.sql" <<'SQL'
INSERT INTO bench_insert (name) VALUES ('c' || :client_id || '-' || random());
SQL
PGB=(); N1=(); N2=(); N3=(); SQ=()
for r in $(seq "$RUNS"); do
  fresh_db "pgbench_$r"
  sql "CREATE TABLE bench_insert (id bigserial PRIMARY KEY, name text NOT NULL, created timestamptz NOT NULL DEFAULT now())" "pgbench_$r"
  sql CHECKPOINT
  "$PGBENCH" -h 127.0.0.1 -p "$PGPORT" -U postgres -n -c 16 -j 2 -T "$WRK_SECS" -f "$WORK/insert.sql" "pgbench_$r" \
    >"$WORK/pgbench.txt" 2>&1 || { cat "$WORK/pgbench.txt" >&2; exit 1; }
  P=$(awk '/^tps/ {print $3; exit}' "$WORK/pgbench.txt")
  sql "DROP DATABASE pgbench_$r WITH (FORCE)"
  declare -A RATE=()
  for n in 1 2 3; do
    fresh_db "vellum_${r}_$n"
    start_nodes "$n" "vellum_${r}_$n"
    LOAD=$(folder "${URLS[0]}" 1 load)
    sql CHECKPOINT
    wrk_nodes "$LOAD"; RATE[$n]=$WRK_TOTAL
    stop_nodes
    sql "DROP DATABASE vellum_${r}_$n WITH (FORCE)"
  done
  start_nodes 1 ""
  LOAD=$(folder "${URLS[0]}" 1 load)
  sync
  wrk_nodes "$LOAD"; S=$WRK_TOTAL
  stop_nodes
  echo "run $r: pgbench $P tx/s; vellum over PostgreSQL: 1 node ${RATE[1]}/s, 2 nodes ${RATE[2]}/s, 3 nodes ${RATE[3]}/s; 1 node on SQLite $S/s"
  PGB+=("$P"); N1+=("${RATE[1]}"); N2+=("${RATE[2]}"); N3+=("${RATE[3]}"); SQ+=("$S")
done
PGBM=$(printf '%s\n' "${PGB[@]}" | median)
N1M=$(printf '%s\n' "${N1[@]}" | median); N2M=$(printf '%s\n' "${N2[@]}" | median)
N3M=$(printf '%s\n' "${N3[@]}" | median); SQM=$(printf '%s\n' "${SQ[@]}" | median)

echo "== 3. GET /list of $CHILDREN children ($LIST_MODE), one node over PostgreSQL ($RUNS runs)"
fresh_db vellum_list
start_nodes 1 vellum_list
URL=${URLS[0]}
WIDE=$(folder "$URL" 1 wide)
T0=$(date +%s.%N)
for part in $(seq 0 $(((CHILDREN + BATCH - 1) / BATCH - 1))); do
  n=$((CHILDREN - part * BATCH)); [ "$n" -le "$BATCH" ] || n=$BATCH
  python3 benches/gen_events.py "$n" "$WIDE" "c${part}-" $GEN_MODE >"$WORK/wide.json"
  curl -sf -o /dev/null -H "userpolicy: $ROOT" -F "metadata=@$WORK/wide.json;type=application/json" "$URL/write"
done
FILL=$(python3 -c "import time; print(round(time.time() - $T0, 1))")
echo "filled in $FILL s ($(((CHILDREN + BATCH - 1) / BATCH)) POST /write of up to $BATCH creates)"
sql CHECKPOINT
FIRST=(); TOTAL=()
for r in $(seq "$RUNS"); do
  # A new claims set each run, so no result is served from the result cache of an earlier run.
  printf '{"label":"reader%s","values":{"email":["reader-%s@x"]}}' "$r$RANDOM" "$r$RANDOM" >"$WORK/reader.json"
  RT=$("$BIN" token --claims "$WORK/reader.json" --data-dir "$WORK/keys")
  T=$(curl -s -o "$WORK/list.json" -w '%{time_starttransfer} %{time_total}' -H "userpolicy: $RT" "$URL/list/$WIDE")
  N=$(python3 -c 'import json,sys; print(len(json.load(open(sys.argv[1]))))' "$WORK/list.json")
  [ "$N" = "$CHILDREN" ] || { echo "listed $N children, not $CHILDREN" >&2; exit 1; }
  echo "run $r: first byte ${T% *} s, total ${T#* } s, $N children"
  FIRST+=("${T% *}"); TOTAL+=("${T#* }")
done
stop_nodes
LFIRST=$(printf '%s\n' "${FIRST[@]}" | median)
LTOTAL=$(printf '%s\n' "${TOTAL[@]}" | median)

python3 - "$PGBM" "$N1M" "$N2M" "$N3M" "$SQM" "$LFIRST" "$LTOTAL" "$CHILDREN" "$LIST_MODE" "$WRK_SECS" "$RUNS" <<'PY' | tee "$OUT/postgres.md"
import sys
pgb, n1, n2, n3, sq, first, total = map(float, sys.argv[1:8])
children, mode, secs, runs = int(sys.argv[8]), sys.argv[9], sys.argv[10], sys.argv[11]
kind = "each with its own Rego policy" if mode == "rego" else "labels only"
print(f"Medians of {runs} runs; writes: {secs} s each, 16 connections in all; PostgreSQL with fsync and synchronous_commit on.")
print()
print("| benchmark | median | baseline (same run) | ratio | goal |")
print("| --- | --- | --- | --- | --- |")
print(f"| 1-event write transactions, 16 clients, 1 node over PostgreSQL | {n1:,.0f} tx/s | pgbench one-row INSERT, 16 clients: {pgb:,.0f} tx/s | {n1/pgb:.2f}x | >= 0.5x |")
print(f"| (reference) the same on 1 node on SQLite, SYNCHRONOUS=full | {sq:,.0f} tx/s | 1 node over PostgreSQL: {n1:,.0f} tx/s | {sq/n1:.2f}x | |")
print(f"| the same load over 2 nodes, one database | {n2:,.0f} tx/s | 1 node: {n1:,.0f} tx/s | {n2/n1:.2f}x | >= 0.8x |")
print(f"| the same load over 3 nodes, one database | {n3:,.0f} tx/s | 1 node: {n1:,.0f} tx/s | {n3/n1:.2f}x | >= 0.8x |")
print(f"| GET /list of {children:,} children ({kind}), new caller, over PostgreSQL | first byte {first*1000:,.0f} ms, total {total*1000:,.0f} ms | | | 50 ms / 1,500 ms |")
PY
