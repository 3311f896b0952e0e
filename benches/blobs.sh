#!/usr/bin/env bash
# File-content benchmarks. Run by hand: benches/blobs.sh [OUTDIR]
# Everything on loopback, in one run, next to baselines measured in the same run on the same
# disk; prints medians of RUNS runs and writes the table to OUTDIR/blobs.txt. Never a test.
#
#  a. dd: SIZE_MB MiB of zeros with conv=fdatasync (the disk's sequential write rate);
#  b. nginx WebDAV (core http_dav_module): PUT (curl -T) and GET of a SIZE_MB random file;
#  c. s3s-fs 0.14.1, SigV4 (curl --aws-sigv4): PUT with x-amz-content-sha256 UNSIGNED-PAYLOAD,
#     PUT with the body's real sha256 (verified by the server), and GET;
#  d. vellum serve (embedded default, local disk, SYNCHRONOUS=full): multipart POST /write of
#     the file, its peak RSS (VmHWM of a server restarted just before the uploads), GET /stream
#     (and one sha256 check of the bytes it returns, outside the timing);
#  e. 4 KiB uploads, 16 connections, WRK_SECS s (wrk): vellum POST /write, one new file per
#     request (benches/upload4k.lua), against s3s-fs PutObject of 4 KiB to unique keys
#     (benches/s3put4k.lua), once SigV4-signed with the body's sha256 (verified, as in c) and
#     once unsigned to an s3s-fs started without keys.
# nginx and s3s-fs never fsync; vellum with SYNCHRONOUS=full promises a 200 survives power
# loss; dd's figure includes its fdatasync. `sync` runs before every timed transfer, so a
# run does not pay for the dirty pages of the one before.
#
# Env: SIZE_MB (1024), RUNS (3), WRK_SECS (10), PARTS ("dd nginx s3 vellum small"), VELLUM=0
# to leave vellum out (baselines only, no build), BUILD=0 to use target/release/vellum as it
# is, VELLUM_BIN=path to use that binary instead (no build). OLD_BIN=path: part d compares
# two builds, alternating (old, new, old, new, ...: both see the same noise), RUNS pairs, each
# upload and download on a fresh server (peak RSS: the most of the VmHWMs after each upload);
# the table then has the old build's medians and the ratio of the new upload rate to the old. Installs nginx and wrk (Debian) and s3s-fs 0.14.1 (cargo install) when missing. Big
# files live under target/bench-blobs (the repository's filesystem, not a tmpfs /tmp) and are
# removed on exit. The s3s-fs figures for 4 KiB PUTs swing between runs (600 to 3,000 req/s
# on a 2-core VM: its blocking pool spends most of the time in the kernel); read the runs.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$(pwd)
OUT=${1:-bench-results}
mkdir -p "$OUT"
OUT=$(cd "$OUT" && pwd)
SIZE_MB=${SIZE_MB:-1024}
RUNS=${RUNS:-3}
WRK_SECS=${WRK_SECS:-10}
PARTS=${PARTS:-dd nginx s3 vellum small}
VELLUM=${VELLUM:-1}
SIZE=$((SIZE_MB * 1024 * 1024))
S3_KEY=vellumbench
S3_SECRET=vellumbenchsecret0123456789
EMPTY_SHA=e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855
want() { [[ " $PARTS " == *" $1 "* ]]; }

# ---- tools -------------------------------------------------------------------------------
NGINX=$(command -v nginx || echo /usr/sbin/nginx)
if ! command -v wrk >/dev/null || ! [ -x "$NGINX" ]; then
  nice -n 19 apt-get update -qq
  DEBIAN_FRONTEND=noninteractive nice -n 19 apt-get install -y -qq nginx wrk >/dev/null
  NGINX=$(command -v nginx || echo /usr/sbin/nginx)
