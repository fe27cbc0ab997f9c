#!/usr/bin/env bash
# Evo's production topology without Docker: two replicas on loopback ports
# behind nginx, against the local PostgreSQL and Redis. nginx runs the same
# config template as docker-compose.yml (deploy/nginx/evo.conf.template).
#
#   deploy/cluster.sh start          build, start what is not running, wait for /ready
#   deploy/cluster.sh stop           SIGTERM everything, wait, SIGKILL what is left
#   deploy/cluster.sh status         what runs (exit 0 only if everything does)
#   deploy/cluster.sh token EMAIL    print a dev token for EMAIL (creates the user)
#
# Settings (environment):
#   CLUSTER_DIR           run dir: binary, pid files, logs, nginx prefix, the
#                         shared DATA_DIR (default: .cluster in the repo)
#   EVO_PORT_1, EVO_PORT_2, NGINX_PORT   default 8001, 8002, 8080 (127.0.0.1)
#   CLUSTER_DATABASE_URL  default: database evo_cluster on CLUSTER_ADMIN_URL,
#                         created if missing
#   CLUSTER_ADMIN_URL     default postgres://postgres@127.0.0.1:5432/postgres?sslmode=disable
#   CLUSTER_REDIS_URL     default redis://127.0.0.1:6379/0
#   EVO_BIN               run this binary instead of building one
#   CLUSTER_STOP_TIMEOUT  seconds between SIGTERM and SIGKILL on stop (default 20)
# Every other Evo variable (SHUTDOWN_TIMEOUT, WS_*, LLM_*, ...) is passed on
# to the replicas as it is; CORS_ORIGINS defaults to http://localhost:3000
# plus the balancer's URL. While any part of a cluster runs, `start` keeps
# the ports and URLs it was started with (saved in $CLUSTER_DIR/cluster.env).
# SC2016: '${VAR}' and '$$' in single quotes are meant literally.
# SC1090: the sourced file is $CLUSTER_DIR/cluster.env, written below.
# shellcheck disable=SC2016,SC1090
set -euo pipefail

repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
template=$repo/deploy/nginx/evo.conf.template
dir=$(realpath -m "${CLUSTER_DIR:-$repo/.cluster}") # absolute, symlinks resolved (as /proc shows cwd)
settings=$dir/cluster.env
ngx=$dir/nginx
components=(evo1 evo2 nginx)

log() { printf 'cluster: %s\n' "$*" >&2; }
die() { log "$*"; exit 1; }

