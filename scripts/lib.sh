# Shared by scripts/test.sh and scripts/demo.sh: install what is missing on a
# bare Debian machine, and small helpers. Source it; it defines functions only.

step() { printf '\n==> %s\n' "$*"; }

# Runs a command as root (directly, or through sudo when there is one).
as_root() {
  if [ "$(id -u)" -eq 0 ]; then "$@"; elif command -v sudo >/dev/null; then sudo "$@"; else
    echo "need root to run: $*" >&2; return 1; fi
}

apt_updated=""
apt_install() {
  if [ -z "$apt_updated" ]; then
    as_root apt-get update -qq
    apt_updated=1
  fi
  DEBIAN_FRONTEND=noninteractive as_root apt-get install -y -qq "$@" >/dev/null
}

ensure_redis() {
  # redis-cli makes the tests' local Redis Cluster (redis-tools).
  if ! command -v redis-server >/dev/null || ! command -v redis-cli >/dev/null; then
    step "installing redis-server and redis-cli (Debian packages)"
    apt_install redis-server redis-tools
  fi
}

ensure_node() {
  if ! command -v node >/dev/null || ! command -v npm >/dev/null; then
    step "installing Node.js and npm (Debian packages)"
    apt_install nodejs npm
  fi
}

# Debian's Chromium, for the headless browser tests (driven by playwright-core).
ensure_chromium() {
  if [ ! -x /usr/bin/chromium ]; then
    step "installing chromium (Debian package) for the browser tests"
    apt_install chromium
  fi
}

# PHP's command line, to run the PHP example of the admin API.
ensure_php() {
  if ! command -v php >/dev/null; then
    step "installing php-cli (Debian package) for the admin API example"
    apt_install php-cli
  fi
}

# Python 3 (Debian's, when there is none) and a venv at tests/py/.venv with
# tests/py/requirements.txt (python-socketio's client, pinned), for the
# python client tests; the venv is remade only when the requirements change.
ensure_python() {
  local dir=tests/py
  if ! command -v python3 >/dev/null; then
    step "installing python3 and python3-venv (Debian packages)"
    apt_install python3 python3-venv
  fi
  if [ ! -x "$dir/.venv/bin/python" ] || ! cmp -s "$dir/requirements.txt" "$dir/.venv/.iocluster-requirements"; then
    step "python venv ($dir/.venv)"
    rm -rf "$dir/.venv"
    # Debian's python3 makes venvs only with python3-venv (ensurepip).
    if ! python3 -m venv "$dir/.venv" >/dev/null 2>&1; then
      rm -rf "$dir/.venv"
      apt_install python3-venv
      python3 -m venv "$dir/.venv"
    fi
    "$dir/.venv/bin/pip" install --quiet --disable-pip-version-check -r "$dir/requirements.txt"
    cp "$dir/requirements.txt" "$dir/.venv/.iocluster-requirements"
  fi
}

# npm ci in a folder, skipped when node_modules matches package-lock.json.
npm_install() {
  local dir=$1
  if [ ! -f "$dir/node_modules/.package-lock.json" ] || ! cmp -s "$dir/package-lock.json" "$dir/node_modules/.iocluster-lock"; then
    step "npm ci ($dir)"
    (cd "$dir" && npm ci --no-audit --no-fund --loglevel=error)
    cp "$dir/package-lock.json" "$dir/node_modules/.iocluster-lock"
  fi
}

# A TCP port on 127.0.0.1 that nothing listens on, below the kernel's
# ephemeral range (so outgoing connections, a load generator's thousands
# included, never hold it).
free_port() {
  local port low
  low=$(awk '{print $1}' /proc/sys/net/ipv4/ip_local_port_range 2>/dev/null || echo 32768)
  while :; do
    port=$(( 10000 + RANDOM % (low - 10000) ))
    if ! (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
      echo "$port"
      return
    fi
  done
}

# Waits until a TCP port on 127.0.0.1 accepts connections.
wait_port() {
  local port=$1 tries=0
  until (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; do
    tries=$((tries + 1))
    if [ "$tries" -gt 200 ]; then echo "nothing listens on port $port" >&2; return 1; fi
    sleep 0.05
  done
}
