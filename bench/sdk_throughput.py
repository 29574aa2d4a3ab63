"""The client SDK's throughput on a canvas of 10,000 edits: encrypt+push, then pull+decrypt on
a second device, against the same Yjs updates pushed and pulled in the clear through the bare
HTTP API in the same run (the peer: no encryption, no local store, no CRDT merge).

Each edit is one local Yjs transaction on the canvas (an agent added, moved or reconfigured),
recorded in the SDK's crash-safe local store. Two push cadences: everything in one push at the
end (one sealed batch), and a push after every 100 edits (100 batches), as a live app would.

    .venv/bin/python bench/sdk_throughput.py            # ~30 s
    .venv/bin/python bench/sdk_throughput.py --edits 50000
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import tempfile
import time
import uuid
from typing import Any

import httpx
import msgspec
import pycrdt
from common import Stack, auth, command_line, install_guards, machine, ratio, table, write_result

from client_sdk import AsyncClient, Session
from client_sdk.canvas import Canvas
from client_sdk.client import COMPACT

FAST_KDF = {"n": 2**14, "r": 8, "p": 1}  # the KDF runs once per device; not what we measure


async def sign_in(client: AsyncClient, stack: Stack, email: str, name: str) -> None:
    already = len(stack.mail.codes.get(email, []))
    await client.start_email_login(email)
    await client.verify_email(email, await stack.mail.code(email, already + 1), name)


def edit(canvas: Canvas, n: int, agents: list[str]) -> None:
    """One user edit: mostly moves, sometimes a new agent or a config change."""
    if n % 10 == 0 or not agents:
        agents.append(canvas.add_agent(f"agent {n}", n % 500, n % 300, {"model": "m"}))
    elif n % 10 == 5:
        canvas.configure(agents[n % len(agents)], temperature=(n % 100) / 100)
    else:
        canvas.move_agent(agents[n % len(agents)], n % 800, n % 600)


async def ours(url: str, stack: Stack, edits: int, every: int, tmp: str) -> dict[str, Any]:
    email = f"sdk-{uuid.uuid4().hex[:8]}@bench.test"
    a = AsyncClient(url, state_dir=f"{tmp}/a-{every}")
    await sign_in(a, stack, email, "a")
    session, code = await Session.open(a, kdf_cost=FAST_KDF)
    board = await session.new_canvas()
    agents: list[str] = []
    started = time.perf_counter()
    for n in range(edits):
        edit(board.canvas, n, agents)
        if (n + 1) % every == 0:
            await board.push()
    await board.push()
    push_s = time.perf_counter() - started
    head = (await a.get_doc(board.doc_id))["head"]

    b = AsyncClient(url, state_dir=f"{tmp}/b-{every}")
    await sign_in(b, stack, email, "b")
    other, _ = await Session.open(b, code)
    mirror = other.canvas(board.doc_id)
    started = time.perf_counter()
    await mirror.pull()
    pull_s = time.perf_counter() - started
    assert mirror.canvas.to_json() == board.canvas.to_json()
    for s, c in ((session, a), (other, b)):
        s.close()
        await c.aclose()
    return {"push_s": push_s, "pull_s": pull_s, "batches": head}


async def peer(url: str, stack: Stack, edits: int, every: int) -> dict[str, Any]:
    """The same edits as plain Yjs updates, merged per push, over the bare API."""
    email = f"raw-{uuid.uuid4().hex[:8]}@bench.test"
    async with httpx.AsyncClient(base_url=url, timeout=60) as http:
        r = await http.post("/v1/auth/email/start", json={"email": email})
        code = await stack.mail.code(email, 1)
        r = await http.post(
            "/v1/auth/email/verify", json={"email": email, "code": code, "device_name": "raw"}
        )
        token = r.json()["access_token"]
        doc = (await http.post("/v1/docs", json={"kind": "canvas"}, headers=auth(token))).json()
        doc_id = doc["doc_id"]
        canvas, pending = Canvas(), []
        agents: list[str] = []
        sub = canvas.doc.observe(lambda e: pending.append(e.update))

        async def push() -> None:
            if pending:
                merged = pycrdt.merge_updates(*pending)
                pending.clear()
                body = {
                    "updates": [
                        {
                            "client_update_id": uuid.uuid4().hex,
                            "key_version": 0,
                            "ciphertext": base64.b64encode(merged).decode(),
                        }
                    ]
                }
                (
                    await http.post(f"/v1/docs/{doc_id}/updates", json=body, headers=auth(token))
                ).raise_for_status()

        started = time.perf_counter()
        for n in range(edits):
            edit(canvas, n, agents)
            if (n + 1) % every == 0:
                await push()
        await push()
        push_s = time.perf_counter() - started
        del sub

        # Read as the SDK reads: the compact form, pages of 5,000 (docs/spec/api.md).
        started = time.perf_counter()
        other: pycrdt.Doc[Any] = pycrdt.Doc()
        after, more = 0, True
        while more:
            response = await http.get(
                f"/v1/docs/{doc_id}/updates",
                params={"after": after, "limit": 5000},
                headers=auth(token) | {"Accept": COMPACT},
            )
            _head, more, _snapshot, rows = msgspec.msgpack.decode(response.content)
            for seq, _device, _key_version, ciphertext in rows:
                other.apply_update(ciphertext)
                after = seq
        pull_s = time.perf_counter() - started
        return {"push_s": push_s, "pull_s": pull_s}


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--edits", type=int, default=10_000)
    parser.add_argument("--budget", type=float, default=170)
    args = parser.parse_args()
    install_guards(args.budget)
    rows: list[list[Any]] = []
    result: dict[str, Any] = {"command": command_line(), "args": vars(args), "machine": machine()}
    async with Stack("sdk") as stack:
        url = stack.server().url
        with tempfile.TemporaryDirectory() as tmp:
            for every in (args.edits, 100):
                mine = await ours(url, stack, args.edits, every, tmp)
                raw = await peer(url, stack, args.edits, every)
                label = (
                    "one push at the end" if every == args.edits else f"a push every {every} edits"
                )
                rows.append(
                    [
                        label,
                        "encrypt+push",
                        args.edits / mine["push_s"],
                        args.edits / raw["push_s"],
                        ratio(raw["push_s"], mine["push_s"]),
                    ]
                )
                rows.append(
                    [
                        label,
                        "pull+decrypt",
                        args.edits / mine["pull_s"],
                        args.edits / raw["pull_s"],
                        ratio(raw["pull_s"], mine["pull_s"]),
                    ]
                )
                result[f"every_{every}"] = {"sdk": mine, "plain": raw}
    result["rows"] = rows
    print(table(["cadence", "phase", "SDK edits/s", "plain edits/s", "ratio"], rows))
    print(f"wrote {write_result('sdk_throughput', result)}")


if __name__ == "__main__":
    asyncio.run(main())