fi
"$NGINX" -V 2>&1 | grep -q -- --with-http_dav_module || { echo "nginx lacks http_dav_module" >&2; exit 1; }
S3S=$(command -v s3s-fs || echo "$HOME/.cargo/bin/s3s-fs")
if ! [ -x "$S3S" ] || [ "$("$S3S" --version)" != "s3s-fs 0.14.1" ]; then
  # Later versions need a newer rustc.
  nice -n 19 cargo install s3s-fs --version 0.14.1 --features binary --locked --quiet ||
    nice -n 19 cargo install s3s-fs --version 0.14.1 --features binary --quiet
  S3S=$HOME/.cargo/bin/s3s-fs
fi
for tool in curl python3 sha256sum dd; do
  command -v $tool >/dev/null || { echo "missing: $tool" >&2; exit 1; }
done
BIN=${VELLUM_BIN:-$ROOT/target/release/vellum}
OLD_BIN=${OLD_BIN:-}
if [ "$VELLUM" = 1 ]; then
  [ "${BUILD:-1}" = 0 ] || [ -n "${VELLUM_BIN:-}" ] || nice -n 10 cargo build --release --quiet --bin vellum
  for b in "$BIN" $OLD_BIN; do [ -x "$b" ] || { echo "no vellum binary at $b" >&2; exit 1; }; done
  [ -f fixtures/claims/root.json ] || { echo "missing fixtures/claims/root.json" >&2; exit 1; }
fi

# Versions, taken when the vellum binary is built (the work tree may change during the run).
VERSIONS="$("$NGINX" -v 2>&1 | sed 's/.*: //'), $("$S3S" --version), $(wrk -v 2>&1 | head -1 | awk '{print "wrk", $2}'), $(curl --version | head -1 | awk '{print "curl", $2}'), vellum $(git rev-parse --short HEAD)$(git diff --quiet HEAD -- src 2>/dev/null || echo +changes)"
[ -z "${VELLUM_BIN:-}" ] || VERSIONS="$VERSIONS (binary $BIN)"
[ -z "$OLD_BIN" ] || VERSIONS="$VERSIONS; old build: $OLD_BIN"

# ---- scratch space and processes ---------------------------------------------------------
WORK=$ROOT/target/bench-blobs
RUN=$WORK/run-$$
mkdir -p "$RUN"
if [ "$(df --output=fstype "$WORK" | tail -1)" = tmpfs ]; then
  echo "warning: $WORK is on tmpfs; the figures will not be the disk's" >&2
fi
PIDS=()
cleanup() {
  for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
  for p in "${PIDS[@]}"; do wait "$p" 2>/dev/null || true; done
  rm -rf "$RUN"
}
trap cleanup EXIT
trap 'exit 130' INT TERM
stop() { # pid
  kill "$1" 2>/dev/null || true
  wait "$1" 2>/dev/null || true
  local keep=() p
  for p in "${PIDS[@]}"; do [ "$p" = "$1" ] || keep+=("$p"); done
  PIDS=("${keep[@]}")
}
wait_http() { # url: until anything answers
  for _ in $(seq 100); do
    curl -s -o /dev/null "$1" && return 0
    sleep 0.1
  done
  echo "nothing answers at $1" >&2
  return 1
}
BASE=$((20000 + RANDOM % 20000))
NGINX_PORT=$BASE S3_PORT=$((BASE + 1)) S3_OPEN_PORT=$((BASE + 2)) VPORT=$((BASE + 3))

