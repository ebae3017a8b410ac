#!/usr/bin/env bash
# Figures of the features issue, measured on release builds against this machine's PostgreSQL and Redis:
#   1. cached metadata GET, requests/s and p99, of a build from before permissions/audit (BEFORE_BIN) and of
#      this build, alternating in one run (wrk, 3 runs each, medians), embedded and postgres+redis;
#   2. search latency p50/p99 over 100 000 files on PostgreSQL, with and without the trigram index;
#   3. peak RSS while 20 images of 8000×8000 are thumbnailed at once.
# Usage: BEFORE_BIN=/path/to/old/filewallball ci/scripts/issue4-figures.sh [meta|search|thumbs]...
set -euo pipefail
T=${CARGO_TARGET_DIR:-$HOME/.cache/filewallball-target}/release
BIN=$T/filewallball
W=${TMPDIR:-/tmp}/fwb-issue4; rm -rf "$W"; mkdir -p "$W"
PG=postgres://postgres@127.0.0.1:5432; DB=fwb_fig_$$; PORT=18081
DURATION=${DURATION:-10s}; CONNS=${CONNS:-32}
SERVICE=""
cleanup() {
  [ -n "$SERVICE" ] && kill "$SERVICE" 2>/dev/null; wait 2>/dev/null || true
  psql -q "$PG/test" -c "DROP DATABASE IF EXISTS $DB WITH (FORCE)" >/dev/null 2>&1 || true
  rm -rf "$W"
}
trap cleanup EXIT
fresh_db() { psql -q "$PG/test" -c "DROP DATABASE IF EXISTS $DB WITH (FORCE)" -c "CREATE DATABASE $DB" >/dev/null; }

# start BIN [ENV=VALUE…]: a fresh data dir, an admin key in KEY, the service in SERVICE.
start() {
  local bin=$1; shift
  rm -rf "$W/data"
  env "$@" FWB__STORAGE__DATA_DIR="$W/data" FWB__SERVER__BIND=127.0.0.1:$PORT FWB__LOG__FILTER=error \
    "$bin" admin create-user --name "fig$RANDOM" --role admin > "$W/admin.txt"
  KEY=$(sed -n 's/^api key (shown once): //p' "$W/admin.txt")
  env "$@" FWB__STORAGE__DATA_DIR="$W/data" FWB__SERVER__BIND=127.0.0.1:$PORT FWB__LOG__FILTER=error "$bin" &
  SERVICE=$!
  for _ in $(seq 200); do curl -sf "http://127.0.0.1:$PORT/health/ready" >/dev/null && return; sleep 0.05; done
  echo "service not ready" >&2; exit 1
}
stop() { kill "$SERVICE"; wait "$SERVICE" 2>/dev/null || true; SERVICE=""; }

wrk_run() { wrk -t1 -c"$CONNS" -d"$DURATION" --latency "$@"; }
rps() { awk '/^Requests\/sec/{print $2}'; }
pct() { awk -v p="$1" '$1==p {v=$2; if (v ~ /us$/) v=v/1000; else if (v ~ /ms$/) v=v+0; else if (v ~ /s$/) v=v*1000; print v}'; }

meta() {
  : "${BEFORE_BIN:?set BEFORE_BIN to a build from before the features issue}"
  echo "== cached metadata GET, before vs after (alternating runs; rps, p99 ms)"
  for backend in embedded postgres-redis; do
    for run in 1 2 3; do
      for build in before after; do
        # The limiter runs in the new build but is set far above what wrk sends (the old build has none).
        bin=$BIN; extra=(FWB__RATE_LIMIT__API_PER_MINUTE=1000000000)
        [ "$build" = before ] && { bin=$BEFORE_BIN; extra=(); }
        if [ "$backend" = embedded ]; then start "$bin" "${extra[@]}"
        else fresh_db; start "$bin" "${extra[@]}" FWB__DATABASE__URL="$PG/$DB" FWB__CACHE__REDIS_URL=redis://127.0.0.1:6379 FWB__CACHE__NAMESPACE="fig$$-$run-$build"; fi
        id=$(head -c 2048 /dev/urandom | curl -sf -H "Authorization: Bearer $KEY" --data-binary @- \
          "http://127.0.0.1:$PORT/api/v1/files?name=m.bin" | python3 -c 'import json,sys;print(json.load(sys.stdin)["id"])')
        for _ in 1 2 3; do curl -sf -o /dev/null -H "Authorization: Bearer $KEY" "http://127.0.0.1:$PORT/api/v1/files/$id"; done
        sleep 0.5
        out=$(wrk_run -H "Authorization: Bearer $KEY" "http://127.0.0.1:$PORT/api/v1/files/$id")
        echo "$backend $build run$run rps=$(rps <<<"$out") p99=$(pct 99% <<<"$out") $(grep -E 'Non-2xx' <<<"$out" || true)" | tee -a "$W/meta.txt"
        stop
      done
    done
  done
  for backend in embedded postgres-redis; do
    for build in before after; do
      med=$(grep "^$backend $build " "$W/meta.txt" | sed 's/.*rps=\([0-9.]*\).*/\1/' | sort -g | sed -n 2p)
      p99=$(grep "^$backend $build " "$W/meta.txt" | sed 's/.*p99=\([0-9.]*\).*/\1/' | sort -g | sed -n 2p)
      echo "median $backend $build: rps=$med p99=${p99}ms"
    done
  done
}

