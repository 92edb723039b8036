#!/usr/bin/env bash
# Chaos campaign: back-to-back `lockstep chaos` runs with seeds S, S+1, ... for M minutes, each
# injecting faults for RUN seconds (default 60) into an N-node cluster, then one summary table
# (faults injected, operations and their outcomes, storage-fault start refusals, recovery time,
# failures found). Every run keeps its directory (node logs, history.jsonl, summary.json) under
# OUT (default target/chaos/<UTC time>/seed-<S>); a failing run's history path is printed.
# Exit status 1 when any run failed a check, 2 when a run could not be carried out.
#
#   scripts/chaos.sh [--minutes M] [--nodes N] [--seed S] [--run-seconds RUN]
#                    [--nemesis kill,pause,partition,storage,member] [--bug stale-reads] [--no-netns]
#
# Partitions need root, iproute2 and nftables; without them the harness says so and skips them.
set -euo pipefail
cd "$(dirname "$0")/.."
minutes=10 nodes=3 seed=1 run_seconds=60 nemesis=kill,pause,partition,storage bug="" netns=--netns
while (($#)); do
  case "$1" in
    --minutes) minutes="$2"; shift 2 ;;
    --nodes) nodes="$2"; shift 2 ;;
    --seed) seed="$2"; shift 2 ;;
    --run-seconds) run_seconds="$2"; shift 2 ;;
    --nemesis) nemesis="$2"; shift 2 ;;
    --bug) bug="$2"; shift 2 ;;
    --no-netns) netns=""; shift ;;
    *) echo "scripts/chaos.sh: unknown argument $1 (see the header of this script)" >&2; exit 2 ;;
  esac
done
out="${OUT:-target/chaos/$(date -u +%Y%m%dT%H%M%SZ)}"
mkdir -p "$out"
cargo build --release -q -p lockstep-tools
bin=target/release/lockstep

# Prints the value of a top-level key of a pretty-printed summary.json.
field() { grep -m1 "^  \"$2\":" "$1" | sed -e 's/.*: *//' -e 's/,$//' -e 's/"//g'; }

table="$out/summary.txt"
printf '%-6s %-6s %7s %9s %8s %6s %8s %9s %11s %9s\n' \
  seed result faults ops ok fail unknown refusals recovery_ms failures | tee "$table"
[[ "$minutes" =~ ^[0-9]+$ ]] || { echo "scripts/chaos.sh: --minutes $minutes: a whole number" >&2; exit 2; }
end=$((SECONDS + minutes * 60))
current="$seed" runs=0 failed=0 broken=0 total_faults=0 total_ops=0
while ((SECONDS < end)); do
  dir="$out/seed-$current"
  args=(chaos --nodes "$nodes" --seconds "$run_seconds" --seed "$current" --nemesis "$nemesis"
    --dir "$dir")
  [[ -n "$netns" ]] && args+=("$netns")
  [[ -n "$bug" ]] && args+=(--bug "$bug")
  mkdir -p "$dir"
  status=0
  "$bin" "${args[@]}" >"$dir/stdout.txt" 2>"$dir/stderr.txt" || status=$?
  runs=$((runs + 1))
  summary="$dir/summary.json"
  if ((status == 2)) || [[ ! -f "$summary" ]]; then
    broken=$((broken + 1))
    printf '%-6s %-6s  (could not run: %s)\n' "$current" error "$(tail -1 "$dir/stderr.txt")" | tee -a "$table"
  else
    faults=$(field "$summary" faults) ops=$(field "$summary" ops)
    total_faults=$((total_faults + faults)) total_ops=$((total_ops + ops))
    printf '%-6s %-6s %7s %9s %8s %6s %8s %9s %11s %9s\n' "$current" \
      "$(field "$summary" result)" "$faults" "$ops" "$(field "$summary" ops_ok)" \
      "$(field "$summary" ops_fail)" "$(field "$summary" ops_unknown)" \
      "$(field "$summary" refused_start_count)" "$(field "$summary" recovery_ms)" \
      "$(field "$summary" failure_count)" | tee -a "$table"
    if ((status == 1)); then
      failed=$((failed + 1))
      echo "       failing history: $dir/history.jsonl (failures: $summary)" | tee -a "$table"
    fi
  fi
  current=$((current + 1))
done
echo "runs $runs, failed $failed, could not run $broken, faults $total_faults, ops $total_ops" | tee -a "$table"
echo "table: $table"
((broken == 0)) || exit 2
((failed == 0)) || exit 1
