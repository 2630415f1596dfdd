#!/usr/bin/env bash
# Side-by-side benchmarks: starts a private Redis and each system under test
# fresh, runs the same iocluster-bench scenario against it, and alternates the
# systems round by round (A B A B ...), then prints medians and ratios.
#
#   scripts/bench.sh SCENARIO [--rounds N] [--systems iocluster,node] [-- SCENARIO ARGS]
#   scripts/bench.sh fanout --rounds 3 -- --subscribers 2000 --rate 20 --seconds 10
#   scripts/bench.sh echo -- --clients 100 --seconds 10
#   scripts/bench.sh polling-echo --systems iocluster -- --clients 100 --affinity off
#   scripts/bench.sh burst --systems iocluster,node,socketioxide -- --clients 1 --events 10000
#   scripts/bench.sh idle -- --connections 10000 --seconds 5
#   scripts/bench.sh idle --systems iocluster --processes 6 --generators 6 --sources 8 \
#     -- --connections 100000 --seconds 10
#
# Options: --rounds N (default 3); --systems a,b (default iocluster,node);
# --processes N: server processes per system (io-nodes for iocluster; default
# 2; raw is always one); --generators K: split an idle run over K load
# generator processes (a process holds at most its open-file limit of
# connections); --sources M: clients connect from 127.0.0.1 .. 127.0.0.M, one
# ephemeral port range each (about 28 000 connections per address); --threads
# T: run every server process of iocluster and socketioxide (the multi-process
# tokio systems) with T runtime threads (TOKIO_WORKER_THREADS). The default is
# the machine's CPUs divided among those processes (at least one): how an
# operator runs several processes on one machine (docs/DEPLOY.md), where one
# thread per CPU in each would oversubscribe the cores. --threads 0 leaves
# tokio's default, one per CPU in every process.
#
# polling-echo is echo over HTTP long-polling; its --affinity on (default)
# sends all of a client's requests to one server, --affinity off each
# request to the next server in turn (no sticky sessions): iocluster only.
# raw has no long-polling.
#
# Systems (2 server processes each unless --processes, one Redis):
#   iocluster  2 io-nodes + 2 iocluster-bench-app app-nodes (release build)
#   node       2 Node Socket.IO 4 processes with @socket.io/redis-adapter
#   socketioxide  2 socketioxide processes with socketioxide-redis (bench/peers/socketioxide)
#   raw        1 process, no Redis (bench/peers/raw): the ceiling
#   iocluster-base  as iocluster, with the binaries in $IOCLUSTER_BASE_DIR
#              (another build's target/release): a change against its base
#   iocluster-rc  as iocluster, on a local Redis Cluster of three masters (no
#              replicas) instead of one Redis (`redis+cluster://`); the JSON
#              line has each master's CPU seconds and command counts
#              (`redis_nodes`), so the spread over the masters shows
#
# Per run it records the bench JSON, the CPU time of every server process and
# of Redis (from /proc/<pid>/stat) over the whole run and, for fanout, rooms,
# echo and burst, from the start of the load (setup excluded), and for `idle` their
# RSS with the connections held. Results go to target/bench/<scenario>-<time>.jsonl and a
# summary table to stdout. Never run it next to other heavy work: ratios from
# one run are what to compare, not absolute figures.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/lib.sh

scenario=${1:?usage: scripts/bench.sh SCENARIO [--rounds N] [--systems a,b] [-- ARGS]}
shift
rounds=3 systems=iocluster,node processes=2 generators=1 sources=0 threads=
while [ $# -gt 0 ]; do
  case "$1" in
    --rounds) rounds=$2; shift 2 ;;
    --systems) systems=$2; shift 2 ;;
    --processes) processes=$2; shift 2 ;;
    --generators) generators=$2; shift 2 ;;
    --sources) sources=$2; shift 2 ;;
    --threads) threads=$2; shift 2 ;;
    --) shift; break ;;
    *) echo "unknown option $1" >&2; exit 2 ;;
  esac
done
bench_args=("$@")
if [ "$generators" -gt 1 ] && [ "$scenario" != idle ]; then
  echo "--generators applies to idle runs only (other results cannot be merged)" >&2; exit 2
