#!/usr/bin/env bash
# Figures for issue 11 (hostile input and overload), on this machine, against release builds.
#   ci/scripts/issue11-figures.sh bodies      peak RSS while 300 MB arrive as a PATCH body, a multipart text
#                                             field and an unterminated part header (embedded backend)
#   ci/scripts/issue11-figures.sh halfopen    5000 connections that send half a request head: how many are
#                                             closed after the header timeout, descriptors before and after
#   ci/scripts/issue11-figures.sh badkeys     10 000 requests with a malformed key, then 10 000 with distinct
#                                             well-formed unknown keys: statuses, lookups, audit rows (PostgreSQL)
#   ci/scripts/issue11-figures.sh crash       20 kill -9's during uploads and purges, then fsck, the sweep, fsck
#   ci/scripts/issue11-figures.sh overload R… peak.toml at rates R on PostgreSQL + Redis, rate limits off
#   ci/scripts/issue11-figures.sh soak [S]    soak.toml (steady state cut to S seconds) on PostgreSQL + Redis:
#                                             the service's RSS at the start and end of the steady state, slope
#   ci/scripts/issue11-figures.sh heap        the service under heaptrack for a 300 s soak: what holds memory
# BIN=dir picks the service binary's directory (default: this tree's release build), to measure another build.
# Needs PostgreSQL and Redis on 127.0.0.1 (as .ci/run), curl and python3.
set -euo pipefail
cd "$(dirname "$0")/../.."
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$HOME/.cache/filewallball-target}
[ -n "${NO_BUILD:-}" ] || cargo build --release -q -p filewallball -p fwb-loadtest
BIN=${BIN:-$CARGO_TARGET_DIR/release}
LOADTEST=$CARGO_TARGET_DIR/release/fwb-loadtest
OUT=${OUT:-/tmp/issue11}
mkdir -p "$OUT"
PORT=18091
SERVICE_PID=
unset FWB__DATABASE__URL FWB__CACHE__REDIS_URL

backend() { # $1 = embedded | postgres:<database>
  rm -rf "$OUT/data" && mkdir -p "$OUT/data"
  export FWB__STORAGE__DATA_DIR=$OUT/data FWB__SERVER__BIND=127.0.0.1:$PORT
  if [ "$1" != embedded ]; then
    local db=${1#postgres:}
    psql -q -h 127.0.0.1 -U postgres -d test -c "drop database if exists $db" -c "create database $db"
    export FWB__DATABASE__URL=postgres://postgres@127.0.0.1:5432/$db FWB__CACHE__REDIS_URL=redis://127.0.0.1:6379
    export FWB__CACHE__NAMESPACE=$db-$$
  fi
  ADMIN_KEY=$("$BIN/filewallball" admin create-user --name admin --role admin | grep -o 'fwb_[A-Za-z0-9_-]*')
}
start_service() {
  "$BIN/filewallball" >>"$OUT/service.log" 2>&1 &
  SERVICE_PID=$!
  for _ in $(seq 100); do curl -sf "127.0.0.1:$PORT/health/ready" >/dev/null && return; sleep 0.1; done
  echo "service not ready" >&2; exit 1
}
stop_service() { [ -n "$SERVICE_PID" ] && kill "$SERVICE_PID" 2>/dev/null && wait "$SERVICE_PID" 2>/dev/null || true; SERVICE_PID=; }
trap stop_service EXIT
rss() { awk -v f="$1" '$1 == f":" {printf "%.1f MiB", $2 / 1024}' "/proc/$SERVICE_PID/status"; }
fds() { ls "/proc/$SERVICE_PID/fd" | wc -l; }
metric() { curl -sf "127.0.0.1:$PORT/metrics" | awk -v m="$1" '$1 == m {print $2}'; }

case "${1:-}" in
  bodies)
    backend embedded
    start_service
    id=$(curl -sf -H "Authorization: Bearer $ADMIN_KEY" --data-binary 'x' "127.0.0.1:$PORT/api/v1/files?name=a.txt" \
      | python3 -c 'import json,sys; print(json.load(sys.stdin)["id"])')
    for case in patch field header; do
      echo 5 >"/proc/$SERVICE_PID/clear_refs" # resets the peak (VmHWM) to the current RSS
      before=$(rss VmRSS)
      status=$(PORT=$PORT KEY=$ADMIN_KEY ID=$id CASE=$case python3 - <<'EOF'
import http.client, os
# 300 MB sent in 64 KiB chunks without a length; stops early if the service answers and closes.
case, key, fid = os.environ["CASE"], os.environ["KEY"], os.environ["ID"]
conn = http.client.HTTPConnection("127.0.0.1", int(os.environ["PORT"]), timeout=60)
b = "B0undary"
if case == "patch":
    path, ctype, head = f"/api/v1/files/{fid}", "application/json", b'{"name":"'
else:
    path, ctype = "/api/v1/files", f"multipart/form-data; boundary={b}"
    name = 'tags"\r\n\r\n' if case == "field" else 'file"; x="'
    head = f'--{b}\r\nContent-Disposition: form-data; name="{name}'.encode()
conn.putrequest("PATCH" if case == "patch" else "POST", path)
for k, v in [("Authorization", f"Bearer {key}"), ("Content-Type", ctype), ("Transfer-Encoding", "chunked")]:
    conn.putheader(k, v)
conn.endheaders()
chunk = b"a" * 65536
sent = 0
try:
    conn.send(b"%x\r\n%s\r\n" % (len(head), head))
    while sent < 300_000_000:
        conn.send(b"%x\r\n%s\r\n" % (len(chunk), chunk))
        sent += len(chunk)
    conn.send(b"0\r\n\r\n")
except OSError:
    pass
r = conn.getresponse()
print(r.status, r.read()[:80].decode(errors="replace"), f"after {sent / 1e6:.0f} MB sent")
EOF
)
      echo "$case: RSS before $before, peak while sending $(rss VmHWM); answer: $status"
    done
    ;;
  halfopen)
    backend embedded
    start_service
    # A build without the setting (before issue 11) is watched for as long as the default.
    timeout=$("$BIN/filewallball" --print-config | awk '$1 == "header_read_timeout_secs" {print $3}')
    timeout=${timeout:-30}
    echo "descriptors before: $(fds); header timeout ${timeout} s"
    PORT=$PORT T=$timeout PID=$SERVICE_PID python3 - <<'EOF'
