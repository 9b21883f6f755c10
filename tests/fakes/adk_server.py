"""Run the real ``adk api_server`` as a subprocess for tests (sync API)."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Mapping
from pathlib import Path
from types import TracebackType
from typing import IO

import httpx

AGENTS_DIR = Path(__file__).resolve().parent.parent / "adk_agents"

# The proxy variables: the tests, the bench and the processes they start talk to loopback
# only, and slack_sdk, aiohttp and httpx would send even loopback requests through a proxy.
PROXY_VARS = (
    "HTTP_PROXY",
    "HTTPS_PROXY",
    "ALL_PROXY",
    "http_proxy",
    "https_proxy",
    "all_proxy",
)


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago. Another process may take it before
    it is bound again: a server started on it retries on another port (see
    `port_taken`)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextlib.contextmanager
def closed_port() -> Iterator[int]:
    """A port on 127.0.0.1 where nothing listens, for as long as the block runs: a socket is
    bound to it and never listens, so a connection to it is refused, and no other process
    can start listening on it meanwhile (as it could on a port picked and let go)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        yield int(s.getsockname()[1])


def port_taken(log: str) -> bool:
    """Whether a server's output says it could not bind its port (another process took it
    between `free_port` and the bind)."""
    return "address already in use" in log.lower()


def adk_command() -> list[str]:
    """The ``adk`` console script next to the running interpreter, else ``python -m``."""
    script = Path(sys.executable).with_name("adk")
    if script.exists():
        return [str(script)]
    return [sys.executable, "-m", "google.adk.cli"]


class AdkServer:
    """``adk api_server`` on loopback.

    ``memory=True`` uses ``memory://`` sessions and artifacts (lost on restart).
    ``memory=False`` uses SQLite sessions (``sqlite_path`` or a file in the tmp dir) and
    file artifacts in the tmp dir; both survive :meth:`restart`. ``env`` is added to the
    server's environment (e.g. ADK_DISABLE_PROGRESSIVE_SSE_STREAMING).
    """

    def __init__(
        self,
        agents_dir: Path = AGENTS_DIR,
        *,
        memory: bool = True,
        sqlite_path: Path | None = None,
        port: int | None = None,
        log_level: str = "info",
        extra_args: list[str] | None = None,
        env: Mapping[str, str] | None = None,
    ) -> None:
        self.agents_dir = Path(agents_dir).resolve()
        self.memory = memory
        self._tmp = Path(tempfile.mkdtemp(prefix="adk-server-"))
        self.sqlite_path = Path(sqlite_path).resolve() if sqlite_path else self._tmp / "sessions.db"
        self.port = port
        self.log_level = log_level
        self.extra_args = list(extra_args or [])
        self.env = dict(env or {})
        self.log_path = self._tmp / "adk_api_server.log"
        self._proc: subprocess.Popen[bytes] | None = None
        self._log: IO[bytes] | None = None

    @property
    def base_url(self) -> str:
        if self.port is None:
            raise RuntimeError("AdkServer not started")
        return f"http://127.0.0.1:{self.port}"

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc else None

    def command(self) -> list[str]:
        if self.port is None:
            raise RuntimeError("no port chosen")
        if self.memory:
            storage = ["--session_service_uri", "memory://", "--artifact_service_uri", "memory://"]
        else:
            storage = [
                "--session_service_uri",
                f"sqlite:///{self.sqlite_path}",
                "--artifact_service_uri",
                f"file://{self._tmp / 'artifacts'}",
            ]
        return [
            *adk_command(),
            "api_server",
            "--host",
            "127.0.0.1",
            "--port",
            str(self.port),
            "--log_level",
            self.log_level,
            *storage,
            *self.extra_args,
            str(self.agents_dir),
        ]

    def start(self, timeout: float = 30.0) -> None:
        if self.running:
            return
        if self.port is not None:
            self._start(timeout)  # a given port, or a restart: the bot knows this URL
            return
        for attempt in range(3):
            self.port = free_port()
            try:
                self._start(timeout)
                return
            except RuntimeError:
                if attempt == 2 or not port_taken(self.log_text()):
                    raise
                self.stop()
                self.port = None
                self.log_path.write_bytes(b"")  # this attempt's output is no news

    def _start(self, timeout: float) -> None:
        env = {k: v for k, v in os.environ.items() if k not in PROXY_VARS}
        env["NO_PROXY"] = env["no_proxy"] = "127.0.0.1,localhost"
        env["PYTHONUNBUFFERED"] = "1"
        env.update(self.env)
        self._log = self.log_path.open("ab")
        self._proc = subprocess.Popen(
            self.command(),
            stdout=self._log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env=env,
            cwd=self._tmp,
            start_new_session=True,
        )
        self._wait_ready(timeout)

    def _wait_ready(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        with httpx.Client(trust_env=False, timeout=2.0) as client:
            while time.monotonic() < deadline:
                if self._proc is not None and self._proc.poll() is not None:
                    raise RuntimeError(
                        f"adk api_server exited with {self._proc.returncode}:\n{self.log_text()}"
                    )
                try:
                    if client.get(f"{self.base_url}/list-apps").status_code == 200:
                        return
                except httpx.HTTPError:
                    pass
                time.sleep(0.1)
        self.stop()
        raise TimeoutError(f"adk api_server not ready after {timeout}s:\n{self.log_text()}")

    def stop(self, timeout: float = 10.0) -> None:
        proc, self._proc = self._proc, None
        if proc is not None and proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=timeout)
        if self._log is not None:
            self._log.close()
            self._log = None

    def kill(self) -> None:
        """SIGKILL, simulating a crash."""
        if self._proc is not None and self._proc.poll() is None:
            self._proc.kill()
            self._proc.wait(timeout=10)
        self.stop()

    def restart(self, timeout: float = 30.0) -> None:
        """Stop and start again on the same port (storage kept unless ``memory``)."""
        self.stop()
        self.start(timeout=timeout)

    def log_text(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def cleanup(self) -> None:
        """Stop and remove the tmp dir (logs, SQLite file if defaulted, artifacts)."""
        self.stop()
        shutil.rmtree(self._tmp, ignore_errors=True)

    def __enter__(self) -> AdkServer:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()