median() { grep -E '^[0-9.]+$' | sort -g | awk '{a[NR]=$1} END {if (NR) print a[int((NR+1)/2)]; else print "n/a"}'; }
rate() { awk -v b="$1" -v t="$2" 'BEGIN {printf "%.1f", b / t / 1e6}'; } # bytes seconds -> MB/s
# One timed curl; $1: where the body goes. Prints "<MB/s>" on success; on a non-2xx status or a
# short transfer prints the response to stderr and returns 1. $2: "up" or "down".
timed() {
  local body=$1 dir=$2
  shift 2
  sync
  local w code secs up down
  w=$(curl -sS -o "$body" -w '%{http_code} %{time_total} %{size_upload} %{size_download}' "$@") || {
    echo "curl failed: $w" >&2
    return 1
  }
  read -r code secs up down <<<"$w"
  if [[ $code != 2* ]]; then
    echo "HTTP $code from ${*: -1}:" >&2
    if [ "$body" != /dev/null ]; then
      head -c 4000 "$body" >&2
    else # a download: ask again for the error's body
      curl -sS "$@" | head -c 4000 >&2
    fi
    echo >&2
    return 1
  fi
  if [ "$dir" = up ] && [ "$up" -lt "$SIZE" ]; then echo "short upload: $up bytes" >&2; return 1; fi
  if [ "$dir" = down ] && [ "$down" -ne "$SIZE" ]; then echo "short download: $down bytes" >&2; return 1; fi
  rate "$SIZE" "$secs"
}
declare -A R # result name -> median; name_runs -> every run's figure
record() { # name values...
  local name=$1
  shift
  R[$name]=$(printf '%s\n' "$@" | median)
  R[${name}_runs]="$*"
}
show_runs() { # name values...
  local name=$1
  shift
  echo "  $name: ${*:-n/a} MB/s"
}

LOAD0=$(cut -d' ' -f1-3 /proc/loadavg)
echo "== load average at start: $LOAD0 (anything else running skews every figure)"
# A filesystem mounted with `discard` on a thin-provisioned virtual disk gives freed blocks
# back to the host, and writing them again is slow: on the development VM, 1 GiB writes with
# fdatasync ran at 330 MB/s into such blocks and 1.6 GB/s otherwise, alternating from one run
# to the next as ext4 reused what the run before freed, which skews an old/new alternation.
# `mount -o remount,nodiscard <mountpoint>` for the run (and back after) avoids it.
if findmnt -no OPTIONS -T "$ROOT/target" 2>/dev/null | tr ',' '\n' | grep -qx discard; then
  echo "== WARNING: $(findmnt -no TARGET -T "$ROOT/target") is mounted with discard: write figures alternate between fast and slow runs (see the comment above)"
fi
echo "== files: $SIZE_MB MiB random in $WORK ($(df --output=fstype,source "$WORK" | tail -1 | xargs))"
SRC=$RUN/src.bin
head -c "$SIZE" /dev/urandom >"$SRC"
SRC_SHA=$(sha256sum "$SRC" | cut -c1-64)
SMALL=$RUN/small.bin
head -c 4096 /dev/urandom >"$SMALL"
SMALL_SHA=$(sha256sum "$SMALL" | cut -c1-64)

# ---- a. dd -------------------------------------------------------------------------------
if want dd; then
  echo "== a. dd if=/dev/zero bs=1M count=$SIZE_MB conv=fdatasync ($RUNS runs)"
  V=()
  for r in $(seq "$RUNS"); do
    sync
    secs=$(LC_ALL=C dd if=/dev/zero of="$RUN/dd.bin" bs=1M count="$SIZE_MB" conv=fdatasync 2>&1 |
      awk '/copied/ {print $(NF-3)}')
    rm -f "$RUN/dd.bin"
    V+=("$(rate "$SIZE" "$secs")")
  done
  show_runs dd "${V[@]}"
  record dd "${V[@]}"
fi

