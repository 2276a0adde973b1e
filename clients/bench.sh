#!/usr/bin/env bash
# Acked records per second from one client process, for each client library and
# `shardline send`, side by side in one run: the same agent, the same socket,
# round after round (the machine is shared, so compare within a run).
#
#   clients/bench.sh [RECORDS] [ROUNDS] [SIZE]      (defaults 200000 5 256)
#
# The agent is the release binary (SHARDLINE_BIN, else target/release/shardline)
# with a frames socket; its endpoint is 127.0.0.1:9, where nothing listens, so
# what is timed is the path to a durable ack (spool write and fsync) and the
# agent's delivery attempts do not compete for the CPU. Prints one JSON line per
# client and round, then the range per client.
set -euo pipefail
cd "$(dirname "$0")/.."
records=${1:-200000}
rounds=${2:-5}
size=${3:-256}
bin=${SHARDLINE_BIN:-target/release/shardline}
[ -x "$bin" ] || { echo "no agent binary at $bin (cargo build --release, or set SHARDLINE_BIN)" >&2; exit 1; }
work=$(mktemp -d /var/tmp/shardline-clients-bench.XXXXXX)
trap 'kill "$agent" 2>/dev/null || true; wait 2>/dev/null || true; rm -rf "$work"' EXIT
cat >"$work/agent.toml" <<TOML
shutdown_timeout_secs = 2
[kinesis]
stream = "logs"
region = "us-east-1"
endpoint = "http://127.0.0.1:9"
request_timeout_ms = 1000
[metrics]
listen = "127.0.0.1:0"
[spool]
dir = "$work/spool"
max_bytes = 17179869184
min_free_bytes = 0
[[socket]]
path = "$work/agent.sock"
framing = "frames"
TOML
AWS_ACCESS_KEY_ID=bench AWS_SECRET_ACCESS_KEY=bench AWS_EC2_METADATA_DISABLED=true \
  RUST_LOG=warn "$bin" run --config "$work/agent.toml" 2>"$work/agent.log" &
agent=$!
for _ in $(seq 200); do [ -S "$work/agent.sock" ] && break; sleep 0.05; done
[ -S "$work/agent.sock" ] || { cat "$work/agent.log" >&2; exit 1; }

# The inputs: `shardline send` reads lines of SIZE-1 bytes and a newline.
python3 -c "import sys; l=b'x'*($size-1)+b'\n'; sys.stdout.buffer.write(l*$records)" >"$work/lines"
(cd clients/go && go build -o "$work/go-bench" ./cmd/shardline-bench)

sock=$work/agent.sock
run_send() {
  local t0 t1
  t0=$(date +%s.%N)
  "$bin" send --socket "$sock" --ack "$work/lines" >/dev/null
  t1=$(date +%s.%N)
  python3 -c "import json; s=$t1-$t0; print(json.dumps({'client':'shardline send','records':$records,'seconds':round(s,3),'records_per_sec':round($records/s)}))"
}
results=$work/results.ndjson
for round in $(seq "$rounds"); do
  {
    run_send
    python3 clients/python/bench.py --socket "$sock" --records "$records" --size "$size" --rounds 1
    "$work/go-bench" --socket "$sock" --records "$records" --size "$size" --rounds 1
    node clients/node/bench.js --socket "$sock" --records "$records" --size "$size" --rounds 1
  } | tee -a "$results"
done
python3 - "$results" <<'PY'
import json, sys
by = {}
for line in open(sys.argv[1]):
    r = json.loads(line)
    by.setdefault(r["client"], []).append(round(r["records_per_sec"]))
for client, rates in by.items():
    print(f"{client:>15}: {min(rates):,}–{max(rates):,} acked records/s over {len(rates)} rounds")
PY
