"""What every benchmark shares: private services (Postgres database, redis-server, SMTP
catcher), our server and the Hocuspocus peer as child processes, signing in, the sync
protocol over msgpack, percentiles, a description of the machine, and result files.

Everything listens on and talks to 127.0.0.1 only. Every child process dies with the
benchmark (PR_SET_PDEATHSIG, a process group, and atexit), and a watchdog ends a benchmark
that overruns its time budget, so nothing outlives a run.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import email
import email.policy
import gc
import json
import os
import platform
import re
import resource
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, cast

import asyncpg
import httpx
import msgspec

ROOT = Path(__file__).resolve().parent.parent
BENCH = ROOT / "bench"
RESULTS = BENCH / "results"
PEER = BENCH / "peer"
BIN = Path(sys.executable).parent
HOST = "127.0.0.1"
PG_ADMIN = os.environ.get("BENCH_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/postgres")
SECRET = "bench-secret-" + "0123456789abcdef" * 3
# Our server's limits that protect a production replica from a single abusive client; a
# benchmark that drives thousands of pushes per second from a handful of devices lifts them.
# A copy of the server to measure instead of the working tree (for example a commit exported
# with `git archive HEAD | tar -x -C /tmp/tree`): its `server` and `migrations` packages are
# put first on the server's PYTHONPATH; the venv provides the dependencies.
SERVER_TREE = (
    Path(os.environ["BENCH_SERVER_TREE"]).resolve() if os.environ.get("BENCH_SERVER_TREE") else None
)
BENCH_ENV = {
    "SESSION_SYNC_SECRET_KEY": SECRET,
    "SESSION_SYNC_PUSH_RATE": "1000000",
    "SESSION_SYNC_PUSH_BURST": "1000000",
    "SESSION_SYNC_OTP_IP_LIMIT": "1000000",
    "SESSION_SYNC_LOG_LEVEL": "WARNING",
}

# -- processes ----------------------------------------------------------------------------

_children: list[Proc] = []
_libc = ctypes.CDLL(None, use_errno=True) if sys.platform == "linux" else None


def _child_setup() -> None:
    """In the child, before exec: die with the parent, own process group, more descriptors."""
    if _libc is not None:
        _libc.prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    os.setpgid(0, 0)
    raise_fd_limit()


def raise_fd_limit() -> int:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


@dataclass
class Proc:
    name: str
    popen: subprocess.Popen[bytes]
    log: Path

    @property
    def pid(self) -> int:
        return self.popen.pid

    def alive(self) -> bool:
        return self.popen.poll() is None

    def rss_bytes(self) -> int:
        """Resident set size, from /proc."""
        for line in Path(f"/proc/{self.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
        return 0

    def cpu_seconds(self) -> float:
        return cpu_seconds(self.pid)

    def stop(self, timeout: float = 10.0) -> None:
        if self.alive():
            with contextlib.suppress(ProcessLookupError):
                self.popen.send_signal(signal.SIGTERM)
            try:
                self.popen.wait(timeout)
            except subprocess.TimeoutExpired:
                self.kill()
        with contextlib.suppress(ValueError):
            _children.remove(self)

    def kill(self) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.pid, signal.SIGKILL)
        with contextlib.suppress(ProcessLookupError):
            self.popen.kill()
        self.popen.wait()

    def tail(self, lines: int = 40) -> str:
        try:
            return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""


def cpu_seconds(pid: int) -> float:
    """User + system CPU of a process, from /proc/<pid>/stat."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def pg_backends_cpu(database: str) -> dict[int, float]:
    """CPU seconds of each Postgres backend serving ``database``, by pid (a backend's CPU
    is only visible while it lives: compare two readings with ``cpu_delta``)."""
    out: dict[int, float] = {}
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            cmd = (proc / "cmdline").read_bytes()
            if cmd.startswith(b"postgres: ") and f" {database} ".encode() in cmd:
                out[int(proc.name)] = cpu_seconds(int(proc.name))
        except OSError:
            continue
    return out


def cpu_delta(before: dict[int, float], after: dict[int, float]) -> float:
    return sum(cpu - before.get(pid, 0.0) for pid, cpu in after.items())