fi
if [ "$scenario" = polling-echo ]; then
  # Which systems can serve it: raw has no long-polling, and without
  # affinity a session's requests reach every server, which only iocluster
  # answers.
  affinity=on prev=""
  for a in "${bench_args[@]}"; do
    if [ "$prev" = --affinity ]; then affinity=$a; fi
    case "$a" in --affinity=*) affinity=${a#--affinity=} ;; esac
    prev=$a
  done
  IFS=, read -r -a wanted <<<"$systems"
  for system in "${wanted[@]}"; do
    case "$system" in
      raw) echo "polling-echo: raw has no long-polling" >&2; exit 2 ;;
      iocluster|iocluster-base|iocluster-rc) ;;
      *) if [ "$affinity" != on ]; then
           echo "polling-echo --affinity $affinity: $system needs sticky sessions; only iocluster answers a session on any server" >&2
           exit 2
         fi ;;
    esac
  done
fi
if [ -z "$threads" ]; then
  threads=$(( $(nproc) / processes ))
  [ "$threads" -ge 1 ] || threads=1
fi
# `env` with nothing to set for tokio's default (--threads 0).
thread_env=()
[ "$threads" -gt 0 ] && thread_env=("TOKIO_WORKER_THREADS=$threads")
source_args=()
if [ "$sources" -gt 0 ]; then
  list=$(seq -s, -f '127.0.0.%g' 1 "$sources")
  source_args=(--source-addresses "$list")
fi

ensure_redis
if [[ ",$systems," == *,node,* ]]; then
  ensure_node
  npm_install bench/peers/node
fi
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

# Starts a Redis Cluster of three masters (no replicas) on free ports:
# sets redis_ports, redis_pids and the URL in redis_url.
start_redis_cluster() {
  local port bus i addresses=()
  for i in 1 2 3; do
    port=$(free_port); bus=$(free_port)
    mkdir -p "$run_dir/rc-$port"
    redis-server --port "$port" --bind 127.0.0.1 --save "" --appendonly no \
      --dir "$run_dir/rc-$port" --cluster-enabled yes --cluster-port "$bus" \
      --cluster-config-file "$run_dir/rc-$port/nodes.conf" --cluster-node-timeout 2000 \
      >"$run_dir/redis-$port.log" 2>&1 &
    pids+=($!); redis_pids+=($!); redis_ports+=("$port")
    addresses+=("127.0.0.1:$port")
  done
  for port in "${redis_ports[@]}"; do wait_port "$port"; done
  redis-cli --cluster create "${addresses[@]}" --cluster-replicas 0 --cluster-yes >"$run_dir/rc-create.log" 2>&1
  for port in "${redis_ports[@]}"; do
    for _ in $(seq 1 200); do
      redis-cli -p "$port" cluster info 2>/dev/null | grep -q cluster_state:ok && break
      sleep 0.05
    done
  done
  redis_url="redis+cluster://$(IFS=,; echo "${addresses[*]}")"
}

