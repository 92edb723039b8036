#!/usr/bin/env bash
# etcd vs lockstep on one machine: a local 3-node etcd 3.4 cluster (Debian's etcd-server, WAL
# fsynced as etcd does by default) driven by etcd's own `benchmark put`, and local 3-node durable
# lockstep clusters driven by lockstep-bench (kv mode: SETs; log mode: opaque entries), in
# alternating rounds. Two loads each: one request in flight (latency) and many in flight
# (throughput). 16-byte values, 9-byte keys drawn from 100 000, durability on everywhere.
# Prints medians over the rounds and lockstep/etcd ratios in one Markdown table; keeps every
# raw output in target/compare-etcd/ (OUT). Noisy on a shared 2-core machine: read the ratios.
#
# etcd's `benchmark` tool is not in Debian's binary packages: the script builds it once from the
# tools/benchmark directory of Debian's etcd source package (fetched with apt-get source), with
# Debian's Go toolchain and the Go packages of golang-etcd-server-dev (GOPATH mode, no Go module
# proxy). ETCD_BENCHMARK=path uses an existing binary instead.
#
# needs: apt-get install etcd-server etcd-client golang-go golang-etcd-server-dev
set -euo pipefail
cd "$(dirname "$0")/.."

usage() {
    cat <<EOF
usage: scripts/compare-etcd.sh [-r ROUNDS] [-s SECONDS] [-c CLIENTS] [-C CONNS] [-T]

  -r ROUNDS   alternating rounds (default 3); the table shows medians over them
  -s SECONDS  measured seconds per phase (default 4), after 1 s of warm-up load
  -c CLIENTS  etcd throughput load: gRPC clients, one put in flight each (default 1000)
  -C CONNS    etcd throughput load: gRPC connections they share (default 100)
  -T          run nothing: print the table of the last run again from the raw outputs in \$OUT

Phases per round: etcd put with 1 client, etcd put with CLIENTS clients; lockstep-bench
--mode kv --read-ratio 0 with 1x1 in flight and with its defaults; lockstep-bench --mode log
with 1x1 in flight and with its defaults. Raw outputs in \$OUT (default target/compare-etcd/).
EOF
}
ROUNDS=3
SECONDS_PER_PHASE=4
ETCD_CLIENTS=1000
ETCD_CONNS=100
TABLE_ONLY=
while [ $# -gt 0 ]; do
    case $1 in
        -r) ROUNDS=$2; shift 2 ;;
        -s) SECONDS_PER_PHASE=$2; shift 2 ;;
        -c) ETCD_CLIENTS=$2; shift 2 ;;
        -C) ETCD_CONNS=$2; shift 2 ;;
        -T) TABLE_ONLY=1; shift ;;
        -h|--help) usage; exit 0 ;;
        *) usage >&2; exit 2 ;;
    esac
done
for tool in etcd etcdctl python3; do
    command -v "$tool" >/dev/null || { echo "$tool is not installed (apt-get install etcd-server etcd-client)" >&2; exit 1; }
done

OUT=${OUT:-target/compare-etcd}
OUT=$(mkdir -p "$OUT" && cd "$OUT" && pwd)
# Median of column $2 of file $1.
median() {
    cut -d' ' -f"$2" "$1" | sort -g |
        awk '{v[NR] = $1} END {print (NR % 2) ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2}'
}
m() { median "$OUT/$1.txt" "$2"; }
row() { # label column etcd-phase kv-phase log-phase format
    awk -v l="$1" -v e="$(m "$3" "$2")" -v k="$(m "$4" "$2")" -v g="$(m "$5" "$2")" -v f="$6" '
    function ratio(a, b) { return (b <= 0) ? "-" : sprintf((a / b < 0.1) ? "%.3fx" : "%.2fx", a / b) }
    BEGIN {
        r1 = ratio(k, e); r2 = ratio(g, e)
        printf "| %s | " f " | " f " | %s | " f " | %s |\n", l, e, k, r1, g, r2 }'
}
table() {
    cat "$OUT/run.txt"
    echo
    echo "| figure | etcd put | lockstep kv SET | kv / etcd | lockstep log | log / etcd |"
    echo "|---|---:|---:|---:|---:|---:|"
    row "1 in flight: p50 µs" 2 etcd-lat kv-lat log-lat "%.0f"
    row "1 in flight: p99 µs" 3 etcd-lat kv-lat log-lat "%.0f"
    row "1 in flight: ops/s" 1 etcd-lat kv-lat log-lat "%.0f"
    row "many in flight: ops/s" 1 etcd-tput kv-tput log-tput "%.0f"
    row "many in flight: p50 µs" 2 etcd-tput kv-tput log-tput "%.0f"
    row "many in flight: p99 µs" 3 etcd-tput kv-tput log-tput "%.0f"
    row "many in flight: server CPU, cores (3 nodes)" 4 etcd-tput kv-tput log-tput "%.2f"
    row "many in flight: client CPU, cores" 5 etcd-tput kv-tput log-tput "%.2f"
    row "many in flight: server CPU µs per op (3 nodes)" 8 etcd-tput kv-tput log-tput "%.2f"
    row "many in flight: client CPU µs per op" 9 etcd-tput kv-tput log-tput "%.2f"
    row "many in flight: entries per leader log sync" 6 etcd-tput kv-tput log-tput "%.0f"
    row "many in flight: leader log syncs/s" 7 etcd-tput kv-tput log-tput "%.0f"
    echo
    echo "many in flight: etcd $(cat "$OUT/etcd-load.txt"), one put each;" \
        "lockstep kv 8 connections x 256 SETs pipelined; lockstep log 8 connections x 8192 entries" \
        "in batches of 64. Latency ratios below 1 and throughput ratios above 1 favour lockstep."
}
if [ -n "$TABLE_ONLY" ]; then
    table
    exit 0
