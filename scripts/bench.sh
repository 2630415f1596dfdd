#!/usr/bin/env bash
# Side-by-side benchmarks: starts a private Redis and each system under test
# fresh, runs the same iocluster-bench scenario against it, and alternates the
# systems round by round (A B A B ...), then prints medians and ratios.
#
#   scripts/bench.sh SCENARIO [--rounds N] [--systems iocluster,node] [-- SCENARIO ARGS]
#   scripts/bench.sh fanout --rounds 3 -- --subscribers 2000 --rate 20 --seconds 10
#   scripts/bench.sh echo -- --clients 100 --seconds 10
#   scripts/bench.sh idle -- --connections 10000 --seconds 5
#
# Systems (2 server processes each, one Redis):
#   iocluster  2 io-nodes + 2 iocluster-bench-app app-nodes (release build)
#   node       2 Node Socket.IO 4 processes with @socket.io/redis-adapter
#   socketioxide  2 socketioxide processes with socketioxide-redis (bench/peers/socketioxide)
#   raw        1 process, no Redis (bench/peers/raw): the ceiling
#
# Per run it records the bench JSON, the CPU time of every server process and
# of Redis (from /proc/<pid>/stat), and for `idle` their RSS with the
# connections held. Results go to target/bench/<scenario>-<time>.jsonl and a
# summary table to stdout. Never run it next to other heavy work: ratios from
# one run are what to compare, not absolute figures.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/lib.sh

scenario=${1:?usage: scripts/bench.sh SCENARIO [--rounds N] [--systems a,b] [-- ARGS]}
shift
rounds=3 systems=iocluster,node
while [ $# -gt 0 ]; do
  case "$1" in
    --rounds) rounds=$2; shift 2 ;;
    --systems) systems=$2; shift 2 ;;
    --) shift; break ;;
    *) echo "unknown option $1" >&2; exit 2 ;;
  esac
done
bench_args=("$@")

ensure_redis
ensure_node
npm_install bench/peers/node
step "cargo build --release (io-node, bench app-node, load generator)"
cargo build --release -p iocluster-io-node -p iocluster-bench-app -p iocluster-bench
for peer in raw socketioxide; do
  if [[ ",$systems," == *,$peer,* ]]; then
    cargo build --release --manifest-path "bench/peers/$peer/Cargo.toml" --target-dir target
  fi
done
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true

out_dir=target/bench
mkdir -p "$out_dir"
out="$out_dir/$scenario-$(date +%Y%m%d-%H%M%S).jsonl"
run_dir=$(mktemp -d -t iocluster-bench.XXXXXX)
pids=()
stop_all() {
  for pid in "${pids[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
  for pid in "${pids[@]}"; do
    for _ in $(seq 1 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.05; done
    kill -KILL "$pid" 2>/dev/null || true
  done
  pids=()
}
trap 'stop_all; rm -rf "$run_dir"' EXIT

# utime + stime of a process, in clock ticks.
cpu_ticks() { awk '{print $14 + $15}' "/proc/$1/stat" 2>/dev/null || echo 0; }
rss_kib() { awk '/^VmRSS/ {print $2}' "/proc/$1/status" 2>/dev/null || echo 0; }
sum_over() { local f=$1 total=0; shift; for pid in "$@"; do total=$((total + $($f "$pid"))); done; echo "$total"; }

# Waits for a server to listen; shows its log if it died or never did.
wait_server() {
  local pid=$1 port=$2 log=$3
  for _ in $(seq 1 600); do
    (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null && return 0
    if ! kill -0 "$pid" 2>/dev/null; then
      echo "server $pid for port $port exited:" >&2; cat "$log" >&2; exit 1
    fi
    sleep 0.05
  done
  echo "nothing listens on port $port after 30 s:" >&2; cat "$log" >&2; exit 1
}

start_system() {
  local system=$1 redis_port
  redis_port=$(free_port)
  redis-server --port "$redis_port" --bind 127.0.0.1 --save "" --appendonly no --dir "$run_dir" \
    >"$run_dir/redis.log" 2>&1 &
  pids+=($!); redis_pid=$!
  wait_port "$redis_port"
  local redis="redis://127.0.0.1:$redis_port" p1 p2
  p1=$(free_port); p2=$(free_port)
  while [ "$p2" = "$p1" ]; do p2=$(free_port); done
  servers=()
  case "$system" in
    iocluster)
      for i in 1 2; do
        RUST_LOG=warn target/release/iocluster-bench-app --redis "$redis" --app-id "app-$i" \
          >"$run_dir/app-$i.log" 2>&1 &
        pids+=($!); servers+=($!)
      done
      for port in "$p1" "$p2"; do
        RUST_LOG=warn target/release/iocluster-io-node --redis "$redis" --listen "127.0.0.1:$port" \
          --max-packets-per-second 100000 --max-connections 1000000 >"$run_dir/io-$port.log" 2>&1 &
        pids+=($!); servers+=($!)
        wait_server $! "$port" "$run_dir/io-$port.log"
      done
      ;;
    raw)
      target/release/iocluster-bench-peer-raw "127.0.0.1:$p1" >"$run_dir/raw.log" 2>&1 &
      pids+=($!); servers+=($!)
      wait_server $! "$p1" "$run_dir/raw.log"
      urls="http://127.0.0.1:$p1"
      sleep 1
      return
      ;;
    socketioxide)
      for port in "$p1" "$p2"; do
        target/release/iocluster-bench-peer-socketioxide "$port" "$redis" >"$run_dir/sx-$port.log" 2>&1 &
        pids+=($!); servers+=($!)
        wait_server $! "$port" "$run_dir/sx-$port.log"
      done
      ;;
    node)
      for port in "$p1" "$p2"; do
        node bench/peers/node/server.mjs "$port" "$redis" >"$run_dir/node-$port.log" 2>&1 &
        pids+=($!); servers+=($!)
        wait_server $! "$port" "$run_dir/node-$port.log"
      done
      ;;
    *) echo "unknown system $system" >&2; exit 2 ;;
  esac
  sleep 1
  urls="http://127.0.0.1:$p1,http://127.0.0.1:$p2"
}

