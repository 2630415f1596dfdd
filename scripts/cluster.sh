#!/usr/bin/env bash
# Starts a local iocluster: a private redis-server, N io-nodes and M app-nodes,
# and stops exactly what it started.
#
#   scripts/cluster.sh start [options]   start in the background, print what runs
#   scripts/cluster.sh run   [options]   the same in the foreground; Ctrl-C stops it
#   scripts/cluster.sh stop  [--dir DIR] stop what `start` started (and nothing else)
#   scripts/cluster.sh status [--dir DIR]
#
# Options:
#   --io N            io-nodes (default 2), ports BASE, BASE+1, ...
#   --apps M          app-nodes (default 2)
#   --app BIN         app-node binary (default iocluster-example-chat)
#   --base-port P     first io-node port (default 3001); ops listeners from P+100
#   --frontend        also start iocluster-frontend: pages on P+90, admin API on
#                     P+91 (key: $IOCLUSTER_API_KEY, else generated, in DIR/cluster.env),
#                     its ops listener on P+92
#   --recovery MS     connection state recovery window for the app-nodes
#                     (default 120000: a client that loses its io-node comes
#                     back to another with its socket, rooms and missed
#                     messages; 0 turns it off, as in the SDK's default)
#   --release         build and run the release binaries
#   --no-build        do not run cargo build first
#   --dir DIR         state and logs (default target/cluster)
#
# The state file DIR/pids lists every process with the binary it must be, so
# `stop` never signals a process that merely inherited a recycled pid.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/lib.sh

command=${1:-}
[ $# -gt 0 ] && shift
io=2 apps=2 app=iocluster-example-chat base=3001 profile=debug build=1 dir=target/cluster frontend=0 recovery=120000
while [ $# -gt 0 ]; do
  case "$1" in
    --io) io=$2; shift 2 ;;
    --apps) apps=$2; shift 2 ;;
    --app) app=$2; shift 2 ;;
    --base-port) base=$2; shift 2 ;;
    --recovery) recovery=$2; shift 2 ;;
    --release) profile=release; shift ;;
    --frontend) frontend=1; shift ;;
    --no-build) build=0; shift ;;
    --dir) dir=$2; shift 2 ;;
    -h|--help) sed -n '2,20p' "$0"; exit 0 ;;
    *) echo "unknown option: $1 (see --help)" >&2; exit 2 ;;
  esac
done
state="$dir/pids"

# `pid binary` lines; a process counts as ours only if it still runs `binary`.
ours() {
  local pid=$1 binary=$2
  [ -r "/proc/$pid/cmdline" ] && tr '\0' ' ' <"/proc/$pid/cmdline" | grep -q -- "$binary"
}

stop_cluster() {
  if [ ! -f "$state" ]; then
    echo "nothing to stop ($state is missing)"
    return 0
  fi
  local pid binary pids=()
  # io-nodes first (they write their clients' disconnect events), Redis last.
  while read -r pid binary; do
    if ours "$pid" "$binary"; then
      kill -TERM "$pid" 2>/dev/null || true
      pids+=("$pid")
    fi
  done < <(tac "$state")
  for pid in "${pids[@]}"; do
    for _ in $(seq 1 300); do
      kill -0 "$pid" 2>/dev/null || break
      sleep 0.05
    done
    kill -KILL "$pid" 2>/dev/null || true
  done
  rm -f "$state"
  echo "stopped ${#pids[@]} processes"
}

status_cluster() {
  [ -f "$state" ] || { echo "not running"; return 1; }
  local pid binary
  while read -r pid binary; do
    if ours "$pid" "$binary"; then echo "up    $pid $binary"; else echo "gone  $pid $binary"; fi
  done <"$state"
}

