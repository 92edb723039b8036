#!/usr/bin/env bash
# RESP vs Redis: redis-benchmark -t set,get -P 64 -c 50 -d 16 against the leader of a local
# 3-node durable lockstep kv cluster and against a local redis-server with appendfsync always,
# in alternating rounds; prints the medians and the ratio lockstep/redis (a Markdown table).
#
# usage: scripts/compare-redis.sh [-n REQUESTS] [-r ROUNDS]   (defaults: -n 500000 -r 3)
# Noisy on a shared 2-core machine: read the ratio, not the absolute figures.
set -euo pipefail
cd "$(dirname "$0")/.."
N=500000
ROUNDS=3
while getopts "n:r:" opt; do
    case $opt in
        n) N=$OPTARG ;;
        r) ROUNDS=$OPTARG ;;
        *) echo "usage: $0 [-n REQUESTS] [-r ROUNDS]" >&2; exit 2 ;;
    esac
done
for tool in redis-server redis-benchmark redis-cli; do
    command -v "$tool" >/dev/null || { echo "$tool is not installed (apt-get install redis-tools redis-server)" >&2; exit 1; }
done
cargo build --release -q -p lockstep-tools
BIN=target/release/lockstep
DIR=$(mktemp -d)
PIDS=()
cleanup() {
    for pid in "${PIDS[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
    for pid in "${PIDS[@]}"; do wait "$pid" 2>/dev/null || true; done
    rm -rf "$DIR"
}
trap cleanup EXIT

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

# lockstep: 3 durable nodes.
MEMBERS=()
declare -a CLIENT
for id in 1 2 3; do
    CLIENT[$id]=$(free_port)
    MEMBERS+=(--member "$id=127.0.0.1:$(free_port)/127.0.0.1:${CLIENT[$id]}")
done
for id in 1 2 3; do
    "$BIN" serve --id "$id" --cluster-id 77 --data-dir "$DIR/node-$id" --app kv "${MEMBERS[@]}" \
        >"$DIR/node-$id.out" 2>"$DIR/node-$id.log" &
    PIDS+=($!)
done
LEADER_PORT=""
for _ in $(seq 200); do
    for id in 1 2 3; do
        if redis-cli -p "${CLIENT[$id]}" INFO 2>/dev/null | grep -q '^lockstep_role:leader'; then
            LEADER_PORT=${CLIENT[$id]}
        fi
    done
    [ -n "$LEADER_PORT" ] && break
    sleep 0.1
done
[ -n "$LEADER_PORT" ] || { echo "no lockstep leader; logs in $DIR" >&2; tail "$DIR"/node-*.log >&2; exit 1; }

# redis: one node, every write fsynced before the reply.
REDIS_PORT=$(free_port)
mkdir -p "$DIR/redis"
redis-server --port "$REDIS_PORT" --bind 127.0.0.1 --dir "$DIR/redis" --save "" \
    --appendonly yes --appendfsync always --daemonize no >"$DIR/redis.log" 2>&1 &
PIDS+=($!)
for _ in $(seq 100); do redis-cli -p "$REDIS_PORT" PING >/dev/null 2>&1 && break; sleep 0.1; done

# One redis-benchmark run; prints "SET GET" requests per second.
bench() {
    redis-benchmark -h 127.0.0.1 -p "$1" -t set,get -P 64 -c 50 -d 16 -n "$N" -q 2>&1 \
        | tr '\r' '\n' | awk '/^SET: [0-9]/ {set=$2} /^GET: [0-9]/ {get=$2} END {print set, get}'
}
median() { sort -n | awk '{v[NR]=$1} END {print (NR%2) ? v[(NR+1)/2] : (v[NR/2]+v[NR/2+1])/2}'; }

: >"$DIR/lockstep.txt"
: >"$DIR/redis.txt"
for round in $(seq "$ROUNDS"); do
    bench "$LEADER_PORT" >>"$DIR/lockstep.txt"
    bench "$REDIS_PORT" >>"$DIR/redis.txt"
    echo "round $round: lockstep $(tail -1 "$DIR/lockstep.txt")  redis $(tail -1 "$DIR/redis.txt")" >&2
done
LS_SET=$(cut -d' ' -f1 "$DIR/lockstep.txt" | median)
LS_GET=$(cut -d' ' -f2 "$DIR/lockstep.txt" | median)
RD_SET=$(cut -d' ' -f1 "$DIR/redis.txt" | median)
RD_GET=$(cut -d' ' -f2 "$DIR/redis.txt" | median)
echo
echo "redis-benchmark -t set,get -P 64 -c 50 -d 16 -n $N, median of $ROUNDS alternating rounds"
echo
echo "| op | lockstep (3 durable replicas) ops/s | redis (appendfsync always) ops/s | lockstep / redis |"
echo "|----|------:|------:|-----:|"
awk -v a="$LS_SET" -v b="$RD_SET" 'BEGIN {printf "| SET | %.0f | %.0f | %.2fx |\n", a, b, a/b}'
awk -v a="$LS_GET" -v b="$RD_GET" 'BEGIN {printf "| GET | %.0f | %.0f | %.2fx |\n", a, b, a/b}'