# ---- b. nginx WebDAV ---------------------------------------------------------------------
if want nginx; then
  echo "== b. nginx WebDAV PUT and GET ($RUNS runs each)"
  NG=$RUN/nginx
  mkdir -p "$NG/root" "$NG/body-temp"
  sed -e "s|@PORT@|$NGINX_PORT|g" -e "s|@ROOT@|$NG/root|g" -e "s|@PREFIX@|$NG|g" \
    benches/nginx-dav.conf >"$NG/nginx.conf"
  "$NGINX" -p "$NG" -e "$NG/error.log" -c "$NG/nginx.conf" -g 'daemon off;' &
  NGINX_PID=$!
  PIDS+=("$NGINX_PID")
  wait_http "http://127.0.0.1:$NGINX_PORT/"
  NURL=http://127.0.0.1:$NGINX_PORT/big.bin
  PUT=() GET=()
  for r in $(seq "$RUNS"); do
    curl -s -o /dev/null -X DELETE "$NURL"
    PUT+=("$(timed "$RUN/resp" up -T "$SRC" "$NURL" || echo ERR)")
  done
  for r in $(seq "$RUNS"); do GET+=("$(timed /dev/null down "$NURL" || echo ERR)"); done
  cmp -s "$SRC" "$NG/root/big.bin" || echo "  warning: nginx's stored file differs from the source" >&2
  show_runs PUT "${PUT[@]}"
  show_runs GET "${GET[@]}"
  record nginx_put "${PUT[@]}"
  record nginx_get "${GET[@]}"
  stop "$NGINX_PID"
  rm -rf "$NG"
fi