def spawn(
    name: str,
    argv: Sequence[str],
    env: dict[str, str] | None = None,
    stdin: bool = False,
    cwd: Path = ROOT,
) -> Proc:
    RESULTS.mkdir(parents=True, exist_ok=True)
    log = RESULTS / "logs" / f"{name}.log"
    log.parent.mkdir(parents=True, exist_ok=True)
    popen = subprocess.Popen(
        list(argv),
        env=env,
        stdin=subprocess.PIPE if stdin else subprocess.DEVNULL,
        stdout=log.open("wb"),
        stderr=subprocess.STDOUT,
        preexec_fn=_child_setup,
        cwd=cwd,
    )
    proc = Proc(name, popen, log)
    _children.append(proc)
    return proc


def stop_all() -> None:
    for proc in list(reversed(_children)):
        with contextlib.suppress(Exception):
            proc.stop(5)


def _on_signal(signum: int, _frame: Any) -> None:
    stop_all()
    os._exit(128 + signum)


def install_guards(budget_seconds: float) -> None:
    """Children stop with us, on exit, on SIGTERM/SIGINT, and when the budget is spent."""
    import atexit

    atexit.register(stop_all)
    signal.signal(signal.SIGTERM, _on_signal)

    def watchdog() -> None:
        time.sleep(budget_seconds)
        print(
            f"\n!! time budget of {budget_seconds:.0f}s spent; stopping (raise --budget)",
            file=sys.stderr,
            flush=True,
        )
        stop_all()
        os._exit(3)

    threading.Thread(target=watchdog, daemon=True, name="watchdog").start()


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind((HOST, 0))
        return int(sock.getsockname()[1])


def wait_port(port: int, timeout: float = 20.0, proc: Proc | None = None) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and not proc.alive():
            raise RuntimeError(f"{proc.name} exited:\n{proc.tail()}")
        with socket.socket() as sock:
            if sock.connect_ex((HOST, port)) == 0:
                return
        time.sleep(0.05)
    raise TimeoutError(f"nothing listens on {HOST}:{port} after {timeout}s")


# -- services -----------------------------------------------------------------------------


class RedisServer:
    """A private redis-server on its own port (no persistence): ours to kill and restart,
    and out of the way of anything else that uses the machine's Redis."""

    def __init__(self, tag: str) -> None:
        binary = shutil.which("redis-server")
        if binary is None:
            raise SystemExit("redis-server is not installed (apt-get install redis-server)")
        self.binary, self.tag, self.port = binary, tag, free_port()
        self.proc: Proc | None = None
        self.starts = 0

    @property
    def url(self) -> str:
        return f"redis://{HOST}:{self.port}/0"

    def start(self) -> RedisServer:
        self.starts += 1
        argv = [self.binary, "--port", str(self.port), "--bind", HOST, "--save", ""]
        argv += ["--appendonly", "no", "--dir", str(RESULTS)]
        self.proc = spawn(f"{self.tag}-redis-{self.starts}", argv)
        wait_port(self.port, 10, self.proc)
        return self

    def kill(self) -> None:
        """SIGKILL, like a crash: no goodbye to the subscribers."""
        if self.proc is not None:
            self.proc.kill()
            with contextlib.suppress(ValueError):
                _children.remove(self.proc)
            self.proc = None

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.stop()
            self.proc = None


async def create_database(tag: str) -> tuple[str, str]:
    """A fresh database; (its name, its URL)."""
    name = f"bench_{tag}_{os.getpid()}"
    conn = await asyncpg.connect(PG_ADMIN)
    try:
        await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        await conn.execute(f'CREATE DATABASE "{name}"')
    finally:
        await conn.close()
    return name, PG_ADMIN.rsplit("/", 1)[0] + "/" + name


async def drop_database(name: str) -> None:
    conn = await asyncpg.connect(PG_ADMIN)
    try:
        await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        await conn.close()


