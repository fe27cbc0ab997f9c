#!/usr/bin/env bash
# Shapes a and c on one Redis and on a Redis Cluster, in the same run (issue 17):
# `bench/run.sh` with the machine's Redis (127.0.0.1:6379), then again with the
# replicas on a private 3-master 3-replica Redis Cluster (REDIS_URL=redis+cluster://...,
# sharded pub/sub), then redis-benchmark's SPUBLISH rate on one master of that cluster
# with two subscribers (the two replicas' share). Prints the two results tables and
# stops everything it started.
#
# Settings (environment): SHAPES (default a,c), RCLUSTER_PORT (first of the six node
# ports, default 7101), RCLUSTER_DIR (default /tmp/evo-bench-rcluster), and bench/run.sh's
# (EVO_PORT_1, EVO_PORT_2, NGINX_PORT, FAKE_LLM_PORT, LOAD_FLAGS).
set -euo pipefail

repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$repo"
dir=${RCLUSTER_DIR:-/tmp/evo-bench-rcluster}
base=${RCLUSTER_PORT:-7101}
export SHAPES=${SHAPES:-a,c}
log() { printf 'rcluster: %s\n' "$*" >&2; }

mkdir -p "$dir"
pids=()
stop() {
	for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
	wait 2>/dev/null || true
}
trap stop EXIT

log "single Redis (REDIS_URL=redis://127.0.0.1:6379/0), shapes $SHAPES"
BENCH_CLUSTER_DIR=$dir/single BENCH_RESULTS=$dir/single.json bench/run.sh

addrs=()
for i in 0 1 2 3 4 5; do
	p=$((base + i))
	rm -f "$dir/nodes-$p.conf"
	redis-server --port "$p" --bind 127.0.0.1 --cluster-enabled yes --cluster-config-file "$dir/nodes-$p.conf" \
		--cluster-node-timeout 2000 --save '' --appendonly no --daemonize no --dir "$dir" >"$dir/redis-$p.log" 2>&1 &
	pids+=($!)
	addrs+=("127.0.0.1:$p")
done
for a in "${addrs[@]}"; do
	for _ in $(seq 1 100); do redis-cli -p "${a#*:}" ping >/dev/null 2>&1 && break; sleep 0.1; done
done
redis-cli --cluster create "${addrs[@]}" --cluster-replicas 1 --cluster-yes >"$dir/create.log"
for _ in $(seq 1 100); do redis-cli -p "$base" cluster info | grep -q cluster_state:ok && break; sleep 0.2; done
url="redis+cluster://${addrs[0]},${addrs[1]}"
log "Redis Cluster of 3 masters and 3 replicas (REDIS_URL=$url), shapes $SHAPES"
# The load tool's Redis order check subscribes with classic SUBSCRIBE: off on the cluster.
CLUSTER_REDIS_URL=$url BENCH_CLUSTER_DIR=$dir/cluster BENCH_RESULTS=$dir/cluster.json \
	LOAD_FLAGS="-redis-url= ${LOAD_FLAGS:-}" bench/run.sh

# One shard's publish rate next to the single Redis's: SPUBLISH to a master of the
# cluster and PUBLISH to the single Redis, each of a 400-byte frame (a todo event's size)
# to a channel with two subscribers (two replicas), 50 clients, pipelined 16.
ch="evo:{0}user:bench"
slot=$(redis-cli -p "$base" cluster keyslot "$ch")
oport=$(redis-cli -p "$base" cluster nodes | awk -v s="$slot" '$3 ~ /master/ {for (i = 9; i <= NF; i++) {split($i, r, "-"); if (r[2] == "") r[2] = r[1]; if (s + 0 >= r[1] + 0 && s + 0 <= r[2] + 0) {split($2, a, "@"); split(a[1], h, ":"); print h[2]}}}')
payload=$(head -c 400 /dev/zero | tr '\0' x)
bench_publish() { # port command
	local subs=()
	for _ in 1 2; do
		redis-cli -p "$1" "${2/PUBLISH/SUBSCRIBE}" "$ch" >/dev/null &
		subs+=($!)
	done
	sleep 0.5
	printf 'rcluster: %s on 127.0.0.1:%s, 2 subscribers, 400 B: ' "$2" "$1" >&2
	redis-benchmark -p "$1" -n 300000 -c 50 -P 16 --csv "$2" "$ch" "$payload" | tail -1 | cut -d, -f2- >&2
	kill "${subs[@]}"
}
bench_publish "$oport" SPUBLISH
bench_publish 6379 PUBLISH
log "results: $dir/single.json, $dir/cluster.json"