# alive PID: the process exists and is not a zombie (an orphan whose exit
# nobody reaped still answers kill -0 where PID 1 does not reap).
alive() {
	local st
	read -r st 2>/dev/null <"/proc/$1/stat" || return 1
	st=${st##*) }
	[[ ${st%% *} != Z ]]
}

# pid_of NAME prints the pid of a running component, or fails. A pid file
# whose process is gone, or is no longer ours, is stale.
pid_of() {
	local f=$dir/$1.pid pid
	[[ -s $f ]] || return 1
	pid=$(<"$f")
	[[ $pid =~ ^[0-9]+$ ]] && alive "$pid" || return 1
	# Ours: nginx's title names our prefix, a replica was started from our run dir.
	if [[ $1 == nginx ]]; then
		tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null | grep -qF -- "$ngx" || return 1
	else
		[[ $(readlink "/proc/$pid/cwd" 2>/dev/null) == "$dir" ]] || return 1
	fi
	echo "$pid"
}

running() { pid_of "$1" >/dev/null; }

# port_busy PORT: something accepts connections on 127.0.0.1:PORT.
port_busy() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

# http_status PORT PATH prints the HTTP status of GET PATH (000: no answer).
http_status() {
	local line
	if ! { exec 3<>"/dev/tcp/127.0.0.1/$1"; } 2>/dev/null; then
		echo 000
		return
	fi
	printf 'GET %s HTTP/1.0\r\nHost: localhost\r\n\r\n' "$2" >&3
	IFS=' ' read -r -t 2 _ line _ <&3 || line=000
	exec 3<&- 3>&-
	echo "${line:-000}"
}

# wait_ready NAME PORT PATH SECONDS: until GET PATH answers 200, the
# component still running.
wait_ready() {
	local name=$1 port=$2 path=$3 deadline=$((SECONDS + $4))
	until [[ $(http_status "$port" "$path") == 200 ]]; do
		if ! running "$name"; then
			log "$name exited; the end of its log:"
			tail -n 20 "$dir/$name.log" >&2 || true
			exit 1
		fi
		((SECONDS < deadline)) || die "$name: no 200 from 127.0.0.1:$port$path within $4s (log: $dir/$name.log)"
		sleep 0.1
	done
}

# load_settings: the saved ones while any component runs, else from the
# environment (and saved for the next start, stop and token).
load_settings() {
	local c
	for c in "${components[@]}"; do
		if running "$c" && [[ -s $settings ]]; then
			. "$settings"
			return
		fi
	done
	EVO_PORT_1=${EVO_PORT_1:-8001}
	EVO_PORT_2=${EVO_PORT_2:-8002}
	NGINX_PORT=${NGINX_PORT:-8080}
	CLUSTER_REDIS_URL=${CLUSTER_REDIS_URL:-redis://127.0.0.1:6379/0}
	CLUSTER_ADMIN_URL=${CLUSTER_ADMIN_URL:-postgres://postgres@127.0.0.1:5432/postgres?sslmode=disable}
	if [[ -z ${CLUSTER_DATABASE_URL:-} ]]; then
		ensure_database evo_cluster
		CLUSTER_DATABASE_URL=${CLUSTER_ADMIN_URL%%\?*}
		CLUSTER_DATABASE_URL=${CLUSTER_DATABASE_URL%/*}/evo_cluster
		[[ $CLUSTER_ADMIN_URL == *\?* ]] && CLUSTER_DATABASE_URL+="?${CLUSTER_ADMIN_URL#*\?}"
	fi
	local v
	for v in CLUSTER_DATABASE_URL CLUSTER_REDIS_URL; do
		[[ ${!v} != *\'* ]] || die "$v must not contain a single quote"
	done
	{
		echo "# written by deploy/cluster.sh start; sourced by stop, status and token"
		echo "EVO_PORT_1='$EVO_PORT_1'"
		echo "EVO_PORT_2='$EVO_PORT_2'"
		echo "NGINX_PORT='$NGINX_PORT'"
		echo "CLUSTER_DATABASE_URL='$CLUSTER_DATABASE_URL'"
		echo "CLUSTER_REDIS_URL='$CLUSTER_REDIS_URL'"
		echo "# what every replica (and \`evo token\`) gets"
		echo "DATABASE_URL='$CLUSTER_DATABASE_URL'"
		echo "REDIS_URL='$CLUSTER_REDIS_URL'"
		echo "DATA_DIR='$dir/data'"
		echo "PUBLIC_URL='http://localhost:$NGINX_PORT'"
	} >"$settings"
}

ensure_database() {
	command -v psql >/dev/null || die "psql not found: set CLUSTER_DATABASE_URL, or install postgresql-client"
	local have
	have=$(psql "$CLUSTER_ADMIN_URL" -XtAqc "SELECT 1 FROM pg_database WHERE datname = '$1'") ||
		die "cannot reach PostgreSQL at $CLUSTER_ADMIN_URL (CLUSTER_ADMIN_URL)"
	if [[ $have != 1 ]]; then
		log "creating database $1"
		psql "$CLUSTER_ADMIN_URL" -XqAc "CREATE DATABASE $1" >/dev/null
	fi
}

nginx_bin() {
	command -v nginx 2>/dev/null || { [[ -x /usr/sbin/nginx ]] && echo /usr/sbin/nginx; } ||
		die "nginx is not installed: apt-get install -y nginx-light"
}

# render_nginx writes nginx's main config and the rendered template. The
# template is rendered like the nginx image does: envsubst with exactly its
# variables, so nginx's own $variables stay as they are.
render_nginx() {
	mkdir -p "$ngx/conf" "$ngx/logs" "$ngx/tmp"
	local NGINX_LISTEN=127.0.0.1:$NGINX_PORT
	local EVO_UPSTREAM_1=127.0.0.1:$EVO_PORT_1 EVO_UPSTREAM_2=127.0.0.1:$EVO_PORT_2
	local NGINX_ACCESS_LOG=$ngx/logs/access.log
	local vars='${NGINX_LISTEN} ${EVO_UPSTREAM_1} ${EVO_UPSTREAM_2} ${NGINX_ACCESS_LOG}'
	if command -v envsubst >/dev/null; then
		NGINX_LISTEN=$NGINX_LISTEN EVO_UPSTREAM_1=$EVO_UPSTREAM_1 EVO_UPSTREAM_2=$EVO_UPSTREAM_2 \
			NGINX_ACCESS_LOG=$NGINX_ACCESS_LOG envsubst "$vars" <"$template" >"$ngx/conf/evo.conf"
	else # the same substitution with sed (values are host:port and a path)
		sed -e "s|\${NGINX_LISTEN}|$NGINX_LISTEN|g" -e "s|\${EVO_UPSTREAM_1}|$EVO_UPSTREAM_1|g" \
			-e "s|\${EVO_UPSTREAM_2}|$EVO_UPSTREAM_2|g" -e "s|\${NGINX_ACCESS_LOG}|$NGINX_ACCESS_LOG|g" \
			"$template" >"$ngx/conf/evo.conf"
	fi
	if grep -q '\${[A-Z_0-9]*}' "$ngx/conf/evo.conf"; then
		die "unrendered variable in $ngx/conf/evo.conf: $(grep -o '\${[A-Z_0-9]*}' "$ngx/conf/evo.conf" | head -1)"
	fi
	# One worker: requests are spread strictly round robin (the cluster test
	# relies on consecutive sockets landing on different replicas). Workers
	# run as the invoking user (root in CI: the run dir may be private).
	{
		echo "# written by deploy/cluster.sh; the Evo part is evo.conf, rendered from deploy/nginx/evo.conf.template"
		echo "daemon off;"
		echo "worker_processes 1;"
		[[ $(id -u) == 0 ]] && echo "user root;"
		echo "pid $ngx/nginx.pid;"
		echo "error_log $ngx/logs/error.log notice;"
		echo "events { worker_connections 1024; }"
		echo "http {"
		echo "    default_type application/octet-stream;"
		for t in client_body proxy fastcgi uwsgi scgi; do
			echo "    ${t}_temp_path $ngx/tmp/$t;"
		done
		echo "    include $ngx/conf/evo.conf;"
		echo "}"
	} >"$ngx/conf/nginx.conf"
}

# spawn NAME CMD...: runs CMD in its own session from the run dir, detached
# from our stdio (its log is $dir/NAME.log); the process writes its own pid.
spawn() {
	local name=$1
	shift
	rm -f "$dir/$name.pid"
	echo "=== $(date -u +%FT%TZ) cluster.sh: starting $name" >>"$dir/$name.log"
	(
		cd "$dir"
		exec setsid bash -c 'echo $$ >"$0"; exec "$@"' "$dir/$name.pid" "$@" \
			</dev/null >>"$dir/$name.log" 2>&1
	) &
	local _
	for _ in $(seq 50); do
		[[ -s $dir/$name.pid ]] && return
		sleep 0.02
	done
	die "$name did not start"
}

start_replica() {
	local name=$1 port=$2
	if running "$name"; then
		log "$name already running (pid $(pid_of "$name"), port $port)"
		return
	fi
	port_busy "$port" && die "port $port is in use: choose another (EVO_PORT_${name#evo})"
	rm -f "$dir/$name.pid"
	(
		set -a
		. "$settings"
		set +a
		export HOST=127.0.0.1 PORT=$port
		# A development cluster: loopback ports, and (without BETTER_AUTH_URL)
		# the dev issuer, which PostgreSQL and Redis make opt-in.
		export DEV_AUTH=${DEV_AUTH:-true}
		# The console served through nginx opens its socket from PUBLIC_URL.
		export CORS_ORIGINS=${CORS_ORIGINS:-http://localhost:3000,$PUBLIC_URL}
		spawn "$name" "$bin" serve
	)
}

build() {
	if [[ -n ${EVO_BIN:-} ]]; then
		[[ -x $EVO_BIN ]] || die "EVO_BIN=$EVO_BIN is not an executable"
		bin=$EVO_BIN
		return
	fi
	log "building $dir/evo (make build)"
	# Build beside the running binary and rename: replicas still running keep theirs.
	make -s -C "$repo" build BIN="$dir/evo.new" >&2
	mv -f "$dir/evo.new" "$dir/evo"
	bin=$dir/evo
}

cmd_start() {
	local t0=$SECONDS
	# A missing nginx fails first, before anything (the database) is created.
	running nginx || nginx_bin >/dev/null
	mkdir -p "$dir"
	load_settings
	if running evo1 && running evo2 && running nginx; then
		log "already running"
	else
		# Ports first: a busy one fails fast, before the build.
		local c port var
		for c in evo1:$EVO_PORT_1:EVO_PORT_1 evo2:$EVO_PORT_2:EVO_PORT_2 nginx:$NGINX_PORT:NGINX_PORT; do
			IFS=: read -r c port var <<<"$c"
			if ! running "$c" && port_busy "$port"; then
				die "port $port is in use: choose another ($var)"
			fi
		done
		build
		mkdir -p "$dir/data"
		# evo1 first: it creates the shared dev signing key (and runs the
		# migrations) before evo2 reads it.
		start_replica evo1 "$EVO_PORT_1"
		wait_ready evo1 "$EVO_PORT_1" /health 60
		start_replica evo2 "$EVO_PORT_2"
		wait_ready evo1 "$EVO_PORT_1" /ready 60
		wait_ready evo2 "$EVO_PORT_2" /ready 60
		if running nginx; then
			log "nginx already running (pid $(pid_of nginx), port $NGINX_PORT)"
		else
			port_busy "$NGINX_PORT" && die "port $NGINX_PORT is in use: choose another (NGINX_PORT)"
			render_nginx
			local nginx
			nginx=$(nginx_bin)
			"$nginx" -t -q -p "$ngx/" -c "$ngx/conf/nginx.conf" -e "$ngx/logs/error.log" ||
				die "nginx rejected $ngx/conf/nginx.conf (see $ngx/logs/error.log)"
			rm -f "$dir/nginx.pid"
			spawn nginx "$nginx" -p "$ngx/" -c "$ngx/conf/nginx.conf" -e "$ngx/logs/error.log"
		fi
	fi
	wait_ready nginx "$NGINX_PORT" /ready 30
	log "ready in $((SECONDS - t0))s: http://localhost:$NGINX_PORT (replicas 127.0.0.1:$EVO_PORT_1, 127.0.0.1:$EVO_PORT_2; logs in $dir)"
	if [[ -n ${BETTER_AUTH_URL:-} || ${ENVIRONMENT:-} == production ]]; then
		log "tokens come from Better Auth (BETTER_AUTH_URL); the dev issuer is off"
		return
	fi
	local b=${EVO_BIN:-$dir/evo}
	cat >&2 <<EOF
cluster: a dev token (valid on both replicas):
  DATA_DIR='$dir/data' PUBLIC_URL='http://localhost:$NGINX_PORT' DATABASE_URL='$CLUSTER_DATABASE_URL' $b token --email a@example.com
or: $repo/deploy/cluster.sh token a@example.com
  TOKEN=\$($repo/deploy/cluster.sh token a@example.com)
  curl -H "Authorization: Bearer \$TOKEN" localhost:$NGINX_PORT/api/todos
  wscat -c ws://localhost:$NGINX_PORT/ws -H "Authorization: Bearer \$TOKEN"
EOF
}

# stop_pids SIG TIMEOUT PID...: signal, wait up to TIMEOUT seconds, SIGKILL
# whatever is left (with its children: nginx workers).
stop_pids() {
	local sig=$1 timeout=$2 pid deadline kids=() more
	shift 2
	for pid in "$@"; do
		read -r -a more <<<"$(ps -o pid= --ppid "$pid" 2>/dev/null | tr '\n' ' ')"
		kids+=("${more[@]}")
		kill "-$sig" "$pid" 2>/dev/null || true
	done
	deadline=$((SECONDS + timeout))
	for pid in "$@"; do
		while alive "$pid" && ((SECONDS < deadline)); do sleep 0.1; done
		if alive "$pid"; then
			log "pid $pid still running after ${timeout}s: SIGKILL"
			kill -KILL "$pid" 2>/dev/null || true
		fi
	done
	for pid in "${kids[@]}"; do
		if alive "$pid"; then kill -KILL "$pid" 2>/dev/null || true; fi
	done
}

cmd_stop() {
	local timeout=${CLUSTER_STOP_TIMEOUT:-20} pids=() c pid
	# Replicas first: their sockets get 1001 (going away) while nginx still
	# relays it; then nginx (SIGTERM: fast shutdown).
	for c in evo1 evo2; do
		if pid=$(pid_of "$c"); then pids+=("$pid"); fi
	done
	if ((${#pids[@]})); then
		log "stopping replicas (pids ${pids[*]})"
		stop_pids TERM "$timeout" "${pids[@]}"
	fi
	if pid=$(pid_of nginx); then
		log "stopping nginx (pid $pid)"
		stop_pids TERM "$timeout" "$pid"
	fi
	for c in "${components[@]}"; do rm -f "$dir/$c.pid"; done
	rm -f "$ngx/nginx.pid"
	log "stopped"
}

cmd_status() {
	local all=0 c pid port
	[[ -s $settings ]] && . "$settings"
	for c in "${components[@]}"; do
		case $c in
		evo1) port=${EVO_PORT_1:-?} ;; evo2) port=${EVO_PORT_2:-?} ;; nginx) port=${NGINX_PORT:-?} ;;
		esac
		if pid=$(pid_of "$c"); then
			echo "$c running pid $pid port $port ready $(http_status "$port" /ready)"
		else
			echo "$c stopped"
			all=1
		fi
	done
	return $all
}

cmd_token() {
	[[ -n ${1:-} ]] || die "usage: $0 token EMAIL"
	[[ -s $settings ]] || die "no cluster in $dir: run $0 start"
	local b=${EVO_BIN:-$dir/evo}
	[[ -x $b ]] || die "no binary at $b: run $0 start"
	(
		set -a
		. "$settings"
		set +a
		cd "$dir"
		exec "$b" token --email "$1"
	)
}

case ${1:-} in
start) cmd_start ;;
stop) cmd_stop ;;
status) cmd_status ;;
token) cmd_token "${2:-}" ;;
*)
	echo "usage: $0 start|stop|status|token EMAIL" >&2
	exit 2
	;;
esac
