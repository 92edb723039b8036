#!/usr/bin/env bash
# Runs the cluster benchmark (`lockstep-bench` with no subcommand) for the configurations the
# targets are stated for, RUNS times each (default 3), then `lockstep-bench disk` once in the
# same session for the ratio to the raw disk; keeps every report in OUT (default
# target/bench-cluster/) and prints the median of each headline figure over the runs.
#
#   scripts/bench-cluster.sh [RUNS] [extra lockstep-bench flags for every cluster run...]
#
# Configurations:
#   default: the zero-argument run (3 nodes, 16-byte entries, 64 per request, fsync;
#            target >= 2 M entries/s)
#   single:  --clients 1 --depth 1 (one proposal in flight; target median <= 250 us)
#   unbatched: --batch 1 (the zero-argument run with one entry per request: the baseline the
#            batch requests are compared with)
set -euo pipefail
cd "$(dirname "$0")/.."
runs="${1:-3}"
shift || true
out="${OUT:-target/bench-cluster}"
mkdir -p "$out"
cargo build --release -q -p lockstep-bench
bench=target/release/lockstep-bench

# Prints the value of a top-level numeric key of a pretty-printed report.
field() { grep -m1 "^  \"$2\":" "$1" | sed -e 's/.*: *//' -e 's/,$//'; }

# Prints latency_us.KEY of a pretty-printed report.
latency() { grep -A12 '^  "latency_us"' "$1" | grep -m1 "\"$2\":" | sed -e 's/.*: *//' -e 's/,$//'; }

# Prints the config's durability of a pretty-printed report.
durability() { grep -m1 '^    "durability":' "$1" | sed -e 's/.*: *"//' -e 's/".*//'; }

# Median of the numbers on stdin.
median() {
  sort -g | awk '{ v[NR] = $1 } END { if (NR % 2) print v[(NR + 1) / 2]; else print (v[NR / 2] + v[NR / 2 + 1]) / 2 }'
}

declare -A medians durabilities
for config in default single unbatched; do
  case "$config" in
    default) flags=() ;;
    single) flags=(--clients 1 --depth 1) ;;
    unbatched) flags=(--batch 1) ;;
  esac
  for run in $(seq 1 "$runs"); do
    "$bench" "${flags[@]}" "$@" --json "$out/$config-$run.json" >"$out/$config-$run.txt"
  done
  # Runs are combined only when they ran with the same durability.
  first=$(durability "$out/$config-1.json")
  for run in $(seq 2 "$runs"); do
    other=$(durability "$out/$config-$run.json")
    if [ "$other" != "$first" ]; then
      echo "bench-cluster.sh: refusing to combine runs of durability $first and $other" >&2
      exit 2
    fi
  done
  durabilities[$config]=$first
  echo "== $config (${flags[*]:-no flags}, durability $first): median of $runs runs (reports in $out/) =="
  for key in throughput_per_sec mb_per_sec; do
    value=$(for run in $(seq 1 "$runs"); do field "$out/$config-$run.json" "$key"; done | median)
    medians[$config.$key]=$value
    printf '  %-28s %s\n' "$key" "$value"
  done
  for pct in p50 p90 p99 p999 max; do
    value=$(for run in $(seq 1 "$runs"); do latency "$out/$config-$run.json" "$pct"; done | median)
    printf '  %-28s %s\n' "latency_us.$pct" "$value"
  done
done

awk -v b="${medians[default.throughput_per_sec]}" -v u="${medians[unbatched.throughput_per_sec]}" \
  'BEGIN { printf "== default / unbatched entries/s: %.2f ==\n", b / u }'
if [ "${durabilities[default]}" != fsync ]; then
  echo "bench-cluster.sh: durability ${durabilities[default]}: no ratio to the durable disk baseline" >&2
  exit 0
fi
"$bench" disk --json "$out/disk.json" >"$out/disk.txt"
disk_entries=$(field "$out/disk.json" entries_per_sec)
disk_baseline=$(field "$out/disk.json" baseline_mb_per_sec)
echo "== disk (lockstep-bench disk, same session; report in $out/disk.txt) =="
printf '  %-28s %s\n' "log entries_per_sec" "$disk_entries" "baseline_mb_per_sec" "$disk_baseline"
awk -v c="${medians[default.throughput_per_sec]}" -v d="$disk_entries" \
  'BEGIN { printf "  %-28s %.3f\n", "cluster / local log entries", c / d }'
awk -v c="${medians[default.mb_per_sec]}" -v d="$disk_baseline" \
  'BEGIN { printf "  %-28s %.3f\n", "cluster MB/s / raw baseline", c / d }'