fi
cargo build --release -q -p lockstep-bench
LSBENCH=target/release/lockstep-bench

# --- etcd's benchmark tool -------------------------------------------------------------------
# Sets EBENCH; any failing step ends the script (set -e) with the failing tool's message.
build_etcd_benchmark() {
    EBENCH=$OUT/bin/etcd-benchmark
    [ -x "$EBENCH" ] && return 0
    echo "building etcd's benchmark tool into $EBENCH (once)" >&2
    command -v go >/dev/null || { echo "go is not installed (apt-get install golang-go)" >&2; return 1; }
    local ver
    ver=$(dpkg-query -W -f '${Version}' golang-etcd-server-dev 2>/dev/null) ||
        { echo "golang-etcd-server-dev is not installed" >&2; return 1; }
    local src=$OUT/src
    rm -rf "$src" && mkdir -p "$src/lists/partial"
    # The source package, through apt with a private deb-src list (the system's lists are untouched).
    echo "deb-src http://deb.debian.org/debian bookworm main" >"$src/sources.list"
    local apt=(apt-get -q -o Dir::Etc::SourceList="$src/sources.list" -o Dir::Etc::SourceParts=/dev/null
        -o Dir::State::Lists="$src/lists")
    "${apt[@]}" update >&2
    (cd "$src" && "${apt[@]}" source --download-only "etcd=$ver" >&2)
    local gopath=$src/gopath
    mkdir -p "$gopath/src/go.etcd.io/etcd"
    tar -xzf "$src"/etcd_*.orig.tar.gz -C "$src" --wildcards '*/tools/benchmark/*'
    cp -r "$src"/etcd-*/tools "$gopath/src/go.etcd.io/etcd/"
    mkdir -p "$OUT/bin"
    # Every import but the tool itself resolves to /usr/share/gocode (golang-etcd-server-dev and
    # the Debian Go libraries it depends on).
    (cd "$gopath/src/go.etcd.io/etcd/tools/benchmark" &&
        GO111MODULE=off GOPROXY=off GOFLAGS= GOPATH="$gopath:/usr/share/gocode" GOCACHE="$src/gocache" \
            go build -o "$EBENCH" .) >&2
}
if [ -n "${ETCD_BENCHMARK:-}" ]; then
    EBENCH=$ETCD_BENCHMARK
else
    build_etcd_benchmark
fi

# --- processes and cleanup -------------------------------------------------------------------
DATA=$OUT/data
ETCD_PIDS=()
stop_etcd() {
    # The cluster's data is thrown away, so no graceful stop: on SIGTERM an etcd leader first
    # tries to hand its leadership over and waits seconds when the others are already gone.
    for pid in "${ETCD_PIDS[@]}"; do kill -KILL "$pid" 2>/dev/null || true; done
    for pid in "${ETCD_PIDS[@]}"; do wait "$pid" 2>/dev/null || true; done
    ETCD_PIDS=()
    rm -rf "$DATA/etcd"
}
cleanup() {
    stop_etcd
    rm -rf "$DATA"
}
trap cleanup EXIT
trap 'exit 130' INT TERM
rm -rf "$DATA" && mkdir -p "$DATA"

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