@dataclass
class MailCatcher:
    """A real SMTP server on loopback (aiosmtpd) that keeps the sign-in codes it receives."""

    port: int = 0
    codes: dict[str, list[str]] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _controller: Any = None

    async def handle_DATA(self, _server: Any, _session: Any, envelope: Any) -> str:
        message = email.message_from_bytes(envelope.content, policy=email.policy.default)
        match = re.search(r"sign-in code is (\d{6})", str(message.get_body().get_content()))  # type: ignore[union-attr]
        if match:
            with self._lock:
                self.codes.setdefault(str(message["To"]), []).append(match.group(1))
        return "250 OK"

    @property
    def url(self) -> str:
        return f"smtp+plain://{HOST}:{self.port}"

    def start(self) -> MailCatcher:
        from aiosmtpd.controller import Controller

        self.port = free_port()
        self._controller = Controller(self, hostname=HOST, port=self.port)
        self._controller.start()
        return self

    def stop(self) -> None:
        if self._controller is not None:
            self._controller.stop()

    async def code(self, to: str, count: int, within: float = 10.0) -> str:
        deadline = time.monotonic() + within
        while time.monotonic() < deadline:
            with self._lock:
                got = self.codes.get(to, [])
                if len(got) >= count:
                    return got[count - 1]
            await asyncio.sleep(0.005)
        raise TimeoutError(f"no sign-in mail #{count} to {to}")


class OurServer:
    """``session-sync serve`` as a child process on its own port."""

    def __init__(self, name: str, env: dict[str, str]) -> None:
        self.name, self.env, self.port = name, env, free_port()
        self.proc: Proc | None = None

    @property
    def url(self) -> str:
        return f"http://{HOST}:{self.port}"

    @property
    def ws_url(self) -> str:
        return f"ws://{HOST}:{self.port}/v1/sync"

    def start(self) -> OurServer:
        argv = [*server_command(), "serve", "--host", HOST, "--port", str(self.port)]
        wrapper = os.environ.get("BENCH_SERVER_WRAPPER")  # e.g. bench/tools/gc_server.py
        if os.environ.get("BENCH_PROFILE") and not wrapper:
            wrapper = str(BENCH / "tools" / "profiled_server.py")
        if wrapper:
            argv[0:3] = [sys.executable, str(Path(wrapper).resolve())]
        self.proc = spawn(self.name, argv, self.env, cwd=SERVER_TREE or ROOT)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if not self.proc.alive():
                raise RuntimeError(f"{self.name} exited:\n{self.proc.tail()}")
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(self.url + "/readyz", timeout=1).status_code == 200:
                    return self
            time.sleep(0.1)
        raise TimeoutError(f"{self.name} not ready:\n{self.proc.tail()}")

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.stop()


def our_env(db_url: str, redis_url: str, smtp_url: str, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SESSION_SYNC_")}
    if SERVER_TREE is not None:  # the server and migrations of that tree come first
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(SERVER_TREE), env.get("PYTHONPATH")]))
    env |= BENCH_ENV | {
        "SESSION_SYNC_DATABASE_URL": db_url,
        "SESSION_SYNC_REDIS_URL": redis_url,
        "SESSION_SYNC_SMTP_URL": smtp_url,
        "SESSION_SYNC_DATA_DIR": str(RESULTS / "data"),
    }
    return env | {f"SESSION_SYNC_{k.upper()}": v for k, v in extra.items()}


def server_command() -> list[str]:
    """``python -m server``, from BENCH_SERVER_TREE when set (see our_env)."""
    return [sys.executable, "-m", "server"]


def migrate(env: dict[str, str]) -> None:
    subprocess.run(
        [*server_command(), "migrate"],
        env=env,
        check=True,
        capture_output=True,
        cwd=SERVER_TREE or ROOT,
    )


class Stack:
    """A fresh database, a private Redis and a mail catcher, migrated, ready for servers."""

    def __init__(self, tag: str, **extra_env: str) -> None:
        self.tag, self.extra_env = tag, extra_env
        self.db_name = self.db_url = ""
        self.redis = RedisServer(tag)
        self.mail = MailCatcher()
        self.servers: list[OurServer] = []
        self.env: dict[str, str] = {}

    async def __aenter__(self) -> Stack:
        self.db_name, self.db_url = await create_database(self.tag)
        self.redis.start()
        self.mail.start()
        self.env = our_env(self.db_url, self.redis.url, self.mail.url, **self.extra_env)
        await asyncio.to_thread(migrate, self.env)
        return self

    def server(self, name: str = "server") -> OurServer:
        srv = OurServer(f"{self.tag}-{name}", self.env).start()
        self.servers.append(srv)
        return srv

    async def __aexit__(self, *_exc: object) -> None:
        for srv in self.servers:
            srv.stop()
        self.redis.stop()
        self.mail.stop()
        with contextlib.suppress(Exception):
            await drop_database(self.db_name)


