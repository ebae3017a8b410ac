#!/usr/bin/env bash
# Peak RSS and throughput of the release service for a 1 GiB upload and download, next to dd on the same disk.
set -euo pipefail
BIN=${BIN:-${CARGO_TARGET_DIR:-$HOME/.cache/filewallball-target}/release/filewallball}
W=${TMPDIR:-/tmp}/fwb-measure; rm -rf $W; mkdir -p $W
head -c 1G /dev/urandom > $W/1g.bin
export FWB__STORAGE__DATA_DIR=$W/data FWB__UPLOAD__MAX_BYTES=2147483648 FWB__SERVER__BIND=127.0.0.1:18080 FWB__LOG__FILTER=warn
KEY=$($BIN admin create-user --name root --role admin | sed -n 's/^api key (shown once): //p')
$BIN & PID=$!
trap 'kill $PID 2>/dev/null; rm -rf $W' EXIT
for i in $(seq 50); do curl -sf http://127.0.0.1:18080/health/ready >/dev/null && break; sleep 0.1; done
echo "idle: $(grep VmHWM /proc/$PID/status)"
for run in 1 2 3; do
  echo 5 > /proc/$PID/clear_refs
  out=$(curl -s -o $W/resp.json -w '%{time_total} %{speed_upload}' -X POST -T $W/1g.bin -H "Authorization: Bearer $KEY" "http://127.0.0.1:18080/api/v1/files?name=1g-$run.bin")
  id=$(python3 -c "import json;print(json.load(open('$W/resp.json'))['id'])")
  up_rss=$(awk '/VmHWM/{print $2}' /proc/$PID/status)
  echo 5 > /proc/$PID/clear_refs
  dl=$(curl -s -o /dev/null -w '%{time_total} %{speed_download} %{size_download}' -H "Authorization: Bearer $KEY" "http://127.0.0.1:18080/api/v1/files/$id/content")
  dl_rss=$(awk '/VmHWM/{print $2}' /proc/$PID/status)
  dd_out=$(dd if=$W/1g.bin of=$W/dd.bin bs=1M conv=fsync 2>&1 | tail -1)
  rm -f $W/dd.bin
  echo "run $run: upload ${out} (s, B/s) peak_rss=${up_rss}kB | download ${dl} (s, B/s, bytes) peak_rss=${dl_rss}kB | dd: ${dd_out}"
  curl -s -o /dev/null -X POST -H "Authorization: Bearer $KEY" "http://127.0.0.1:18080/api/v1/files/$id/purge"
done