# Starts a fresh 3-node etcd cluster under $DATA/etcd; sets ENDPOINTS.
start_etcd() {
    local round=$1 cluster="" peer client i
    local -a peers clients
    for i in 1 2 3; do
        peers[$i]=$(free_port)
        clients[$i]=$(free_port)
        cluster+="${cluster:+,}e$i=http://127.0.0.1:${peers[$i]}"
    done
    ENDPOINTS=""
    for i in 1 2 3; do
        peer=http://127.0.0.1:${peers[$i]}
        client=http://127.0.0.1:${clients[$i]}
        ENDPOINTS+="${ENDPOINTS:+,}127.0.0.1:${clients[$i]}"
        # Defaults otherwise: WAL fsync per raft Ready, heartbeat 100 ms, election 1 s,
        # snapshot every 100 000 entries, no auto-compaction, 2 GiB backend quota.
        etcd --name "e$i" --data-dir "$DATA/etcd/e$i" \
            --listen-peer-urls "$peer" --initial-advertise-peer-urls "$peer" \
            --listen-client-urls "$client" --advertise-client-urls "$client" \
            --initial-cluster "$cluster" --initial-cluster-token "compare-etcd-$round" \
            --initial-cluster-state new --logger zap --log-level warn \
            >"$OUT/etcd-$round-e$i.log" 2>&1 &
        ETCD_PIDS+=($!)
    done
    for _ in $(seq 100); do
        if ETCDCTL_API=3 etcdctl --endpoints "$ENDPOINTS" --command-timeout=1s put compare-etcd ready \
            >/dev/null 2>&1; then
            return 0
        fi
        sleep 0.1
    done
    echo "etcd did not come up; logs in $OUT/etcd-$round-e*.log" >&2
    exit 1
}

# CPU seconds (user+sys) of the etcd servers so far.
etcd_cpu() {
    local ticks=0 pid
    for pid in "${ETCD_PIDS[@]}"; do
        ticks=$((ticks + $(awk '{print $14 + $15}' "/proc/$pid/stat")))
    done
    awk -v t="$ticks" -v hz="$(getconf CLK_TCK)" 'BEGIN {printf "%.3f", t / hz}'
}

# "committed wal_fsyncs wal_fsync_seconds backend_commits backend_commit_seconds" of the current
# etcd leader, from its /metrics.
etcd_leader_metrics() {
    python3 - "$ENDPOINTS" <<'PY'
import sys, urllib.request
for ep in sys.argv[1].split(","):
    m = {}
    for line in urllib.request.urlopen("http://%s/metrics" % ep, timeout=5).read().decode().splitlines():
        if line and not line.startswith("#"):
            k, _, v = line.rpartition(" ")
            m[k] = float(v)
    if m.get("etcd_server_is_leader") == 1:
        print(m["etcd_server_proposals_committed_total"], m["etcd_disk_wal_fsync_duration_seconds_count"],
              m["etcd_disk_wal_fsync_duration_seconds_sum"], m["etcd_disk_backend_commit_duration_seconds_count"],
              m["etcd_disk_backend_commit_duration_seconds_sum"])
        break
else:
    print("0 0 0 0 0")
PY
}

# Requests per phase for etcd's count-based tool: the last measured rate x the seconds wanted.
declare -A RATE=([lat]=300 [tput]=3000)
# One `benchmark put` run; with "measure", appends "ops/s p50_us p99_us server_cores client_cores
# entries_per_leader_sync leader_syncs_per_s server_cpu_us_per_op client_cpu_us_per_op".
etcd_put() { # name clients conns seconds file [measure]
    local name=$1 total
    total=$(awk -v r="${RATE[$name]}" -v s="$4" 'BEGIN {t = int(r * s); print (t < 100) ? 100 : t}')
    local cpu0 cpu1 met0 met1
    cpu0=$(etcd_cpu)
    met0=$(etcd_leader_metrics)
    /usr/bin/time -f 'client_cpu %U %S %e' -o "$5.time" \
        "$EBENCH" put --precise --endpoints "$ENDPOINTS" --target-leader --clients "$2" --conns "$3" \
        --total "$total" --key-size 9 --val-size 16 --key-space-size 100000 >"$5" 2>&1
    cpu1=$(etcd_cpu)
    met1=$(etcd_leader_metrics)
    echo "leader metrics before: $met0, after: $met1 (committed, WAL fsyncs, WAL fsync seconds, backend commits, backend commit seconds)" >>"$5.time"
    if grep -q 'Error distribution' "$5"; then
        echo "etcd benchmark reported errors: $5" >&2
        exit 1
    fi
    local rate
    rate=$(awk '/Requests\/sec:/ {print $2}' "$5")
    RATE[$name]=$rate
    [ "${6:-}" = measure ] || return 0
    awk -v rate="$rate" -v c0="$cpu0" -v c1="$cpu1" -v m0="$met0" -v m1="$met1" '
        /50% in/ {p50 = $3 * 1e6} /99% in/ {p99 = $3 * 1e6} /Total:/ {secs = $2}
        FILENAME ~ /time$/ && /client_cpu/ {client = ($2 + $3) / $4}
        END {
            split(m0, a, " "); split(m1, b, " "); syncs = b[2] - a[2]; server = (c1 - c0) / secs
            printf "%.1f %.1f %.1f %.2f %.2f %.1f %.1f %.2f %.2f\n", rate, p50, p99, server, client,
                (syncs > 0) ? (b[1] - a[1]) / syncs : 0, syncs / secs, server / rate * 1e6, client / rate * 1e6
        }' "$5" "$5.time"
}

