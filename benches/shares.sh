#!/usr/bin/env bash
# Sharing benchmarks (issue 12). Run by hand: benches/shares.sh [OUTDIR]
# Release build, SYNCHRONOUS=full, loopback; medians of RUNS runs; never a test.
#
#  1. GET /props and GET /stream of a 4 KiB file (three folders deep) by a reader whose
#     share is on the top folder, with wrk (2 threads, 4 connections, WRK_SECS s): the
#     median latency with no other share, with 1,000 more live shares on the file's
#     folders (to other people), and with 1,000 more shares to the same reader on other
#     objects as well. Goal: each latency within 1.2x of the first.
#  2. GET /list of 100,000 children whose own Rego policies deny the caller, in a folder
#     shared with them: time to first byte and total (a new caller each run, so no policy
#     result is cached). Goals 50 ms / 1 s, as the unshared listing of benches/run.sh.
#  3. Shares created per second by 16 connections (wrk, benches/share.lua) against
#     one-event write transactions per second (benches/write.lua), same server, same run.
#     Goal: >= 0.5x.
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=${1:-bench-results}
mkdir -p "$OUT"
RUNS=${RUNS:-3}
WRK_SECS=${WRK_SECS:-10}
command -v wrk >/dev/null || { apt-get update -qq && apt-get install -y -qq wrk >/dev/null; }
[ "${BUILD:-1}" = 0 ] || cargo build --release --quiet --bin vellum
BIN=${VELLUM_BIN:-target/release/vellum}

WORK=$(mktemp -d)
PID=
trap '[ -n "$PID" ] && kill $PID 2>/dev/null; rm -rf "$WORK"' EXIT
PORT=$((20000 + RANDOM % 20000))
URL=http://127.0.0.1:$PORT
median() { sort -g | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }
start_server() {
  rm -rf "$WORK/data"
  RUST_LOG=warn SYNCHRONOUS=full $BIN serve --listen 127.0.0.1:$PORT --data-dir "$WORK/data" \
    >"$WORK/server.log" 2>&1 &
  PID=$!
  for _ in $(seq 100); do curl -sf $URL/healthz >/dev/null && break; sleep 0.1; done
  ROOT=$($BIN token --claims fixtures/claims/root.json --ttl 2h --data-dir "$WORK/data")
  JANE=$($BIN token --claims fixtures/claims/jane.json --ttl 2h --data-dir "$WORK/data")
  BOB=$($BIN token --claims fixtures/claims/bob.json --ttl 2h --data-dir "$WORK/data")
}
stop_server() { kill $PID; wait $PID 2>/dev/null || true; PID=; }
oid_of() { python3 -c 'import json,sys; print(json.load(sys.stdin)[0]["oid"])'; }
JANE_ONLY='{"label":"jane only","requirements":{"f":"if","a":[{"f":"contains","a":[{"v":"email"},{"v":"jane.doe@deciphernow.com"}]},{"f":"yield-all","a":[]}]}}'
mk() { # token parent name [isfile] -> oid
  local meta="[{\"action\":\"C\",\"parentoid\":\"$2\",\"name\":\"$3\",\"objectpolicy\":$JANE_ONLY}]"
  if [ "${4:-}" = file ]; then
    head -c 4096 /dev/urandom >"$WORK/4k"
    meta="[{\"action\":\"C\",\"parentoid\":\"$2\",\"name\":\"$3\",\"isfile\":true,\"objectpolicy\":$JANE_ONLY}]"
    curl -sf -H "userpolicy: $1" -F "metadata=$meta;type=application/json" -F "data=@$WORK/4k" $URL/write | oid_of
  else
    curl -sf -H "userpolicy: $1" -F "metadata=$meta;type=application/json" $URL/write | oid_of
  fi
}
share() { # token oid email -> share id
  curl -sf -H "userpolicy: $1" -H 'content-type: application/json' \
    -d "{\"oid\":\"$2\",\"audience\":{\"claim\":\"email\",\"value\":\"$3\"},\"role\":\"reader\"}" $URL/shares |
    python3 -c 'import json,sys; print(json.load(sys.stdin)["id"])'
}
latency() { # path -> median latency in ms (wrk's 50%)
  TOKEN=$BOB wrk -t2 -c4 -d${WRK_SECS}s --latency -s benches/get.lua "$URL$1" >"$WORK/wrk.txt" 2>&1
  grep -q 'Non-2xx' "$WORK/wrk.txt" && { cat "$WORK/wrk.txt" >&2; echo "non-2xx answers" >&2; exit 1; }
  awk '$1 == "50%" { v=$2; if (v ~ /us$/) { sub(/us/,"",v); v/=1000 } else if (v ~ /ms$/) { sub(/ms/,"",v) } else if (v ~ /s$/) { sub(/s/,"",v); v*=1000 } print v }' "$WORK/wrk.txt"
}