search() {
  echo "== search over 100 000 files on PostgreSQL (cache bypassed: every request a distinct query)"
  fresh_db
  start "$BIN" FWB__DATABASE__URL="$PG/$DB" FWB__CACHE__REDIS_URL=redis://127.0.0.1:6379 FWB__CACHE__NAMESPACE="search$$" \
    FWB__RATE_LIMIT__API_PER_MINUTE=0
  owner=$(curl -sf -H "Authorization: Bearer $KEY" "http://127.0.0.1:$PORT/api/v1/users/me" | python3 -c 'import json,sys;print(json.load(sys.stdin)["id"])')
  psql -q "$PG/$DB" <<SQL
INSERT INTO blobs VALUES ('seed', 1, 100000, now());
INSERT INTO file_info (id, user_id, name, mime_type, file_size, content_hash, visibility, upload_time, updated_at)
SELECT gen_random_uuid(), '$owner', 'report-' || md5(g::text) || '.pdf', 'application/pdf', g, 'seed', 'private',
       now() - g * interval '1 second', now()
FROM generate_series(1, 100000) g;
ANALYZE file_info;
SQL
  # Each request has a distinct 'to' bound far in the future, so every one misses the search cache.
  cat > "$W/search.lua" <<'LUA'
math.randomseed(os.time())
local hex = "0123456789abcdef"
request = function()
  local q = ""
  for i = 1, 4 do local k = math.random(16); q = q .. hex:sub(k, k) end
  local to = string.format("2100-%02d-%02dT%02d:%02d:%02dZ", math.random(12), math.random(28), math.random(0, 23), math.random(0, 59), math.random(0, 59))
  return wrk.format("GET", "/api/v1/search?limit=20&q=" .. q .. "&to=" .. to)
end
LUA
  for variant in with-index without-index; do
    if [ "$variant" = without-index ]; then psql -q "$PG/$DB" -c "DROP INDEX idx_file_info_name_trgm"; fi
    echo "-- EXPLAIN ($variant)"
    psql -q "$PG/$DB" -c "EXPLAIN (ANALYZE, COSTS OFF, TIMING OFF, SUMMARY ON) SELECT f.id FROM file_info f WHERE f.deleted_at IS NULL AND (f.user_id = '$owner' OR f.visibility = 'public') AND lower(f.name) LIKE lower('%3fa9%') ESCAPE '\\' ORDER BY f.upload_time DESC, f.id DESC LIMIT 21"
    for run in 1 2 3; do
      out=$(wrk -t1 -c8 -d"$DURATION" --latency -H "Authorization: Bearer $KEY" -s "$W/search.lua" "http://127.0.0.1:$PORT")
      echo "search $variant run$run rps=$(rps <<<"$out") p50=$(pct 50% <<<"$out")ms p99=$(pct 99% <<<"$out")ms $(grep -E 'Non-2xx' <<<"$out" || true)"
    done
  done
  stop
}

thumbs() {
  echo "== peak RSS while 20 images of 8000x8000 are thumbnailed (workers=2)"
  python3 - "$W/big.png" <<'PY'
import struct, sys, zlib
w = h = 8000
row = bytes([0]) + bytes((x * 7) & 255 for x in range(w * 3))
raw = zlib.compressobj(6)
data = b"".join(raw.compress(row) for _ in range(h)) + raw.flush()
def chunk(t, d): return struct.pack(">I", len(d)) + t + d + struct.pack(">I", zlib.crc32(t + d) & 0xffffffff)
png = b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 8, 2, 0, 0, 0)) + chunk(b"IDAT", data) + chunk(b"IEND", b"")
open(sys.argv[1], "wb").write(png)
PY
  ls -l "$W/big.png" | awk '{print "  fixture bytes:", $5}'
  start "$BIN" FWB__RATE_LIMIT__UPLOAD_PER_MINUTE=0
  echo "  idle VmHWM: $(awk '/VmHWM/{print $2, $3}' /proc/$SERVICE/status)"
  echo 5 > /proc/$SERVICE/clear_refs
  started=$(date +%s.%N)
  for i in $(seq 20); do
    curl -sf -o /dev/null -H "Authorization: Bearer $KEY" --data-binary @"$W/big.png" "http://127.0.0.1:$PORT/api/v1/files?name=big$i.png"
  done
  ids=$(curl -sf -H "Authorization: Bearer $KEY" "http://127.0.0.1:$PORT/api/v1/files?limit=100" | python3 -c 'import json,sys;print(" ".join(f["id"] for f in json.load(sys.stdin)["items"]))')
  peak=0
  while :; do
    hwm=$(awk '/VmHWM/{print $2}' /proc/$SERVICE/status); [ "$hwm" -gt "$peak" ] && peak=$hwm
    pending=0
    for id in $ids; do
      s=$(curl -s -o /dev/null -w '%{http_code}' -H "Authorization: Bearer $KEY" "http://127.0.0.1:$PORT/api/v1/files/$id/thumbnail?size=small")
      [ "$s" = 202 ] && pending=$((pending + 1))
    done
    [ "$pending" = 0 ] && break
    sleep 1
  done
  ready=0
  for id in $ids; do
    s=$(curl -s -o /dev/null -w '%{http_code}' -H "Authorization: Bearer $KEY" "http://127.0.0.1:$PORT/api/v1/files/$id/thumbnail?size=large")
    [ "$s" = 200 ] && ready=$((ready + 1))
  done
  dims=$(curl -sf -H "Authorization: Bearer $KEY" "http://127.0.0.1:$PORT/api/v1/files?limit=1" | python3 -c 'import json,sys;f=json.load(sys.stdin)["items"][0];print(f["width"],"x",f["height"])')
  echo "  thumbnails ready: $ready of 20 (image size recorded: $dims)"
  echo "  20 thumbnailed in $(python3 -c "import time;print(round(time.time()-$started,1))") s; peak VmHWM during the work: ${peak} kB"
  stop
}

for what in "${@:-meta search thumbs}"; do for w in $what; do "$w"; done; done
