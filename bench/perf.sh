#!/usr/bin/env bash
# bench/perf.sh SECONDS [OUT]: samples every CPU with perf for SECONDS (run it while the
# load tool runs a shape) and prints the CPU split by process and the heaviest Evo
# functions (cumulative). The replicas need symbols: make bench with an unstripped
# binary, e.g.  go build -o /tmp/evo-sym . && EVO_BIN=/tmp/evo-sym make bench
# The VM has no hardware counters: perf samples the cpu-clock software event.
# EVO_COMM: the replicas' process name prefix (default evo; the binary's file name).
set -euo pipefail
secs=${1:?usage: bench/perf.sh SECONDS [OUT]}
out=${2:-/tmp/evo-perf.data}
perf record -q -e cpu-clock -F 499 -a -g -o "$out" -- sleep "$secs" 2>/dev/null
echo "== CPU by process ($out)"
perf report -i "$out" --stdio --sort comm -g none 2>/dev/null | grep -v '^#' | grep '%' | head -12
comm=$(perf report -i "$out" --stdio --sort comm -g none 2>/dev/null | grep -v '^#' | awk -v bin="${EVO_COMM:-evo}" '$3 ~ "^" bin {print $3; exit}')
if [[ -n $comm ]]; then
	echo "== heaviest functions of $comm (children included; % of all samples)"
	perf report -i "$out" --stdio --comm "$comm" --children --sort sym -g none 2>/dev/null | grep -v '^#' | grep '%' |
		grep -E 'evotodo|fasthttp|fiber|pgx|redis|json|ed25519|jwx|runtime\.(gcBgMarkWorker|mallocgc)|syscall' | head -40
fi