echo "== 1. GET /props and /stream of a 4 KiB file, 0 / 1,000 / 1,000+1,000 other shares ($RUNS runs)"
declare -A L
for r in $(seq "$RUNS"); do
  start_server
  S0=$(mk "$ROOT" 1 s0); S1=$(mk "$JANE" "$S0" s1); S2=$(mk "$JANE" "$S1" s2)
  FILE=$(mk "$JANE" "$S2" f.bin file)
  share "$JANE" "$S0" bob.smith@deciphernow.com >/dev/null
  for p in props stream; do L[$p,0,$r]=$(latency "/$p/$FILE"); done
  python3 - "$URL" "$JANE" "$S0" "$S1" "$S2" <<'PY'
import json, sys, urllib.request
url, jane, *folders = sys.argv[1:]
for i in range(1000):
    body = json.dumps({"oid": folders[i % 3], "audience": {"claim": "email", "value": f"other{i}@bench"}, "role": "reader"}).encode()
    req = urllib.request.Request(url + "/shares", body, {"userpolicy": jane, "content-type": "application/json"})
    assert urllib.request.urlopen(req).status == 201
PY
  for p in props stream; do L[$p,1,$r]=$(latency "/$p/$FILE"); done
  python3 - "$URL" "$ROOT" "$JANE" <<'PY'
import json, sys, urllib.request
url, root, jane = sys.argv[1:]
def post(path, token, body, ctype):
    req = urllib.request.Request(url + path, body, {"userpolicy": token, "content-type": ctype})
    return json.load(urllib.request.urlopen(req))
pol = {"label": "jane only", "requirements": {"f": "if", "a": [{"f": "contains", "a": [{"v": "email"}, {"v": "jane.doe@deciphernow.com"}]}, {"f": "yield-all", "a": []}]}}
events = [{"action": "C", "parentoid": "1", "name": f"elsewhere{i}", "objectpolicy": pol} for i in range(1000)]
b = "b0undary"
body = (f"--{b}\r\nContent-Disposition: form-data; name=\"metadata\"\r\n\r\n" + json.dumps(events) + f"\r\n--{b}--\r\n").encode()
made = post("/write", root, body, f"multipart/form-data; boundary={b}")
for e in made:
    s = post("/shares", jane, json.dumps({"oid": e["oid"], "audience": {"claim": "email", "value": "bob.smith@deciphernow.com"}, "role": "reader"}).encode(), "application/json")
PY
  for p in props stream; do L[$p,2,$r]=$(latency "/$p/$FILE"); done
  echo "run $r: props ${L[props,0,$r]} / ${L[props,1,$r]} / ${L[props,2,$r]} ms, stream ${L[stream,0,$r]} / ${L[stream,1,$r]} / ${L[stream,2,$r]} ms"
  stop_server
done
med() { for r in $(seq "$RUNS"); do echo "${L[$1,$2,$r]}"; done | median; }

echo "== 2. GET /list of 100,000 children whose policies deny the caller, shared with them"
start_server
WIDE=$(mk "$ROOT" 1 wide)
for part in 0 1 2 3 4 5 6 7 8 9; do
  python3 benches/gen_events.py 10000 "$WIDE" "c${part}-" rego-private >"$WORK/wide.json"
  curl -sf -o /dev/null -H "userpolicy: $ROOT" -F "metadata=@$WORK/wide.json;type=application/json" $URL/write
