#!/usr/bin/env bash
# Instructions per chat request of one gateway build, counted by valgrind's callgrind: the
# gateway serves 300 and then 1,300 chat requests on one kept-alive connection to a 0 ms
# simulator, and the difference of the two totals is divided by 1,000 (start-up and shutdown
# cancel out). CPU time on a shared machine swings by microseconds between runs; this count
# moves by a few dozen instructions, so it compares builds where a throughput run cannot.
#
#   tests/perf/instructions.sh [GATEWAY] [SIMULATOR]
#   STREAM=1 tests/perf/instructions.sh ...    # streamed chat requests (16 tokens, one event each)
#
# GATEWAY and SIMULATOR default to target/release/sluice-gateway and target/release/sluice-sim
# (`cargo build --release -p sluice-gateway -p sluice-sim`). Needs valgrind (`apt-get install
# valgrind`) and python3. The callgrind files stay in the printed folder for
# `callgrind_annotate`. Takes about a minute per build.
set -euo pipefail

root=$(cd "$(dirname "$0")/../.." && pwd)
gateway=$(realpath "${1:-$root/target/release/sluice-gateway}")
sim=$(realpath "${2:-$root/target/release/sluice-sim}")
for tool in valgrind callgrind_annotate python3 curl; do
    command -v "$tool" >/dev/null || { echo "instructions.sh: $tool is missing (apt-get install valgrind python3 curl)" >&2; exit 2; }
done
work=$(mktemp -d /tmp/sluice-instructions.XXXXXX)
cd "$work"
# Shutdown at once, and glibc's `memcpy` without `rep movsb`: valgrind counts that instruction
# once per byte copied, and glibc picks it or not by the blocks' alignment, so a build whose
# request future moved a few hundred bytes would count thousands of instructions apart.
export SLUICE_DRAIN_SECONDS=0 GLIBC_TUNABLES=glibc.cpu.x86_rep_movsb_threshold=4294967295

cat > fleet.yaml <<'EOF'
backends:
  - name: instant
    profile: {prefillOverheadMs: 0, prefillPerTokenMs: 0, interTokenMs: 0, jitter: 0, outputTokens: 16,
              maxNumSeqs: 100000, loadSlowdown: 1.0, prefixCacheBlocks: 0, embeddingDimensions: 384}
EOF
"$sim" --log warn fleet --config fleet.yaml --ready-file ready.json > sim.log 2>&1 &
sim_pid=$!
trap 'kill $sim_pid 2>/dev/null || true' EXIT
for _ in $(seq 100); do [ -s ready.json ] && break; sleep 0.1; done
backend=$(python3 -c "import json; print(json.load(open('ready.json'))['backends'][0]['addr'])")

key=sl_bench_000000100000000000000000000000001
mkdir -p config
cat > config/bench.yaml <<EOF
apiVersion: sluice.dev/v1alpha1
kind: ServiceTier
metadata: {name: bench}
spec:
  limits: {requestsPerMinute: 100000000, tokensPerMinute: 100000000000, maxConcurrent: 1000000}
---
apiVersion: sluice.dev/v1alpha1
kind: Project
metadata: {name: bench, namespace: bench}
spec: {slug: bench, defaultTier: bench}
---
apiVersion: v1
kind: Secret
metadata: {name: credentials, namespace: bench}
stringData: {upstream: sk-simulator, key: $key}
---
apiVersion: sluice.dev/v1alpha1
kind: Provider
metadata: {name: sim, namespace: bench}
spec:
  type: openai
  baseUrl: http://$backend/v1
  credentials: {secretKeyRef: {name: credentials, key: upstream}}
  models:
    - {name: bench-chat, contextWindow: 32768, pricing: {inputPerMillion: 0.10, outputPerMillion: 0.40}, capabilities: [chat]}
---
apiVersion: sluice.dev/v1alpha1
kind: Endpoint
metadata: {name: api, namespace: bench}
spec:
  slug: api
  models:
    - name: bench-chat
      backends: [{providerRef: {name: sim}, model: bench-chat}]
---
apiVersion: sluice.dev/v1alpha1
kind: ApiKey
metadata: {name: bench, namespace: bench}
spec:
  scopes: [inference]
  secretRef: {name: credentials, key: key}
EOF

stream=${STREAM:-0}
kind="chat request"
[ "$stream" = 1 ] && kind="streamed chat request"
cat > load.py <<'EOF'
import http.client, json, sys
port, count, key, stream = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3], sys.argv[4] == "1"
body = json.dumps({"model": "bench-chat", "max_tokens": 16, "stream": stream,
                   "messages": [{"role": "user", "content": "Say hello to the benchmark, please."}]})
connection = http.client.HTTPConnection("127.0.0.1", port)
for _ in range(count):
    connection.request("POST", "/bench/api/v1/chat/completions", body,
                       {"Authorization": f"Bearer {key}", "Content-Type": "application/json"})
    response = connection.getresponse()
    response.read()
    if response.status != 200:
        sys.exit(f"status {response.status}")
EOF

port=$(python3 -c "import socket; s=socket.socket(); s.bind(('127.0.0.1', 0)); print(s.getsockname()[1])")
admin=$(python3 -c "import socket; s=socket.socket(); s.bind(('127.0.0.1', 0)); print(s.getsockname()[1])")
declare -A total
for count in 300 1300; do
    valgrind --tool=callgrind --callgrind-out-file="callgrind.$count" "$gateway" --config config \
        --listen "127.0.0.1:$port" --admin-listen "127.0.0.1:$admin" --log info > "gateway.$count.log" 2>&1 &
    gateway_pid=$!
    for _ in $(seq 600); do curl -sf -o /dev/null "http://127.0.0.1:$admin/readyz" && break; sleep 0.2; done
    python3 load.py "$port" "$count" "$key" "$stream"
    kill -INT "$gateway_pid"
    wait "$gateway_pid" || true
    total[$count]=$(callgrind_annotate "callgrind.$count" | awk '/PROGRAM TOTALS/ {gsub(",", "", $1); print $1}')
done
echo "$(( (total[1300] - total[300]) / 1000 )) instructions per $kind ($gateway; files in $work)"
