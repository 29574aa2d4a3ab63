"""The container's entrypoint and the compose file, checked without a Docker engine.

``deploy/entrypoint.sh`` runs under ``sh`` with this virtualenv's ``session-sync`` on PATH,
against the real Postgres, Redis and SMTP server the other tests use; the Dockerfile and
``docker-compose.yml`` are read and held to the settings the server really has.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import pytest
import yaml
from alembic.script import ScriptDirectory

from server.config import Settings
from server.db.migrate import alembic_config
from tests import services

ROOT = Path(__file__).resolve().parents[2]
ENTRYPOINT = ROOT / "deploy" / "entrypoint.sh"
DOCKERFILE = ROOT / "deploy" / "Dockerfile"
COMPOSE = ROOT / "docker-compose.yml"
SECRET_HEX = "5e55" * 16  # 64 hex characters, like `openssl rand -hex 32`
SETTINGS_VARIABLE = re.compile(r"\bSESSION_SYNC_[A-Z0-9_]+")


def _bin_dir() -> Path:
    """The directory holding the `session-sync` that this interpreter runs."""
    here = Path(sys.executable).parent
    if (here / "session-sync").exists():
        return here
    found = shutil.which("session-sync")
    if found is None:
        pytest.fail("`session-sync` is not installed next to this Python nor on PATH")
    return Path(found).parent


def entrypoint_env(**values: str) -> dict[str, str]:
    """This environment less any SESSION_SYNC_*, PORT and WAIT_TIMEOUT, plus ``values``."""
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith("SESSION_SYNC_") and k not in {"PORT", "WAIT_TIMEOUT"}
    }
    env["PATH"] = f"{_bin_dir()}{os.pathsep}{env.get('PATH', '')}"
    return env | values


def start(args: list[str], env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    with log.open("wb") as out:
        return subprocess.Popen(
            ["sh", str(ENTRYPOINT), *args], env=env, stdout=out, stderr=subprocess.STDOUT
        )


def run(args: list[str], env: dict[str, str], timeout: float = 60) -> tuple[int, str]:
    result = subprocess.run(
        ["sh", str(ENTRYPOINT), *args],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        timeout=timeout,
        check=False,
    )
    return result.returncode, result.stdout.decode()


def wait_for_200(url: str, proc: subprocess.Popen[bytes], log: Path, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise AssertionError(f"exited with {proc.returncode}:\n{log.read_text()}")
        try:
            if httpx.get(url, timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    raise AssertionError(f"{url} did not answer 200 within {timeout} s:\n{log.read_text()}")


def wait_for_text(text: str, log: Path, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while text not in log.read_text():
        if time.monotonic() > deadline:
            raise AssertionError(f"{text!r} not in the output:\n{log.read_text()}")
        time.sleep(0.1)


def alembic_versions(url: str) -> set[str] | None:
    """The revisions in alembic_version, or None when the table does not exist."""

    async def read() -> set[str] | None:
        conn = await asyncpg.connect(url)
        try:
            if await conn.fetchval("SELECT to_regclass('alembic_version')") is None:
                return None
            return {row[0] for row in await conn.fetch("SELECT version_num FROM alembic_version")}
        finally:
            await conn.close()

    return asyncio.run(read())


def children_of(pid: int) -> list[int]:
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid:
            found.append(int(stat.parent.name))
    return found


@pytest.fixture
def database(pg_admin_url: str) -> Iterator[str]:
    """A fresh, empty database of this test's own."""
    name = f"ssync_entry_{os.getpid()}"
    asyncio.run(services.recreate_database(pg_admin_url, name))
    yield services.with_database(pg_admin_url, name)
    asyncio.run(services.drop_database(pg_admin_url, name))


