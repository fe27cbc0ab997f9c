#!/usr/bin/env bash
# `make bench`: starts a cluster for benchmarking with deploy/cluster.sh (two replicas on
# loopback, Redis, PostgreSQL, nginx idle), runs the load tool's shapes against the
# replicas, prints the results table, and stops the cluster it started.
#
# Settings (environment):
#   SHAPES              load tool shapes (default all: d,a,b,c,e,rest,agent)
#   LOAD_FLAGS          more load tool flags (e.g. "-steps 500,1000 -rest-duration 5s")
#   BENCH_CLUSTER_DIR   cluster run dir (default /tmp/evo-bench-cluster)
#   EVO_PORT_1, EVO_PORT_2, NGINX_PORT   default 8001, 8002, 8080
#   BENCH_DB            database, dropped and created afresh when the cluster is started
#                       here (default evo_bench)
#   BENCH_RESULTS       JSON results file (default $BENCH_CLUSTER_DIR/results.json)
#   FAKE_LLM_PORT       port of the load tool's fake model (shape agent; default 8099)
# A cluster already running in BENCH_CLUSTER_DIR is used as it is, and left running
# (with EVO_BIN set, that is refused: the running binary would be measured instead).
# The replicas get WS_MAX_CONNS_PER_USER=1000 (shape c puts 500 sockets of one user on
# each), RATE_LIMIT_WRITES and CHAT_RATE_LIMIT high enough never to refuse (see below),
# the load tool's fake model (LLM_*), and the hard RLIMIT_NOFILE (shapes b and d hold
# 5,000 sockets on each).
set -euo pipefail

repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$repo"
export CLUSTER_DIR=${BENCH_CLUSTER_DIR:-/tmp/evo-bench-cluster}
export EVO_PORT_1=${EVO_PORT_1:-8001} EVO_PORT_2=${EVO_PORT_2:-8002} NGINX_PORT=${NGINX_PORT:-8080}
admin=${CLUSTER_ADMIN_URL:-postgres://postgres@127.0.0.1:5432/postgres?sslmode=disable}
db=${BENCH_DB:-evo_bench}
export CLUSTER_DATABASE_URL=${admin%%/postgres\?*}/$db?sslmode=disable
export WS_MAX_CONNS_PER_USER=${WS_MAX_CONNS_PER_USER:-1000}
# Shapes c and e change one user's todos up to 100 times a second: far above the
# production default of 120 writes per user per minute. The limiter still runs (one
# Redis call per write), it just never refuses.
export RATE_LIMIT_WRITES=${RATE_LIMIT_WRITES:-100000000}
# Shape agent: the replicas' model is the load tool's fake OpenAI-compatible server.
fake_llm=127.0.0.1:${FAKE_LLM_PORT:-8099}
export LLM_PROVIDER=openai LLM_BASE_URL=http://$fake_llm/v1 LLM_MODEL=fake CHAT_RATE_LIMIT=${CHAT_RATE_LIMIT:-100000}
results=${BENCH_RESULTS:-$CLUSTER_DIR/results.json}

log() { printf 'bench: %s\n' "$*" >&2; }

ulimit -n "$(ulimit -Hn)"
log "RLIMIT_NOFILE for the replicas and the load tool: $(ulimit -n)"

started=
if deploy/cluster.sh status >/dev/null 2>&1; then
	if [[ -n ${EVO_BIN:-} ]]; then
		# The running replicas' binary would be measured, not EVO_BIN's.
		log "EVO_BIN is set, but a cluster already runs in $CLUSTER_DIR with its own binary:"
		log "stop it first (CLUSTER_DIR=$CLUSTER_DIR deploy/cluster.sh stop) or unset EVO_BIN"
		exit 1
	fi
	log "using the cluster running in $CLUSTER_DIR"
else
	log "dropping and creating database $db"
	psql "$admin" -XqAc "DROP DATABASE IF EXISTS $db WITH (FORCE)" >/dev/null
	psql "$admin" -XqAc "CREATE DATABASE $db" >/dev/null
	started=1
	trap 'deploy/cluster.sh stop' EXIT
	deploy/cluster.sh start 2>&1 | { grep -v '^  \|^or:\|a dev token' || true; } >&2
fi
# shellcheck disable=SC1091
. "$CLUSTER_DIR/cluster.env"

mkdir -p "$CLUSTER_DIR"
go build -o "$CLUSTER_DIR/load" ./bench/load
log "load average and the busiest processes (lifetime %CPU) before the run:"
{ cat /proc/loadavg; ps -eo pid,pcpu,etime,comm --sort=-pcpu | head -6; } >&2 || true

# shellcheck disable=SC2086
"$CLUSTER_DIR/load" -shape "${SHAPES:-all}" \
	-replicas "127.0.0.1:$EVO_PORT_1,127.0.0.1:$EVO_PORT_2" \
	-database-url "$DATABASE_URL" -data-dir "$DATA_DIR" -public-url "$PUBLIC_URL" \
	-pgbench-dir bench/pgbench -fake-llm "$fake_llm" -json "$results" ${LOAD_FLAGS:-}
log "results also in $results"
[[ -n $started ]] && log "stopping the cluster"
