#!/usr/bin/env bash
# Runs `lockstep-bench disk` for the two configurations the targets are stated for, RUNS times
# each (default 3), keeps every JSON report in OUT (default target/bench-disk/), and prints
# the median of each headline figure over the runs.
#
#   scripts/bench-disk.sh [RUNS] [extra lockstep-bench disk flags...]
#
# Configurations:
#   small:   16-byte entries, 64 KiB batches  (target: >= 10 M durable entries/s)
#   64k:     one 65532-byte entry per batch = 64 KiB payload (target: ratio_to_baseline >= 0.9)
set -euo pipefail
cd "$(dirname "$0")/.."
runs="${1:-3}"
shift || true
out="${OUT:-target/bench-disk}"
mkdir -p "$out"
cargo build --release -q -p lockstep-bench
bench=target/release/lockstep-bench

# Prints the value of a top-level numeric key of a pretty-printed report.
field() { grep -m1 "^  \"$2\":" "$1" | sed -e 's/.*: *//' -e 's/,$//'; }

# Median of the numbers on stdin.
median() {
  sort -g | awk '{ v[NR] = $1 } END { if (NR % 2) print v[(NR + 1) / 2]; else print (v[NR / 2] + v[NR / 2 + 1]) / 2 }'
}

for config in small 64k; do
  case "$config" in
    small) flags=(--entry-bytes 16 --batch-bytes 65536) ;;
    64k) flags=(--entry-bytes 65532 --batch-bytes 65536) ;;
  esac
  for run in $(seq 1 "$runs"); do
    "$bench" disk "${flags[@]}" "$@" --json "$out/$config-$run.json" >"$out/$config-$run.txt"
  done
  echo "== $config: median of $runs runs (reports in $out/) =="
  for key in entries_per_sec mb_per_sec syncs_per_sec entries_per_sync baseline_mb_per_sec \
    ratio_to_baseline baseline_grouped_mb_per_sec ratio_to_grouped_baseline; do
    value=$(for run in $(seq 1 "$runs"); do field "$out/$config-$run.json" "$key"; done | median)
    printf '  %-28s %s\n' "$key" "$value"
  done
  for pct in p50 p99 p999; do
    value=$(for run in $(seq 1 "$runs"); do
      grep -A12 '^  "latency_us"' "$out/$config-$run.json" | grep -m1 "\"$pct\":" | sed -e 's/.*: *//' -e 's/,$//'
    done | median)
    printf '  %-28s %s\n' "latency_us.$pct" "$value"
  done
done
