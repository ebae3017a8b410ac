#!/usr/bin/env bash
# Requests/s and p99 of GET /api/v1/files/{id} (wrk, 3 runs each, medians) on a release build:
#   embedded (cache hit), postgres+redis (cache hit), postgres with the cache cold (miss path),
#   and a bare axum handler returning the same JSON from memory; then the file_meta hit ratio /metrics
#   reports after 100 files are read 10 000 times in random order.
# Needs wrk, psql, redis-server, and PostgreSQL/Redis on 127.0.0.1 (as .ci/run sets up).
set -euo pipefail
T=${CARGO_TARGET_DIR:-$HOME/.cache/filewallball-target}/release
BIN=$T/filewallball; BARE=$T/examples/bare_json
W=${TMPDIR:-/tmp}/fwb-meta-bench; rm -rf "$W"; mkdir -p "$W"
PG=postgres://postgres@127.0.0.1:5432; DB=fwb_bench_$$
PORT=18080; COLD_REDIS_PORT=18379
DURATION=${DURATION:-10s}; CONNS=${CONNS:-32}
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  psql -q "$PG/test" -c "DROP DATABASE IF EXISTS $DB WITH (FORCE)" >/dev/null 2>&1 || true
  rm -rf "$W"
}
trap cleanup EXIT

wait_ready() { for _ in $(seq 100); do curl -sf "http://127.0.0.1:$1/health/ready" >/dev/null && return; sleep 0.1; done; echo "not ready" >&2; exit 1; }

# Starts the service with the environment given as arguments; sets KEY and ID (one of 100 uploaded files).
start_service() {
  rm -rf "$W/data"
  env "$@" FWB__STORAGE__DATA_DIR="$W/data" FWB__SERVER__BIND=127.0.0.1:$PORT FWB__LOG__FILTER=warn \
    "$BIN" admin create-user --name "bench$RANDOM" --role admin > "$W/admin.txt"
  KEY=$(sed -n 's/^api key (shown once): //p' "$W/admin.txt")
  env "$@" FWB__STORAGE__DATA_DIR="$W/data" FWB__SERVER__BIND=127.0.0.1:$PORT FWB__LOG__FILTER=warn "$BIN" &
  SERVICE=$!; pids+=("$SERVICE")
  wait_ready $PORT
  : > "$W/ids"
  for i in $(seq 100); do
    head -c 2048 /dev/urandom | curl -sf -H "Authorization: Bearer $KEY" --data-binary @- \
      "http://127.0.0.1:$PORT/api/v1/files?name=f$i.bin" | python3 -c 'import json,sys;print(json.load(sys.stdin)["id"])' >> "$W/ids"
  done
  ID=$(head -n1 "$W/ids")
}

stop_service() { kill "$SERVICE"; wait "$SERVICE" 2>/dev/null || true; }

# Three wrk runs; prints "label: rps=… p99=…" for each and the medians.
measure() {
  local label=$1 url=$2; shift 2
  local rps=() p99=()
  for run in 1 2 3; do
    out=$(wrk -t1 -c"$CONNS" -d"$DURATION" --latency "$@" "$url")
    r=$(awk '/^Requests\/sec/{print $2}' <<<"$out")
    p=$(awk '$1=="99%"{print $2}' <<<"$out")
    errs=$(grep -E "Non-2xx|Socket errors" <<<"$out" || true)
    echo "  $label run $run: rps=$r p99=$p ${errs}"
    rps+=("$r"); p99+=("$p")
  done
  median_rps=$(printf '%s\n' "${rps[@]}" | sort -g | sed -n 2p)
  # wrk prints latencies as 950.00us, 2.16ms or 1.02s: compare them in milliseconds.
  median_p99=$(printf '%s\n' "${p99[@]}" | awk '/us$/{print $0+0/1000; next} /ms$/{print $0+0; next} /s$/{print $0*1000}' | sort -g | sed -n 2p)
  echo "$label median: rps=$median_rps p99=${median_p99}ms (runs: ${p99[*]})"
  echo "$label $median_rps" >> "$W/medians"
}

