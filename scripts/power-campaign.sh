#!/usr/bin/env bash
# Power-cut campaign: `lockstep chaos --nemesis power` on 3 and 5 nodes with the kv, bank and
# lock workloads (six runs of RUN seconds each, default 90, seeds S, S+1, ...), then one table:
# power cuts by scope (one node, the leader, a minority, every node) and by what survived of the
# unsynced writes (forget, torn, subset), operations, and failures. Every run keeps its directory
# under OUT (default target/power-campaign/<UTC time>/). Needs /dev/fuse and root.
# Exit status 1 when any run failed a check, 2 when a run could not be carried out.
#
#   scripts/power-campaign.sh [--run-seconds RUN] [--seed S] [--nemesis power,...] [-- CHAOS FLAGS]
#
# Everything after `--` goes to every `lockstep chaos` run (e.g. `-- --sync none`, which must
# fail).
set -euo pipefail
cd "$(dirname "$0")/.."
run_seconds=90 seed=1 nemesis=power
while (($#)); do
  case "$1" in
    --run-seconds) run_seconds="$2"; shift 2 ;;
    --seed) seed="$2"; shift 2 ;;
    --nemesis) nemesis="$2"; shift 2 ;;
    --) shift; break ;;
    *) echo "scripts/power-campaign.sh: unknown argument $1 (see the header of this script)" >&2; exit 2 ;;
  esac
done
out="${OUT:-target/power-campaign/$(date -u +%Y%m%dT%H%M%SZ)}"
mkdir -p "$out"
cargo build --release -q -p lockstep-tools
bin=target/release/lockstep

status_all=0
current="$seed"
for nodes in 3 5; do
  for workload in kv bank lock; do
    dir="$out/n$nodes-$workload-seed$current"
    mkdir -p "$dir"
    status=0
    "$bin" chaos --nodes "$nodes" --workload "$workload" --seconds "$run_seconds" \
      --seed "$current" --nemesis "$nemesis" --dir "$dir" "$@" \
      >"$dir/stdout.txt" 2>"$dir/stderr.txt" || status=$?
    echo "$nodes nodes, $workload, seed $current: $(head -1 "$dir/stdout.txt")"
    if ((status > status_all)); then status_all=$status; fi
    current=$((current + 1))
  done
done

python3 - "$out" <<'EOF' | tee "$out/summary.txt"
import json, pathlib, sys
rows = []
for summary in sorted(pathlib.Path(sys.argv[1]).glob("*/summary.json")):
    rows.append(json.loads(summary.read_text()))
scopes = ["node", "leader", "minority", "all"]
modes = ["forget", "torn", "subset"]
print("| nodes | workload | seed | cuts | " + " | ".join(scopes) + " | " + " | ".join(modes)
      + " | node cuts | ops | ok | unknown | failures | result |")
print("|" + "---|" * (10 + len(scopes) + len(modes)))
total = {"cuts": 0, "node_cuts": 0, "ops": 0, "failures": 0}
by_scope = {scope: 0 for scope in scopes}
for row in rows:
    cuts = sum(row.get("power_cuts_by_scope", {}).values())
    total["cuts"] += cuts
    total["node_cuts"] += row.get("nodes_power_cut", 0)
    total["ops"] += row["ops"]
    total["failures"] += row["failure_count"]
    for scope in scopes:
        by_scope[scope] += row.get("power_cuts_by_scope", {}).get(scope, 0)
    print(f"| {row['nodes']} | {row['workload']} | {row['seed']} | {cuts} | "
          + " | ".join(str(row.get("power_cuts_by_scope", {}).get(s, 0)) for s in scopes) + " | "
          + " | ".join(str(row.get("power_cuts_by_mode", {}).get(m, 0)) for m in modes)
          + f" | {row.get('nodes_power_cut', 0)} | {row['ops']} | {row['ops_ok']} | "
          f"{row['ops_unknown']} | {row['failure_count']} | {row['result']} |")
print(f"\ntotal: {total['cuts']} power cuts ({', '.join(f'{s} {n}' for s, n in by_scope.items())}), "
      f"{total['node_cuts']} node power cuts, {total['ops']} operations, "
      f"{total['failures']} failures")
EOF
echo "runs: $out"
exit "$status_all"
