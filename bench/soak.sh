#!/usr/bin/env bash
# `make soak` (issue 8): a soak run. Starts a fresh cluster with deploy/cluster.sh (two
# replicas on loopback, its own run dir, database and ports), reads each replica's
# goroutines, heap in use and RSS from /metrics (baseline), holds SOAK_SOCKETS mostly idle
# sockets while the load tool makes SOAK_RATE changes/s for SOAK_DURATION (loss must be 0),
# samples the replicas during the run, then, after the clients have left, polls until the
# replicas are back near the baseline (at most SOAK_SETTLE seconds). Prints a table
# before/during/after per replica, exits non-zero on any failure, stops the cluster.
# Not run in CI.
#
# Settings (environment):
#   SOAK_DURATION       how long changes are made (default 10m; Go duration)
#   SOAK_SOCKETS        sockets held open (default 5000)
#   SOAK_USERS          users the sockets belong to (default SOAK_SOCKETS/5: 5 sockets each)
#   SOAK_RATE           changes per second (default 50): each reaches the user's sockets only,
#                       so most sockets are idle most of the time
#   SOAK_SETTLE         seconds to wait for the replicas to return to baseline (default 60)
#   SOAK_GOROUTINES     goroutine margin over the baseline (default 20)
#   SOAK_HEAP_FACTOR, SOAK_HEAP_SLACK_MB   heap in use after <= max(factor x baseline,
#                       baseline + slack) (defaults 1.5 and 16): the main memory criterion
#   SOAK_RSS_FACTOR, SOAK_RSS_SLACK_MB     RSS after <= max(factor x baseline, baseline +
#                       slack) (defaults 1.5 and 50): Go gives freed memory back to the OS
#                       only gradually (the scavenger), so RSS gets the wider margin
#   SOAK_CLUSTER_DIR    cluster run dir (default /tmp/evo-soak-cluster)
#   EVO_PORT_1, EVO_PORT_2, NGINX_PORT   default 8201, 8202, 8280 (not make cluster's)
#   SOAK_DB             database, dropped and created afresh (default evo_soak)
#   LOAD_FLAGS          more load tool flags
#   METRICS_TOKEN       if the replicas need one for /metrics (passed to them as well)
# The replicas get WS_MAX_CONNS_PER_USER=1000, RATE_LIMIT_WRITES high enough never to
# refuse (the limiter still runs), and the hard RLIMIT_NOFILE, like bench/run.sh.
set -euo pipefail

repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$repo"
duration=${SOAK_DURATION:-10m}
sockets=${SOAK_SOCKETS:-5000}
users=${SOAK_USERS:-$(((sockets + 4) / 5))}
rate=${SOAK_RATE:-50}
settle=${SOAK_SETTLE:-60}
g_margin=${SOAK_GOROUTINES:-20}
heap_factor=${SOAK_HEAP_FACTOR:-1.5} heap_slack=${SOAK_HEAP_SLACK_MB:-16}
rss_factor=${SOAK_RSS_FACTOR:-1.5} rss_slack=${SOAK_RSS_SLACK_MB:-50}
export CLUSTER_DIR=${SOAK_CLUSTER_DIR:-/tmp/evo-soak-cluster}
export EVO_PORT_1=${EVO_PORT_1:-8201} EVO_PORT_2=${EVO_PORT_2:-8202} NGINX_PORT=${NGINX_PORT:-8280}
admin=${CLUSTER_ADMIN_URL:-postgres://postgres@127.0.0.1:5432/postgres?sslmode=disable}
db=${SOAK_DB:-evo_soak}
export CLUSTER_DATABASE_URL="${admin%%/postgres\?*}/$db?sslmode=disable"
export WS_MAX_CONNS_PER_USER=${WS_MAX_CONNS_PER_USER:-1000}
export RATE_LIMIT_WRITES=${RATE_LIMIT_WRITES:-100000000}
ports=("$EVO_PORT_1" "$EVO_PORT_2")

log() { printf 'soak: %s %s\n' "$(date -u +%T)" "$*" >&2; }
die() { log "$*"; exit 1; }

ulimit -n "$(ulimit -Hn)"
log "duration $duration, $sockets sockets of $users users, $rate changes/s; RLIMIT_NOFILE $(ulimit -n)"

if deploy/cluster.sh status >/dev/null 2>&1; then
	die "a cluster already runs in $CLUSTER_DIR: the baseline must be a fresh one (CLUSTER_DIR=$CLUSTER_DIR deploy/cluster.sh stop)"
fi
load_pid=
sampler_pid=
cleanup() {
	local rc=$?
	[[ -n $sampler_pid ]] && kill "$sampler_pid" 2>/dev/null
	[[ -n $load_pid ]] && kill "$load_pid" 2>/dev/null
	log "stopping the cluster"
	deploy/cluster.sh stop 2>&1 | sed 's/^/  /' >&2 || true
	exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM
log "dropping and creating database $db"
PGOPTIONS="-c client_min_messages=warning" psql "$admin" -XqAc "DROP DATABASE IF EXISTS $db WITH (FORCE)" >/dev/null
psql "$admin" -XqAc "CREATE DATABASE $db" >/dev/null
deploy/cluster.sh start 2>&1 | { grep -v '^  \|^or:\|a dev token' || true; } >&2
# shellcheck disable=SC1091
. "$CLUSTER_DIR/cluster.env"
go build -o "$CLUSTER_DIR/load" ./bench/load

auth=()
[[ -n ${METRICS_TOKEN:-} ]] && auth=(-H "Authorization: Bearer $METRICS_TOKEN")
# scrape PORT prints "goroutines heap_inuse_bytes rss_bytes gc_cycles" of the replica
# (empty: no answer).
scrape() {
	curl -sf --max-time 5 "${auth[@]}" "http://127.0.0.1:$1/metrics" | awk '
		$1 == "go_goroutines" { g = $2 }
		$1 == "go_memstats_heap_inuse_bytes" { h = $2 }
		$1 == "process_resident_memory_bytes" { r = $2 }
		$1 == "go_gc_duration_seconds_count" { c = $2 }
		END { if (g != "") printf "%d %d %d %d\n", g, h, r, c }'
}
# nudge PORT: 100 /metrics requests (about 10 MB of garbage, under a second of CPU) so that
# the replica's GC runs: an idle Go process otherwise collects only every 2 minutes, and
# heap in use counts the garbage the clients left until then.
nudge() { curl -s --max-time 20 "${auth[@]}" "http://127.0.0.1:$1/metrics?n=[1-100]" >/dev/null || true; }
mib() { awk -v b="$1" 'BEGIN { printf "%.1f", b / 1048576 }'; }

# Baseline: the fresh replicas after a few quiet seconds.
sleep 3
declare -a base_g base_h base_r base_c peak_g peak_h peak_r after_g after_h after_r after_c left_c
for i in 0 1; do
	read -r "base_g[i]" "base_h[i]" "base_r[i]" "base_c[i]" <<<"$(scrape "${ports[i]}")" || true
	[[ -n ${base_g[i]:-} ]] || die "no metrics from 127.0.0.1:${ports[i]}/metrics"
	log "baseline evo$((i + 1)): ${base_g[i]} goroutines, heap in use $(mib "${base_h[i]}") MiB, RSS $(mib "${base_r[i]}") MiB, ${base_c[i]} GC cycles"
done

# During: sample every 5 s while the load tool runs; the peak of each is kept.
samples=$CLUSTER_DIR/soak-samples.txt
: >"$samples"
(
	while sleep 5; do
		for i in 0 1; do
			s=$(scrape "${ports[i]}") && [[ -n $s ]] && echo "$i $(date -u +%T) $s" >>"$samples"
		done
	done
) &
sampler_pid=$!

results=$CLUSTER_DIR/soak-results.json
rm -f "$results"
log "load: $sockets sockets, $users users, $rate changes/s for $duration"
# shellcheck disable=SC2086
"$CLUSTER_DIR/load" -shape custom -sockets "$sockets" -users "$users" -rate "$rate" -duration "$duration" \
	-replicas "127.0.0.1:$EVO_PORT_1,127.0.0.1:$EVO_PORT_2" \
	-database-url "$DATABASE_URL" -data-dir "$DATA_DIR" -public-url "$PUBLIC_URL" \
	-json "$results" ${LOAD_FLAGS:-} &
load_pid=$!
load_rc=0
wait "$load_pid" || load_rc=$?
load_pid=
kill "$sampler_pid" 2>/dev/null || true
wait "$sampler_pid" 2>/dev/null || true
sampler_pid=
left=$SECONDS
log "the load tool exited ($load_rc): its sockets are closed"

fail=()
((load_rc == 0)) || fail+=("the load tool exited with $load_rc")
if [[ -s $results ]]; then
	read -r n loss cfail closed cerr changes made dups gaps p99 < <(jq -r '
		[.Shapes | length, (.[0] // {} | .Loss, .ConnectFail, .Closed, .ChangeErrors, .Changes, .Made, .Dups, .Gaps, .P99)]
		| map(. // 0) | @tsv' "$results")
	log "load: $changes changes ($(printf '%.1f' "$made")/s made), loss $loss, change errors $cerr, connect failures $cfail, sockets closed $closed, dups $dups, gaps $gaps, p99 $((p99 / 1000000)) ms"
	((n == 1)) || fail+=("the load tool recorded no window (see its notes above)")
	((loss == 0)) || fail+=("loss $loss")
	((cfail == 0)) || fail+=("$cfail sockets failed to connect")
	((closed == 0)) || fail+=("$closed sockets were closed by the server during the run")
	((cerr == 0)) || fail+=("$cerr change errors")
else
	fail+=("no results from the load tool ($results)")
fi

for i in 0 1; do
	read -r "peak_g[i]" "peak_h[i]" "peak_r[i]" < <(awk -v i="$i" '
		$1 == i { if ($3 > g) g = $3; if ($4 > h) h = $4; if ($5 > r) r = $5 }
		END { printf "%d %d %d\n", g, h, r }' "$samples")
done

# After: poll until both replicas are within the margins, at most $settle seconds. Memory
# is judged after two GC cycles since the clients left (the second frees what sync.Pools
# kept through the first); nudge makes them happen.
ok_after() { # i: 0 when within every margin
	local i=$1
	awk -v g="${after_g[i]}" -v h="${after_h[i]}" -v r="${after_r[i]}" \
		-v bg="${base_g[i]}" -v bh="${base_h[i]}" -v br="${base_r[i]}" -v gm="$g_margin" \
		-v hf="$heap_factor" -v hs="$heap_slack" -v rf="$rss_factor" -v rs="$rss_slack" 'BEGIN {
		mb = 1048576
		hl = bh * hf; if (bh + hs * mb > hl) hl = bh + hs * mb
		rl = br * rf; if (br + rs * mb > rl) rl = br + rs * mb
		exit !(g != "" && g <= bg + gm && h <= hl && r <= rl) }'
}
for i in 0 1; do
	read -r _ _ _ "left_c[i]" <<<"$(scrape "${ports[i]}")" || true
done
while :; do
	all=1
	for i in 0 1; do
		read -r "after_g[i]" "after_h[i]" "after_r[i]" "after_c[i]" <<<"$(scrape "${ports[i]}")" || true
		if ((${after_c[i]:-0} - ${left_c[i]:-0} < 2)); then
			all=0
			nudge "${ports[i]}"
		else
			ok_after "$i" || all=0
		fi
	done
	((all)) && break
	((SECONDS - left < settle)) || break
	sleep 2
done
waited=$((SECONDS - left))
log "after $waited s without clients: GC cycles since they left: evo1 $((${after_c[0]:-0} - ${left_c[0]:-0})), evo2 $((${after_c[1]:-0} - ${left_c[1]:-0}))"

printf '\n%-6s %-20s %12s %12s %12s   %s\n' replica metric baseline "during(peak)" after limit
for i in 0 1; do
	r="evo$((i + 1))"
	bh=${base_h[i]} br=${base_r[i]}
	hl=$(awk -v b="$bh" -v f="$heap_factor" -v s="$heap_slack" 'BEGIN { l = b * f; if (b + s * 1048576 > l) l = b + s * 1048576; printf "%d", l }')
	rl=$(awk -v b="$br" -v f="$rss_factor" -v s="$rss_slack" 'BEGIN { l = b * f; if (b + s * 1048576 > l) l = b + s * 1048576; printf "%d", l }')
	printf '%-6s %-20s %12s %12s %12s   <= %s\n' "$r" goroutines "${base_g[i]}" "${peak_g[i]}" "${after_g[i]:--}" "$((base_g[i] + g_margin))"
	printf '%-6s %-20s %12s %12s %12s   <= %s\n' "$r" "heap in use (MiB)" "$(mib "$bh")" "$(mib "${peak_h[i]}")" "$(mib "${after_h[i]:-0}")" "$(mib "$hl")"
	printf '%-6s %-20s %12s %12s %12s   <= %s\n' "$r" "RSS (MiB)" "$(mib "$br")" "$(mib "${peak_r[i]}")" "$(mib "${after_r[i]:-0}")" "$(mib "$rl")"
	[[ -n ${after_g[i]:-} ]] || { fail+=("$r: no metrics after the run"); continue; }
	((after_g[i] <= base_g[i] + g_margin)) || fail+=("$r: ${after_g[i]} goroutines ${waited}s after the clients left (baseline ${base_g[i]}, peak ${peak_g[i]})")
	((after_h[i] <= hl)) || fail+=("$r: heap in use $(mib "${after_h[i]}") MiB ${waited}s after the clients left (baseline $(mib "$bh"), limit $(mib "$hl"))")
	((after_r[i] <= rl)) || fail+=("$r: RSS $(mib "${after_r[i]}") MiB ${waited}s after the clients left (baseline $(mib "$br"), limit $(mib "$rl"))")
done
echo "(during: the highest of the samples taken every 5 s while the load tool ran; $(wc -l <"$samples") samples in $samples)"

if ((${#fail[@]})); then
	printf '\nSOAK FAILED:\n' >&2
	printf '  - %s\n' "${fail[@]}" >&2
	exit 1
fi
printf '\nsoak passed: loss 0; goroutines, heap in use and RSS back within the margins %ss after the clients left\n' "$waited"
