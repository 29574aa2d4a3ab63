"""The `session-sync` command as the README and operators run it, as a real process."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from tests.conftest import SECRET
from tests.services import free_port

BIN = Path(sys.executable).parent


def command_env(**extra: str) -> dict[str, str]:
    """A clean environment: no SESSION_SYNC_* leaks in from the developer's shell."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("SESSION_SYNC_")}
    env["PATH"] = f"{BIN}:{env.get('PATH', '')}"
    return env | extra


def wait_until_up(url: str, proc: subprocess.Popen[bytes], timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise AssertionError(f"server exited with {proc.returncode}: {proc.stdout.read()!r}")
        try:
            if httpx.get(url + "/healthz", timeout=1).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    raise AssertionError("server did not come up")


def stop(proc: subprocess.Popen[bytes]) -> str:
    proc.send_signal(signal.SIGTERM)
    out, _ = proc.communicate(timeout=20)
    return out.decode()


def test_the_readme_run_command_serves_on_the_embedded_default(tmp_path):
    """No configuration at all: SQLite in ./data, in-process broker, codes in the log."""
    port = free_port()
    proc = subprocess.Popen(
        ["session-sync", "serve", "--port", str(port)],
        cwd=tmp_path,
        env=command_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        wait_until_up(url, proc)
        assert httpx.get(url + "/readyz").json()["checks"] == {"database": "ok", "broker": "ok"}
        r = httpx.post(url + "/v1/auth/email/start", json={"email": "dev@example.test"})
        assert r.status_code == 202
        time.sleep(0.5)
    finally:
        output = stop(proc)
    # uvicorn shuts down gracefully, then re-raises the signal it was stopped by.
    assert proc.returncode in (0, -signal.SIGTERM), output
    assert "Application shutdown complete" in output
    assert (tmp_path / "data" / "session-sync.db").exists()
    assert (tmp_path / "data" / "secret_key").exists()
    assert "DEVELOPMENT MODE" in output
    assert re.search(r"code is \d{6}", output)


def test_production_without_a_secret_refuses_to_start(tmp_path):
    result = subprocess.run(
        ["session-sync", "serve"],
        cwd=tmp_path,
        env=command_env(SESSION_SYNC_ENVIRONMENT="production"),
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert result.returncode == 2
    assert "SESSION_SYNC_SECRET_KEY" in result.stderr


def test_doctor_checks_real_services(pg_url, redis_url, smtp, tmp_path):
    env = command_env(
        SESSION_SYNC_DATABASE_URL=pg_url,
        SESSION_SYNC_REDIS_URL=redis_url,
        SESSION_SYNC_SMTP_URL=smtp.url,
        SESSION_SYNC_SECRET_KEY=SECRET,
    )
    result = subprocess.run(
        ["session-sync", "doctor"], env=env, capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stdout + result.stderr
    for name in ("configuration", "database", "redis", "smtp", "saml xml libraries"):
        assert re.search(rf"^ok\s+{name}", result.stdout, re.M), result.stdout

    broken = env | {"SESSION_SYNC_REDIS_URL": f"redis://127.0.0.1:{free_port()}/0"}
    result = subprocess.run(
        ["session-sync", "doctor"], env=broken, capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 1
    assert re.search(r"^FAIL\s+redis", result.stdout, re.M), result.stdout


@pytest.mark.parametrize("command", [["migrate"], ["serve", "--port", "1"]])
def test_unreachable_database_is_a_clear_failure(command, tmp_path):
    env = command_env(
        SESSION_SYNC_DATABASE_URL=f"postgresql://nobody@127.0.0.1:{free_port()}/none",
        SESSION_SYNC_SECRET_KEY=SECRET,
    )
    result = subprocess.run(
        ["session-sync", *command], env=env, capture_output=True, text=True, timeout=60
    )
    assert result.returncode != 0
    assert "Connect" in result.stderr or "connect" in result.stderr