# -- signing in and documents -------------------------------------------------------------


@dataclass(frozen=True)
class Device:
    email: str
    token: str
    user_id: str
    device_id: str


async def sign_in(
    http: httpx.AsyncClient, mail: MailCatcher, address: str, devices: int
) -> list[Device]:
    """Sign ``devices`` devices of one user in, one after the other (one code at a time per
    address), through the real one-time-code flow."""
    out: list[Device] = []
    for n in range(devices):
        already = len(mail.codes.get(address, []))
        r = await http.post("/v1/auth/email/start", json={"email": address})
        r.raise_for_status()
        code = await mail.code(address, already + 1)
        r = await http.post(
            "/v1/auth/email/verify",
            json={"email": address, "code": code, "device_name": f"bench-{n}"},
        )
        r.raise_for_status()
        body = r.json()
        out.append(Device(address, body["access_token"], body["user_id"], body["device_id"]))
    return out


async def new_doc(http: httpx.AsyncClient, token: str, kind: str = "canvas") -> str:
    r = await http.post("/v1/docs", json={"kind": kind}, headers=auth(token))
    r.raise_for_status()
    return str(r.json()["doc_id"])


def auth(token: str) -> dict[str, str]:
    return {"authorization": f"Bearer {token}"}


# -- the sync protocol over msgpack ------------------------------------------------------


class UpdateFrameItem(msgspec.Struct):
    seq: int
    ciphertext: bytes


class ServerFrame(msgspec.Struct):
    """Every server frame, loosely: the fields the benchmarks read (others are ignored)."""

    type: str
    updates: list[UpdateFrameItem] | None = None
    seqs: list[int] | None = None
    ref: int | None = None
    head: int | None = None
    upto_seq: int | None = None
    problem: str | None = None
    detail: str | None = None


decode_frame = msgspec.msgpack.Decoder(ServerFrame).decode
encode = msgspec.msgpack.Encoder().encode
SUBPROTOCOL = "session-sync.v1.msgpack"
WS_OPTIONS: dict[str, Any] = {
    "compression": None,  # the same for both servers: no permessage-deflate
    "ping_interval": None,  # our protocol has its own heartbeat (answered below)
    "max_size": 64 * 1024 * 1024,
    "max_queue": 4096,
    "open_timeout": 30,
}


class SyncClient:
    """One authenticated websocket to our server, msgpack frames. ``on_updates`` is called
    with each ``updates`` frame; acks are counted; pings are answered."""

    def __init__(self, ws: Any) -> None:
        self.ws = ws
        self.acked = 0
        self.errors: list[str] = []
        self.on_updates: Callable[[ServerFrame], None] | None = None
        self.on_ack: Callable[[ServerFrame], None] | None = None
        self._waiters: dict[str, asyncio.Future[ServerFrame]] = {}
        self._reader: asyncio.Task[None] | None = None

    @classmethod
    async def open(cls, ws_url: str, token: str) -> SyncClient:
        from websockets.asyncio.client import connect

        ws = await connect(ws_url, subprotocols=[SUBPROTOCOL], **WS_OPTIONS)  # type: ignore[list-item]
        await ws.send(encode({"type": "hello", "token": token}))
        welcome = decode_frame(cast(bytes, await ws.recv()))
        if welcome.type != "welcome":
            raise RuntimeError(f"expected welcome, got {welcome}")
        client = cls(ws)
        client._reader = asyncio.create_task(client._read_forever())
        return client

    def wait_for(self, kind: str) -> asyncio.Future[ServerFrame]:
        fut: asyncio.Future[ServerFrame] = asyncio.get_running_loop().create_future()
        self._waiters[kind] = fut
        return fut

    async def subscribe(self, doc: str, after: int = 0) -> int:
        """Subscribe; the head. Backlog frames go to ``on_updates``."""
        fut = self.wait_for("subscribed")
        await self.ws.send(encode({"type": "subscribe", "doc": doc, "after": after}))
        frame = await asyncio.wait_for(fut, 60)
        return int(frame.head or 0)

    async def _read_forever(self) -> None:
        with contextlib.suppress(Exception):
            async for data in self.ws:
                frame = decode_frame(data)
                kind = frame.type
                if kind == "updates":
                    if self.on_updates is not None:
                        self.on_updates(frame)
                elif kind == "ack":
                    self.acked += len(frame.seqs or ())
                    if self.on_ack is not None:
                        self.on_ack(frame)
                elif kind == "ping":
                    await self.ws.send(encode({"type": "pong", "ref": frame.ref}))
                elif kind == "error":
                    self.errors.append(f"{frame.problem}: {frame.detail}")
                fut = self._waiters.pop(kind, None)
                if fut is not None and not fut.done():
                    fut.set_result(frame)

    async def close(self) -> None:
        with contextlib.suppress(Exception):
            await self.ws.close()
        if self._reader is not None:
            self._reader.cancel()