start_system() {
  local system=$1
  redis_ports=() redis_pids=()
  if [ "$system" = iocluster-rc ]; then
    start_redis_cluster
  else
    redis_port=$(free_port)
    redis-server --port "$redis_port" --bind 127.0.0.1 --save "" --appendonly no --dir "$run_dir" \
      >"$run_dir/redis.log" 2>&1 &
    pids+=($!); redis_pids+=($!); redis_ports+=("$redis_port")
    wait_port "$redis_port"
    redis_url="redis://127.0.0.1:$redis_port"
  fi
  local redis=$redis_url ports=() port
  while [ "${#ports[@]}" -lt "$processes" ]; do
    port=$(free_port)
    [[ " ${ports[*]} " == *" $port "* ]] || ports+=("$port")
  done
  servers=() ops_ports=() app_pids=()
  case "$system" in
    iocluster|iocluster-base|iocluster-rc)
      # iocluster-base: the same, from the binaries in $IOCLUSTER_BASE_DIR
      # (another build's target/release), to measure a change against the
      # build before it in one run.
      local bin=target/release
      if [ "$system" = iocluster-base ]; then
        bin=${IOCLUSTER_BASE_DIR:?iocluster-base needs IOCLUSTER_BASE_DIR (a target/release of another build)}
      fi
      for i in 1 2; do
        env "${thread_env[@]}" RUST_LOG=warn "$bin/iocluster-bench-app" --redis "$redis" --app-id "app-$i" \
          >"$run_dir/app-$i.log" 2>&1 &
        pids+=($!); servers+=($!); app_pids+=($!)
      done
      for port in "${ports[@]}"; do
        ops_ports+=("$(free_port)")
        env "${thread_env[@]}" RUST_LOG=warn "$bin/iocluster-io-node" --redis "$redis" --listen "127.0.0.1:$port" \
          --ops-listen "127.0.0.1:${ops_ports[-1]}" \
          --max-packets-per-second 100000 --max-connections 1000000 \
          --max-unjoined 1000000 --max-unjoined-per-address 0 >"$run_dir/io-$port.log" 2>&1 &
        pids+=($!); servers+=($!)
        wait_server $! "$port" "$run_dir/io-$port.log"
      done
      ;;
    raw)
      port=${ports[0]}
      target/release/iocluster-bench-peer-raw "127.0.0.1:$port" >"$run_dir/raw.log" 2>&1 &
      pids+=($!); servers+=($!)
      wait_server $! "$port" "$run_dir/raw.log"
      urls="http://127.0.0.1:$port"
      sleep 1
      return
      ;;
    socketioxide)
      for port in "${ports[@]}"; do
        env "${thread_env[@]}" target/release/iocluster-bench-peer-socketioxide "$port" "$redis" >"$run_dir/sx-$port.log" 2>&1 &
        pids+=($!); servers+=($!)
        wait_server $! "$port" "$run_dir/sx-$port.log"
      done
      ;;
    node)
      for port in "${ports[@]}"; do
        node bench/peers/node/server.mjs "$port" "$redis" >"$run_dir/node-$port.log" 2>&1 &
        pids+=($!); servers+=($!)
        wait_server $! "$port" "$run_dir/node-$port.log"
      done
      ;;
    *) echo "unknown system $system" >&2; exit 2 ;;
  esac
  sleep 1
  urls=$(printf 'http://127.0.0.1:%s,' "${ports[@]}")
  urls=${urls%,}
}

# Waits until the load generator wrote MARKER to its stderr FILE (or exited).
wait_marker() {
  local marker=$1 file=$2 pid=$3
  until grep -q "$marker" "$file" 2>/dev/null || ! kill -0 "$pid" 2>/dev/null; do sleep 0.05; done
}

# Runs the scenario with $generators load generators (idle only when more
# than one: each holds its share of --connections), waits for them, and
# merges their results into $run_dir/result.json.
run_generators() {
  local system=$1 round=$2 g n a prev args plot pids_gen=()
  for g in $(seq 1 "$generators"); do
    args=("${bench_args[@]}") plot="$out_dir/$scenario-$system-$round.svg"
    [ "$generators" = 1 ] || plot="$out_dir/$scenario-$system-$round-$g.svg"
    if [ "$generators" -gt 1 ]; then
      # This generator's share of --connections (default 1000), the rest of
      # the arguments as given.
      n=1000 args=() prev=""
      for a in "${bench_args[@]}"; do
        if [ "$prev" = --connections ]; then n=$a
        elif [ "$a" != --connections ]; then args+=("$a")
        fi
        prev=$a
      done
      args+=(--connections "$(( n / generators + (g <= n % generators ? 1 : 0) ))")
    fi
    RUST_LIB_BACKTRACE=0 target/release/iocluster-bench --urls "$urls" "${source_args[@]}" \
      --plot "$plot" \
      "$scenario" "${args[@]}" >"$run_dir/result-$g.json" 2>"$run_dir/bench-$g.err" &
    pids_gen+=($!)
  done
  load_ticks=""
  if [ "$scenario" = fanout ] || [ "$scenario" = rooms ] || [ "$scenario" = echo ] || [ "$scenario" = polling-echo ] || [ "$scenario" = burst ]; then
    # CPU from the moment the load starts: setup (connects, joins) excluded.
    wait_marker LOAD-START "$run_dir/bench-1.err" "${pids_gen[0]}"
    load_ticks=$(sum_over cpu_ticks "${all[@]}")
  fi
  rss_held=0
  if [ "$scenario" = idle ]; then
    for g in $(seq 1 "$generators"); do
      wait_marker IDLE-READY "$run_dir/bench-$g.err" "${pids_gen[$((g - 1))]}"
    done
    sleep 1
    rss_held=$(sum_over rss_kib "${servers[@]}")
  fi
  for g in $(seq 1 "$generators"); do
    wait "${pids_gen[$((g - 1))]}" || { cat "$run_dir/bench-$g.err" >&2; return 1; }
  done
  python3 - "$run_dir" "$generators" >"$run_dir/result.json" <<'PY'
import json, sys
run_dir, k = sys.argv[1], int(sys.argv[2])
parts = [json.load(open(f"{run_dir}/result-{g}.json")) for g in range(1, k + 1)]
if k == 1:
    print(json.dumps(parts[0]))
else:
    merged = dict(parts[0])
    for key in ("connections", "connected", "failed", "still_connected"):
        merged[key] = sum(p[key] for p in parts)
    merged["setup_seconds"] = max(p["setup_seconds"] for p in parts)
    merged["generators"] = k
    print(json.dumps(merged))
PY
}