# ---- c. s3s-fs ---------------------------------------------------------------------------
S3AUTH=(--aws-sigv4 "aws:amz:us-east-1:s3" --user "$S3_KEY:$S3_SECRET")
start_s3s() { # dir port [key flags...] -> S3_PID; an empty store with bucket "bench"
  local dir=$1 port=$2
  shift 2
  rm -rf "$dir"
  mkdir -p "$dir"
  "$S3S" --host 127.0.0.1 --port "$port" "$@" "$dir" >"$RUN/s3s-$port.log" 2>&1 &
  S3_PID=$!
  PIDS+=("$S3_PID")
  wait_http "http://127.0.0.1:$port/"
  local auth=()
  [ $# -gt 0 ] && auth=("${S3AUTH[@]}")
  local code
  code=$(curl -s -o "$RUN/resp" -w '%{http_code}' "${auth[@]}" -H "x-amz-content-sha256: $EMPTY_SHA" \
    -X PUT "http://127.0.0.1:$port/bench")
  [ "$code" = 200 ] || { echo "s3s-fs CreateBucket: HTTP $code $(cat "$RUN/resp")" >&2; return 1; }
}
if want s3; then
  echo "== c. s3s-fs (SigV4) PUT with UNSIGNED-PAYLOAD, PUT with the real sha256, GET ($RUNS runs each)"
  start_s3s "$RUN/s3" "$S3_PORT" --access-key "$S3_KEY" --secret-key "$S3_SECRET"
  OBJ=http://127.0.0.1:$S3_PORT/bench/big
  PU=() PS=() GET=()
  for r in $(seq "$RUNS"); do
    PU+=("$(timed "$RUN/resp" up "${S3AUTH[@]}" -H "x-amz-content-sha256: UNSIGNED-PAYLOAD" -T "$SRC" "$OBJ" || echo ERR)")
  done
  for r in $(seq "$RUNS"); do
    PS+=("$(timed "$RUN/resp" up "${S3AUTH[@]}" -H "x-amz-content-sha256: $SRC_SHA" -T "$SRC" "$OBJ" || echo ERR)")
  done
  for r in $(seq "$RUNS"); do
    GET+=("$(timed /dev/null down "${S3AUTH[@]}" -H "x-amz-content-sha256: $EMPTY_SHA" "$OBJ" || echo ERR)")
  done
  cmp -s "$SRC" "$RUN/s3/bench/big" || echo "  warning: s3s-fs's stored object differs from the source" >&2
  # The check is real: a wrong sha256 is refused.
  bad=$(curl -s -o /dev/null -w '%{http_code}' "${S3AUTH[@]}" -H "x-amz-content-sha256: ${EMPTY_SHA//e/f}" \
    -T "$SMALL" "http://127.0.0.1:$S3_PORT/bench/wrong")
  show_runs "PUT unsigned" "${PU[@]}"
  show_runs "PUT sha256" "${PS[@]}"
  show_runs "GET" "${GET[@]}"
  echo "  PUT with a wrong x-amz-content-sha256: HTTP $bad (not 200: the server verifies it)"
  record s3_put_unsigned "${PU[@]}"
  record s3_put_sha "${PS[@]}"
  record s3_get "${GET[@]}"
  stop "$S3_PID"
  rm -rf "$RUN/s3"
fi

# ---- d. vellum ---------------------------------------------------------------------------
VURL=http://127.0.0.1:$VPORT
start_vellum() { # [binary] -> VPID, TOKEN; an empty store
  local bin=${1:-$BIN}
  rm -rf "$RUN/vellum"
  RUST_LOG=warn SYNCHRONOUS=full "$bin" serve --listen "127.0.0.1:$VPORT" --data-dir "$RUN/vellum" \
    >>"$RUN/vellum.log" 2>&1 &
  VPID=$!
  PIDS+=("$VPID")
  for _ in $(seq 100); do curl -sf "$VURL/healthz" >/dev/null && break; sleep 0.1; done
  curl -sf "$VURL/healthz" >/dev/null || { echo "vellum did not start:" >&2; tail "$RUN/vellum.log" >&2; return 1; }
  TOKEN=$("$bin" token --claims fixtures/claims/root.json --ttl 2h --data-dir "$RUN/vellum")
}
hwm() { awk '/VmHWM/ {printf "%.1f", $2/1024}' "/proc/$VPID/status"; }
json_field() { # file index field
  python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))[int(sys.argv[2])].get(sys.argv[3], ""))' "$@"
}
upload_once() { # run-number -> prints MB/s or ERR; the response is in $RUN/up.json
  local r=$1 v meta sha
  meta="[{\"action\":\"C\",\"parentoid\":\"1\",\"name\":\"big-$r\",\"isfile\":true}]"
  if v=$(timed "$RUN/up.json" up -H "userpolicy: $TOKEN" -F "metadata=$meta;type=application/json" \
    -F "data=@$SRC" "$VURL/write"); then
    OID=$(json_field "$RUN/up.json" 0 oid)
    sha=$(json_field "$RUN/up.json" 0 sha256plain)
    [ "$sha" = "$SRC_SHA" ] || echo "  upload $r: sha256plain '$sha' is not the file's $SRC_SHA" >&2
    echo "$v"
  else
    echo ERR
  fi
}
max_of() { printf '%s\n' "$@" | grep -E '^[0-9.]+$' | sort -g | tail -1; }
if want vellum && [ "$VELLUM" = 1 ] && [ -n "$OLD_BIN" ]; then
  echo "== d. vellum, old and new build alternating: multipart POST /write, then GET /stream, on a fresh server each ($RUNS pairs)"
  UP=() GET=() OUP=() OGET=() RSS=() ORSS=()
  for r in $(seq "$RUNS"); do
    for which in old new; do
      if [ $which = old ]; then start_vellum "$OLD_BIN"; else start_vellum "$BIN"; fi
      OID=
      rm -f "$RUN/up.json"
      up=$(upload_once "$r")
      h=$(hwm) # the uploads' peak, as in the single-build runs
      OID=$(json_field "$RUN/up.json" 0 oid 2>/dev/null || true)
      get=ERR
      [ "$up" = ERR ] || [ -z "$OID" ] ||
        get=$(timed /dev/null down -H "userpolicy: $TOKEN" "$VURL/stream/$OID" || echo ERR)
      if [ $which = old ]; then OUP+=("$up") OGET+=("$get") ORSS+=("$h"); else UP+=("$up") GET+=("$get") RSS+=("$h"); fi
      echo "  pair $r, $which: upload $up MB/s (VmHWM $h MiB), GET $get MB/s (VmHWM $(hwm) MiB)"
      if [ $which = new ] && [ "$r" = 1 ] && [ -n "$OID" ]; then
        got=$(curl -s -H "userpolicy: $TOKEN" "$VURL/stream/$OID" | sha256sum | cut -c1-64)
        if [ "$got" = "$SRC_SHA" ]; then R[v_sha]=ok; else R[v_sha]="MISMATCH ($got)"; fi
      fi
      stop "$VPID"
      rm -rf "$RUN/vellum"
    done
  done
  show_runs "upload, new" "${UP[@]}"
  show_runs "upload, old" "${OUP[@]}"
  show_runs "GET, new" "${GET[@]}"
  show_runs "GET, old" "${OGET[@]}"
  record v_up "${UP[@]}"
  record v_get "${GET[@]}"
  record v_up_old "${OUP[@]}"
  record v_get_old "${OGET[@]}"
  R[v_rss]=$(max_of "${RSS[@]}")
  R[v_rss_old]=$(max_of "${ORSS[@]}")
  echo "  VmHWM after an upload, the most over the runs: new ${R[v_rss]} MiB, old ${R[v_rss_old]} MiB"
