#!/usr/bin/env bash
# `make bench-centrifugo`: the same shapes against Centrifugo, the best-known Go
# real-time server, for a side-by-side comparison: two Centrifugo nodes with the Redis
# engine on loopback (as Evo's cluster: two replicas + Redis), per-channel history on (its
# closest equivalent of Evo's durable event; CF_HISTORY=0 turns it off), the load tool
# with -target centrifugo. Stops the nodes and deletes their Redis keys when done.
#
# Settings (environment):
#   SHAPES          load tool shapes (default d,a,b,c; Centrifugo has no REST, e or agent)
#   CF_BIN          the centrifugo binary (default: $(go env GOPATH)/bin/centrifugo; if it
#                   is missing, go install github.com/centrifugal/centrifugo/v6@$CF_VERSION
#                   builds it, which takes a few minutes)
#   CF_VERSION      default v6.9.1
#   CF_PORT_1, CF_PORT_2   default 8101, 8102
#   CF_HISTORY      history size per channel (default 100, 0: off), kept 300 s
#   CF_BENCH_DIR    run dir (default /tmp/evo-bench-centrifugo)
#   LOAD_FLAGS      more load tool flags
#   PGBENCH_ALONGSIDE  pgbench change.sql at this rate during every change window (as
#                   -pgbench-alongside): the durable PostgreSQL commit per change that Evo
#                   makes and Centrifugo does not, on the same machine at the same time;
#                   on database CF_BENCH_DB (default evo_bench_cf, dropped and created)
set -euo pipefail

repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$repo"
dir=${CF_BENCH_DIR:-/tmp/evo-bench-centrifugo}
version=${CF_VERSION:-v6.9.1}
bin=${CF_BIN:-$(go env GOPATH)/bin/centrifugo}
ports=("${CF_PORT_1:-8101}" "${CF_PORT_2:-8102}")
history=${CF_HISTORY:-100}

log() { printf 'bench-centrifugo: %s\n' "$*" >&2; }

if [[ ! -x $bin ]]; then
	log "building centrifugo $version (go install; a few minutes)"
	GOBIN=$(dirname "$bin") go install "github.com/centrifugal/centrifugo/v6@$version"
fi
mkdir -p "$dir"
secret=$(head -c 32 /dev/urandom | base64 | tr -d '=+/')
key=$(head -c 32 /dev/urandom | base64 | tr -d '=+/')
prefix=evobenchcf$(head -c 4 /dev/urandom | od -An -tx1 | tr -d ' \n')

pids=()
cleanup() {
	for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
	for p in "${pids[@]}"; do wait "$p" 2>/dev/null || true; done
	redis-cli --scan --pattern "$prefix*" | xargs -r redis-cli del >/dev/null || true
	log "stopped"
}
trap cleanup EXIT

ulimit -n "$(ulimit -Hn)"
for i in 0 1; do
	cat >"$dir/node$((i + 1)).json" <<EOF
{
  "http_server": {"address": "127.0.0.1", "port": ${ports[$i]}},
  "log": {"level": "error"},
  "client": {"token": {"hmac_secret_key": "$secret"}, "allowed_origins": ["*"]},
  "http_api": {"key": "$key"},
  "engine": {"type": "redis", "redis": {"address": ["redis://127.0.0.1:6379"], "prefix": "$prefix"}},
  "channel": {"without_namespace": {"history_size": $history, "history_ttl": "$([[ $history -gt 0 ]] && echo 300s || echo 0s)"}},
  "health": {"enabled": true},
  "usage_stats": {"disabled": true}
}
EOF
	"$bin" -c "$dir/node$((i + 1)).json" >"$dir/node$((i + 1)).log" 2>&1 &
	pids+=($!)
done
for port in "${ports[@]}"; do
	for _ in $(seq 100); do
		curl -fsS "http://127.0.0.1:$port/health" >/dev/null 2>&1 && break
		sleep 0.1
	done
	curl -fsS "http://127.0.0.1:$port/health" >/dev/null || { log "node on :$port did not start: $(tail -3 "$dir"/node*.log)"; exit 1; }
done
log "centrifugo $("$bin" version | head -1) on :${ports[0]} and :${ports[1]}, Redis engine (prefix $prefix), history $history"

go build -o "$dir/load" ./bench/load
alongside=()
if [[ -n ${PGBENCH_ALONGSIDE:-} ]]; then
	admin=${CLUSTER_ADMIN_URL:-postgres://postgres@127.0.0.1:5432/postgres?sslmode=disable}
	db=${CF_BENCH_DB:-evo_bench_cf}
	psql "$admin" -XqAc "DROP DATABASE IF EXISTS $db WITH (FORCE)" >/dev/null
	psql "$admin" -XqAc "CREATE DATABASE $db" >/dev/null
	alongside=(-pgbench-alongside "$PGBENCH_ALONGSIDE" -database-url "${admin%%/postgres\?*}/$db?sslmode=disable")
	log "pgbench change.sql at $PGBENCH_ALONGSIDE/s alongside every change window, on database $db"
fi
# shellcheck disable=SC2086
"$dir/load" -target centrifugo "${alongside[@]}" -centrifugo-secret "$secret" -centrifugo-api-key "$key" \
	-replicas "127.0.0.1:${ports[0]},127.0.0.1:${ports[1]}" -redis-url "" \
	-shape "${SHAPES:-d,a,b,c}" -json "$dir/results.json" ${LOAD_FLAGS:-}