import os, socket, time, select
port, t, pid = int(os.environ["PORT"]), int(os.environ["T"]), os.environ["PID"]
socks = []
for _ in range(5000):
    s = socket.create_connection(("127.0.0.1", port))
    s.sendall(b"GET /health/live HTTP/1.1\r\nHost: x\r\n")
    socks.append(s)
fds = lambda: len(os.listdir(f"/proc/{pid}/fd"))
print(f"5000 half-open connections made; service descriptors: {fds()}")
time.sleep(t + 5)
closed = 0
for s in socks:
    s.setblocking(False)
    try:
        closed += s.recv(1) == b""
    except BlockingIOError:
        pass
    except OSError:
        closed += 1
print(f"{t + 5} s later: {closed} of 5000 closed by the service; service descriptors: {fds()}")
for s in socks:
    s.close()
EOF
    sleep 1
    echo "descriptors after the client closed its side: $(fds)"
    ;;
  badkeys)
    backend postgres:fwb_issue11_badkeys
    start_service
    rows() { psql -qAt -h 127.0.0.1 -U postgres -d fwb_issue11_badkeys -c "select count(*) from audit_logs where action = 'auth.denied'"; }
    for kind in malformed unknown; do
      lookups=$(metric auth_db_lookups_total); before=$(rows)
      PORT=$PORT KIND=$kind python3 - <<'EOF'
import base64, collections, http.client, os
port, kind = int(os.environ["PORT"]), os.environ["KIND"]
conns = [http.client.HTTPConnection("127.0.0.1", port) for _ in range(8)]
statuses = collections.Counter()
for i in range(10_000):
    key = "junk" if kind == "malformed" else "fwb_" + base64.urlsafe_b64encode(os.urandom(32)).decode().rstrip("=")
    c = conns[i % 8]
    c.request("GET", "/api/v1/files", headers={"Authorization": f"Bearer {key}"})
    r = c.getresponse(); r.read()
    statuses[r.status] += 1
print(f"10000 requests with {kind} keys: statuses {dict(sorted(statuses.items()))}")
EOF
      sleep 1.5 # the audit writer batches for 100 ms
      echo "  database lookups: $(python3 -c "print(int(float('$(metric auth_db_lookups_total)') - float('$lookups')))"), audit rows added: $(( $(rows) - before ))"
      sleep 61 # the next kind starts with a fresh refusal window
    done
    ;;
  crash)
    backend embedded
    # The rounds and the check afterwards send far more than a key's allowance.
    export FWB__RATE_LIMIT__API_PER_MINUTE=0 FWB__RATE_LIMIT__DOWNLOAD_PER_MINUTE=0 FWB__RATE_LIMIT__UPLOAD_PER_MINUTE=0
    echo "20 rounds: uploads (some shared content) and purges from 4 threads, the service killed with SIGKILL mid-way"
    : >"$OUT/acknowledged"
    for round in $(seq 20); do
      start_service
      PORT=$PORT KEY=$ADMIN_KEY ACK=$OUT/acknowledged ROUND=$round python3 - <<'EOF' &
