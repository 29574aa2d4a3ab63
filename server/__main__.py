"""The `session-sync` command: serve, migrate, doctor."""

from __future__ import annotations

import argparse
import contextlib
import gc
import sys
from collections.abc import Sequence

from pydantic import ValidationError

from server.config import ConfigError, Settings


def _serve(settings: Settings, args: argparse.Namespace) -> int:
    import uvicorn

    from server.app import create_app
    from server.db.migrate import ensure_schema
    from server.serve import uvicorn_config

    settings.check()
    ensure_schema(settings)
    app = create_app(settings)
    # Everything built so far lives as long as the process: keep the collector from walking
    # it again and again. Full collections otherwise stopped the event loop for 40-90 ms
    # (bench/tools/gc_server.py), which decided the p99 of every benchmark.
    gc.collect()
    gc.freeze()
    gc.set_threshold(50_000, 50, 100)
    server = uvicorn.Server(uvicorn_config(app, args.host, args.port))
    with contextlib.suppress(KeyboardInterrupt):  # uvicorn re-raises the signal it stopped on
        server.run()
    return 0 if server.started else 3  # 3: uvicorn's exit code for a failed start-up


def _migrate(settings: Settings, _args: argparse.Namespace) -> int:
    from server.db.migrate import upgrade

    upgrade(settings)
    print("database schema is up to date")
    return 0


def _doctor(settings: Settings, _args: argparse.Namespace) -> int:
    import asyncio

    from server.doctor import run_checks

    results = asyncio.run(run_checks(settings))
    width = max(len(name) for name, _, _ in results)
    for name, ok, detail in results:
        print(f"{'ok  ' if ok else 'FAIL'}  {name:<{width}}  {detail}")
    return 0 if all(ok for _, ok, _ in results) else 1


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="session-sync", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    serve = commands.add_parser("serve", help="run the HTTP and WebSocket server")
    serve.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1)")
    serve.add_argument("--port", type=int, default=8000, help="port to bind (default 8000)")
    serve.set_defaults(run=_serve)
    commands.add_parser("migrate", help="bring the database schema up to date").set_defaults(
        run=_migrate
    )
    commands.add_parser(
        "doctor", help="check configuration, database, Redis, SMTP and the XML libraries"
    ).set_defaults(run=_doctor)
    args = parser.parse_args(argv)
    try:
        settings = Settings()
        code: int = args.run(settings, args)
    except (ConfigError, ValidationError) as exc:
        print(f"session-sync: configuration error: {exc}", file=sys.stderr)
        return 2
    return code


if __name__ == "__main__":
    sys.exit(main())
