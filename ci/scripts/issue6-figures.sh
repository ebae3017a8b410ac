#!/usr/bin/env bash
# Figures for issue 6, on this machine, against a release build on PostgreSQL + Redis.
#   ci/scripts/issue6-figures.sh peak            peak.toml as shipped (default rate limits)
#   ci/scripts/issue6-figures.sh capacity R...   peak.toml at rates R (rate limits off: they are policy, not capacity)
#   ci/scripts/issue6-figures.sh compare         metadata GET at 1000 req/s: fwb-loadtest and oha (open loop,
#                                                fixed rate, latency correction), alternating, twice each
# Needs: PostgreSQL and Redis on 127.0.0.1 (as .ci/run), `oha` on PATH for compare
# (cargo install oha --locked --root /tmp/oha-install; export PATH=/tmp/oha-install/bin:$PATH).
set -euo pipefail
cd "$(dirname "$0")/../.."
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$HOME/.cache/filewallball-target}
[ -n "${NO_BUILD:-}" ] || cargo build --release -q -p filewallball -p fwb-loadtest
BIN=$CARGO_TARGET_DIR/release
OUT=${OUT:-/tmp/issue6}
mkdir -p "$OUT"
PORT=18090
SERVICE_PID=

start_service() { # $1 = database name, $2 = "limits" or "nolimits"
  psql -q -h 127.0.0.1 -U postgres -d test -c "drop database if exists $1" -c "create database $1"
  rm -rf "$OUT/data" && mkdir -p "$OUT/data"
  export FWB__STORAGE__DATA_DIR=$OUT/data FWB__SERVER__BIND=127.0.0.1:$PORT
  export FWB__DATABASE__URL=postgres://postgres@127.0.0.1:5432/$1 FWB__CACHE__REDIS_URL=redis://127.0.0.1:6379
  export FWB__CACHE__NAMESPACE=$1-$$
  if [ "$2" = nolimits ]; then
    export FWB__RATE_LIMIT__API_PER_MINUTE=0 FWB__RATE_LIMIT__DOWNLOAD_PER_MINUTE=0 FWB__RATE_LIMIT__UPLOAD_PER_MINUTE=0
  fi
  ADMIN_KEY=$("$BIN/filewallball" admin create-user --name admin --role admin | grep -o 'fwb_[A-Za-z0-9_-]*')
  "$BIN/filewallball" >"$OUT/service.log" 2>&1 &
  SERVICE_PID=$!
  for _ in $(seq 100); do curl -sf "127.0.0.1:$PORT/health/ready" >/dev/null && return; sleep 0.1; done
  echo "service not ready" >&2; exit 1
}
stop_service() { [ -n "$SERVICE_PID" ] && kill "$SERVICE_PID" && wait "$SERVICE_PID" || true; SERVICE_PID=; }
trap stop_service EXIT

loadtest() { # $1 = scenario, $2 = out dir, rest = extra args
  local scenario=$1 dir=$2; shift 2
  /usr/bin/time -f "loadtest process: %U s user + %S s system over %e s wall" \
    "$BIN/fwb-loadtest" --scenario "$scenario" --target "http://127.0.0.1:$PORT" --admin-key "$ADMIN_KEY" \
    --out "$dir" --service-pid "$SERVICE_PID" --backend postgres+redis "$@" 2>&1 | grep -v '^\[' 
}

case "${1:-peak}" in
  peak)
    start_service fwb_issue6_peak limits
    loadtest scenarios/peak.toml "$OUT/peak"
    ;;
  capacity)
    shift
    start_service fwb_issue6_capacity nolimits
    for rate in "$@"; do
      echo "== peak.toml at $rate req/s"
      loadtest scenarios/peak.toml "$OUT/capacity-$rate" --rate "$rate"
    done
    ;;
  compare)
    start_service fwb_issue6_compare nolimits
    # peak's data set and users, metadata reads only, one minute measured.
    sed -e 's/^steady_s = .*/steady_s = 60/' -e 's/^name = .*/name = "metadata"/' scenarios/peak.toml \
      | awk '/^\[mix\./{skip = ($0 != "[mix.get_metadata]")} /^\[uploads\]/{skip=0} !skip' >"$OUT/metadata.toml"
    loadtest "$OUT/metadata.toml" "$OUT/compare-seed" --rate 1000 --no-profile >/dev/null
    # Every seeded file id, for oha's random URLs; one account's key (its files are public).
    KEY=$(curl -sf -X POST -H "Authorization: Bearer $ADMIN_KEY" \
      "127.0.0.1:$PORT/api/v1/users/$(curl -sf -H "Authorization: Bearer $ADMIN_KEY" 127.0.0.1:$PORT/api/v1/users \
        | python3 -c 'import json,sys; print([u["id"] for u in json.load(sys.stdin) if u["name"]=="fwb-lt-0000"][0])')/keys" \
      | python3 -c 'import json,sys; print(json.load(sys.stdin)["secret"])')
    IDS=$(curl -sf -H "Authorization: Bearer $ADMIN_KEY" "127.0.0.1:$PORT/api/v1/files?owner=all&limit=1000" \
      | python3 -c 'import json,sys; print("|".join(f["id"] for f in json.load(sys.stdin)["items"] if f["name"].startswith("seed-")))')
    for round in 1 2; do
      echo "== round $round: fwb-loadtest, 1000 users, 1000 req/s, 60 s"
      loadtest "$OUT/metadata.toml" "$OUT/compare-loadtest-$round" --rate 1000 --no-profile | grep -E '^\s+get_metadata|^metadata'
      echo "== round $round: oha, 1000 connections, -q 1000, --latency-correction, 60 s"
      oha --no-tui -z 60s -c 1000 -q 1000 --latency-correction \
        -H "Authorization: Bearer $KEY" --rand-regex-url "http://127.0.0.1:$PORT/api/v1/files/($IDS)" \
        | grep -E 'Success rate|Requests/sec|50.00%|90.00%|95.00%|99.00%|Slowest|\[200\]|\[[0-9]+\]'
    done
    ;;
esac