import http.client, json, os, random, threading
port, key, ack, rnd = int(os.environ["PORT"]), os.environ["KEY"], os.environ["ACK"], int(os.environ["ROUND"])
lock = threading.Lock()
def work(t):
    rng = random.Random(rnd * 10 + t)
    try:
        c = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
        mine = []
        while True:
            if mine and rng.random() < 0.3:
                fid = mine.pop(rng.randrange(len(mine)))
                # Written before asking: a kill after the purge commits but before it answers still purged it.
                with lock, open(ack, "a") as f: f.write(f"purging {fid}\n")
                c.request("POST", f"/api/v1/files/{fid}/purge", headers={"Authorization": f"Bearer {key}"})
                r = c.getresponse(); r.read()
                if r.status == 204:
                    with lock, open(ack, "a") as f: f.write(f"purged {fid}\n")
                continue
            size = rng.choice([10, 4096, 300_000, 3_000_000])
            # Half share a few contents (uploads reuse blobs), half are new bytes (a kill can orphan them).
            body = bytes([rng.randrange(4)]) * size if rng.random() < 0.5 else rng.randbytes(size)
            c.request("POST", f"/api/v1/files?name=r{rnd}.bin", body=body, headers={"Authorization": f"Bearer {key}"})
            r = c.getresponse(); data = r.read()
            if r.status == 201:
                meta = json.loads(data)
                mine.append(meta["id"])
                with lock, open(ack, "a") as f: f.write(f"uploaded {meta['id']} {meta['content_hash']}\n")
    except Exception:
        pass
ts = [threading.Thread(target=work, args=(t,)) for t in range(4)]
for t in ts: t.start()
for t in ts: t.join()
EOF
      client=$!
      sleep "$(python3 -c 'import random; print(round(random.uniform(0.5, 2.5), 2))')"
      kill -9 "$SERVICE_PID"; wait "$SERVICE_PID" 2>/dev/null || true; SERVICE_PID=
      wait "$client" || true
    done
    blobs=$(find "$OUT/data/blobs" -type f ! -name '.tmp-*' | wc -l); temps=$(find "$OUT/data/blobs" -name '.tmp-*' | wc -l)
    echo "after 20 kills: $blobs blob files, $temps temporary files"
    echo "== fsck (report only, grace 0 s: the service is stopped)"
    "$BIN/filewallball" admin fsck --grace-secs 0 || true
    echo "== the service's own sweep at startup (grace 0 s)"
    export FWB__BLOB__SWEEP_GRACE_SECS=0 FWB__BLOB__SWEEP_INTERVAL_SECS=1
    start_service
    sleep 4
    echo "sweep metrics: orphans $(metric blob_sweep_orphans_removed_total), bytes $(metric blob_sweep_bytes_removed_total), temp files $(metric blob_sweep_temp_files_removed_total)"
    PORT=$PORT KEY=$ADMIN_KEY ACK=$OUT/acknowledged python3 - <<'EOF'
import http.client, json, os
port, key = int(os.environ["PORT"]), os.environ["KEY"]
uploaded, purged, purging = {}, set(), set()
for line in open(os.environ["ACK"]):
    kind, fid, *rest = line.split()
    if kind == "uploaded": uploaded[fid] = rest[0]
    elif kind == "purged": purged.add(fid)
    else: purging.add(fid)
c = http.client.HTTPConnection("127.0.0.1", port)
lost = unanswered = 0
for fid, h in uploaded.items():
    if fid in purged: continue
    c.request("GET", f"/api/v1/files/{fid}", headers={"Authorization": f"Bearer {key}"})
    r = c.getresponse(); meta = r.read()
    c.request("GET", f"/api/v1/files/{fid}/content", headers={"Authorization": f"Bearer {key}"})
    d = c.getresponse(); body = d.read()
    ok = r.status == 200 and d.status == 200 and d.getheader("etag") == f'"{h}"'
    ok = ok and len(body) == json.loads(meta)["size"]
    if ok: continue
    if fid in purging and r.status == 404: unanswered += 1  # its purge was cut off after it committed
    else: lost += 1; print(f"lost: {fid} {r.status} {d.status}")
kept = len(uploaded) - len(purged & uploaded.keys())
print(f"acknowledged uploads not purged: {kept}, unreadable: {lost}; purges acknowledged: {len(purged)},"
      f" purges cut off by a kill that had committed: {unanswered}")