def push_frame(doc: str, ref: int, client_update_id: str, ciphertext: bytes) -> bytes:
    return encode(
        {
            "type": "push",
            "doc": doc,
            "ref": ref,
            "updates": [
                {"client_update_id": client_update_id, "key_version": 1, "ciphertext": ciphertext}
            ],
        }
    )


# -- the peer -----------------------------------------------------------------------------


class Hocuspocus:
    """The stock Hocuspocus server of bench/peer (npm install there first); with
    ``redis_port``, one of several replicas joined by its stock Redis extension."""

    def __init__(self, name: str = "hocuspocus", redis_port: int | None = None) -> None:
        self.name, self.port, self.redis_port = name, free_port(), redis_port
        self.proc: Proc | None = None

    @property
    def ws_url(self) -> str:
        return f"ws://{HOST}:{self.port}"

    def start(self) -> Hocuspocus:
        if not (PEER / "node_modules" / "@hocuspocus" / "server").is_dir():
            raise SystemExit("the peer is not installed: (cd bench/peer && npm ci)")
        node = shutil.which("node")
        if node is None:
            raise SystemExit("node is not installed")
        argv = [node, str(PEER / "hocuspocus_server.mjs"), str(self.port)]
        if self.redis_port is not None:
            argv.append(str(self.redis_port))
        self.proc = spawn(self.name, argv, dict(os.environ), stdin=True)
        wait_port(self.port, 20, self.proc)
        return self

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.stop()


class BareRelay:
    """bench/tools/bare_relay.py: a Python relay on our websocket stack that stores nothing,
    speaking Hocuspocus's protocol (the relay's ceiling on this stack; relay_fanout --ceiling)."""

    def __init__(self, name: str = "bare-relay") -> None:
        self.name, self.port = name, free_port()
        self.proc: Proc | None = None

    @property
    def ws_url(self) -> str:
        return f"ws://{HOST}:{self.port}"

    def start(self) -> BareRelay:
        tool = BENCH / "tools" / "bare_relay.py"
        self.proc = spawn(self.name, [sys.executable, str(tool), str(self.port)], dict(os.environ))
        wait_port(self.port, 20, self.proc)
        return self

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.stop()


def hocuspocus_version() -> str:
    try:
        meta = json.loads((PEER / "node_modules/@hocuspocus/server/package.json").read_text())
        return str(meta["version"])
    except OSError:
        return "?"


# -- numbers ------------------------------------------------------------------------------


def percentile(sorted_values: Sequence[float], p: float) -> float:
    """Nearest-rank percentile of already sorted values."""
    if not sorted_values:
        return float("nan")
    rank = max(1, min(len(sorted_values), round(p / 100 * len(sorted_values) + 0.5)))
    return sorted_values[rank - 1]


def summary_ms(seconds: Sequence[float]) -> dict[str, float]:
    """p50 / p99 / max in milliseconds of latencies given in seconds."""
    values = sorted(seconds)
    return {
        "n": len(values),
        "p50_ms": round(percentile(values, 50) * 1000, 3),
        "p99_ms": round(percentile(values, 99) * 1000, 3),
        "max_ms": round((values[-1] if values else float("nan")) * 1000, 3),
    }


def ratio(ours: float, peer: float) -> float:
    return round(ours / peer, 3) if peer else float("nan")


# -- the machine and the results ---------------------------------------------------------


