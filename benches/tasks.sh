#!/usr/bin/env bash
# Task queue benchmarks (issue 13). Run by hand: benches/tasks.sh [OUTDIR]
# Release build, SYNCHRONOUS=full, local blobs, loopback; medians of RUNS runs; never a test.
#
#  1. Key rotation throughput: 1 GiB as 205 files of 5 MiB, uploaded in one POST /write
#     (timed), in a folder shared with a reader; the share is revoked and the rotation of
#     every version timed from the DELETE to its task's `done`. Goal: rotation >= 0.8x the
#     upload's rate, with the server's peak RSS during the rotation < 64 MiB (VmHWM of a
#     server restarted between the upload and the revocation).
#  2. What the queue costs other work: one-event write transactions per second (wrk, 16
#     connections, WRK_SECS s) with no task running, against the same load during which, 2 s
#     in, a share over 1,000 versions of VERSION_BYTES is revoked (their rotation running
#     meanwhile). Goal: < 5% fewer over the run. Stricter, also reported: the rate inside the
#     rotation's own window (revocation to its task's `done`), from POST /write commits
#     counted by /metrics every 20 ms, against the rate over the middle of the run alone.
#     Each part starts once the disk has written back what the one before left (`sync`):
#     part 1's gigabytes still being written back made part 2's rotation 10x slower.
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=${1:-bench-results}
mkdir -p "$OUT"
RUNS=${RUNS:-3}
WRK_SECS=${WRK_SECS:-10}
VERSION_BYTES=${VERSION_BYTES:-16384}
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
  restart_server
}
restart_server() { # on the same data folder
  RUST_LOG=warn SYNCHRONOUS=full $BIN serve --listen 127.0.0.1:$PORT --data-dir "$WORK/data" \
    >"$WORK/server.log" 2>&1 &
  PID=$!
  for _ in $(seq 100); do curl -sf $URL/healthz >/dev/null && break; sleep 0.1; done
  ROOT=$($BIN token --claims fixtures/claims/root.json --ttl 2h --data-dir "$WORK/data")
  JANE=$($BIN token --claims fixtures/claims/jane.json --ttl 2h --data-dir "$WORK/data")
}
stop_server() { kill $PID; wait $PID 2>/dev/null || true; PID=; }
oid_of() { python3 -c 'import json,sys; print(json.load(sys.stdin)[0]["oid"])'; }
JANE_ONLY='{"label":"jane only","requirements":{"f":"if","a":[{"f":"contains","a":[{"v":"email"},{"v":"jane.doe@deciphernow.com"}]},{"f":"yield-all","a":[]}]}}'
folder() { # name -> oid of a jane-only folder under the root
  curl -sf -H "userpolicy: $ROOT" \
    -F "metadata=[{\"action\":\"C\",\"parentoid\":\"1\",\"name\":\"$1\",\"objectpolicy\":$JANE_ONLY}];type=application/json" \
    $URL/write | oid_of
}
# Writes N files of BYTES random bytes into FOLDER in one transaction; prints seconds taken.
fill() { # folder n bytes
  python3 - "$1" "$2" "$JANE_ONLY" >"$WORK/meta.json" <<'PY'
import json, sys
folder, n, pol = sys.argv[1], int(sys.argv[2]), json.loads(sys.argv[3])
print(json.dumps([{"action": "C", "parentoid": folder, "name": f"v{i:04d}", "isfile": True,
                   "objectpolicy": pol} for i in range(n)]))
PY
  local args=(-F "metadata=@$WORK/meta.json;type=application/json")
  for i in $(seq "$2"); do
    # Named by size too: part 2 must not pick up part 1's 5 MiB files as its 16 KiB ones.
    [ -f "$WORK/part$3-$i" ] || head -c "$3" /dev/urandom >"$WORK/part$3-$i"
    args+=(-F "f$i=@$WORK/part$3-$i;type=application/octet-stream")
  done
  curl -sf -o /dev/null -w '%{time_total}' -H "userpolicy: $JANE" "${args[@]}" $URL/write
}
share() { # oid -> share id (to Bob, reader, no acceptance needed)
  curl -sf -H "userpolicy: $JANE" -H 'content-type: application/json' \
    -d "{\"oid\":\"$1\",\"audience\":{\"claim\":\"email\",\"value\":\"bob.smith@deciphernow.com\"},\"role\":\"reader\"}" \
    $URL/shares | python3 -c 'import json,sys; print(json.load(sys.stdin)["id"])'
}
revoke() { curl -sf -o /dev/null -X DELETE -H "userpolicy: $JANE" "$URL/shares/$1"; }
rotation_task() { # share id -> its rotate_share task id (waits for it to be queued)
  for _ in $(seq 200); do
    T=$(curl -sf -H "userpolicy: $JANE" "$URL/tasks?kind=rotate_share&limit=1000" |
      python3 -c 'import json,sys; s=sys.argv[1]; print(next((t["id"] for t in json.load(sys.stdin) if t.get("share")==s), ""))' "$1")
    [ -n "$T" ] && { echo "$T"; return; }
    sleep 0.02
  done
  echo "no rotation task for share $1" >&2; exit 1
}
wait_done() { # task id -> waits until done
  while :; do
    S=$(curl -sf -H "userpolicy: $JANE" "$URL/tasks/$1" | python3 -c 'import json,sys; print(json.load(sys.stdin)["state"])')
    [ "$S" = done ] && return
    [ "$S" = failed ] && { echo "task $1 failed" >&2; exit 1; }
    sleep 0.02
  done
}
now() { date +%s.%N; }
finished_at() { # task id -> when it was last updated (its `done`), seconds since the epoch
  curl -sf -H "userpolicy: $JANE" "$URL/tasks/$1" |
    python3 -c 'import json,sys,datetime; t=json.load(sys.stdin)["updated"]; print(datetime.datetime.fromisoformat(t.replace("Z","+00:00")).timestamp())'
}

