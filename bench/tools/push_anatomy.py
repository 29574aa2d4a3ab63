"""Where one push's time goes: the server app in this process (litestar's test client, real
Postgres and a private Redis), SQLAlchemy's cursor events counting the statements a push runs
and the time spent waiting on them. Not a benchmark; evidence for what to optimise.

    .venv/bin/python bench/tools/push_anatomy.py [--pushes 300] [--docs 1]

It pushes one update at a time over REST (POST /v1/docs/{id}/updates, JSON; the websocket's
push runs the same SyncService.push) and prints per push: wall time, time inside statements
(round trip + driver), the statements themselves, and the process's CPU.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import logging
import os
import statistics
import sys
import time
import uuid
from collections import Counter
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from common import RESULTS, Stack, use_uvloop
from sqlalchemy import event


async def run(args: argparse.Namespace) -> None:
    async with Stack("anatomy") as stack:
        for k, v in stack.env.items():
            if k.startswith("SESSION_SYNC_"):
                os.environ[k] = v
        from litestar.testing import AsyncTestClient

        from server.app import create_app

        app = create_app()
        logging.getLogger("httpx").setLevel(logging.WARNING)
        engine = app.state.engine.sync_engine
        seen: Counter[str] = Counter()
        in_db = [0.0]
        started: dict[int, float] = {}

        @event.listens_for(engine, "before_cursor_execute")
        def before(_c: Any, cursor: Any, statement: str, *_a: Any) -> None:
            started[id(cursor)] = time.perf_counter()
            seen[" ".join(statement.split())[:110]] += 1

        @event.listens_for(engine, "after_cursor_execute")
        def after(_c: Any, cursor: Any, *_a: Any) -> None:
            in_db[0] += time.perf_counter() - started.pop(id(cursor), time.perf_counter())

        @event.listens_for(engine, "commit")
        def commit(_c: Any) -> None:
            seen["COMMIT"] += 1

        @event.listens_for(engine, "begin")
        def begin(_c: Any) -> None:
            seen["BEGIN"] += 1

        async with AsyncTestClient(app) as client:
            addr = "anatomy@bench.test"
            await client.post("/v1/auth/email/start", json={"email": addr})
            code = await stack.mail.code(addr, 1)
            r = await client.post(
                "/v1/auth/email/verify", json={"email": addr, "code": code, "device_name": "a"}
            )
            tok = r.json()
            headers = {"authorization": f"Bearer {tok['access_token']}"}
            doc = (await client.post("/v1/docs", json={"kind": "canvas"}, headers=headers)).json()[
                "doc_id"
            ]
            payload = base64.b64encode(os.urandom(100)).decode()

            async def rest() -> None:
                body = {
                    "updates": [
                        {
                            "client_update_id": uuid.uuid4().hex,
                            "key_version": 1,
                            "ciphertext": payload,
                        }
                    ]
                }
                r = await client.post(f"/v1/docs/{doc}/updates", json=body, headers=headers)
                r.raise_for_status()

            lines = []
            for name, op in (("REST POST /updates", rest),):
                for _ in range(20):  # warm caches
                    await op()
                seen.clear()
                in_db[0] = 0.0
                walls, cpu0 = [], time.process_time()
                for _ in range(args.pushes):
                    t = time.perf_counter()
                    await op()
                    walls.append(time.perf_counter() - t)
                cpu = time.process_time() - cpu0
                n = args.pushes
                lines += [
                    f"{name}: {n} pushes, one at a time",
                    f"  wall per push      p50 {statistics.median(walls) * 1e3:.2f} ms, "
                    f"mean {statistics.mean(walls) * 1e3:.2f} ms",
                    f"  in statements      {in_db[0] / n * 1e3:.2f} ms per push "
                    "(round trip to Postgres + asyncpg + SQLAlchemy result handling)",
                    f"  process CPU        {cpu / n * 1e3:.2f} ms per push "
                    "(this process: app + test client)",
                    f"  statements per push ({sum(seen.values()) / n:.1f}):",
                ]
                lines += [f"    {c / n:4.1f} x {s}" for s, c in seen.most_common()]
                lines.append("")
            text = "\n".join(lines)
            print(text)
            RESULTS.mkdir(parents=True, exist_ok=True)
            (RESULTS / "push_anatomy.txt").write_text(text)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--pushes", type=int, default=300)
    args = ap.parse_args()
    use_uvloop()
    asyncio.run(run(args))


if __name__ == "__main__":
    main()
