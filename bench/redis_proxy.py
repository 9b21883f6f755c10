"""A counting TCP proxy in front of Redis: the bot under test connects through it, so its
commands and round trips are counted exactly, whatever else uses the same Redis server.

Commands are counted by parsing the RESP arrays clients send. A round trip is a burst of
client bytes that follows a reply on the same connection (a pipeline or MULTI/EXEC sent in
one write is one round trip; a Lua script is one command and one round trip)."""

from __future__ import annotations

import asyncio
from collections import Counter
from dataclasses import dataclass, field


class RespCounter:
    """Incremental parser of client RESP (arrays of bulk strings; inline commands too)."""

    def __init__(self, counts: Counter[str]) -> None:
        self.counts = counts
        self.buf = b""

    def feed(self, data: bytes) -> None:
        self.buf += data
        for _ in range(100_000):  # bounded: at most this many commands per chunk
            name, used = self._one(self.buf)
            if used == 0:
                return
            self.buf = self.buf[used:]
            if name:
                self.counts[name] += 1

    @staticmethod
    def _one(buf: bytes) -> tuple[str, int]:
        """(command name, bytes used) of the first complete command, or ("", 0)."""
        end = buf.find(b"\r\n")
        if end < 0:
            return "", 0
        if not buf.startswith(b"*"):  # inline command
            words = buf[:end].split()
            return (words[0].decode().lower() if words else ""), end + 2
        items = int(buf[1:end])
        pos = end + 2
        name = ""
        for i in range(items):
            line_end = buf.find(b"\r\n", pos)
            if line_end < 0:
                return "", 0
            size = int(buf[pos + 1 : line_end])
            start = line_end + 2
            if len(buf) < start + size + 2:
                return "", 0
            if i == 0:
                name = buf[start : start + size].decode(errors="replace").lower()
            pos = start + size + 2
        return name, pos


@dataclass
class RedisProxy:
    target_host: str = "127.0.0.1"
    target_port: int = 6379
    commands: Counter[str] = field(default_factory=Counter)
    round_trips: int = 0
    port: int = 0
    _server: asyncio.Server | None = None

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._client, "127.0.0.1", 0)
        self.port = int(self._server.sockets[0].getsockname()[1])

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def snapshot(self) -> tuple[int, int]:
        """(commands, round trips) so far."""
        return sum(self.commands.values()), self.round_trips

    async def _client(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            up_reader, up_writer = await asyncio.open_connection(self.target_host,
                                                                 self.target_port)
        except OSError:
            writer.close()
            return
        parser = RespCounter(self.commands)
        replied = [True]  # a reply came since the last client burst

        async def upstream() -> None:
            while data := await reader.read(65536):
                if replied[0]:
                    self.round_trips += 1
                    replied[0] = False
                parser.feed(data)
                up_writer.write(data)
                await up_writer.drain()
            up_writer.close()

        async def downstream() -> None:
            while data := await up_reader.read(65536):
                replied[0] = True
                writer.write(data)
                await writer.drain()
            writer.close()

        tasks = [asyncio.create_task(upstream()), asyncio.create_task(downstream())]
        try:
            await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in tasks:
                task.cancel()
            writer.close()
            up_writer.close()

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            self._server = None
