#!/usr/bin/env bash
# Measures how one `lockstep serve` knob moves throughput and latency: for each value, RUNS
# times (default 3), starts a fresh 3-node cluster of `lockstep serve --app journal` on loopback
# with `--KNOB VALUE`, drives it with `lockstep-bench --connect` (closed loop, BENCH_FLAGS), stops
# it, and prints one table row of medians per value. Reports stay in OUT (default
# target/tune-sweep/KNOB/).
#
#   scripts/tune-sweep.sh KNOB V1,V2,... [RUNS]
#   scripts/tune-sweep.sh batch-entries-max 64,512,4096
#   scripts/tune-sweep.sh cpu-affinity '"",0,0;1'      # values split on ',', ';' becomes ','
#   BENCH_FLAGS="--seconds 5 --clients 1 --depth 1" scripts/tune-sweep.sh syncs-in-flight 1,4
#
# KNOB is any `lockstep serve` flag without its dashes (see `lockstep serve --help` and
# docs/CONFIG.md); the value "" leaves the node's default. BENCH_FLAGS defaults to
# "--seconds 3 --warmup 1". DATA_PARENT (default: the system temp dir) holds the nodes' data.
set -euo pipefail
cd "$(dirname "$0")/.."
knob="${1:?usage: scripts/tune-sweep.sh KNOB V1,V2,... [RUNS]}"
values="${2:?usage: scripts/tune-sweep.sh KNOB V1,V2,... [RUNS]}"
runs="${3:-3}"
bench_flags="${BENCH_FLAGS:---seconds 3 --warmup 1}"
out="${OUT:-target/tune-sweep/$knob}"
mkdir -p "$out"
cargo build --release -q -p lockstep-tools -p lockstep-bench
lockstep=target/release/lockstep
bench=target/release/lockstep-bench
cluster_id=7

# Prints the value of a top-level numeric key of a pretty-printed report.
field() { grep -m1 "^  \"$2\":" "$1" | sed -e 's/.*: *//' -e 's/,$//'; }
# Prints OBJECT.KEY of a pretty-printed report (OBJECT a top-level object).
nested() { grep -A16 "^  \"$2\"" "$1" | grep -m1 "\"$3\":" | sed -e 's/.*: *//' -e 's/,$//'; }
# Median of the numbers on stdin ("-" when there are none).
median() {
  sort -g | awk '{ v[NR] = $1 } END { if (NR == 0) print "-"; else if (NR % 2) print v[(NR + 1) / 2]; else print (v[NR / 2] + v[NR / 2 + 1]) / 2 }'
}
# Prints $1 with $2 decimals ("-" stays "-").
round() { awk -v v="$1" -v d="$2" 'BEGIN { if (v == "-" || v == "") print "-"; else printf "%.*f\n", d, v }'; }
# Three pairs of free loopback ports, as "peer client" lines.
free_ports() {
  python3 - <<'EOF'
import socket
socks = [socket.socket() for _ in range(6)]
for s in socks:
    s.bind(("127.0.0.1", 0))
ports = [s.getsockname()[1] for s in socks]
for i in range(3):
    print(ports[2 * i], ports[2 * i + 1])
EOF
}

pids=()
data=""
stop_cluster() {
  for pid in "${pids[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
  for pid in "${pids[@]}"; do wait "$pid" 2>/dev/null || true; done
  pids=()
  if [ -n "$data" ]; then rm -rf "$data"; fi
  data=""
}
trap stop_cluster EXIT

# Starts 3 nodes with the knob flags in "$@"; sets ADDRS to their client addresses.
start_cluster() {
  data=$(mktemp -d "${DATA_PARENT:-${TMPDIR:-/tmp}}/tune-sweep.XXXXXX")
  mapfile -t pairs < <(free_ports)
  local members=() addrs=() id
  for id in 1 2 3; do
    read -r peer client <<<"${pairs[$((id - 1))]}"
    members+=(--member "$id=127.0.0.1:$peer/127.0.0.1:$client")
    addrs+=("127.0.0.1:$client")
  done
  for id in 1 2 3; do
    "$lockstep" serve --id "$id" --cluster-id "$cluster_id" --app journal \
      --data-dir "$data/node-$id" "${members[@]}" "$@" \
      >"$data/node-$id.out" 2>"$data/node-$id.err" &
    pids+=($!)
  done
  for id in 1 2 3; do
    for _ in $(seq 1 200); do
      grep -q "ready" "$data/node-$id.out" 2>/dev/null && break
      sleep 0.05
    done
    grep -q "ready" "$data/node-$id.out" || { cat "$data/node-$id.err" >&2; return 1; }
  done
  ADDRS=$(IFS=,; echo "${addrs[*]}")
}

printf '%-14s %14s %10s %10s %10s %12s %12s\n' "$knob" "entries/s" "p50 us" "p99 us" \
  "syncs/s" "entries/batch" "entries/sync"
IFS=',' read -r -a list <<<"$values"
for value in "${list[@]}"; do
  value="${value//;/,}"
  flags=()
  if [ -n "$value" ] && [ "$value" != '""' ]; then flags=("--$knob" "$value"); fi
  name="${value//,/_}"
  name="${name:-default}"
  name="${name//\"/default}"
  for run in $(seq 1 "$runs"); do
    start_cluster "${flags[@]}"
    # shellcheck disable=SC2086 # BENCH_FLAGS is a list of flags
    "$bench" --connect "$ADDRS" --cluster-id "$cluster_id" $bench_flags \
      --json "$out/$name-$run.json" >"$out/$name-$run.txt" 2>&1 || true
    stop_cluster
  done
  reports=()
  for run in $(seq 1 "$runs"); do
    [ -s "$out/$name-$run.json" ] && reports+=("$out/$name-$run.json")
  done
  throughput=$(for r in "${reports[@]}"; do field "$r" throughput_per_sec; done | median)
  p50=$(for r in "${reports[@]}"; do nested "$r" latency_us p50; done | median)
  p99=$(for r in "${reports[@]}"; do nested "$r" latency_us p99; done | median)
  syncs=$(for r in "${reports[@]}"; do nested "$r" grouping syncs_per_sec; done | grep -v null | median)
  per_batch=$(for r in "${reports[@]}"; do nested "$r" grouping entries_per_batch; done | grep -v null | median)
  per_sync=$(for r in "${reports[@]}"; do nested "$r" grouping entries_per_sync; done | grep -v null | median)
  printf '%-14s %14s %10s %10s %10s %12s %12s\n' "${value:-default}" "$(round "$throughput" 0)" \
    "$(round "$p50" 0)" "$(round "$p99" 0)" "$(round "$syncs" 1)" "$(round "$per_batch" 1)" \
    "$(round "$per_sync" 1)"
done