IFS=, read -r -a system_list <<<"$systems"
failed_runs=()
for round in $(seq 1 "$rounds"); do
  for system in "${system_list[@]}"; do
    step "round $round/$rounds: $scenario on $system"
    start_system "$system"
    all=("${servers[@]}" "${redis_pids[@]}")
    redis_before=()
    for pid in "${redis_pids[@]}"; do redis_before+=("$(cpu_ticks "$pid")"); done
    rss_before=$(sum_over rss_kib "${servers[@]}")
    cpu_before=$(sum_over cpu_ticks "${all[@]}")
    apps_before=$(sum_over cpu_ticks "${app_pids[@]}")
    for port in "${redis_ports[@]}"; do redis-cli -p "$port" config resetstat >/dev/null; done
    if ! run_generators "$system" "$round"; then
      # One system failing a run (a peer that never answered a join, say)
      # does not throw away the others' runs; the summary names it.
      echo "!! $scenario on $system, round $round: the load generator failed (above); no result" >&2
      failed_runs+=("$system/$round")
      stop_all
      continue
    fi
    cpu_after=$(sum_over cpu_ticks "${all[@]}")
    apps_ticks=$(( $(sum_over cpu_ticks "${app_pids[@]}") - apps_before ))
    : >"$run_dir/commandstats"
    redis_nodes=()
    for i in "${!redis_ports[@]}"; do
      redis-cli -p "${redis_ports[$i]}" info commandstats >"$run_dir/commandstats-$i"
      cat "$run_dir/commandstats-$i" >>"$run_dir/commandstats"
      redis_nodes+=("${redis_ports[$i]}:$(( $(cpu_ticks "${redis_pids[$i]}") - ${redis_before[$i]} )):$run_dir/commandstats-$i")
    done
    load_cpu=""
    [ -z "$load_ticks" ] || load_cpu=$((cpu_after - load_ticks))
    APP_TICKS=$apps_ticks python3 - "$system" "$round" "$run_dir/result.json" "$((cpu_after - cpu_before))" \
      "$(getconf CLK_TCK)" "$rss_before" "$rss_held" "$run_dir/commandstats" "$load_cpu" \
      "$(IFS=' '; echo "${redis_nodes[*]}")" "${ops_ports[@]}" >>"$out" <<'PY'
import json, os, re, sys, urllib.request
system, round_, path, ticks, hz, rss_before, rss_held, stats, load_ticks, nodes = sys.argv[1:11]
result = json.load(open(path))
line = {"system": system, "round": int(round_), "result": result,
        "server_cpu_seconds": int(ticks) / int(hz),
        "rss_kib_before": int(rss_before), "rss_kib_held": int(rss_held)}
if load_ticks:
    # From the start of the load to the end: setup excluded.
    line["server_cpu_seconds_load"] = int(load_ticks) / int(hz)
# Redis PUBLISH and SPUBLISH calls over the whole run, setup (joins)
# included (summed over the masters of a Redis Cluster, whose room
# channels are sharded).
line["redis_publishes"] = sum(int(c) for c in re.findall(r"cmdstat_s?publish:calls=(\d+)", open(stats).read()))
# Each Redis server: CPU seconds over the whole run, and its command calls.
line["redis_nodes"] = []
for entry in nodes.split():
    port, node_ticks, node_stats = entry.split(":", 2)
    calls = {name: int(n) for name, n in re.findall(r"cmdstat_(\w+):calls=(\d+)", open(node_stats).read())}
    line["redis_nodes"].append({"port": int(port), "cpu_seconds": int(node_ticks) / int(hz),
                                "commands": sum(calls.values()), "publish": calls.get("publish", 0),
                                "spublish": calls.get("spublish", 0),
                                "evalsha": calls.get("evalsha", 0) + calls.get("eval", 0)})