# One lockstep-bench run; appends the same figures as etcd_put.
lockstep_run() { # file flags...
    local file=$1
    shift
    "$LSBENCH" "$@" --seconds "$SECONDS_PER_PHASE" --warmup 1 --dir "$DATA" --json "$file.json" >"$file.txt"
    python3 - "$file.json" <<'PY'
import json, sys
r = json.load(open(sys.argv[1]))
nodes = sum(n["cores"] for n in r["cpu"]["nodes"])
g, rate, client = r["grouping"], r["throughput_per_sec"], r["cpu"]["bench_cores"]
print("%.1f %.1f %.1f %.2f %.2f %.1f %.1f %.2f %.2f" % (rate, r["latency_us"]["p50"], r["latency_us"]["p99"],
      nodes, client, g["entries_per_sync"], g["syncs_per_sec"], nodes / rate * 1e6, client / rate * 1e6))
PY
}

PHASES=(etcd-lat etcd-tput kv-lat kv-tput log-lat log-tput)
for phase in "${PHASES[@]}"; do : >"$OUT/$phase.txt"; done
run_etcd() {
    local round=$1
    start_etcd "$round"
    etcd_put lat 1 1 1 "$OUT/etcd-lat-$round.warmup.out"
    etcd_put lat 1 1 "$SECONDS_PER_PHASE" "$OUT/etcd-lat-$round.out" measure >>"$OUT/etcd-lat.txt"
    etcd_put tput "$ETCD_CLIENTS" "$ETCD_CONNS" 1 "$OUT/etcd-tput-$round.warmup.out"
    etcd_put tput "$ETCD_CLIENTS" "$ETCD_CONNS" "$SECONDS_PER_PHASE" "$OUT/etcd-tput-$round.out" measure \
        >>"$OUT/etcd-tput.txt"
    stop_etcd
}
run_lockstep() {
    local round=$1
    lockstep_run "$OUT/kv-lat-$round" --mode kv --read-ratio 0 --clients 1 --depth 1 >>"$OUT/kv-lat.txt"
    lockstep_run "$OUT/kv-tput-$round" --mode kv --read-ratio 0 >>"$OUT/kv-tput.txt"
    lockstep_run "$OUT/log-lat-$round" --mode log --clients 1 --depth 1 >>"$OUT/log-lat.txt"
    lockstep_run "$OUT/log-tput-$round" --mode log >>"$OUT/log-tput.txt"
}
STARTED=$(date -u +'%Y-%m-%d %H:%M')
for round in $(seq "$ROUNDS"); do
    # Alternate which system goes first, so neither always runs on the tail of the other.
    if [ $((round % 2)) = 1 ]; then run_etcd "$round"; run_lockstep "$round"
    else run_lockstep "$round"; run_etcd "$round"; fi
    echo "round $round:" >&2
    for phase in "${PHASES[@]}"; do printf '  %-10s %s\n' "$phase" "$(tail -1 "$OUT/$phase.txt")" >&2; done
done
ENDED=$(date -u +'%H:%M')
echo "etcd $(etcd --version | awk '/etcd Version/ {print $3}') vs lockstep $(git rev-parse --short HEAD)," \
    "$STARTED-$ENDED UTC, median of $ROUNDS alternating rounds, $SECONDS_PER_PHASE s per phase" >"$OUT/run.txt"
echo "$ETCD_CLIENTS clients over $ETCD_CONNS connections" >"$OUT/etcd-load.txt"
table | tee "$OUT/summary.md"