echo "== 1. rotation of 1 GiB of 5 MiB versions against its upload ($RUNS runs)"
UP=(); ROT=(); RSS=()
BYTES=$((205 * 5 * 1024 * 1024))
for r in $(seq "$RUNS"); do
  start_server
  F=$(folder big)
  T_UP=$(fill "$F" 205 $((5 << 20)))
  ID=$(share "$F")
  # A fresh process for the rotation: what the upload left in the allocator is not the
  # rotation's (the peak is measured from here).
  stop_server; sync; restart_server
  T0=$(now); revoke "$ID"; TASK=$(rotation_task "$ID"); wait_done "$TASK"; T1=$(now)
  PEAK=$(awk '/VmHWM/ {print $2}' /proc/$PID/status)
  T_ROT=$(python3 -c "print($T1 - $T0)")
  echo "run $r: upload $T_UP s, rotation $T_ROT s, peak RSS during rotation $((PEAK / 1024)) MiB"
  UP+=("$T_UP"); ROT+=("$T_ROT"); RSS+=("$PEAK")
  stop_server
done
UPM=$(printf '%s\n' "${UP[@]}" | median); ROTM=$(printf '%s\n' "${ROT[@]}" | median)
RSSM=$(printf '%s\n' "${RSS[@]}" | sort -g | tail -1)

echo "== 2. 1-event writes/s without and with a rotation of 1,000 versions running ($RUNS x ${WRK_SECS} s each)"
# Samples POST /write commits from /metrics every 20 ms until killed: "epoch-seconds count".
cat >"$WORK/sampler.py" <<'PY'
import http.client, sys, time
port, out = int(sys.argv[1]), open(sys.argv[2], "w", buffering=1)
c = http.client.HTTPConnection("127.0.0.1", port)
while True:
    c.request("GET", "/metrics")
    for line in c.getresponse().read().decode().splitlines():
        if line.startswith("vellum_transactions_committed_total "):
            out.write(f"{time.time()} {line.split()[1]}\n")
    time.sleep(0.02)
