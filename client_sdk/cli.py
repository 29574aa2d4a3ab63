"""`session-sync-client`: sign in, inspect, and move canvases between the server and local
JSON files (decrypted on this machine). The server is `SESSION_SYNC_URL` or `--url`."""

from __future__ import annotations

import argparse
import asyncio
import json
import socket
import sys
import uuid
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from client_sdk.client import AsyncClient
from client_sdk.errors import NotSignedIn, SessionSyncError
from client_sdk.session import Session


def _progress(label: str) -> Any:
    def show(done: int, total: int) -> None:
        end = "\n" if done >= total else ""
        print(f"\r{label}: {done}/{total}", end=end, file=sys.stderr, flush=True)

    return show


async def _session(client: AsyncClient) -> Session:
    try:
        session, code = await Session.open(client)
    except NotSignedIn as exc:
        if "recovery code" not in str(exc):
            raise
        code_in = input("Recovery code of this account: ")
        session, code = await Session.open(client, code_in)
    if code:
        print(f"Your recovery code (write it down; it is shown once):\n  {code}")
    return session


async def login(client: AsyncClient, args: argparse.Namespace) -> int:
    email = args.email or input("E-mail: ")
    await client.start_email_login(email)
    code = input("The 6-digit code from the mail: ").strip()
    tokens = await client.verify_email(email, code, args.device or socket.gethostname())
    print(f"Signed in as {email} (device {tokens.device_id})")
    (await _session(client)).close()
    return 0


async def status(client: AsyncClient, _args: argparse.Namespace) -> int:
    tokens = client.tokens
    if tokens is None:
        print(f"Not signed in to {client.base_url}")
        return 1
    me = await client.me()
    print(f"server   {client.base_url}\naccount  {me['email']}\ndevice   {tokens.device_id}")
    return 0


async def devices(client: AsyncClient, args: argparse.Namespace) -> int:
    if args.revoke:
        await client.revoke_device(args.revoke)
        print(f"signed out {args.revoke}")
    for device in await client.devices():
        mark = "*" if device["current"] else " "
        print(f"{mark} {device['device_id']}  {device['name']}  last seen {device['last_seen_at']}")
    return 0


async def docs(client: AsyncClient, _args: argparse.Namespace) -> int:
    for doc in await client.list_docs():
        print(f"{doc['doc_id']}  {doc['kind']:<10}  head {doc['head']:>7}  {doc['bytes']} bytes")
    return 0


async def pull(client: AsyncClient, args: argparse.Namespace) -> int:
    session = await _session(client)
    try:
        canvas = session.canvas(uuid.UUID(args.doc))
        await canvas.pull(_progress("pulled"))
        Path(args.file).write_text(json.dumps(canvas.canvas.to_json(), indent=2))
    finally:
        session.close()
    print(f"wrote {args.file}")
    return 0


async def push(client: AsyncClient, args: argparse.Namespace) -> int:
    session = await _session(client)
    try:
        if args.doc:
            canvas = session.canvas(uuid.UUID(args.doc))
            await canvas.pull(_progress("pulled"))
        else:
            canvas = await session.new_canvas()
        canvas.canvas.load_json(json.loads(Path(args.file).read_text()))
        await canvas.push(_progress("pushed"))
    finally:
        session.close()
    print(f"pushed {args.file} to {canvas.doc_id}")
    return 0


async def export(client: AsyncClient, args: argparse.Namespace) -> int:
    """Everything of the account, decrypted, for portability."""
    out = Path(args.dir)
    out.mkdir(parents=True, exist_ok=True)
    session = await _session(client)
    try:
        listed = await client.list_docs()
        for n, doc in enumerate(listed, 1):
            doc_id = uuid.UUID(doc["doc_id"])
            print(f"[{n}/{len(listed)}] {doc['kind']} {doc_id}", file=sys.stderr)
            if doc["kind"] == "transcript":
                data: Any = await session.read_transcript(doc_id)
            else:
                canvas = session.canvas(doc_id)
                await canvas.pull(_progress("  pulled"))
                data = canvas.canvas.to_json()
            (out / f"{doc['kind']}-{doc_id}.json").write_text(json.dumps(data, indent=2))
        (out / "settings.json").write_text(json.dumps(await session.settings(), indent=2))
    finally:
        session.close()
    print(f"exported {len(listed)} documents and the settings to {out}")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="session-sync-client", description=__doc__)
    parser.add_argument("--url", help="server URL (default: $SESSION_SYNC_URL or hosted)")
    parser.add_argument("--state-dir", help="where tokens, keys and local state live")
    commands = parser.add_subparsers(dest="command", required=True)
    p = commands.add_parser("login", help="sign in with an e-mail code")
    p.add_argument("--email")
    p.add_argument("--device", help="this device's name (default: host name)")
    p.set_defaults(run=login)
    commands.add_parser("status", help="who and where you are").set_defaults(run=status)
    p = commands.add_parser("devices", help="list (or sign out) your devices")
    p.add_argument("--revoke", metavar="DEVICE_ID")
    p.set_defaults(run=devices)
    commands.add_parser("docs", help="list synced documents").set_defaults(run=docs)
    p = commands.add_parser("pull", help="write a canvas to a JSON file (decrypted)")
    p.add_argument("doc")
    p.add_argument("file")
    p.set_defaults(run=pull)
    p = commands.add_parser("push", help="make a canvas equal to a JSON file")
    p.add_argument("file")
    p.add_argument("--doc", help="the canvas to update (default: a new one)")
    p.set_defaults(run=push)
    p = commands.add_parser("export", help="everything of the account, decrypted")
    p.add_argument("dir")
    p.set_defaults(run=export)
    args = parser.parse_args(argv)

    async def run() -> int:
        async with AsyncClient(args.url, state_dir=args.state_dir) as client:
            code: int = await args.run(client, args)
            return code

    try:
        return asyncio.run(run())
    except SessionSyncError as exc:
        print(f"session-sync-client: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
