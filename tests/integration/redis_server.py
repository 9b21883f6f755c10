"""A Redis server of a test's own (the real redis-server binary on a free loopback port), so
outage tests can stop and start it without touching the shared one at 6379. Replicas,
Sentinels and cluster nodes are built on it in tests/integration/redis_topology.py."""

from __future__ import annotations

import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

import redis

from tests.fakes.adk_server import free_port, port_taken


class RedisServer:
    """`extra_args`: more `--name value` options (a replica's `--replicaof`, a cluster
    node's); `password`: the one the server asks (given in `extra_args` or its config), used
    to check that it started."""

    def __init__(self, *, persistent: bool = True, extra_args: Sequence[str] = (),
                 password: str | None = None) -> None:
        self.port = free_port()
        self.dir = Path(tempfile.mkdtemp(prefix="redis-test-"))
        self.persistent = persistent
        self.extra_args = list(extra_args)
        self.password = password
        self.proc: subprocess.Popen[bytes] | None = None
        self.started_once = False

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self, timeout: float = 10.0) -> None:
        if self.started_once:
            self._start(timeout)  # the same port: the bot under test knows this URL
            return
        for attempt in range(3):
            try:
                self._start(timeout)
                self.started_once = True
                return
            except AssertionError:
                # A port picked free and let go may be taken by another process before
                # redis-server binds it: move to another one.
                if attempt == 2 or not port_taken(self.log()):
                    raise
                self.stop()
                self.port = free_port()
                self.moved()
                (self.dir / "redis.log").unlink(missing_ok=True)

    def moved(self) -> None:
        """Called when the server moves to another port before its first start."""

    def log(self) -> str:
        path = self.dir / "redis.log"
        return path.read_text(errors="replace") if path.exists() else ""

    def command(self, binary: str) -> list[str]:
        """The command line that runs this server."""
        args = [binary, "--port", str(self.port), "--bind", "127.0.0.1", "--dir", str(self.dir),
                "--save", "", "--logfile", str(self.dir / "redis.log")]
        # AOF with fsync on every write: what the operations docs recommend in production.
        args += ["--appendonly", "yes", "--appendfsync", "always"] if self.persistent else [
            "--appendonly", "no"]
        return args + self.extra_args

    def _start(self, timeout: float) -> None:
        binary = shutil.which("redis-server")
        assert binary, "redis-server is not installed"
        self.proc = subprocess.Popen(self.command(binary), stdout=subprocess.DEVNULL,
                                     stderr=subprocess.DEVNULL)
        client = redis.Redis(port=self.port, socket_connect_timeout=0.5, password=self.password)
        deadline = time.monotonic() + timeout
        try:
            while time.monotonic() < deadline:
                if self.proc.poll() is not None:
                    raise AssertionError(f"redis-server exited:\n{self.log()}")
                try:
                    # This server, not another process's that took the port first.
                    if client.info("server")["process_id"] == self.proc.pid:
                        return
                    time.sleep(0.05)
                except redis.RedisError:
                    time.sleep(0.05)
        finally:
            client.close()
        raise AssertionError(f"redis-server did not start:\n{self.log()}")

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGCONT)  # a frozen server would not terminate
            self.proc.terminate()
            self.proc.wait(10)
        self.proc = None

    def kill(self) -> None:
        """kill -9: no shutdown, no last write to disk."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)
        self.proc = None

    def freeze(self) -> None:
        """SIGSTOP: the process holds its connections but answers nothing (a replica that
        confirms no writes) until `thaw`."""
        assert self.proc is not None
        self.proc.send_signal(signal.SIGSTOP)

    def thaw(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGCONT)

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def client(self) -> redis.Redis:
        """A synchronous client of this server (decoded replies); the caller closes it."""
        return redis.Redis(port=self.port, password=self.password, decode_responses=True,
                           socket_connect_timeout=1, socket_timeout=5)

    def cleanup(self) -> None:
        self.stop()
        shutil.rmtree(self.dir, ignore_errors=True)