elif want vellum && [ "$VELLUM" = 1 ]; then
  echo "== d. vellum: multipart POST /write of the file, GET /stream ($RUNS runs each)"
  start_vellum
  echo "  VmHWM after start: $(hwm) MiB"
  UP=() GET=() OID=
  for r in $(seq "$RUNS"); do
    meta="[{\"action\":\"C\",\"parentoid\":\"1\",\"name\":\"big-$r\",\"isfile\":true}]"
    if v=$(timed "$RUN/up.json" up -H "userpolicy: $TOKEN" -F "metadata=$meta;type=application/json" \
      -F "data=@$SRC" "$VURL/write"); then
      UP+=("$v")
      OID=$(json_field "$RUN/up.json" 0 oid)
      sha=$(json_field "$RUN/up.json" 0 sha256plain)
      [ "$sha" = "$SRC_SHA" ] || echo "  upload $r: sha256plain '$sha' is not the file's $SRC_SHA" >&2
    else
      UP+=(ERR)
    fi
  done
  R[v_rss]=$(hwm)
  show_runs "upload" "${UP[@]}"
  echo "  VmHWM after the uploads: ${R[v_rss]} MiB"
  if [ -n "$OID" ]; then
    for r in $(seq "$RUNS"); do
      GET+=("$(timed /dev/null down -H "userpolicy: $TOKEN" "$VURL/stream/$OID" || echo ERR)")
    done
    got=$(curl -s -H "userpolicy: $TOKEN" "$VURL/stream/$OID" | sha256sum | cut -c1-64)
    if [ "$got" = "$SRC_SHA" ]; then R[v_sha]=ok; else R[v_sha]="MISMATCH ($got)"; fi
    show_runs "GET /stream/$OID" "${GET[@]}"
    echo "  sha256 of the streamed bytes: ${R[v_sha]}; VmHWM after the downloads: $(hwm) MiB"
  fi
  record v_up "${UP[@]}"
  record v_get "${GET[@]}"
  stop "$VPID"
  rm -rf "$RUN/vellum"
fi