# Each request asks for one of the 100 files at random, so concurrent misses rarely share one load.
random_ids_lua() {
  { echo "local ids = {"; sed 's/.*/"&",/' "$W/ids"; echo "}"
    echo 'math.randomseed(os.time())'
    echo 'request = function() return wrk.format("GET", "/api/v1/files/" .. ids[math.random(#ids)]) end'; } > "$W/ids.lua"
}
warm_all() { while read -r id; do curl -sf -o /dev/null -H "Authorization: Bearer $KEY" "http://127.0.0.1:$PORT/api/v1/files/$id"; done < "$W/ids"; }
run_case() {
  local label=$1
  random_ids_lua
  measure "$label" "http://127.0.0.1:$PORT" -H "Authorization: Bearer $KEY" -s "$W/ids.lua"
}

: > "$W/medians"
echo "== bare axum handler (same JSON from memory; a Lua script picks the id as for the service)"
start_service   # embedded, only to get a real body to serve
BODY=$(curl -sf -H "Authorization: Bearer $KEY" "http://127.0.0.1:$PORT/api/v1/files/$ID")
stop_service
"$BARE" 127.0.0.1:18090 "$BODY" & pids+=($!)
sleep 0.5
random_ids_lua
measure bare "http://127.0.0.1:18090" -s "$W/ids.lua"

echo "== embedded (SQLite + in-process cache), cache hit"
start_service
warm_all
run_case embedded-hit
stop_service

psql -q "$PG/test" -c "CREATE DATABASE $DB" >/dev/null
echo "== postgres + redis, cache hit"
start_service FWB__DATABASE__URL="$PG/$DB" FWB__CACHE__REDIS_URL=redis://127.0.0.1:6379 FWB__CACHE__NAMESPACE="bench$$"
warm_all
run_case postgres-redis-hit
stop_service

echo "== postgres, cache cold: a Redis that refuses every write (OOM), so every read misses and goes to Postgres"
echo "   (the circuit breaker is set never to open, so each request still pays its Redis GET and failed SET)"
redis-server --port $COLD_REDIS_PORT --bind 127.0.0.1 --save "" --appendonly no --maxmemory 1 --maxmemory-policy noeviction \
  >/dev/null & pids+=($!)
sleep 0.3
psql -q "$PG/test" -c "DROP DATABASE $DB WITH (FORCE)" -c "CREATE DATABASE $DB" >/dev/null
start_service FWB__DATABASE__URL="$PG/$DB" FWB__CACHE__REDIS_URL=redis://127.0.0.1:$COLD_REDIS_PORT FWB__CACHE__NAMESPACE="bench$$" \
  FWB__CACHE__CIRCUIT_FAILURES=4000000000
run_case postgres-miss
grep -E '^cache_(hits|misses)_total\{cache_type="file_meta"\}|^cache_errors_total|^http_request_duration_seconds_count\{method="GET",endpoint="/api/v1/files/\{id\}"' <(curl -sf "http://127.0.0.1:$PORT/metrics") | sed 's/^/  /'
stop_service

echo "== ratios to the bare handler (median rps)"
awk 'NR==1{bare=$2} {printf "  %-20s %10.0f rps  %.3f of bare\n", $1, $2, $2/bare}' "$W/medians"

echo "== hit ratio: 100 files read 10 000 times in random order (postgres + redis, fresh start)"
psql -q "$PG/test" -c "DROP DATABASE $DB WITH (FORCE)" -c "CREATE DATABASE $DB" >/dev/null
start_service FWB__DATABASE__URL="$PG/$DB" FWB__CACHE__REDIS_URL=redis://127.0.0.1:6379 FWB__CACHE__NAMESPACE="ratio$$"
python3 - "$PORT" "$KEY" "$W/ids" <<'PY'
import http.client, random, sys
port, key, ids = int(sys.argv[1]), sys.argv[2], open(sys.argv[3]).read().split()
random.seed(7)
conn = http.client.HTTPConnection("127.0.0.1", port)
bad = 0
for _ in range(10_000):
    conn.request("GET", f"/api/v1/files/{random.choice(ids)}", headers={"Authorization": f"Bearer {key}"})
    r = conn.getresponse(); r.read()
    bad += r.status != 200
print(f"  10000 reads of {len(ids)} files, non-200: {bad}")
PY
grep -E '^cache_(hits|misses)_total\{cache_type="file_meta"\}|^cache_hit_ratio\{cache_type="file_meta"\}' <(curl -sf "http://127.0.0.1:$PORT/metrics") | sed 's/^/  /'
stop_service