EOF
    stop_service
    unset FWB__BLOB__SWEEP_GRACE_SECS FWB__BLOB__SWEEP_INTERVAL_SECS
    echo "== fsck after the sweep"
    "$BIN/filewallball" admin fsck --grace-secs 0 || true
    ;;
  overload)
    shift
    backend postgres:fwb_issue11_overload
    export FWB__RATE_LIMIT__API_PER_MINUTE=0 FWB__RATE_LIMIT__DOWNLOAD_PER_MINUTE=0 FWB__RATE_LIMIT__UPLOAD_PER_MINUTE=0
    start_service
    for rate in "$@"; do
      echo "== peak.toml at $rate req/s ($BIN)"
      "$LOADTEST" --scenario scenarios/peak.toml --target "http://127.0.0.1:$PORT" --admin-key "$ADMIN_KEY" \
        --out "$OUT/overload-$rate-$(basename "$(dirname "$BIN")")" --service-pid "$SERVICE_PID" \
        --backend postgres+redis --rate "$rate" --no-profile 2>&1 | grep -v '^\['
    done
    ;;
  soak)
    # soak.toml with its steady state cut to $2 seconds (default: as shipped, 1800), no CPU profile.
    backend postgres:fwb_issue11_soak
    start_service
    steady=${2:-1800}
    sed -e "s/^steady_s = .*/steady_s = $steady/" scenarios/soak.toml >"$OUT/soak.toml"
    dir=$OUT/soak-$steady-$(basename "$(dirname "$BIN")")
    "$LOADTEST" --scenario "$OUT/soak.toml" --target "http://127.0.0.1:$PORT" --admin-key "$ADMIN_KEY" --out "$dir" \
      --service-pid "$SERVICE_PID" --backend postgres+redis --no-profile 2>&1 | grep -v '^\[' | grep -v WARN
    python3 - "$dir/summary.json" <<'EOF'
import json, sys
s = json.load(open(sys.argv[1]))
rss = [(p["t_s"], p["server_rss_bytes"]) for p in s["timeline"] if p.get("server_rss_bytes")]
mib = lambda b: b / 1048576
print(f"RSS at the start of the steady state {mib(rss[0][1]):.1f} MiB, at its end {mib(rss[-1][1]):.1f} MiB"
      f" ({rss[-1][0] - rss[0][0]} s); slope {s['server']['rss_growth_mib_per_10min']:.2f} MiB per 10 min")
EOF
    ;;
  heap)
    # The service under heaptrack for soak.toml cut to 300 s; the largest holders of memory at its peak.
    backend postgres:fwb_issue11_heap
    rm -f "$OUT"/heap.*
    heaptrack -o "$OUT/heap" "$BIN/filewallball" >>"$OUT/service.log" 2>&1 &
    for _ in $(seq 100); do curl -sf "127.0.0.1:$PORT/health/ready" >/dev/null && break; sleep 0.2; done
    SERVICE_PID=$(pgrep -f "^$BIN/filewallball$")
    sed -e 's/^steady_s = .*/steady_s = 300/' -e 's/^warm_up_s = .*/warm_up_s = 30/' scenarios/soak.toml >"$OUT/heap.toml"
    "$LOADTEST" --scenario "$OUT/heap.toml" --target "http://127.0.0.1:$PORT" --admin-key "$ADMIN_KEY" \
      --out "$OUT/heap-run" --service-pid "$SERVICE_PID" --backend postgres+redis --no-profile 2>&1 | grep -E '^soak|rss'
    stop_service
    sleep 15 # heaptrack writes its file after the process exits
    heaptrack_print -f "$OUT"/heap.*zst -F "$OUT/heap.folded" --flamegraph-cost-type peak >/dev/null
    python3 - "$OUT/heap.folded" <<'EOF'
import collections, sys
# Each stack is charged to its three innermost frames outside the allocator and the collections.
plumbing = {"alloc.rs", "raw_vec/mod.rs", "mod.rs", "vec.rs", "boxed.rs", "sync.rs", "rc.rs", "string.rs", "slice.rs",
            "spec_from_elem.rs", "spec_extend.rs", "spec_from_iter.rs", "spec_from_iter_nested.rs", "unix.rs", ""}
by, total = collections.Counter(), 0
for line in open(sys.argv[1]):
    stack, _, cost = line.rpartition(" ")
    frames = [f for f in reversed(stack.split(";")) if f[f.find("(") + 1:-1] not in plumbing]
    by[" <- ".join(frames[:3])] += int(cost)
    total += int(cost)
print(f"memory at the peak: {total / 1048576:.1f} MiB; largest holders:")
for key, cost in by.most_common(8):
    print(f"{cost / 1048576:8.2f} MiB  {key[:200]}")
EOF
    ;;
  *)
    sed -n '2,15p' "$0"; exit 2
    ;;
esac