# ---- e. 4 KiB uploads, 16 connections ----------------------------------------------------
wrk_rate() { # url lua [args...] -> requests/s, or ERR when any response was not 2xx
  local url=$1 lua=$2
  shift 2
  sync
  wrk -t2 -c16 -d"${WRK_SECS}s" -s "$lua" "$url" "$@" >"$RUN/wrk.txt" 2>&1 || true
  local rps non sock
  rps=$(awk '/Requests\/sec/ {print $2}' "$RUN/wrk.txt")
  non=$(awk '/Non-2xx/ {print $NF}' "$RUN/wrk.txt")
  sock=$(grep -o 'Socket errors.*' "$RUN/wrk.txt" || true)
  echo "    ${rps:-?} req/s, non-2xx: ${non:-0} ${sock}" >&2
  grep -Ei '^status|fail|error' "$RUN/wrk.txt" | head -4 | sed 's/^/      /' >&2 || true
  if [ -n "${non:-}" ] || [ -z "$rps" ]; then echo ERR; else echo "$rps"; fi
}
if want small; then
  echo "== e. 4 KiB uploads, 16 connections, ${WRK_SECS} s ($RUNS runs each)"
  if [ "$VELLUM" = 1 ]; then
    echo "  vellum POST /write, one new 4 KiB file per request"
    V=()
    for r in $(seq "$RUNS"); do
      start_vellum
      curl -s -o "$RUN/small.json" -H "userpolicy: $TOKEN" \
        -F 'metadata=[{"action":"C","parentoid":"1","name":"small"}];type=application/json' "$VURL/write"
      PARENT=$(json_field "$RUN/small.json" 0 oid 2>/dev/null) ||
        { echo "creating the folder: $(cat "$RUN/small.json")" >&2; exit 1; }
      V+=("$(TOKEN=$TOKEN PARENT=$PARENT BODY_FILE=$SMALL wrk_rate "$VURL" benches/upload4k.lua)")
      R[v_rss4k]=$(hwm)
      stop "$VPID"
    done
    record v_4k "${V[@]}"
  fi
  echo "  s3s-fs PutObject, SigV4 with the body's sha256 (verified)"
  V=()
  for r in $(seq "$RUNS"); do
    start_s3s "$RUN/s3" "$S3_PORT" --access-key "$S3_KEY" --secret-key "$S3_SECRET"
    V+=("$(BODY_FILE=$SMALL BODY_SHA256=$SMALL_SHA BUCKET=bench HOSTPORT=127.0.0.1:$S3_PORT AK=$S3_KEY SK=$S3_SECRET \
      wrk_rate "http://127.0.0.1:$S3_PORT" benches/s3put4k.lua selftest)")
    stop "$S3_PID"
  done
  record s3_4k_sig "${V[@]}"
  echo "  s3s-fs PutObject, unsigned (s3s-fs started without keys)"
  V=()
  for r in $(seq "$RUNS"); do
    start_s3s "$RUN/s3" "$S3_OPEN_PORT"
    V+=("$(BODY_FILE=$SMALL BUCKET=bench HOSTPORT=127.0.0.1:$S3_OPEN_PORT \
      wrk_rate "http://127.0.0.1:$S3_OPEN_PORT" benches/s3put4k.lua)")
    stop "$S3_PID"
  done
  record s3_4k_open "${V[@]}"
  rm -rf "$RUN/s3"
fi

# ---- table -------------------------------------------------------------------------------
for k in dd nginx_put nginx_get s3_put_unsigned s3_put_sha s3_get v_up v_get v_rss v_sha v_4k v_rss4k s3_4k_sig s3_4k_open v_up_old v_get_old v_rss_old; do
  export "B_$k=${R[$k]:-n/a}" "B_${k}_runs=${R[${k}_runs]:-}"
done
SIZE_MB=$SIZE_MB RUNS=$RUNS WRK_SECS=$WRK_SECS VERSIONS=$VERSIONS LOAD0=$LOAD0 python3 - <<'PY' | tee "$OUT/blobs.txt"
import os, datetime
g = lambda k: os.environ.get("B_" + k, "n/a")
def num(k):
    try: return float(g(k))
    except ValueError: return None
def fig(k, unit, fmt="{:,.1f}"):
    v = num(k)
    return f"{fmt.format(v)} {unit}" if v is not None else g(k)
size, runs, secs = os.environ["SIZE_MB"], os.environ["RUNS"], os.environ["WRK_SECS"]
print(f"Vellum blob benchmarks, {datetime.datetime.now():%Y-%m-%d %H:%M}, loopback, {size} MiB random file, "
      f"medians of {runs} runs; 4 KiB: 16 connections, {secs} s. MB = 10^6 bytes.")
print(f"Versions: {os.environ['VERSIONS']}; load average at start: {os.environ['LOAD0']}, at end: {open('/proc/loadavg').read().split()[0]}")
print()
print("| measurement | median | runs |")
print("| --- | --- | --- |")
rows = [  # (name, figure, key of the runs)
    ("dd if=/dev/zero bs=1M conv=fdatasync", fig("dd", "MB/s"), "dd"),
    ("nginx WebDAV PUT (no fsync)", fig("nginx_put", "MB/s"), "nginx_put"),
    ("nginx WebDAV GET", fig("nginx_get", "MB/s"), "nginx_get"),
    ("s3s-fs PUT, x-amz-content-sha256: UNSIGNED-PAYLOAD (no fsync)", fig("s3_put_unsigned", "MB/s"), "s3_put_unsigned"),
    ("s3s-fs PUT, real sha256, verified (no fsync)", fig("s3_put_sha", "MB/s"), "s3_put_sha"),
    ("s3s-fs GET", fig("s3_get", "MB/s"), "s3_get"),
    ("vellum multipart upload, SYNCHRONOUS=full", fig("v_up", "MB/s"), "v_up"),
    ("vellum GET /stream", fig("v_get", "MB/s"), "v_get"),
    ("vellum peak RSS (VmHWM) over the uploads", fig("v_rss", "MiB"), None),
    ("old build: vellum multipart upload (alternating)", fig("v_up_old", "MB/s"), "v_up_old"),
    ("old build: vellum GET /stream", fig("v_get_old", "MB/s"), "v_get_old"),
    ("old build: vellum peak RSS (VmHWM)", fig("v_rss_old", "MiB"), None),
    ("vellum streamed bytes' sha256 = file's", g("v_sha"), None),
    ("4 KiB: vellum POST /write, one file each", fig("v_4k", "req/s", "{:,.0f}"), "v_4k"),
    ("vellum peak RSS (VmHWM) at the end of a 4 KiB run", fig("v_rss4k", "MiB"), None),
    ("4 KiB: s3s-fs PUT, SigV4 + sha256 verified", fig("s3_4k_sig", "req/s", "{:,.0f}"), "s3_4k_sig"),
    ("4 KiB: s3s-fs PUT, no auth", fig("s3_4k_open", "req/s", "{:,.0f}"), "s3_4k_open"),
]
rows = [row for row in rows if not (row[0].startswith("old build") and g(row[2] or "v_rss_old") == "n/a")]
for name, v, k in rows:
    print(f"| {name} | {v} | {g(k + '_runs') if k else ''} |")
print()
print("| ratio | value | goal | met |")
print("| --- | --- | --- | --- |")
def ratio(name, a, b, goal, op=">="):
    x, y = num(a), num(b)
    if x is None or y is None or y == 0:
        print(f"| {name} | n/a | {op} {goal} | |"); return
    r = x / y
    ok = r >= goal if op == ">=" else r < goal
    print(f"| {name} | {r:.2f} | {op} {goal} | {'yes' if ok else 'NO'} |")
ratio("vellum upload / s3s-fs sha256-verified PUT", "v_up", "s3_put_sha", 1.5)
ratio("vellum upload / dd", "v_up", "dd", 0.75)
if g("v_up_old") != "n/a":
    ratio("vellum upload / old build's (issue 11, item 8)", "v_up", "v_up_old", 1.5)
    ratio("vellum upload / dd (issue 11, item 8)", "v_up", "dd", 0.5)
ratio("vellum GET / s3s-fs GET", "v_get", "s3_get", 4)
ratio("vellum GET / nginx GET", "v_get", "nginx_get", 0.3)
rss = num("v_rss")
print(f"| vellum peak RSS, MiB | {g('v_rss')} | < 64 | {'' if rss is None else ('yes' if rss < 64 else 'NO')} |")
ratio("vellum 4 KiB uploads/s / s3s-fs 4 KiB PUTs/s (SigV4, sha256)", "v_4k", "s3_4k_sig", 1)
ratio("vellum 4 KiB uploads/s / s3s-fs 4 KiB PUTs/s (no auth)", "v_4k", "s3_4k_open", 1)
PY
