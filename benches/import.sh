#!/usr/bin/env bash
# Bulk import benchmark (issue 4, SPEC §8). Run by hand: benches/import.sh
#
# A tree of 10,000 files of 4 KiB (100 folders x 100 files) is
#   1. copied with `cp -r` to local disk, followed by `sync` (the floor: a copy that is on
#      disk when it ends, as an import's 200s are), and
#   2. imported with `vellum import` into a running release server on its embedded default
#      (SQLite + local blobs, SYNCHRONOUS=full: every transaction is durable when answered),
#      a fresh data folder each run.
# Prints files/s for both and the ratio (goal: import within 10x of cp -r), medians of
# RUNS runs, plus the server's and the importer's peak RSS. Never a test.
#
# Knobs: RUNS (3), FOLDERS (100), PER (100), SIZE (4096), JOBS (importer's --jobs, 4),
# BENCH_DIR (where the trees and the data live; default target/, the repository's disk:
# /tmp may be a RAM disk, which would flatter both sides).
set -euo pipefail
cd "$(dirname "$0")/.."
RUNS=${RUNS:-3}
FOLDERS=${FOLDERS:-100}
PER=${PER:-100}
SIZE=${SIZE:-4096}
JOBS=${JOBS:-4}
FILES=$((FOLDERS * PER))

cargo build --release --quiet --bin vellum
BIN=$PWD/target/release/vellum

mkdir -p "${BENCH_DIR:-target}"
WORK=$(mktemp -d -p "${BENCH_DIR:-target}" import-bench.XXXXXX)
WORK=$(cd "$WORK" && pwd)
PID=
cleanup() {
  if [ -n "$PID" ]; then kill "$PID" 2>/dev/null || true; wait "$PID" 2>/dev/null || true; fi
  rm -rf "$WORK"
}
trap cleanup EXIT
PORT=$((20000 + RANDOM % 20000))
URL=http://127.0.0.1:$PORT

now() { date +%s.%N; }
calc() { awk "BEGIN {print $*}"; }
median() { sort -g | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }
hwm() { awk '/VmHWM/ {printf "%.1f", $2/1024}' "/proc/$1/status" 2>/dev/null || echo "?"; }

echo "== generating $FILES files of $SIZE bytes ($FOLDERS folders x $PER) in $WORK/src"
python3 - "$WORK/src" "$FOLDERS" "$PER" "$SIZE" <<'PY'
import os, sys
root, folders, per, size = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
for d in range(folders):
    p = os.path.join(root, f"folder {d:03}")
    os.makedirs(p)
    for f in range(per):
        with open(os.path.join(p, f"file {f:03}.bin"), "wb") as fh:
            fh.write(os.urandom(size))
PY
sync

echo "== 1. cp -r + sync ($RUNS runs; the copy alone is timed too)"
CP=()
CP0=()
for r in $(seq "$RUNS"); do
  rm -rf "$WORK/copy"; sync
  t0=$(now)
  cp -r "$WORK/src" "$WORK/copy"
  t1=$(now)
  sync
  t2=$(now)
  T=$(calc "$t2 - $t0")
  T0=$(calc "$t1 - $t0")
  echo "run $r: $(printf '%.3f' "$T") s, $(calc "int($FILES / $T + 0.5)") files/s" \
       "(cp -r alone $(printf '%.3f' "$T0") s)"
  CP+=("$T")
  CP0+=("$T0")
done
rm -rf "$WORK/copy"
CP_T=$(printf '%s\n' "${CP[@]}" | median)
CP0_T=$(printf '%s\n' "${CP0[@]}" | median)

echo "== 2. vellum import, --jobs $JOBS, SYNCHRONOUS=full ($RUNS runs, fresh server each)"
IMP=()
for r in $(seq "$RUNS"); do
  rm -rf "$WORK/data"; sync
  RUST_LOG=warn SYNCHRONOUS=full "$BIN" serve --listen "127.0.0.1:$PORT" --data-dir "$WORK/data" \
    >"$WORK/server.log" 2>&1 &
  PID=$!
  for _ in $(seq 100); do curl -sf "$URL/healthz" >/dev/null && break; sleep 0.1; done
  TOKEN=$("$BIN" token --claims fixtures/claims/root.json --ttl 1h --data-dir "$WORK/data")
  t0=$(now)
  "$BIN" import "$WORK/src" "1/bench-$r" --url "$URL" --token "$TOKEN" --jobs "$JOBS" --quiet \
    >"$WORK/import.out" 2>"$WORK/import.err" &
  IPID=$!
  IHWM=0
  while kill -0 "$IPID" 2>/dev/null; do
    h=$(hwm "$IPID"); case "$h" in ''|'?') ;; *) IHWM=$h ;; esac
    sleep 0.05
  done
  if ! wait "$IPID"; then
    echo "import failed:"; cat "$WORK/import.out" "$WORK/import.err"; exit 1
  fi
  t1=$(now)
  T=$(calc "$t1 - $t0")
  grep -q "^import: $FILES imported" "$WORK/import.out" || { echo "unexpected summary:"; cat "$WORK/import.out"; exit 1; }
  echo "run $r: $(printf '%.3f' "$T") s, $(calc "int($FILES / $T + 0.5)") files/s," \
       "server peak RSS $(hwm "$PID") MiB, importer peak RSS ~${IHWM} MiB"
  IMP+=("$T")
  kill "$PID"; wait "$PID" 2>/dev/null || true; PID=
done
IMP_T=$(printf '%s\n' "${IMP[@]}" | median)

CP_RATE=$(calc "$FILES / $CP_T")
CP0_RATE=$(calc "$FILES / $CP0_T")
IMP_RATE=$(calc "$FILES / $IMP_T")
RATIO=$(calc "$IMP_T / $CP_T")
echo
echo "| $FILES files of $SIZE B | median time | files/s |"
echo "| --- | --- | --- |"
printf '| cp -r + sync (the floor) | %.3f s | %.0f |\n' "$CP_T" "$CP_RATE"
printf '| cp -r alone (not durable) | %.3f s | %.0f |\n' "$CP0_T" "$CP0_RATE"
printf '| vellum import (--jobs %s, SYNCHRONOUS=full) | %.3f s | %.0f |\n' "$JOBS" "$IMP_T" "$IMP_RATE"
printf 'ratio: vellum import takes %.1fx the time of cp -r + sync (goal: within 10x); %.1fx that of cp -r alone\n' \
  "$RATIO" "$(calc "$IMP_T / $CP0_T")"
echo "(sync flushes every dirty page on the machine, so its time varies with other work)"
