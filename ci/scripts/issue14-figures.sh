#!/usr/bin/env bash
# Issue 14's table, in one run: requests/s of the service beside a reference doing the least the same answer needs.
#   cached metadata GET            vs a bare axum handler returning the same JSON (service/examples/bare_json.rs)
#   download of 1 KiB, 100 KiB, 10 MiB  vs nginx serving the same bytes from disk
# on the embedded backend and on PostgreSQL + Redis; wrk -t2 -c32 -d10s, 3 runs each, medians; rate limits off.
# On PostgreSQL + Redis it also counts Redis commands per request (INFO commandstats, reset before each run).
#
#   [BIN=…] [BARE=…] ci/scripts/issue14-figures.sh
#
# Needs wrk, nginx, psql, redis-cli and PostgreSQL/Redis on 127.0.0.1, and the release builds:
#   cargo build --release -p filewallball --bin filewallball --example bare_json
set -euo pipefail
T=${CARGO_TARGET_DIR:-$HOME/.cache/filewallball-target}/release
BIN=${BIN:-$T/filewallball}; BARE=${BARE:-$T/examples/bare_json}
W=${TMPDIR:-/tmp}/fwb-issue14; rm -rf "$W"; mkdir -p "$W/bytes"
PG=postgres://postgres@127.0.0.1:5432; DB=fwb_issue14_$$
PORT=18082; NGINX_PORT=18180; BARE_PORT=18190
DURATION=${DURATION:-10s}; CONNS=${CONNS:-32}; THREADS=${THREADS:-2}; RUNS=${RUNS:-3}
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  psql -q "$PG/test" -c "DROP DATABASE IF EXISTS $DB WITH (FORCE)" >/dev/null 2>&1 || true
  rm -rf "$W"
}
trap cleanup EXIT
for tool in wrk nginx psql redis-cli; do command -v "$tool" >/dev/null || { echo "$tool is needed" >&2; exit 1; }; done
for f in "$BIN" "$BARE"; do [ -x "$f" ] || { echo "$f is missing (see the header)" >&2; exit 1; }; done

head -c 1024 /dev/urandom > "$W/bytes/1k.bin"
head -c $((100 * 1024)) /dev/urandom > "$W/bytes/100k.bin"
head -c $((10 * 1024 * 1024)) /dev/urandom > "$W/bytes/10m.bin"

# start ENV…: a fresh store, an admin key, the three files uploaded and each read once (warm).
# Sets SERVICE, KEY and the ids META (the 1 KiB file's), C1K, C100K, C10M.
start() {
  rm -rf "$W/data"
  local env=("$@" FWB__RATE_LIMIT__API_PER_MINUTE=0 FWB__RATE_LIMIT__DOWNLOAD_PER_MINUTE=0
    FWB__RATE_LIMIT__UPLOAD_PER_MINUTE=0 FWB__STORAGE__DATA_DIR="$W/data" FWB__SERVER__BIND=127.0.0.1:$PORT
    FWB__LOG__FILTER=warn)
  env "${env[@]}" "$BIN" admin create-user --name "bench$RANDOM" --role admin > "$W/admin.txt"
  KEY=$(sed -n 's/^api key (shown once): //p' "$W/admin.txt")
  env "${env[@]}" "$BIN" & SERVICE=$!; pids+=("$SERVICE")
  for _ in $(seq 100); do curl -sf "http://127.0.0.1:$PORT/health/ready" >/dev/null && break; sleep 0.1; done
  upload() {
    curl -sf -H "Authorization: Bearer $KEY" --data-binary "@$W/bytes/$1" "http://127.0.0.1:$PORT/api/v1/files?name=$1" \
      | python3 -c 'import json,sys;print(json.load(sys.stdin)["id"])'
  }
  C1K=$(upload 1k.bin); C100K=$(upload 100k.bin); C10M=$(upload 10m.bin); META=$C1K
  for path in "files/$META" "files/$C1K/content" "files/$C100K/content" "files/$C10M/content"; do
    curl -sf -o /dev/null -H "Authorization: Bearer $KEY" "http://127.0.0.1:$PORT/api/v1/$path"
  done
}
stop() { kill "$SERVICE"; wait "$SERVICE" 2>/dev/null || true; }

redis_calls() {
  redis-cli -h 127.0.0.1 -p 6379 INFO commandstats \
    | awk -F'[:=,]' '/^cmdstat_/ && $1 != "cmdstat_info" && $1 != "cmdstat_config" { s += $3 } END { print s + 0 }'
}