done
FIRST=(); TOTAL=()
for r in $(seq "$RUNS"); do
  EMAIL="reader-$r-$RANDOM@bench"
  printf '{"label":"reader%s","values":{"email":["%s"]}}' "$r$RANDOM" "$EMAIL" >"$WORK/reader.json"
  RT=$($BIN token --claims "$WORK/reader.json" --data-dir "$WORK/data")
  share "$JANE" "$WIDE" "$EMAIL" >/dev/null
  T=$(curl -s -o "$WORK/list.json" -w '%{time_starttransfer} %{time_total}' -H "userpolicy: $RT" "$URL/list/$WIDE")
  N=$(python3 -c 'import json,sys; print(len(json.load(open(sys.argv[1]))))' "$WORK/list.json")
  [ "$N" = 100000 ] || { echo "listed $N children, not 100000" >&2; exit 1; }
  echo "run $r: first byte ${T% *} s, total ${T#* } s, $N children"
  FIRST+=("${T% *}"); TOTAL+=("${T#* }")
done
stop_server
LFIRST=$(printf '%s\n' "${FIRST[@]}" | median)
LTOTAL=$(printf '%s\n' "${TOTAL[@]}" | median)

echo "== 3. shares/s against 1-event writes/s, 16 connections ($RUNS x ${WRK_SECS} s each)"
SH=(); WR=()
for r in $(seq "$RUNS"); do
  start_server
  TARGET=$(mk "$ROOT" 1 target)
  LOAD=$(curl -sf -H "userpolicy: $ROOT" -F 'm=[{"action":"C","parentoid":"1","name":"load"}];type=application/json' $URL/write | oid_of)
  TOKEN=$ROOT PARENT=$LOAD wrk -t2 -c16 -d${WRK_SECS}s -s benches/write.lua $URL >"$WORK/w.txt" 2>&1
  TOKEN=$JANE OID=$TARGET wrk -t2 -c16 -d${WRK_SECS}s -s benches/share.lua $URL >"$WORK/s.txt" 2>&1
  for f in w s; do ! grep -q 'Non-2xx' "$WORK/$f.txt" || { cat "$WORK/$f.txt" >&2; exit 1; }; done
  W=$(awk '/Requests\/sec/ {print $2}' "$WORK/w.txt"); S=$(awk '/Requests\/sec/ {print $2}' "$WORK/s.txt")
  echo "run $r: $S shares/s, $W writes/s"
  SH+=("$S"); WR+=("$W")
  stop_server
done
SHM=$(printf '%s\n' "${SH[@]}" | median); WRM=$(printf '%s\n' "${WR[@]}" | median)

python3 - "$(med props 0)" "$(med props 1)" "$(med props 2)" "$(med stream 0)" "$(med stream 1)" "$(med stream 2)" \
  "$LFIRST" "$LTOTAL" "$SHM" "$WRM" <<'PY' | tee "$OUT/shares.md"
import sys
p0, p1, p2, s0, s1, s2, first, total, sh, wr = map(float, sys.argv[1:])
print("| benchmark | median | baseline (same run) | ratio | goal |")
print("| --- | --- | --- | --- | --- |")
print(f"| GET /props, 4 KiB file, 1,000 more shares on its folders | {p1:.3f} ms | no other share: {p0:.3f} ms | {p1/p0:.2f}x | <= 1.2x |")
print(f"| GET /props, and 1,000 more shares to the reader elsewhere | {p2:.3f} ms | {p0:.3f} ms | {p2/p0:.2f}x | <= 1.2x |")
print(f"| GET /stream, 4 KiB, 1,000 more shares on its folders | {s1:.3f} ms | {s0:.3f} ms | {s1/s0:.2f}x | <= 1.2x |")
print(f"| GET /stream, and 1,000 more shares to the reader elsewhere | {s2:.3f} ms | {s0:.3f} ms | {s2/s0:.2f}x | <= 1.2x |")
print(f"| GET /list, 100,000 children denied by policy, granted by a share | first byte {first*1000:,.0f} ms, total {total*1000:,.0f} ms | | | 50 ms / 1,000 ms |")
print(f"| shares created, 16 connections | {sh:,.0f}/s | 1-event writes {wr:,.0f}/s | {sh/wr:.2f}x | >= 0.5x |")
PY