# What each io-node received from its Redis subscription (iocluster only).
received = []
for port in sys.argv[11:]:
    text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
    def counter(name):
        m = re.search(rf"^{name}(?:{{[^}}]*}})? (\S+)$", text, re.M)
        return int(float(m.group(1))) if m else 0
    received.append({"messages": counter("iocluster_pubsub_messages_total"),
                     "bytes": counter("iocluster_pubsub_bytes_total")})
if received:
    line["io_nodes_received"] = received
    # iocluster's app-nodes over the whole run; its io-nodes are the rest
    # of server_cpu_seconds once the Redis servers' are taken out.
    line["app_nodes_cpu_seconds"] = int(os.environ["APP_TICKS"]) / int(hz)
print(json.dumps(line))
PY
    tail -n 1 "$out" | python3 -c 'import json,sys; l=json.load(sys.stdin); r=l["result"]; print({k: r[k] for k in r if k in ("affinity","delivered","lost","errors","deliveries_per_s","round_trips_per_s","connected","seconds_until_all","answered","out_of_order","acks_per_s","slowest_client_seconds")}, "latency", r.get("latency_ms") or r.get("connect_ms"), "cpu", round(l["server_cpu_seconds"],2))'
    stop_all
  done
done

if [ ! -s "$out" ]; then
  echo "no run gave a result: ${failed_runs[*]}" >&2
  exit 1
fi
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
    for key in ("sent", "deliveries_per_s", "round_trips_per_s", "http_requests_per_s", "delivered", "lost", "errors", "disconnected", "publishers_disconnected", "connected", "failed", "seconds_until_all", "acks_per_s", "out_of_order", "wrong", "slowest_client_seconds"):
        if any(key in x for x in res):
            out[key] = med([x.get(key) for x in res])
    lat = [x.get("latency_ms") or x.get("connect_ms") for x in res]
    for q in ("p50", "p99", "p999", "max"):
        if any(l for l in lat):
            out[f"latency_{q}_ms"] = med([l[q] for l in lat if l])
    delivered = [x.get("delivered") or x.get("round_trips") or x.get("answered") for x in res]
    if all(delivered):
        out["server_cpu_us_per_delivery"] = med([r["server_cpu_seconds"] * 1e6 / d for r, d in zip(runs, delivered)])
        if all("server_cpu_seconds_load" in r for r in runs):
            out["server_cpu_us_per_delivery_under_load"] = med([r["server_cpu_seconds_load"] * 1e6 / d for r, d in zip(runs, delivered)])
        # iocluster split by process kind (whole runs, setup included).
        if all("app_nodes_cpu_seconds" in r for r in runs):
            redis = [sum(n["cpu_seconds"] for n in r["redis_nodes"]) for r in runs]
            out["cpu_us_per_delivery_app_nodes"] = med([r["app_nodes_cpu_seconds"] * 1e6 / d for r, d in zip(runs, delivered)])
            out["cpu_us_per_delivery_redis"] = med([x * 1e6 / d for x, d in zip(redis, delivered)])
            out["cpu_us_per_delivery_io_nodes"] = med([(r["server_cpu_seconds"] - r["app_nodes_cpu_seconds"] - x) * 1e6 / d for r, x, d in zip(runs, redis, delivered)])
    sent = [x.get("sent") for x in res]
    if all(sent):
        out["redis_publishes_per_message"] = med([r["redis_publishes"] / s for r, s in zip(runs, sent)])
    if all(r.get("io_nodes_received") for r in runs):
        for i in range(len(runs[0]["io_nodes_received"])):
            out[f"io_node_{i + 1}_received_kib"] = med([r["io_nodes_received"][i]["bytes"] / 1024 for r in runs])
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
if [ "${#failed_runs[@]}" -gt 0 ]; then
  echo "runs without a result: ${failed_runs[*]}" >&2
  exit 1
fi