def _run(argv: Sequence[str]) -> str:
    try:
        out = subprocess.run(list(argv), capture_output=True, text=True, timeout=10)
        return (out.stdout or out.stderr).strip().splitlines()[0]
    except (OSError, IndexError, subprocess.SubprocessError):
        return "?"


def machine() -> dict[str, Any]:
    cpu = "?"
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    mem = "?"
    with contextlib.suppress(OSError):
        kb = int(Path("/proc/meminfo").read_text().split()[1])
        mem = f"{kb / 1024 / 1024:.1f} GiB"
    pg = "?"
    with contextlib.suppress(Exception):

        async def version() -> str:
            conn = await asyncpg.connect(PG_ADMIN)
            try:
                settings = await conn.fetch(
                    "SELECT name, setting FROM pg_settings WHERE name IN "
                    "('fsync', 'synchronous_commit', 'shared_buffers')"
                )
                return (
                    str(await conn.fetchval("SHOW server_version"))
                    + " "
                    + ", ".join(f"{r['name']}={r['setting']}" for r in settings)
                )
            finally:
                await conn.close()

        pg = asyncio.run(version()) if not _in_loop() else "?"
    from importlib.metadata import version as pkg

    return {
        "date": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "cpu": f"{cpu}, {os.cpu_count()} cores",
        "memory": mem,
        "kernel": platform.release(),
        "python": platform.python_version(),
        "postgres": pg,
        "redis": _run(["redis-server", "--version"]),
        "node": _run(["node", "--version"]),
        "hocuspocus": hocuspocus_version(),
        "packages": {
            p: pkg(p) for p in ("litestar", "uvicorn", "websockets", "asyncpg", "sqlalchemy")
        },
        "server_tree": str(SERVER_TREE or ROOT),
        "commit": server_commit(),
        "loadavg_at_start": Path("/proc/loadavg").read_text().split()[:3],
    }


def server_commit() -> str:
    """The commit measured: BENCH_SERVER_TREE/COMMIT when there is one, else the working
    tree's HEAD, flagged when server/ or migrations/ have uncommitted changes."""
    if SERVER_TREE is not None:
        marker = SERVER_TREE / "COMMIT"
        return marker.read_text().strip() if marker.exists() else f"tree {SERVER_TREE}"
    head = _run(["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"])
    dirty = _run(["git", "-C", str(ROOT), "status", "--porcelain", "--", "server", "migrations"])
    return head + (" + uncommitted changes in server/ or migrations/" if dirty != "?" else "")


def _in_loop() -> bool:
    try:
        asyncio.get_running_loop()
        return True
    except RuntimeError:
        return False


def write_result(name: str, result: dict[str, Any]) -> Path:
    RESULTS.mkdir(parents=True, exist_ok=True)
    result["loadavg_at_end"] = Path("/proc/loadavg").read_text().split()[:3]
    path = RESULTS / f"{name}.json"
    path.write_text(json.dumps(result, indent=2, default=str) + "\n")
    return path


def table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    def fmt(v: Any) -> str:
        if isinstance(v, float):
            return f"{v:,.3f}" if abs(v) < 10 else f"{v:,.1f}" if abs(v) < 1000 else f"{v:,.0f}"
        if isinstance(v, int):
            return f"{v:,}"
        return str(v)

    lines = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
    lines += ["| " + " | ".join(fmt(v) for v in row) + " |" for row in rows]
    return "\n".join(lines)


def command_line() -> str:
    return ".venv/bin/python " + " ".join([os.path.relpath(sys.argv[0], ROOT), *sys.argv[1:]])


@contextlib.contextmanager
def collector_paused() -> Iterator[None]:
    """No garbage collection in the load generator while it measures: a full collection of
    its heap pauses it for 25-130 ms (seen at 3,200-12,800 updates/s), and every update
    sent or received during the pause would be timed as the server's latency. Reference
    counting still frees what the step drops; cycles wait for the step's end."""
    gc.collect()
    gc.freeze()
    gc.disable()
    try:
        yield
    finally:
        gc.enable()
        gc.unfreeze()


def use_uvloop() -> None:
    with contextlib.suppress(ImportError):
        import uvloop

        asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())


def new_id() -> str:
    return uuid.uuid4().hex[:12]


@contextlib.contextmanager
def timer() -> Iterator[Callable[[], float]]:
    start = time.perf_counter()
    yield lambda: time.perf_counter() - start
