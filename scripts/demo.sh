#!/usr/bin/env bash
# Runs the demo cluster: a private Redis, 2 io-nodes, 2 chat app-nodes
# (examples/chat) and the frontend (chat page, dashboard), then a scripted
# chat between two users connected to different io-nodes. The cluster stays up until Ctrl-C; only what this script
# started is stopped (scripts/cluster.sh does the starting and stopping).
#
#   BASE_PORT=3001      io-nodes on BASE_PORT and +1, chat page on +90, dashboard on +91
#   DEMO_CLIENT=0       skip the scripted chat
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/lib.sh

ensure_redis
ensure_node
npm_install tests/js
npm_install frontend

base=${BASE_PORT:-3001}
run_dir=$(mktemp -d -t iocluster-demo.XXXXXX)
stop() {
  trap - INT TERM EXIT
  step "stopping the demo cluster"
  bash scripts/cluster.sh stop --dir "$run_dir"
  echo "logs kept in $run_dir"
}
trap stop INT TERM EXIT

bash scripts/cluster.sh start --io 2 --apps 2 --app iocluster-example-chat --frontend \
  --base-port "$base" --dir "$run_dir"
sleep 1

if [ "${DEMO_CLIENT:-1}" != 0 ]; then
  step "two users chat through different io-nodes"
  node scripts/demo-client.mjs "http://127.0.0.1:$base" "http://127.0.0.1:$((base + 1))"
fi

source "$run_dir/cluster.env"
echo
echo "Chat in a browser:  $FRONTEND_URL  (open it in two windows)"
echo "Dashboard:          $ADMIN_URL  (API key: $IOCLUSTER_API_KEY)"
echo "Or connect your own socket.io-client (auth: {nickname}) to either io-node. Ctrl-C stops the cluster."
while bash scripts/cluster.sh status --dir "$run_dir" >/dev/null; do sleep 1; done
