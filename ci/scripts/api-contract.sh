#!/usr/bin/env bash
# The API against its own OpenAPI document: schemathesis generates requests from /openapi.json (valid ones and
# ones that break the schema) and fails on any response the document does not allow — an undocumented status, a
# body that does not match its schema, a valid request refused, an invalid one accepted, a 5xx.
#
#   ci/scripts/api-contract.sh [BACKEND…]     backends: embedded (default), external (PostgreSQL + Redis)
#
# It runs the debug binary `cargo build -p filewallball` makes, with an admin key, the rate limits and the bad-key
# throttle off (they answer 429s schemathesis cannot tell from a contract break, and are tested on their own).
# `/debug/pprof/profile` is left out: it holds each request for the seconds asked (up to 120), by design. Listing
# cursors are not generated, and a size limit is a valid request's possible answer (ci/schemathesis/ says why).
# Needs python3 with schemathesis (.ci/run installs it); external needs PostgreSQL and Redis on 127.0.0.1.
# SEED (2026) and EXAMPLES (25 per operation and phase) vary the run; LOG_FILTER (error) the service's log.
set -euo pipefail
cd "$(dirname "$0")/../.."
ROOT=$PWD
BIN=${CARGO_TARGET_DIR:-$HOME/.cache/filewallball-target}/debug/filewallball
EXAMPLES=${EXAMPLES:-25}
PORT=${PORT:-18091}
W=$(mktemp -d "${TMPDIR:-/tmp}/fwb-contract.XXXXXX")
PG=postgres://postgres@127.0.0.1:5432; DB=fwb_contract_$$
SERVICE=
cleanup() {
  [ -n "$SERVICE" ] && { kill "$SERVICE" 2>/dev/null || true; wait "$SERVICE" 2>/dev/null || true; }
  psql -q "$PG/test" -c "DROP DATABASE IF EXISTS $DB WITH (FORCE)" >/dev/null 2>&1 || true
  redis-cli -h 127.0.0.1 -p 6379 --scan --pattern "$DB:*" 2>/dev/null | xargs -r redis-cli -h 127.0.0.1 -p 6379 del >/dev/null || true
  rm -rf "$W"
}
trap cleanup EXIT

run() {
  local backend=$1; shift
  local env=(FWB__STORAGE__DATA_DIR="$W/$backend" FWB__SERVER__BIND="127.0.0.1:$PORT" FWB__LOG__FILTER="${LOG_FILTER:-error}"
    FWB__RATE_LIMIT__API_PER_MINUTE=0 FWB__RATE_LIMIT__DOWNLOAD_PER_MINUTE=0 FWB__RATE_LIMIT__UPLOAD_PER_MINUTE=0
    FWB__RATE_LIMIT__REFUSALS_PER_MINUTE=0 "$@")
  env "${env[@]}" "$BIN" admin create-user --name contract --role admin > "$W/admin.txt"
  local key; key=$(sed -n 's/^api key (shown once): //p' "$W/admin.txt")
  env "${env[@]}" "$BIN" > "$W/service-$backend.log" 2>&1 &
  SERVICE=$!
  local ready=
  for _ in $(seq 100); do curl -sf "http://127.0.0.1:$PORT/health/ready" >/dev/null && { ready=1; break; }; sleep 0.1; done
  [ -n "$ready" ] || { echo "contract: the service did not start" >&2; tail -n 20 "$W/service-$backend.log" >&2; exit 1; }
  echo "contract: $backend"
  local status=0
  # From the run's own directory: schemathesis keeps a cache of what it found in the working directory, which
  # would otherwise land in the clone and be replayed by the next run.
  (cd "$W" && SCHEMATHESIS_HOOKS=hooks PYTHONPATH="$ROOT/ci/schemathesis" \
    schemathesis --config-file "$ROOT/ci/schemathesis/schemathesis.toml" \
    run "http://127.0.0.1:$PORT/openapi.json" --header "Authorization: Bearer $key" \
    --exclude-path /debug/pprof/profile --max-examples "$EXAMPLES" --seed "${SEED:-2026}" --no-color) \
    | tee "$W/schemathesis-$backend.txt" || status=$?
  kill "$SERVICE"; wait "$SERVICE" 2>/dev/null || true; SERVICE=
  if [ "$status" != 0 ]; then
    echo "contract: $backend: schemathesis found the API breaking its document (exit $status); service log:" >&2
    tail -n 40 "$W/service-$backend.log" >&2
    exit 1
  fi
  # A run that reached fewer operations than the document has proves less than it says.
  local selected tested
  selected=$(sed -n 's/^ *Selected: *\([0-9]*\).*/\1/p' "$W/schemathesis-$backend.txt")
  tested=$(sed -n 's/^ *Tested: *\([0-9]*\).*/\1/p' "$W/schemathesis-$backend.txt")
  if [ -z "$tested" ] || [ "$tested" != "$selected" ] || [ "$tested" -lt 20 ]; then
    echo "contract: $backend: schemathesis tested ${tested:-no} of ${selected:-?} operations" >&2
    exit 1
  fi
}

[ -x "$BIN" ] || { echo "contract: $BIN is missing: run cargo build -p filewallball" >&2; exit 1; }
for backend in "${@:-embedded}"; do
  case $backend in
    embedded) run embedded ;;
    external)
      psql -q "$PG/test" -c "CREATE DATABASE $DB" >/dev/null
      run external FWB__DATABASE__URL="$PG/$DB" FWB__CACHE__REDIS_URL=redis://127.0.0.1:6379 FWB__CACHE__NAMESPACE="$DB" ;;
    *) echo "contract: unknown backend $backend" >&2; exit 2 ;;
  esac
done
