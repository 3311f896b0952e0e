#!/usr/bin/env bash
# Metadata benchmarks (issue: the core store). Run by hand: benches/run.sh [OUTDIR]
# Prints medians and ratios against baselines measured in the same run. Never a test.
#
#  1. single-event transactions/s, 16 concurrent clients (wrk), SYNCHRONOUS=full,
#     next to raw single-row SQLite commits with synchronous=full on the same disk;
#  2. one 10,000-event transaction: wall time;
#  3. GET /list of a folder of 100,000 children, each with its own Rego policy:
#     time to first byte and total;
#  and the server's peak RSS (VmHWM) after each phase.
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=${1:-bench-results}
mkdir -p "$OUT"
RUNS=${RUNS:-3}
WRK_SECS=${WRK_SECS:-10}

command -v wrk >/dev/null || { apt-get update -qq && apt-get install -y -qq wrk >/dev/null; }
cargo build --release --quiet --bin vellum
cargo build --release --quiet --bench sqlite_raw 2>/dev/null || true
BIN=target/release/vellum

WORK=$(mktemp -d)
trap 'kill $PID 2>/dev/null || true; rm -rf "$WORK"' EXIT
PORT=$((20000 + RANDOM % 20000))
URL=http://127.0.0.1:$PORT

start_server() {
  rm -rf "$WORK/data"
  RUST_LOG=warn SYNCHRONOUS=full $BIN serve --listen 127.0.0.1:$PORT --data-dir "$WORK/data" \
    >"$WORK/server.log" 2>&1 &
  PID=$!
  for _ in $(seq 100); do curl -sf $URL/healthz >/dev/null && break; sleep 0.1; done
  TOKEN=$($BIN token --claims fixtures/claims/root.json --ttl 2h --data-dir "$WORK/data")
}
stop_server() { kill $PID; wait $PID 2>/dev/null || true; }
hwm() { awk '/VmHWM/ {printf "%.1f", $2/1024}' /proc/$PID/status; }
mkdir_root() { # name -> oid
  curl -sf -H "userpolicy: $TOKEN" -F "m=[{\"action\":\"C\",\"parentoid\":\"1\",\"name\":\"$1\"}];type=application/json" \
    $URL/write | python3 -c 'import json,sys; print(json.load(sys.stdin)[0]["oid"])'
}
median() { sort -g | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }

echo "== 1. raw SQLite single-row commits, synchronous=FULL ($RUNS x 5 s)"
RAW=$(cargo bench --quiet --bench sqlite_raw -- "$WORK" 5 "$RUNS" | tee /dev/stderr | awk '/median/ {print $2}')

echo "== 1. POST /write, one event per transaction, 16 connections ($RUNS x ${WRK_SECS} s)"
RATES=()
HWM1=0
for r in $(seq "$RUNS"); do
  start_server
  PARENT=$(mkdir_root "load")
  TOKEN=$TOKEN PARENT=$PARENT wrk -t2 -c16 -d${WRK_SECS}s -s benches/write.lua $URL >"$WORK/wrk.txt" 2>&1
  RATE=$(awk '/Requests\/sec/ {print $2}' "$WORK/wrk.txt")
  NON2XX=$(awk '/Non-2xx/ {print $NF}' "$WORK/wrk.txt"); NON2XX=${NON2XX:-0}
  echo "run $r: $RATE tx/s (non-2xx: $NON2XX), peak RSS $(hwm) MiB"
  HWM1=$(hwm)
  RATES+=("$RATE")
  stop_server
done
TX=$(printf '%s\n' "${RATES[@]}" | median)

echo "== 2. one 10,000-event transaction ($RUNS runs)"
python3 benches/gen_events.py 10000 1 big- >"$WORK/big.json"
T10K=()
for r in $(seq "$RUNS"); do
  start_server
  PARENT=$(mkdir_root "big")
  sed "s/\"parentoid\": \"1\"/\"parentoid\": \"$PARENT\"/g" "$WORK/big.json" >"$WORK/big-$r.json"
  T=$(curl -s -o "$WORK/big-out.json" -w '%{http_code} %{time_total}' -H "userpolicy: $TOKEN" \
      -F "metadata=@$WORK/big-$r.json;type=application/json" $URL/write)
  echo "run $r: status ${T% *}, ${T#* } s, peak RSS $(hwm) MiB"
  HWM2=$(hwm)
  T10K+=("${T#* }")
  stop_server
done
BIG=$(printf '%s\n' "${T10K[@]}" | median)

echo "== 3. GET /list of 100,000 children, each with its own Rego policy"
start_server
PARENT=$(mkdir_root "wide")
for part in 0 1 2 3 4 5 6 7 8 9; do
  python3 benches/gen_events.py 10000 "$PARENT" "c${part}-" rego >"$WORK/wide.json"
  curl -sf -o /dev/null -H "userpolicy: $TOKEN" -F "metadata=@$WORK/wide.json;type=application/json" $URL/write
done
HWM3a=$(hwm)
FIRST=(); TOTAL=()
for r in $(seq "$RUNS"); do
  # A new claims set each run, so no result is served from the result cache of an earlier run.
  printf '{"label":"reader%s","values":{"email":["reader-%s@x"]}}' "$r$RANDOM" "$r$RANDOM" >"$WORK/reader.json"
  RT=$($BIN token --claims "$WORK/reader.json" --data-dir "$WORK/data")
  T=$(curl -s -o "$WORK/list.json" -w '%{time_starttransfer} %{time_total}' -H "userpolicy: $RT" "$URL/list/$PARENT")
  N=$(python3 -c 'import json,sys; print(len(json.load(open(sys.argv[1]))))' "$WORK/list.json")
  echo "run $r: first byte ${T% *} s, total ${T#* } s, $N children, peak RSS $(hwm) MiB"
  FIRST+=("${T% *}"); TOTAL+=("${T#* }")
done
HWM3=$(hwm)
stop_server
LFIRST=$(printf '%s\n' "${FIRST[@]}" | median)
LTOTAL=$(printf '%s\n' "${TOTAL[@]}" | median)

python3 - "$RAW" "$TX" "$BIG" "$LFIRST" "$LTOTAL" "$HWM1" "$HWM2" "$HWM3" <<'PY' | tee "$OUT/metadata.md"
import sys
raw, tx, big, first, total, h1, h2, h3 = sys.argv[1:]
raw, tx = float(raw), float(tx)
print("| benchmark | median | baseline (same run) | ratio | peak RSS |")
print("| --- | --- | --- | --- | --- |")
print(f"| 1-event transactions, 16 clients, SYNCHRONOUS=full | {tx:,.0f} tx/s | raw SQLite commits {raw:,.0f}/s | {tx/raw:.2f}x | {h1} MiB |")
print(f"| one 10,000-event transaction | {float(big)*1000:,.0f} ms | goal < 1,000 ms | | {h2} MiB |")
print(f"| GET /list, 100,000 children with own Rego | first byte {float(first)*1000:,.0f} ms, total {float(total)*1000:,.0f} ms | goals 50 ms / 1,000 ms | | {h3} MiB |")
PY
