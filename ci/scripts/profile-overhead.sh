#!/usr/bin/env bash
# The cost of profiling: requests/s of a cached metadata GET with and without a CPU profile being captured
# (wrk -t1 -c32 -d10s, alternating, 3 runs each), and one flamegraph of the service under that load, kept in
# reports/runs/ (via `cargo xtask flamegraph`). Release build; embedded backend.
set -euo pipefail
cd "$(dirname "$0")/../.."
BIN=${CARGO_TARGET_DIR:-$HOME/.cache/filewallball-target}/release/filewallball
W=${TMPDIR:-/tmp}/fwb-profile; rm -rf "$W"; mkdir -p "$W"; PORT=18083
export FWB__STORAGE__DATA_DIR=$W/data FWB__SERVER__BIND=127.0.0.1:$PORT FWB__LOG__FILTER=error FWB__RATE_LIMIT__API_PER_MINUTE=0
KEY=$("$BIN" admin create-user --name prof --role admin | sed -n 's/^api key (shown once): //p')
"$BIN" & SERVICE=$!
trap 'kill $SERVICE 2>/dev/null; rm -rf "$W"' EXIT
for _ in $(seq 100); do curl -sf "http://127.0.0.1:$PORT/health/ready" >/dev/null && break; sleep 0.05; done
ID=$(head -c 2048 /dev/urandom | curl -sf -H "Authorization: Bearer $KEY" --data-binary @- "http://127.0.0.1:$PORT/api/v1/files?name=p.bin" \
  | python3 -c 'import json,sys;print(json.load(sys.stdin)["id"])')
URL="http://127.0.0.1:$PORT/api/v1/files/$ID"
for run in 1 2 3; do
  plain=$(wrk -t1 -c32 -d10s -H "Authorization: Bearer $KEY" "$URL" | awk '/^Requests\/sec/{print $2}')
  curl -sf -o /dev/null -H "Authorization: Bearer $KEY" "http://127.0.0.1:$PORT/debug/pprof/profile?seconds=11&frequency=99" &
  PROFILE=$!
  sleep 0.5
  profiled=$(wrk -t1 -c32 -d10s -H "Authorization: Bearer $KEY" "$URL" | awk '/^Requests\/sec/{print $2}')
  wait "$PROFILE"
  echo "run $run: rps without profile=$plain with profile (99 Hz)=$profiled"
done
cargo build -q -p xtask
wrk -t1 -c32 -d12s -H "Authorization: Bearer $KEY" "$URL" >/dev/null &
LOAD=$!
sleep 1
FWB_ADMIN_KEY=$KEY cargo xtask flamegraph --seconds 10 --url "http://127.0.0.1:$PORT"
wait "$LOAD"
