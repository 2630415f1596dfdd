#!/usr/bin/env bash
# Runs the demo cluster: a private Redis, 2 io-nodes and 2 chat app-nodes
# (examples/chat), then a scripted chat between two users connected to
# different io-nodes. The cluster stays up until Ctrl-C; only what this script
# started is stopped.
#
#   IO_PORT_1 / IO_PORT_2   io-node ports (default 3001 / 3002)
#   DEMO_CLIENT=0           skip the scripted chat
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/lib.sh

ensure_redis
ensure_node
npm_install tests/js

step "cargo build --workspace --bins"
cargo build --workspace --bins

run_dir=$(mktemp -d -t iocluster-demo.XXXXXX)
pids=()
stop() {
  trap - INT TERM EXIT
  step "stopping the demo cluster"
  for pid in "${pids[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
  wait "${pids[@]}" 2>/dev/null || true
  echo "logs kept in $run_dir"
}
trap stop INT TERM EXIT

redis_port=$(free_port)
redis-server --port "$redis_port" --bind 127.0.0.1 --save "" --appendonly no --dir "$run_dir" \
  >"$run_dir/redis.log" 2>&1 &
pids+=($!)
wait_port "$redis_port"
redis="redis://127.0.0.1:$redis_port"

for i in 1 2; do
  target/debug/iocluster-example-chat --redis "$redis" --app-id "chat-$i" >"$run_dir/chat-$i.log" 2>&1 &
  pids+=($!)
done
ports=("${IO_PORT_1:-3001}" "${IO_PORT_2:-3002}")
for i in 0 1; do
  target/debug/iocluster-io-node --redis "$redis" --node-id "io-$((i + 1))" \
    --listen "127.0.0.1:${ports[$i]}" >"$run_dir/io-$((i + 1)).log" 2>&1 &
  pids+=($!)
done
for port in "${ports[@]}"; do wait_port "$port"; done
sleep 1

step "iocluster demo is up"
echo "  redis      $redis"
echo "  io-node 1  http://127.0.0.1:${ports[0]}   (Socket.IO v4, path /socket.io/)"
echo "  io-node 2  http://127.0.0.1:${ports[1]}"
echo "  app-nodes  2 x iocluster-example-chat (protocol in examples/chat/src/main.rs)"
echo "  logs       $run_dir"

if [ "${DEMO_CLIENT:-1}" != 0 ]; then
  step "two users chat through different io-nodes"
  node scripts/demo-client.mjs "http://127.0.0.1:${ports[0]}" "http://127.0.0.1:${ports[1]}"
fi

echo
echo "Connect your own socket.io-client (auth: {nickname}) to either io-node. Ctrl-C stops the cluster."
wait "${pids[@]}"