@pytest.fixture
def production_env(
    database: str, redis_url: str, smtp: services.MailCatcher, tmp_path: Path
) -> dict[str, str]:
    return entrypoint_env(
        SESSION_SYNC_ENVIRONMENT="production",
        SESSION_SYNC_DATABASE_URL=database,
        SESSION_SYNC_REDIS_URL=redis_url,
        SESSION_SYNC_SMTP_URL=smtp.url,
        SESSION_SYNC_SECRET_KEY=SECRET_HEX,
        SESSION_SYNC_DATA_DIR=str(tmp_path / "data"),
        PORT=str(services.free_port()),
    )


# --- the Dockerfile and docker-compose.yml, as the tests below read them ---


def dockerfile_instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) pairs, continuation lines joined and comments dropped."""
    logical: list[str] = []
    pending = ""
    for raw in DOCKERFILE.read_text().splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        logical.append(pending + line)
        pending = ""
    pairs = [tuple(line.split(None, 1)) for line in logical]
    return [(p[0].upper(), p[1] if len(p) > 1 else "") for p in pairs]


def dockerfile(instruction: str) -> list[str]:
    return [args for name, args in dockerfile_instructions() if name == instruction]


def dockerfile_healthcheck() -> list[str]:
    (healthcheck,) = dockerfile("HEALTHCHECK")
    command = json.loads(healthcheck.split(" CMD ", 1)[1])
    assert isinstance(command, list)
    return command


def compose() -> dict[str, Any]:
    document = yaml.safe_load(COMPOSE.read_text())
    assert isinstance(document, dict)
    return document


def compose_value(value: str) -> str:
    """A compose value with ${VAR:-default} as its default and ${VAR:?message} as a secret."""
    value = re.sub(r"\$\{[A-Z0-9_]+:-([^}]*)\}", r"\1", value)
    return re.sub(r"\$\{[A-Z0-9_]+:\?[^}]*\}", SECRET_HEX, value)


def head_revisions() -> set[str]:
    return set(ScriptDirectory.from_config(alembic_config(Settings())).get_heads())


# --- the entrypoint, run ---


def test_no_arguments_waits_migrates_serves_and_stops_on_sigterm(
    production_env: dict[str, str], database: str, tmp_path: Path
):
    """What `docker compose up` runs: a fresh database is migrated, then the server answers."""
    log = tmp_path / "entrypoint.log"
    port = production_env["PORT"]
    base = f"http://127.0.0.1:{port}"
    proc = start([], production_env, log)
    try:
        wait_for_200(base + "/healthz", proc, log)
        ready = httpx.get(base + "/readyz", timeout=5)
        assert ready.status_code == 200, ready.text
        assert ready.json()["checks"] == {"database": "ok", "broker": "ok"}
        # The image's and the compose file's health checks, run as Docker would run them.
        compose_check = compose()["services"]["server"]["healthcheck"]["test"]
        assert compose_check[0] == "CMD"
        for command in (dockerfile_healthcheck(), compose_check[1:]):
            probe = subprocess.run(command, env=production_env, timeout=10, check=False)
            assert probe.returncode == 0, command
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=20)
        finally:
            if proc.poll() is None:
                proc.kill()
    output = log.read_text()
    # uvicorn shuts down gracefully, then re-raises the signal it was stopped by (as PID 1 in
    # a container that signal is ignored and it exits 0).
    assert proc.returncode in (0, -signal.SIGTERM), output
    assert "Application shutdown complete" in output
    assert re.search(r"the database at \S+ accepts connections", output), output
    assert re.search(r"Redis at \S+ accepts connections", output), output
    assert "database schema is up to date" in output
    assert f"Uvicorn running on http://0.0.0.0:{port}" in output
    assert alembic_versions(database) == head_revisions()


def test_production_without_a_secret_key_exits_before_migrating(
    production_env: dict[str, str], database: str
):
    """A configuration error stops the container at once, with the variable to set named."""
    env = {k: v for k, v in production_env.items() if k != "SESSION_SYNC_SECRET_KEY"}
    started = time.monotonic()
    code, output = run([], env)
    assert code == 2, output
    assert "SESSION_SYNC_SECRET_KEY" in output
    assert "openssl rand -hex 32" in output
    assert time.monotonic() - started < 30
    assert alembic_versions(database) is None  # refused before touching the schema


def test_an_unreachable_database_is_waited_for_then_given_up(
    production_env: dict[str, str], tmp_path: Path
):
    """The wait is bounded by WAIT_TIMEOUT and says where it waited, never with the password."""
    port = services.free_port()  # nothing listens here
    env = production_env | {
        "SESSION_SYNC_DATABASE_URL": f"postgresql://app:hunter2-pw@127.0.0.1:{port}/app",
        "WAIT_TIMEOUT": "2",
    }
    started = time.monotonic()
    code, output = run([], env)
    assert code == 1, output
    assert time.monotonic() - started < 20
    assert f"waiting for the database at 127.0.0.1:{port}" in output
    assert f"gave up: the database at 127.0.0.1:{port} is still unreachable after 2 s" in output
    assert "hunter2-pw" not in output
    assert "Uvicorn running" not in output


def test_sigterm_while_waiting_stops_at_once(production_env: dict[str, str], tmp_path: Path):
    """`docker stop` during the wait ends it and its probe now, not after WAIT_TIMEOUT."""
    env = production_env | {
        "SESSION_SYNC_DATABASE_URL": f"postgresql://app@127.0.0.1:{services.free_port()}/app",
        "WAIT_TIMEOUT": "60",
    }
    log = tmp_path / "entrypoint.log"
    proc = start([], env, log)
    try:
        wait_for_text("waiting for the database", log)
        probes = children_of(proc.pid)
        assert probes, "the wait should run as a child of the entrypoint"
        started = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=10) == 128 + signal.SIGTERM
        assert time.monotonic() - started < 5
        deadline = time.monotonic() + 5
        while any(Path(f"/proc/{pid}/cmdline").exists() for pid in probes):
            assert time.monotonic() < deadline, "the probe outlived the entrypoint"
            time.sleep(0.1)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_arguments_run_as_given(production_env: dict[str, str], database: str):
    """`docker run IMAGE doctor` runs the doctor against the real services, and migrates nothing."""
    code, output = run(["doctor"], production_env)
    assert code == 0, output
    for check in ("configuration", "database", "redis", "smtp", "saml xml libraries"):
        assert re.search(rf"^ok\s+{check}\s", output, re.MULTILINE), output
    assert "schema behind" in output
    assert alembic_versions(database) is None

    code, output = run(["sh", "-c", 'echo "args: $0 $1"', "one", "two"], production_env)
    assert (code, output.strip()) == (0, "args: one two")


def test_migrate_waits_then_migrates_without_needing_the_secret(
    production_env: dict[str, str], database: str
):
    """A migration job needs only the database: `docker run IMAGE migrate`."""
    env = {k: v for k, v in production_env.items() if k != "SESSION_SYNC_SECRET_KEY"}
    code, output = run(["migrate"], env)
    assert code == 0, output
    assert "database schema is up to date" in output
    assert alembic_versions(database) == head_revisions()


# --- the image and the compose file, read ---


def test_the_dockerfile_builds_a_slim_non_root_image_around_the_entrypoint():
    froms = dockerfile("FROM")
    assert len(froms) >= 2, "a build stage and a runtime stage"
    args = " ".join(dockerfile("ARG"))
    assert "python:3.11-slim" in args or all("python:3.11-slim" in f for f in froms)
    (user,) = dockerfile("USER")
    assert user.split(":")[0] not in {"root", "0"}
    (uid,) = re.findall(r"APP_UID=(\d+)", args)
    assert user == "${APP_UID}:${APP_UID}" and int(uid) >= 1000
    assert dockerfile("EXPOSE") == ["8000"]
    assert json.loads(dockerfile("VOLUME")[0]) == ["/data"]
    env = " ".join(dockerfile("ENV"))
    assert "SESSION_SYNC_DATA_DIR=/data" in env
    assert "chown session:session /data" in " ".join(dockerfile("RUN"))
    (entrypoint,) = [json.loads(e) for e in dockerfile("ENTRYPOINT")]
    copies = [shlex.split(c) for c in dockerfile("COPY")]
    assert [c[-2:] for c in copies if c[-2] == "deploy/entrypoint.sh"] == [
        ["deploy/entrypoint.sh", entrypoint[0]]
    ]
    assert "/healthz" in " ".join(dockerfile_healthcheck())
    assert any("pip install" in r and " ." in r for r in dockerfile("RUN"))
    # Whatever the build copies from the context is let through by the allow-list.
    allowed = {
        line[1:].rstrip("/")
        for line in (ROOT / ".dockerignore").read_text().splitlines()
        if line.startswith("!")
    }
    for copy in copies:
        if not any(part.startswith("--from") for part in copy):
            sources = [part for part in copy[:-1] if not part.startswith("--")]
            assert set(sources) <= allowed, sources
            assert all((ROOT / source).exists() for source in sources)


def test_every_setting_named_by_the_deployment_files_exists():
    """A misspelt SESSION_SYNC_* name would be ignored silently by the server."""
    fields = set(Settings.model_fields)
    files = [COMPOSE, DOCKERFILE, ENTRYPOINT, ROOT / "docs" / "self-hosting.md"]
    files += sorted((ROOT / "deploy").glob("*.example"))
    text = "".join(path.read_text() for path in files)
    names = set(SETTINGS_VARIABLE.findall(text))
    assert "SESSION_SYNC_SECRET_KEY" in names
    unknown = {n for n in names if n.removeprefix("SESSION_SYNC_").lower() not in fields}
    assert not unknown, f"not fields of server.config.Settings: {sorted(unknown)}"


def test_the_compose_file_runs_the_server_on_postgres_redis_and_a_mail_catcher():
    services_ = compose()["services"]
    assert set(services_) == {"postgres", "redis", "server", "mailpit"}
    server = services_["server"]
    assert server["build"] == {"context": ".", "dockerfile": "deploy/Dockerfile"}
    assert (ROOT / server["build"]["dockerfile"]).exists()
    assert "entrypoint" not in server and "command" not in server, "the image's own default"
    assert server["depends_on"] == {
        "postgres": {"condition": "service_healthy"},
        "redis": {"condition": "service_healthy"},
    }
    assert services_["postgres"]["healthcheck"]["test"][:2] == ["CMD", "pg_isready"]
    assert services_["redis"]["healthcheck"]["test"] == ["CMD", "redis-cli", "ping"]
    assert any(p.endswith(":8000") for p in server["ports"])
    assert any(v.endswith(":/data") for v in server["volumes"])
    assert server["restart"] == "unless-stopped"
    env = server["environment"]
    assert re.fullmatch(r"\$\{SESSION_SYNC_SECRET_KEY:\?[^}]+\}", env["SESSION_SYNC_SECRET_KEY"])
    assert env["SESSION_SYNC_ENVIRONMENT"] == "production"
    # The database URL names the credentials and database the postgres service creates.
    pg = services_["postgres"]["environment"]
    user, password, db = pg["POSTGRES_USER"], pg["POSTGRES_PASSWORD"], pg["POSTGRES_DB"]
    assert env["SESSION_SYNC_DATABASE_URL"] == f"postgresql://{user}:{password}@postgres:5432/{db}"
    assert env["SESSION_SYNC_REDIS_URL"].startswith("redis://redis:6379/")
    assert "mailpit:1025" in env["SESSION_SYNC_SMTP_URL"]
    # With its defaults filled in, the server accepts that configuration in production mode.
    settings = Settings(
        **{k.removeprefix("SESSION_SYNC_").lower(): compose_value(v) for k, v in env.items()}
    )
    settings.check()
    assert settings.is_production and not settings.embedded
    assert settings.sqlalchemy_url.startswith("postgresql+asyncpg://")
