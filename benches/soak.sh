#!/usr/bin/env bash
# Soak: a mixed load on the release server for DURATION seconds (default 1,800), sampling
# its RSS every 10 s, to find what grows. Run by hand: benches/soak.sh [DURATION] [OUTDIR]
# Prints the RSS after warm-up and at the end, the slope over the second half, and the
# load's counts by kind and status. Never a test.
set -euo pipefail
cd "$(dirname "$0")/.."
DURATION=${1:-1800}
OUT=${2:-bench-results}
mkdir -p "$OUT"
CLIENTS=${CLIENTS:-8}

cargo build --release --quiet --bin vellum
BIN=target/release/vellum
WORK=$(mktemp -d)
trap 'kill $PID 2>/dev/null || true; rm -rf "$WORK"' EXIT
PORT=$((20000 + RANDOM % 20000))
SECRET=$(head -c 32 /dev/urandom | base64)
# HS256 so that the load can mint a new caller (new claims) whenever it likes.
RUST_LOG=warn JWT_SECRET=$SECRET $BIN serve --listen 127.0.0.1:$PORT --data-dir "$WORK/data" \
    >"$WORK/server.log" 2>&1 &
PID=$!
for _ in $(seq 100); do curl -sf http://127.0.0.1:$PORT/healthz >/dev/null && break; sleep 0.1; done

python3 - "$PORT" "$SECRET" "$DURATION" "$CLIENTS" "$PID" "$OUT/soak.csv" "$WORK/data" <<'PY' | tee "$OUT/soak.md"
import base64, hashlib, hmac, json, os, random, socket, sys, threading, time, urllib.error, urllib.request

port, secret, duration, clients, pid, csv, data = sys.argv[1:]
duration, clients, pid = int(duration), int(clients), int(pid)
base = f"http://127.0.0.1:{port}"
key = secret.encode()

def b64(b):
    return base64.urlsafe_b64encode(b).rstrip(b"=").decode()

def token(claims):
    claims = dict(claims, exp=int(time.time()) + 7200)
    head = b64(json.dumps({"alg": "HS256", "typ": "JWT"}).encode())
    body = b64(json.dumps(claims).encode())
    sig = hmac.new(key, f"{head}.{body}".encode(), hashlib.sha256).digest()
    return f"{head}.{body}.{b64(sig)}"

ROOT = token({"label": "root", "values": {"privilege": ["root"]}})

def req(method, path, tok=None, body=None, ctype=None, timeout=30, read=True):
    r = urllib.request.Request(base + path, method=method, data=body)
    if tok:
        r.add_header("userpolicy", tok)
    if ctype:
        r.add_header("content-type", ctype)
    try:
        with urllib.request.urlopen(r, timeout=timeout) as resp:
            data = resp.read() if read else b""
            return resp.status, data
    except urllib.error.HTTPError as e:
        return e.code, e.read()
    except Exception:
        return 0, b""

def write(tok, events):
    return req("POST", "/write", tok, json.dumps(events).encode(), "application/json")

def upload(tok, meta, content):
    b = "soakboundary"
    body = (f"--{b}\r\nContent-Disposition: form-data; name=\"meta\"\r\n\r\n{json.dumps(meta)}\r\n"
            f"--{b}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"f\"\r\n"
            f"Content-Type: application/octet-stream\r\n\r\n").encode() + content + f"\r\n--{b}--\r\n".encode()
    return req("POST", "/write", tok, body, f"multipart/form-data; boundary={b}")

def oid(resp):
    return json.loads(resp[1])[0]["oid"]

# Set-up: folders, 200 files of 4 KiB, 2,000 children with their own Rego policy.
files_dir = oid(write(ROOT, [{"action": "C", "parentoid": "1", "name": "files",
                               "objectpolicy": {"requirements": {"f": "yield", "a": [{"v": "R"}, {"v": "X"}]}}}]))
load_dir = oid(write(ROOT, [{"action": "C", "parentoid": "1", "name": "load"}]))
wide_dir = oid(write(ROOT, [{"action": "C", "parentoid": "1", "name": "wide",
                              "objectpolicy": {"requirements": {"f": "yield", "a": [{"v": "R"}, {"v": "X"}]}}}]))
files = []
for i in range(200):
    files.append(oid(upload(ROOT, [{"action": "C", "parentoid": files_dir, "name": f"f{i}", "isfile": True}], os.urandom(4096))))
for k in range(2):
    evs = [{"action": "C", "parentoid": wide_dir, "name": f"w{k}-{i}",
            "objectpolicy": {"rego": f"package w{k}x{i}\nimport rego.v1\nR if input.claims.values.n[_] == {i % 7}\nX if R\n"}}
           for i in range(1000)]
    assert write(ROOT, evs)[0] == 200

counts = {}
lock = threading.Lock()
stop = time.time() + duration
hostile = json.dumps([{"action": "C", "parentoid": "1", "name": "x",
                       "objectpolicy": {"rego": "package p\nx := " + "-" * 1000 + "1"}}]).encode()

def note(kind, status):
    with lock:
        counts[(kind, status)] = counts.get((kind, status), 0) + 1

