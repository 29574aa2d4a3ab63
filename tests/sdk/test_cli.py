"""`session-sync-client` as a user runs it: a real process against a served app."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

from server.app import create_app
from tests.conftest import live_server
from tests.helpers import code_in, new_email
from tests.processes import BIN

CLI = str(BIN / "session-sync-client")


async def run(url: str, state: Path, *args: str, stdin: bytes = b"") -> tuple[int, str]:
    proc = await asyncio.create_subprocess_exec(
        CLI,
        "--url",
        url,
        "--state-dir",
        str(state),
        *args,
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    out, _ = await asyncio.wait_for(proc.communicate(stdin), 60)
    return proc.returncode or 0, out.decode()


async def login(url: str, state: Path, smtp, email: str, recovery: str = "") -> str:
    proc = await asyncio.create_subprocess_exec(
        CLI,
        "--url",
        url,
        "--state-dir",
        str(state),
        "login",
        "--email",
        email,
        "--device",
        state.name,
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    before = len(smtp.to(email))
    code = code_in(await smtp.wait_for(email, count=before + 1))
    out, _ = await asyncio.wait_for(proc.communicate(f"{code}\n{recovery}\n".encode()), 60)
    assert proc.returncode == 0, out.decode()
    return out.decode()


async def test_login_push_pull_and_export(make_settings, smtp, tmp_path):
    async with live_server(create_app(make_settings())) as url:
        email = new_email()
        out = await login(url, tmp_path / "laptop", smtp, email)
        assert "Your recovery code" in out
        recovery = out.split("shown once):")[1].split()[0]

        canvas = {
            "agents": {
                "a1": {"name": "planner", "x": 1.0, "y": 2.0, "config": {"model": "m"}},
                "a2": {"name": "critic", "x": 3.0, "y": 4.0, "config": {}},
            },
            "edges": {"e1": {"source": "a1", "target": "a2"}},
        }
        (tmp_path / "canvas.json").write_text(json.dumps(canvas))
        code, out = await run(url, tmp_path / "laptop", "push", str(tmp_path / "canvas.json"))
        assert code == 0, out
        doc_id = out.strip().split()[-1]
        code, out = await run(url, tmp_path / "laptop", "docs")
        assert doc_id in out and "canvas" in out

        await login(url, tmp_path / "desktop", smtp, email, recovery)
        code, out = await run(url, tmp_path / "desktop", "pull", doc_id, str(tmp_path / "got.json"))
        assert code == 0, out
        assert "pulled" in out  # progress
        assert json.loads((tmp_path / "got.json").read_text()) == canvas

        code, out = await run(url, tmp_path / "desktop", "export", str(tmp_path / "export"))
        assert code == 0, out
        exported = json.loads((tmp_path / "export" / f"canvas-{doc_id}.json").read_text())
        assert exported == canvas
        code, out = await run(url, tmp_path / "desktop", "devices")
        assert "laptop" in out and "* " in out
        code, out = await run(url, tmp_path / "desktop", "status")
        assert email in out


async def test_not_signed_in_is_a_clear_failure(tmp_path):
    code, out = await run("http://127.0.0.1:9", tmp_path, "docs")
    assert code == 1 and "sign in first" in out
