#!/usr/bin/env bash
# Make sure the Postgres and Redis the tests use answer, starting local ones if need be.
#
#   services given by URL (TEST_POSTGRES_URL / TEST_REDIS_URL) -> they must answer;
#   else services on localhost's standard ports                -> used as they are;
#   else installed but stopped                                 -> started here;
#   else a Docker engine                                       -> tests start containers;
#   else                                                       -> fail, saying what is missing.
set -uo pipefail

host_port() {  # URL default_port -> "host port"
  python3 - "$1" "$2" <<'PY'
import sys
from urllib.parse import urlsplit
u = urlsplit(sys.argv[1])
print(u.hostname or "127.0.0.1", u.port or sys.argv[2])
PY
}

answers() {  # host port
  timeout 2 bash -c "exec 3<>/dev/tcp/$1/$2" 2>/dev/null
}

wait_for() {  # name host port
  for _ in $(seq 1 30); do answers "$2" "$3" && return 0; sleep 1; done
  return 1
}

start_postgres() {
  command -v pg_ctlcluster >/dev/null || return 1
  local version
  version=$(ls /etc/postgresql 2>/dev/null | sort -V | tail -1)
  [ -n "$version" ] || return 1
  pg_ctlcluster --skip-systemctl-redirect "$version" main start
}

start_redis() {
  command -v redis-server >/dev/null || return 1
  mkdir -p /var/lib/redis /var/log/redis 2>/dev/null || true
  redis-server --daemonize yes --bind 127.0.0.1 -::1 --port 6379 --save "" --appendonly no \
    --dir /var/lib/redis --logfile /var/log/redis/ci.log
}

docker_runs() { command -v docker >/dev/null && docker info >/dev/null 2>&1; }

ensure() {  # name url-variable default-url default-port start-function
  local name=$1 given=${!2:-} url port host
  url=${given:-$3}
  read -r host port < <(host_port "$url" "$4")
  answers "$host" "$port" && { echo "services: $name answers at $host:$port"; return 0; }
  if [ -n "$given" ]; then
    echo "services: $name given by $2 does not answer at $host:$port" >&2; return 1
  fi
  echo "services: $name is not running on $host:$port; trying to start it"
  if $5 && wait_for "$name" "$host" "$port"; then
    echo "services: started $name"; return 0
  fi
  if docker_runs; then
    echo "services: $name will run in a container (testcontainers)"; return 0
  fi
  echo "services: MISSING $name: nothing answers on $host:$port, none is installed to start," \
       "and no Docker engine runs. Install it (apt-get install -y $6) or set $2." >&2
  return 1
}

status=0
ensure Postgres TEST_POSTGRES_URL postgresql://postgres@127.0.0.1:5432/postgres 5432 \
  start_postgres postgresql || status=1
ensure Redis TEST_REDIS_URL redis://127.0.0.1:6379/9 6379 start_redis redis-server || status=1
exit $status