def worker(n):
    rnd = random.Random(n)
    users = [token({"label": f"u{n}-{i}", "values": {"n": [i % 7]}}) for i in range(20)]
    i = 0
    while time.time() < stop:
        i += 1
        op = rnd.random()
        u = rnd.choice(users)
        if op < 0.30:
            note("props", req("GET", f"/props/{rnd.choice(files)}", u)[0])
        elif op < 0.45:
            note("stream", req("GET", f"/stream/{rnd.choice(files)}", u)[0])
        elif op < 0.60:
            s = write(ROOT, [{"action": "C", "parentoid": load_dir, "name": f"c{n}-{i}"}])[0]
            note("write", s)
        elif op < 0.65:
            s = upload(ROOT, [{"action": "C", "parentoid": load_dir, "name": f"u{n}-{i}", "isfile": True}], os.urandom(1024))[0]
            note("upload", s)
        elif op < 0.72:
            # A caller never seen before: new claims in every cache.
            fresh = token({"label": f"fresh{n}-{i}", "values": {"n": [rnd.randrange(7)], "x": [str(i)]}})
            note("list-new-caller", req("GET", f"/list/{wide_dir}?limit=500", fresh)[0])
        elif op < 0.80:
            note("list", req("GET", f"/list/{files_dir}", u)[0])
        elif op < 0.85:
            note("history", req("GET", f"/history/{rnd.choice(files)}", u)[0])
        elif op < 0.90:
            note("hostile", req("POST", "/write", None, hostile, "application/json")[0])
        elif op < 0.94:
            note("bad", req("GET", "/props/not-an-oid", u)[0])
        else:
            # A feed opened and dropped.
            try:
                s = socket.create_connection(("127.0.0.1", int(port)), timeout=5)
                s.sendall(f"GET /notifications HTTP/1.1\r\nHost: x\r\nuserpolicy: {u}\r\n\r\n".encode())
                s.recv(256)
                time.sleep(rnd.random())
                s.close()
                note("feed", 200)
            except Exception:
                note("feed", 0)

def status():
    out = {}
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            k, _, v = line.partition(":")
            if k in ("VmRSS", "RssAnon", "RssFile", "RssShmem", "Threads"):
                out[k] = int(v.split()[0]) / (1024 if k != "Threads" else 1)
    return out

def size_mib(name):
    try:
        return os.path.getsize(os.path.join(data, name)) / 2**20
    except OSError:
        return 0.0

def rss_mib():
    return status().get("VmRSS", 0.0)

def gauges():
    # What the server says it holds: its caches, bounded, and how full they are.
    _, text = req("GET", "/metrics")
    out = {}
    for line in text.decode(errors="replace").splitlines():
        for name in ("compiled_cache_bytes", "result_cache_entries", "token_cache_entries",
                     "http_connections_open", "feeds_open"):
            if line.startswith(f"vellum_policy_{name} ") or line.startswith(f"vellum_{name} "):
                out[name] = float(line.split()[1])
    return out

threads = [threading.Thread(target=worker, args=(n,), daemon=True) for n in range(clients)]
start = time.time()
for t in threads:
    t.start()
samples = []
with open(csv, "w") as out:
    out.write("seconds,rss_mib,anon_mib,file_mib,shmem_mib,threads,db_mib,wal_mib,"
              "compiled_mib,results,tokens,connections,feeds\n")
    while time.time() < stop:
        time.sleep(10)
        t, st, g = time.time() - start, status(), gauges()
        r = st.get("VmRSS", 0.0)
        samples.append((t, r))
        out.write(f"{t:.0f},{r:.1f},{st.get('RssAnon', 0):.1f},{st.get('RssFile', 0):.1f},"
                  f"{st.get('RssShmem', 0):.1f},{st.get('Threads', 0):.0f},"
                  f"{size_mib('vellum.db'):.1f},{size_mib('vellum.db-wal'):.1f},"
                  f"{g.get('compiled_cache_bytes', 0) / 2**20:.1f},{g.get('result_cache_entries', 0):.0f},"
                  f"{g.get('token_cache_entries', 0):.0f},{g.get('http_connections_open', 0):.0f},"
                  f"{g.get('feeds_open', 0):.0f}\n")
        out.flush()
for t in threads:
    t.join(timeout=60)

def at(sec):
    return min(samples, key=lambda s: abs(s[0] - sec))[1]

half = [s for s in samples if s[0] >= duration / 2]
n = len(half)
mx = sum(s[0] for s in half) / n
my = sum(s[1] for s in half) / n
slope = sum((s[0] - mx) * (s[1] - my) for s in half) / max(1e-9, sum((s[0] - mx) ** 2 for s in half))
print(f"| soak, {duration} s, {clients} clients | RSS |")
print("| --- | --- |")
for sec in (60, 300, duration / 2, duration):
    print(f"| after {sec / 60:.0f} min | {at(sec):.1f} MiB |")
print(f"| peak | {max(s[1] for s in samples):.1f} MiB |")
print(f"| slope over the second half | {slope * 600:+.2f} MiB per 10 min |")
print()
print("| request | status | count |")
print("| --- | --- | --- |")
for (kind, status), c in sorted(counts.items()):
    print(f"| {kind} | {status} | {c} |")
PY