# measure LABEL URL [wrk args…]: RUNS runs; prints each, appends "LABEL median_rps [cmds/request]" to medians.
measure() {
  local label=$1 url=$2; shift 2
  local rps=() per=()
  for run in $(seq "$RUNS"); do
    [ -n "${COUNT_REDIS:-}" ] && redis-cli -h 127.0.0.1 -p 6379 CONFIG RESETSTAT >/dev/null
    out=$(wrk -t"$THREADS" -c"$CONNS" -d"$DURATION" "$@" "$url")
    r=$(awk '/^Requests\/sec/{print $2}' <<<"$out")
    n=$(awk '/requests in/{print $1}' <<<"$out")
    errs=$(grep -E "Non-2xx|Socket errors" <<<"$out" | tr -s ' ' || true)
    if grep -q "Non-2xx" <<<"$errs"; then echo "$label: answers other than 2xx: $errs" >&2; exit 1; fi
    line="  $label run $run: rps=$r requests=$n $errs"
    if [ -n "${COUNT_REDIS:-}" ]; then
      c=$(redis_calls)
      p=$(awk -v c="$c" -v n="$n" 'BEGIN{printf "%.2f", c / n}')
      per+=("$p"); line="$line redis_commands=$c per_request=$p"
    fi
    echo "$line"; rps+=("$r")
  done
  local mid=$(( (RUNS + 1) / 2 ))
  median=$(printf '%s\n' "${rps[@]}" | sort -g | sed -n "${mid}p")
  per_median=""
  [ -n "${COUNT_REDIS:-}" ] && per_median=$(printf '%s\n' "${per[@]}" | sort -g | sed -n "${mid}p")
  echo "$label median: rps=$median ${per_median:+redis_commands_per_request=$per_median}"
  echo "$label $median $per_median" >> "$W/medians"
}

service_paths() {
  local backend=$1 auth=(-H "Authorization: Bearer $KEY")
  measure "$backend meta" "http://127.0.0.1:$PORT/api/v1/files/$META" "${auth[@]}"
  measure "$backend 1k" "http://127.0.0.1:$PORT/api/v1/files/$C1K/content" "${auth[@]}"
  measure "$backend 100k" "http://127.0.0.1:$PORT/api/v1/files/$C100K/content" "${auth[@]}"
  measure "$backend 10m" "http://127.0.0.1:$PORT/api/v1/files/$C10M/content" "${auth[@]}"
}

: > "$W/medians"
echo "== references"
start
BODY=$(curl -sf -H "Authorization: Bearer $KEY" "http://127.0.0.1:$PORT/api/v1/files/$META")
stop
"$BARE" 127.0.0.1:$BARE_PORT "$BODY" & pids+=($!)
cat > "$W/nginx.conf" <<EOF
worker_processes auto;
pid $W/nginx.pid;
error_log $W/nginx-error.log;
daemon off;
events { worker_connections 1024; }
http {
  access_log off;
  sendfile on;
  server { listen 127.0.0.1:$NGINX_PORT; root $W/bytes; }
}
EOF
nginx -c "$W/nginx.conf" -p "$W" & pids+=($!)
sleep 0.5
measure "reference meta" "http://127.0.0.1:$BARE_PORT/api/v1/files/$META"
measure "reference 1k" "http://127.0.0.1:$NGINX_PORT/1k.bin"
measure "reference 100k" "http://127.0.0.1:$NGINX_PORT/100k.bin"
measure "reference 10m" "http://127.0.0.1:$NGINX_PORT/10m.bin"

echo "== embedded (SQLite, in-process cache)"
start
service_paths embedded
stop

echo "== postgres + redis"
psql -q "$PG/test" -c "CREATE DATABASE $DB" >/dev/null
start FWB__DATABASE__URL="$PG/$DB" FWB__CACHE__REDIS_URL=redis://127.0.0.1:6379 FWB__CACHE__NAMESPACE="bench$$"
COUNT_REDIS=1 service_paths postgres-redis
stop

echo "== table: median req/s (ratio to the reference)"
awk '{ split($0, f, " "); backend = f[1]; path = f[2]; rps[backend, path] = f[3]; per[backend, path] = f[4] }
     END {
       printf "  %-6s %12s %22s %34s\n", "path", "reference", "embedded", "postgres+redis (redis cmds/req)"
       n = split("meta 1k 100k 10m", paths, " ")
       for (i = 1; i <= n; i++) {
         p = paths[i]; ref = rps["reference", p]
         printf "  %-6s %12.0f %14.0f (%.2f) %18.0f (%.2f) %6s\n", p, ref, rps["embedded", p], rps["embedded", p] / ref,
           rps["postgres-redis", p], rps["postgres-redis", p] / ref, per["postgres-redis", p]
       }
     }' "$W/medians"
