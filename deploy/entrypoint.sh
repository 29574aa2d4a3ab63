#!/bin/sh
# The container's entrypoint.
#
#   (no arguments)           check the configuration, wait for Postgres and Redis, migrate,
#                            then `session-sync serve --host 0.0.0.0 --port $PORT`
#   serve [options]          the same, with your options (--host/--port default as above)
#   migrate                  wait for the database, then `session-sync migrate`
#   doctor | any command     run as given: `docker run IMAGE doctor`, `docker run IMAGE sh`
#
# WAIT_TIMEOUT (seconds, default 60) bounds the wait for the database and Redis.
# Several replicas may start at once: `session-sync migrate` holds a Postgres advisory lock.
set -eu

# Checks the configuration (with --check) and waits until the database (and with --redis,
# Redis) named by the SESSION_SYNC_* settings accept connections.
# Exit status 2: a configuration the server would refuse; 1: still unreachable at the deadline.
PREFLIGHT=$(cat <<'PY'
import asyncio, sys, time
from urllib.parse import urlsplit

from pydantic import ValidationError

from server.config import ConfigError, Settings

def say(message):
    print(f"session-sync entrypoint: {message}", file=sys.stderr, flush=True)

timeout = float(sys.argv[1])
try:
    settings = Settings()
    if "--check" in sys.argv:
        settings.check()
except (ConfigError, ValidationError) as exc:
    say(f"configuration error: {exc}")
    sys.exit(2)

async def database():
    from sqlalchemy import text
    from server.db.engine import create_engine
    engine = create_engine(settings)
    try:
        async with asyncio.timeout(5), engine.connect() as connection:
            await connection.execute(text("SELECT 1"))
    finally:
        await engine.dispose()

async def redis():
    from redis.asyncio import Redis
    client = Redis.from_url(settings.redis_url, socket_connect_timeout=5, socket_timeout=5)
    try:
        await client.ping()
    finally:
        await client.aclose()

def where(url):
    parts = urlsplit(url)  # host and port only: never print a password
    return f"{parts.hostname}:{parts.port}" if parts.port else str(parts.hostname)

targets = []
if settings.database_url is not None:
    targets.append(("the database", where(settings.database_url), database))
if settings.redis_url is not None and "--redis" in sys.argv:
    targets.append(("Redis", where(settings.redis_url), redis))
deadline = time.monotonic() + timeout
for name, address, probe in targets:
    next_report = 0.0
    while True:
        try:
            asyncio.run(probe())
            break
        except Exception as exc:
            detail = (str(exc).strip().splitlines() or [""])[0]
            error = f"{type(exc).__name__}: {detail}"
            now = time.monotonic()
            if now >= deadline:
                say(f"gave up: {name} at {address} is still unreachable after {timeout:g} s "
                    f"(last error: {error})")
                sys.exit(1)
            if now >= next_report:
                say(f"waiting for {name} at {address} ({error})")
                next_report = now + 10
            time.sleep(1)
    say(f"{name} at {address} accepts connections")
PY
)

# Runs a step in the background and waits for it, so that a TERM arriving meanwhile (from
# `docker stop`, with this shell as PID 1) stops the step at once instead of being ignored.
child=
run() {
    "$@" &
    child=$!
    wait "$child"
}
stop() {
    if [ -n "$child" ]; then kill -TERM "$child" 2>/dev/null || true; fi
    exit "$1"
}
trap 'stop 143' TERM
trap 'stop 130' INT

[ "$#" -gt 0 ] || set -- serve
case "$1" in
    serve | migrate | doctor) set -- session-sync "$@" ;;
esac

if [ "$1" = session-sync ] && [ "${2-}" = serve ]; then
    host_given=no
    port_given=no
    for arg in "$@"; do
        case "$arg" in
            --host | --host=*) host_given=yes ;;
            --port | --port=*) port_given=yes ;;
        esac
    done
    # In a container, 127.0.0.1 (serve's own default) would be unreachable from outside.
    [ "$host_given" = yes ] || set -- "$@" --host 0.0.0.0
    [ "$port_given" = yes ] || set -- "$@" --port "${PORT:-8000}"
    run python -c "$PREFLIGHT" "${WAIT_TIMEOUT:-60}" --check --redis
    run session-sync migrate
elif [ "$1" = session-sync ] && [ "${2-}" = migrate ]; then
    run python -c "$PREFLIGHT" "${WAIT_TIMEOUT:-60}"
fi

trap - TERM INT
exec "$@"
