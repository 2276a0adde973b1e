#!/bin/sh
# Throughput of the Go client beside `shardline send --ack`, in the same run:
# starts an agent (spool in a temp dir, Kinesis endpoint unreachable so that the
# agent only spools: what is timed is the path to a durable ack), then
# alternates one round of each, ROUNDS times. (clients/bench.sh does the same for
# every client library at once.)
#
#   SHARDLINE_BIN=path/to/shardline cmd/shardline-bench/compare.sh [RECORDS] [SIZE] [ROUNDS]
#
# Run from clients/go. Prints the JSON lines of both (send's as
# {"client":"shardline send",...}).
set -eu
records=${1:-1000000}
size=${2:-256}
rounds=${3:-5}
bin=${SHARDLINE_BIN:-../../target/dist-unpacked/shardline-0.2.0-x86_64-linux/shardline}
if [ ! -x "$bin" ]; then
  echo "no agent binary at $bin: set SHARDLINE_BIN" >&2
  exit 2
fi
dir=$(mktemp -d /var/tmp/shardline-go-bench.XXXXXX)
trap 'kill "$agent" 2>/dev/null || true; wait 2>/dev/null || true; [ -n "${KEEP:-}" ] || rm -rf "$dir"' EXIT

go build -o "$dir/shardline-bench" ./cmd/shardline-bench
cat >"$dir/shardline.toml" <<EOF
shutdown_timeout_secs = 2
[kinesis]
stream = "logs"
region = "us-east-1"
endpoint = "http://127.0.0.1:9"
request_timeout_ms = 1000
[metrics]
listen = "127.0.0.1:0"
[spool]
dir = "$dir/spool"
max_bytes = 17179869184
min_free_bytes = 0
[[socket]]
path = "$dir/agent.sock"
framing = "frames"
EOF
# RECORDS lines of SIZE-1 bytes (SIZE with the newline).
awk -v n="$records" -v s="$size" 'BEGIN { pad = sprintf("%*s", s, ""); gsub(/ /, "x", pad);
  for (i = 0; i < n; i++) { l = i " " pad; print substr(l, 1, s - 1) } }' >"$dir/lines"

AWS_ACCESS_KEY_ID=test AWS_SECRET_ACCESS_KEY=test AWS_EC2_METADATA_DISABLED=true RUST_LOG=warn \
  "$bin" run --config "$dir/shardline.toml" 2>"$dir/agent.log" &
agent=$!
while [ ! -S "$dir/agent.sock" ]; do
  if ! kill -0 "$agent" 2>/dev/null; then
    cat "$dir/agent.log" >&2
    exit 1
  fi
  sleep 0.05
done

for r in $(seq "$rounds"); do
  "$dir/shardline-bench" --socket "$dir/agent.sock" --records "$records" --size "$size"
  start=$(date +%s.%N)
  "$bin" send --socket "$dir/agent.sock" --ack "$dir/lines" >/dev/null
  end=$(date +%s.%N)
  awk -v n="$records" -v a="$start" -v b="$end" 'BEGIN { s = b - a;
    printf "{\"client\":\"shardline send\",\"records\":%d,\"seconds\":%.3f,\"records_per_sec\":%.0f}\n", n, s, n / s }'
done
