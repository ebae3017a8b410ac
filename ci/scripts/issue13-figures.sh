#!/usr/bin/env bash
# Cached metadata GET throughput of two builds in one run (issue 13: the layout change must not slow it):
# GET /api/v1/files/{id} for one of 100 warm files at random, wrk -t1 -c32 -d10s, the two builds alternating,
# ROUNDS rounds each, on the embedded backend and on PostgreSQL + Redis; rate limits off. Prints every run and
# the medians. Usage: BEFORE=/path/to/old/filewallball AFTER=/path/to/new/filewallball ci/scripts/issue13-figures.sh
# Needs wrk, psql, and PostgreSQL/Redis on 127.0.0.1 (as .ci/run sets up).
set -euo pipefail
BEFORE=${BEFORE:?path of the old binary}; AFTER=${AFTER:?path of the new binary}; ROUNDS=${ROUNDS:-3}
W=${TMPDIR:-/tmp}/fwb-issue13; rm -rf "$W"; mkdir -p "$W"
PG=postgres://postgres@127.0.0.1:5432; DB=fwb_issue13_$$; PORT=18081
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  psql -q "$PG/test" -c "DROP DATABASE IF EXISTS $DB WITH (FORCE)" >/dev/null 2>&1 || true
  rm -rf "$W"
}
trap cleanup EXIT
NO_LIMITS=(FWB__RATE_LIMIT__API_PER_MINUTE=0 FWB__RATE_LIMIT__DOWNLOAD_PER_MINUTE=0 FWB__RATE_LIMIT__UPLOAD_PER_MINUTE=0)

# start BIN ENV…: a fresh store, an admin key, 100 files of 2 KiB, each read once (warm); sets SERVICE, KEY.
start() {
  local bin=$1; shift
  rm -rf "$W/data"
  env "$@" "${NO_LIMITS[@]}" FWB__STORAGE__DATA_DIR="$W/data" FWB__SERVER__BIND=127.0.0.1:$PORT FWB__LOG__FILTER=warn \
    "$bin" admin create-user --name "bench$RANDOM" --role admin > "$W/admin.txt"
  KEY=$(sed -n 's/^api key (shown once): //p' "$W/admin.txt")
  env "$@" "${NO_LIMITS[@]}" FWB__STORAGE__DATA_DIR="$W/data" FWB__SERVER__BIND=127.0.0.1:$PORT FWB__LOG__FILTER=warn \
    "$bin" & SERVICE=$!; pids+=("$SERVICE")
  for _ in $(seq 100); do curl -sf "http://127.0.0.1:$PORT/health/ready" >/dev/null && break; sleep 0.1; done
  : > "$W/ids"
  for i in $(seq 100); do
    head -c 2048 /dev/urandom | curl -sf -H "Authorization: Bearer $KEY" --data-binary @- \
      "http://127.0.0.1:$PORT/api/v1/files?name=f$i.bin" | python3 -c 'import json,sys;print(json.load(sys.stdin)["id"])' >> "$W/ids"
  done
  while read -r id; do curl -sf -o /dev/null -H "Authorization: Bearer $KEY" "http://127.0.0.1:$PORT/api/v1/files/$id"; done < "$W/ids"
  { echo "local ids = {"; sed 's/.*/"&",/' "$W/ids"; echo "}"; echo 'math.randomseed(os.time())'
    echo 'request = function() return wrk.format("GET", "/api/v1/files/" .. ids[math.random(#ids)]) end'; } > "$W/ids.lua"
}
stop() { kill "$SERVICE"; wait "$SERVICE" 2>/dev/null || true; }
run() {
  local label=$1
  out=$(wrk -t1 -c32 -d10s -H "Authorization: Bearer $KEY" -s "$W/ids.lua" "http://127.0.0.1:$PORT")
  rps=$(awk '/^Requests\/sec/{print $2}' <<<"$out")
  errs=$(grep -E "Non-2xx|Socket errors" <<<"$out" | tr -s ' ' || true)
  echo "  $label: $rps req/s $errs"
  echo "$label $rps" >> "$W/all"
}

: > "$W/all"
for round in $(seq "$ROUNDS"); do
  for build in before after; do
    bin=$BEFORE; [ $build = after ] && bin=$AFTER
    start "$bin"; run "embedded-$build"; stop
    psql -q "$PG/test" -c "DROP DATABASE IF EXISTS $DB WITH (FORCE)" -c "CREATE DATABASE $DB" >/dev/null
    start "$bin" FWB__DATABASE__URL="$PG/$DB" FWB__CACHE__REDIS_URL=redis://127.0.0.1:6379 FWB__CACHE__NAMESPACE="i13$$$round$build"
    run "postgres-redis-$build"; stop
  done
done
echo "== medians (req/s) and after/before"
for backend in embedded postgres-redis; do
  b=$(awk -v l="$backend-before" '$1==l{print $2}' "$W/all" | sort -g | awk '{a[NR]=$1} END{print a[int((NR+1)/2)]}')
  a=$(awk -v l="$backend-after" '$1==l{print $2}' "$W/all" | sort -g | awk '{a[NR]=$1} END{print a[int((NR+1)/2)]}')
  awk -v n="$backend" -v b="$b" -v a="$a" 'BEGIN{printf "  %-15s before %9.0f  after %9.0f  ratio %.3f\n", n, b, a, a/b}'
done
