#!/usr/bin/env bash
# Compares the kv mode (RESP SET/GET to the kv app) with the log mode in one session: RUNS
# rounds (default 3), each running, in turn, the zero-argument log run and `--mode kv` at read
# ratios 0, 0.5 and 0.9 (all other settings default: 3 nodes, fsync, 8 clients, 16-byte
# values, 100,000 keys, 2 s warm-up + 10 s). Alternating rounds spread the machine's noise over
# every configuration. Keeps every report in OUT (default target/bench-kv/) and prints the
# median of each figure and its ratio to the log-mode median.
#
#   scripts/bench-kv.sh [RUNS] [extra lockstep-bench flags for every run...]
set -euo pipefail
cd "$(dirname "$0")/.."
runs="${1:-3}"
shift || true
out="${OUT:-target/bench-kv}"
mkdir -p "$out"
cargo build --release -q -p lockstep-bench
bench=target/release/lockstep-bench
configs=(log kv0 kv05 kv09)

# Prints the value of a top-level numeric key of a pretty-printed report.
field() { grep -m1 "^  \"$2\":" "$1" | sed -e 's/.*: *//' -e 's/,$//'; }

# Prints latency_us.KEY (combined) of a pretty-printed report.
latency() { grep -A12 '^  "latency_us"' "$1" | grep -m1 "\"$2\":" | sed -e 's/.*: *//' -e 's/,$//'; }

# Prints kv.OP.latency_us.KEY of a pretty-printed kv report (empty for a log report).
op_latency() {
  grep -A20 "^    \"$2\": {" "$1" | grep -A12 '"latency_us"' | grep -m1 "\"$3\":" |
    sed -e 's/.*: *//' -e 's/,$//' || true
}

# Median of the numbers on stdin.
median() {
  sort -g | awk '{ v[NR] = $1 } END { if (NR % 2) print v[(NR + 1) / 2]; else print (v[NR / 2] + v[NR / 2 + 1]) / 2 }'
}

flags_of() {
  case "$1" in
    log) echo "" ;;
    kv0) echo "--mode kv --read-ratio 0" ;;
    kv05) echo "--mode kv --read-ratio 0.5" ;;
    kv09) echo "--mode kv --read-ratio 0.9" ;;
  esac
}

for run in $(seq 1 "$runs"); do
  for config in "${configs[@]}"; do
    # shellcheck disable=SC2046 # the flags are words
    "$bench" $(flags_of "$config") "$@" --json "$out/$config-$run.json" >"$out/$config-$run.txt"
  done
done

declare -A medians
for config in "${configs[@]}"; do
  echo "== $config ($(flags_of "$config")${*:+ $*}): median of $runs runs (reports in $out/) =="
  for key in throughput_per_sec mb_per_sec; do
    value=$(for run in $(seq 1 "$runs"); do field "$out/$config-$run.json" "$key"; done | median)
    medians[$config.$key]=$value
    printf '  %-28s %s\n' "$key" "$value"
  done
  for pct in p50 p99 p999; do
    value=$(for run in $(seq 1 "$runs"); do latency "$out/$config-$run.json" "$pct"; done | median)
    printf '  %-28s %s\n' "latency_us.$pct" "$value"
  done
  if [ "$config" != log ]; then
    for op in set get; do
      for pct in p50 p99; do
        value=$(for run in $(seq 1 "$runs"); do op_latency "$out/$config-$run.json" "$op" "$pct"; done |
          grep . | median || true)
        printf '  %-28s %s\n' "$op.latency_us.$pct" "${value:-n/a}"
      done
    done
    awk -v k="${medians[$config.throughput_per_sec]}" -v l="${medians[log.throughput_per_sec]}" \
      'BEGIN { printf "  %-28s %.4f\n", "ops/s / log entries/s", k / l }'
  fi
done