IFS=, read -r -a system_list <<<"$systems"
for round in $(seq 1 "$rounds"); do
  for system in "${system_list[@]}"; do
    step "round $round/$rounds: $scenario on $system"
    start_system "$system"
    all=("${servers[@]}" "$redis_pid")
    rss_before=$(sum_over rss_kib "${servers[@]}")
    cpu_before=$(sum_over cpu_ticks "${all[@]}")
    target/release/iocluster-bench --urls "$urls" --plot "$out_dir/$scenario-$system-$round.svg" \
      "$scenario" "${bench_args[@]}" >"$run_dir/result.json" 2>"$run_dir/bench.err" &
    bench_pid=$!
    rss_held=0
    if [ "$scenario" = idle ]; then
      until grep -q IDLE-READY "$run_dir/bench.err" 2>/dev/null || ! kill -0 "$bench_pid" 2>/dev/null; do sleep 0.2; done
      sleep 1
      rss_held=$(sum_over rss_kib "${servers[@]}")
    fi
    wait "$bench_pid" || { cat "$run_dir/bench.err" >&2; exit 1; }
    cpu_after=$(sum_over cpu_ticks "${all[@]}")
    python3 - "$system" "$round" "$run_dir/result.json" "$((cpu_after - cpu_before))" \
      "$(getconf CLK_TCK)" "$rss_before" "$rss_held" >>"$out" <<'PY'
import json, sys
system, round_, path, ticks, hz, rss_before, rss_held = sys.argv[1:]
result = json.load(open(path))
line = {"system": system, "round": int(round_), "result": result,
        "server_cpu_seconds": int(ticks) / int(hz),
        "rss_kib_before": int(rss_before), "rss_kib_held": int(rss_held)}
print(json.dumps(line))
PY
    tail -n 1 "$out" | python3 -c 'import json,sys; l=json.load(sys.stdin); r=l["result"]; print({k: r[k] for k in r if k in ("delivered","lost","deliveries_per_s","round_trips_per_s","connected","seconds_until_all")}, "latency", r.get("latency_ms") or r.get("connect_ms"), "cpu", round(l["server_cpu_seconds"],2))'
    stop_all
  done
done

step "summary ($out)"
python3 - "$out" <<'PY'
import json, statistics, sys
rows = [json.loads(l) for l in open(sys.argv[1])]
by = {}
for r in rows:
    by.setdefault(r["system"], []).append(r)
def med(values):
    values = [v for v in values if v is not None]
    return statistics.median(values) if values else None
def metrics(runs):
    out = {}
    res = [r["result"] for r in runs]
    for key in ("deliveries_per_s", "round_trips_per_s", "delivered", "lost", "disconnected", "connected", "failed", "seconds_until_all"):
        if any(key in x for x in res):
            out[key] = med([x.get(key) for x in res])
    lat = [x.get("latency_ms") or x.get("connect_ms") for x in res]
    for q in ("p50", "p99", "p999", "max"):
        if any(l for l in lat):
            out[f"latency_{q}_ms"] = med([l[q] for l in lat if l])
    delivered = [x.get("delivered") or x.get("round_trips") for x in res]
    if all(delivered):
        out["server_cpu_us_per_delivery"] = med([r["server_cpu_seconds"] * 1e6 / d for r, d in zip(runs, delivered)])
    if res[0].get("scenario") == "idle":
        out["kib_per_connection"] = med([(r["rss_kib_held"] - r["rss_kib_before"]) / max(1, r["result"]["connected"]) for r in runs])
    return out
table = {s: metrics(runs) for s, runs in by.items()}
keys = sorted({k for m in table.values() for k in m})
systems = list(table)
print("| metric | " + " | ".join(systems) + (" | " + " | ".join(f"{s}/iocluster" for s in systems if s != "iocluster") if "iocluster" in table else "") + " |")
print("|---" * (1 + len(systems) + (len(systems) - 1 if "iocluster" in table else 0)) + "|")
for k in keys:
    vals = [table[s].get(k) for s in systems]
    cells = ["" if v is None else f"{v:.3g}" if isinstance(v, float) else str(v) for v in vals]
    ratios = []
    if "iocluster" in table:
        base = table["iocluster"].get(k)
        for s in systems:
            if s == "iocluster":
                continue
            v = table[s].get(k)
            ratios.append(f"{v / base:.2f}" if base and v is not None else "")
    print(f"| {k} | " + " | ".join(cells) + (" | " + " | ".join(ratios) if ratios else "") + " |")
PY