PY
# The commit rate over [from, to] (epoch seconds) in a sampler's file, interpolated.
rate() { # file from to
  python3 - "$@" <<'PY'
import sys
rows = [tuple(map(float, l.split())) for l in open(sys.argv[1]) if l.strip()]
# A window reaching past the samples (a rotation that outlasted the load) is cut to them.
a = max(float(sys.argv[2]), rows[0][0])
b = min(float(sys.argv[3]), rows[-1][0])
def at(t):
    for (t0, c0), (t1, c1) in zip(rows, rows[1:]):
        if t0 <= t <= t1:
            return c0 + (c1 - c0) * (t - t0) / (t1 - t0)
    raise SystemExit(f"{t} is outside the samples")
print(round((at(b) - at(a)) / (b - a), 1))
PY
}
sampled() { # file, then the command to run while sampling
  local f=$1; shift
  python3 "$WORK/sampler.py" "$PORT" "$f" & local S=$!
  "$@"
  kill $S; wait $S 2>/dev/null || true
}
BASE=(); WITH=(); RDUR=(); BASE_MID=(); WITH_ROT=()
start_server
F=$(folder small)
fill "$F" 1000 "$VERSION_BYTES" >/dev/null
load() { # a fresh folder for wrk's writes (its names restart at each run)
  curl -sf -H "userpolicy: $ROOT" -F "m=[{\"action\":\"C\",\"parentoid\":\"1\",\"name\":\"load$1\"}];type=application/json" $URL/write | oid_of
}
wrk_load() { TOKEN=$ROOT PARENT=$LOAD wrk -t2 -c16 -d${WRK_SECS}s -s benches/write.lua $URL; }
for r in $(seq "$RUNS"); do
  LOAD=$(load "$r-0"); sync
  S0=$(now); sampled "$WORK/s0.txt" wrk_load >"$WORK/w0.txt" 2>&1
  ID=$(share "$F")
  LOAD=$(load "$r-1"); sync
  (sleep 2; now >"$WORK/t0"; revoke "$ID") &
  REV=$!
  sampled "$WORK/s1.txt" wrk_load >"$WORK/w1.txt" 2>&1
  wait $REV
  # When the rotation finished: its task's last update.
  TASK=$(rotation_task "$ID"); wait_done "$TASK"; T1=$(finished_at "$TASK"); T0=$(cat "$WORK/t0")
  for f in w0 w1; do ! grep -q 'Non-2xx' "$WORK/$f.txt" || { cat "$WORK/$f.txt" >&2; exit 1; }; done
  W0=$(awk '/Requests\/sec/ {print $2}' "$WORK/w0.txt"); W1=$(awk '/Requests\/sec/ {print $2}' "$WORK/w1.txt")
  D=$(python3 -c "print($T1 - $T0)")
  M0=$(rate "$WORK/s0.txt" "$(python3 -c "print($S0 + 2)")" "$(python3 -c "print($S0 + $WRK_SECS - 2)")")
  R1=$(rate "$WORK/s1.txt" "$T0" "$T1")
  echo "run $r: $W0 writes/s alone ($M0/s mid-run), $W1 writes/s with the rotation ($R1/s while it ran, $D s)"
  BASE+=("$W0"); WITH+=("$W1"); RDUR+=("$D"); BASE_MID+=("$M0"); WITH_ROT+=("$R1")
done
stop_server
B=$(printf '%s\n' "${BASE[@]}" | median); W=$(printf '%s\n' "${WITH[@]}" | median)
RD=$(printf '%s\n' "${RDUR[@]}" | median)
BM=$(printf '%s\n' "${BASE_MID[@]}" | median); WR=$(printf '%s\n' "${WITH_ROT[@]}" | median)

python3 - "$BYTES" "$UPM" "$ROTM" "$RSSM" "$B" "$W" "$RD" "$VERSION_BYTES" "$BM" "$WR" <<'PY' | tee "$OUT/tasks.md"
import sys
nbytes, up, rot, rss, base, with_, rdur, vbytes, bmid, wrot = map(float, sys.argv[1:])
mb = nbytes / 1e6
print("| benchmark | median | baseline (same run) | ratio | goal |")
print("| --- | --- | --- | --- | --- |")
print(f"| key rotation, 1 GiB as 205 versions of 5 MiB | {mb/rot:,.0f} MB/s ({rot:.1f} s) | upload of the same bytes: {mb/up:,.0f} MB/s ({up:.1f} s) | {up/rot:.2f}x | >= 0.8x |")
print(f"| peak RSS during that rotation (highest run) | {rss/1024:.1f} MiB | | | < 64 MiB |")
print(f"| 1-event writes/s, 16 connections, a rotation of 1,000 versions of {vbytes/1024:.0f} KiB running | {with_:,.0f}/s (rotation took {rdur:.1f} s) | no task running: {base:,.0f}/s | {with_/base:.2f}x | >= 0.95x |")
print(f"| (same, only while the rotation ran: revocation to `done`) | {wrot:,.0f}/s | no task running, the run's middle: {bmid:,.0f}/s | {wrot/bmid:.2f}x | |")
PY