start_cluster() {
  if [ -f "$state" ]; then
    echo "$state exists: stop the running cluster first (scripts/cluster.sh stop --dir $dir)" >&2
    exit 1
  fi
  ensure_redis
  if [ "$build" = 1 ]; then
    local flags=()
    [ "$profile" = release ] && flags+=(--release)
    step "cargo build ${flags[*]:-} --workspace --bins"
    cargo build "${flags[@]}" --workspace --bins
  fi
  local bin="target/$profile"
  local binaries=(iocluster-io-node "$app")
  [ "$frontend" = 1 ] && binaries+=(iocluster-frontend)
  for binary in "${binaries[@]}"; do
    [ -x "$bin/$binary" ] || { echo "$bin/$binary is missing: build it first" >&2; exit 1; }
  done
  mkdir -p "$dir"
  : >"$state"

  local redis_port
  redis_port=$(free_port)
  redis-server --port "$redis_port" --bind 127.0.0.1 --save "" --appendonly no --dir "$dir" \
    >"$dir/redis.log" 2>&1 &
  echo "$! redis-server" >>"$state"
  wait_port "$redis_port"
  local redis="redis://127.0.0.1:$redis_port"

  for i in $(seq 1 "$apps"); do
    IOCLUSTER_RECOVERY_MS=$recovery \
      "$bin/$app" --redis "$redis" --app-id "app-$i" --ops-listen "127.0.0.1:$((base + 200 + i - 1))" \
      >"$dir/app-$i.log" 2>&1 &
    echo "$! $app" >>"$state"
  done
  local ports=()
  for i in $(seq 1 "$io"); do
    local port=$((base + i - 1))
    # The frontend's pages (the chat demo) poll the io-nodes from its origin.
    local cors=()
    [ "$frontend" = 1 ] && cors=(--cors-origins "http://127.0.0.1:$((base + 90))")
    "$bin/iocluster-io-node" --redis "$redis" --node-id "io-$i" --listen "127.0.0.1:$port" \
      --ops-listen "127.0.0.1:$((base + 100 + i - 1))" "${cors[@]}" >"$dir/io-$i.log" 2>&1 &
    echo "$! iocluster-io-node" >>"$state"
    ports+=("$port")
  done
  for port in "${ports[@]}"; do wait_port "$port"; done
  {
    echo "REDIS_URL=$redis"
    echo "IO_URLS=$(printf 'http://127.0.0.1:%s,' "${ports[@]}" | sed 's/,$//')"
  } >"$dir/cluster.env"
  if [ "$frontend" = 1 ]; then
    local key=${IOCLUSTER_API_KEY:-$(head -c 24 /dev/urandom | base64 | tr -d '/+=')}
    IOCLUSTER_API_KEY=$key "$bin/iocluster-frontend" --redis "$redis" \
      --listen "127.0.0.1:$((base + 90))" --admin-listen "127.0.0.1:$((base + 91))" \
      --ops-listen "127.0.0.1:$((base + 92))" >"$dir/frontend.log" 2>&1 &
    echo "$! iocluster-frontend" >>"$state"
    wait_port $((base + 90))
    {
      echo "FRONTEND_URL=http://127.0.0.1:$((base + 90))"
      echo "ADMIN_URL=http://127.0.0.1:$((base + 91))"
      echo "IOCLUSTER_API_KEY=$key"
    } >>"$dir/cluster.env"
  fi

  step "iocluster is up ($dir)"
  echo "  redis      $redis"
  for i in $(seq 1 "$io"); do
    echo "  io-$i       http://127.0.0.1:${ports[$((i - 1))]}   ops http://127.0.0.1:$((base + 100 + i - 1))/metrics   log $dir/io-$i.log"
  done
  for i in $(seq 1 "$apps"); do
    echo "  app-$i      $app   ops http://127.0.0.1:$((base + 200 + i - 1))/metrics   log $dir/app-$i.log"
  done
  if [ "$frontend" = 1 ]; then
    echo "  frontend   http://127.0.0.1:$((base + 90))   (chat page, /config.json)   ops http://127.0.0.1:$((base + 92))/metrics   log $dir/frontend.log"
    echo "  admin      http://127.0.0.1:$((base + 91))   (dashboard, /docs; API key in $dir/cluster.env)"
  fi
  echo "  state      $state (scripts/cluster.sh stop --dir $dir)"
}

case "$command" in
  start) start_cluster ;;
  run)
    start_cluster
    trap 'trap - INT TERM; stop_cluster; exit 0' INT TERM
    echo "Ctrl-C stops the cluster."
    while status_cluster >/dev/null; do sleep 1; done
    ;;
  stop) stop_cluster ;;
  status) status_cluster ;;
  *) sed -n '2,20p' "$0"; exit 2 ;;
esac
