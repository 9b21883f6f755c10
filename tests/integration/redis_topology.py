"""Redis topologies of a test's own, from real redis-server processes on free loopback ports
in temporary directories (tests/integration/redis_server.py):

- `SentinelTopology`: a primary, a replica and three Sentinels
  (https://redis.io/docs/latest/operate/oss_and_stack/management/sentinel/), quick to fail
  over (`down-after-milliseconds` 1000); kill -9 the primary and wait until the Sentinels
  name the promoted replica.
- `RedisClusterProcs`: six cluster nodes joined by `redis-cli --cluster create
  --cluster-replicas 1` (https://redis.io/docs/latest/operate/oss_and_stack/management/scaling/);
  kill -9 a primary and wait until its replica is promoted.

Every wait is bounded and waits for its condition (tests/waiting.py); `cleanup` kills every
process and removes every directory."""

from __future__ import annotations

import asyncio
import shutil
from dataclasses import dataclass

import redis

from tests.fakes.adk_server import free_port
from tests.integration.redis_server import RedisServer
from tests.waiting import eventually

MASTER_NAME = "mymaster"
# A replica's first full sync starts at once, not after the default 5 s wait for more
# replicas (repl-diskless-sync-delay, https://redis.io/docs/latest/operate/oss_and_stack/management/replication/).
QUICK_SYNC = ["--repl-diskless-sync-delay", "0"]


def _ask(server: RedisServer, *command: str) -> object:
    """One command to `server`, or None if it does not answer."""
    client = server.client()
    try:
        return client.execute_command(*command)
    except (redis.RedisError, OSError):
        return None
    finally:
        client.close()


def _info(server: RedisServer, section: str) -> dict[str, object]:
    client = server.client()
    try:
        return dict(client.info(section))
    except (redis.RedisError, OSError):
        return {}
    finally:
        client.close()


# ---- Sentinel -------------------------------------------------------------------------------


class SentinelServer(RedisServer):
    """A Sentinel (`redis-server sentinel.conf --sentinel`) watching the primary at
    `primary_port` under MASTER_NAME. Its config file is written once and then left to the
    Sentinel, which rewrites it with what it learns (epochs, replicas, other Sentinels)."""

    def __init__(self, primary_port: int, *, quorum: int, password: str | None,
                 down_after_ms: int, failover_timeout_ms: int) -> None:
        super().__init__(persistent=False, password=password)
        self.primary_port = primary_port
        self.quorum = quorum
        self.down_after_ms = down_after_ms
        self.failover_timeout_ms = failover_timeout_ms

    @property
    def conf(self) -> str:
        return str(self.dir / "sentinel.conf")

    def moved(self) -> None:
        (self.dir / "sentinel.conf").unlink(missing_ok=True)  # written again with the port

    def command(self, binary: str) -> list[str]:
        path = self.dir / "sentinel.conf"
        if not path.exists():
            lines = [
                f"port {self.port}", "bind 127.0.0.1", f"dir {self.dir}",
                f"logfile {self.dir / 'redis.log'}",
                f"sentinel monitor {MASTER_NAME} 127.0.0.1 {self.primary_port} {self.quorum}",
                f"sentinel down-after-milliseconds {MASTER_NAME} {self.down_after_ms}",
                f"sentinel failover-timeout {MASTER_NAME} {self.failover_timeout_ms}",
                f"sentinel parallel-syncs {MASTER_NAME} 1",
            ]
            if self.password:
                # Clients and the other Sentinels authenticate with it.
                lines += [f"requirepass {self.password}",
                          f"sentinel sentinel-pass {self.password}"]
            path.write_text("\n".join(lines) + "\n")
        return [binary, str(path), "--sentinel"]

    def master_state(self) -> dict[str, object]:
        """SENTINEL MASTER, parsed by redis-py ({} if the Sentinel does not answer)."""
        client = self.client()
        try:
            return dict(client.sentinel_master(MASTER_NAME))
        except (redis.RedisError, OSError):
            return {}
        finally:
            client.close()

    def master_port(self) -> int | None:
        """The port of the primary this Sentinel names now."""
        reply = _ask(self, "SENTINEL", "GET-MASTER-ADDR-BY-NAME", MASTER_NAME)
        if isinstance(reply, list | tuple) and len(reply) == 2:
            return int(reply[1])
        return None


class SentinelTopology:
    """A primary, one replica and three Sentinels (quorum 2)."""

    def __init__(self, *, sentinels: int = 3, sentinel_password: str | None = None,
                 down_after_ms: int = 1000, failover_timeout_ms: int = 2000) -> None:
        self.sentinel_password = sentinel_password
        self.servers = [RedisServer(persistent=False, extra_args=QUICK_SYNC)]
        self.servers.append(RedisServer(persistent=False, extra_args=[
            *QUICK_SYNC, "--replicaof", "127.0.0.1", "0"]))  # the port is set in start()
        self.sentinels = [
            SentinelServer(0, quorum=sentinels // 2 + 1, password=sentinel_password,
                           down_after_ms=down_after_ms, failover_timeout_ms=failover_timeout_ms)
            for _ in range(sentinels)]

    async def start(self, timeout: float = 30.0) -> None:
        primary, replica = self.servers
        primary.start()
        replica.extra_args[-1] = str(primary.port)
        replica.start()
        for sentinel in self.sentinels:
            sentinel.primary_port = primary.port
            sentinel.start()
        await self.ready(timeout)

    async def ready(self, timeout: float = 30.0) -> None:
        """The replica is in sync, and every Sentinel sees the primary up, its replica and
        the other Sentinels: a failover can happen."""
        others = len(self.sentinels) - 1

        def sentinel_ready(sentinel: SentinelServer) -> bool:
            state = sentinel.master_state()
            return (bool(state.get("is_master")) and not state.get("is_sdown")
                    and int(str(state.get("num-slaves", 0))) >= 1
                    and int(str(state.get("num-other-sentinels", 0))) >= others)

        def all_ready() -> bool:
            replicas = [s for s in self.servers if s.running and s is not self.primary]
            return (all(_info(r, "replication").get("master_link_status") == "up"
                        for r in replicas)
                    and all(sentinel_ready(s) for s in self.sentinels if s.running))

        await eventually(all_ready, timeout=timeout, interval=0.1,
                         what=lambda: f"Sentinels not ready: {self.describe()}")

    @property
    def primary(self) -> RedisServer:
        """The server the Sentinels name as primary (the first one before any failover)."""
        port = next((p for s in self.sentinels if s.running
                     if (p := s.master_port()) is not None), self.servers[0].port)
        return next(s for s in self.servers if s.port == port)

    @property
    def replicas(self) -> list[RedisServer]:
        primary = self.primary
        return [s for s in self.servers if s is not primary]

    @property
    def sentinel_list(self) -> str:
        """REDIS_SENTINELS of the bot."""
        return ",".join(f"127.0.0.1:{s.port}" for s in self.sentinels)

    def bot_settings(self) -> dict[str, str]:
        """The bot's settings for this topology (BotProcess keyword arguments)."""
        values = {"redis_mode": "sentinel", "redis_sentinels": self.sentinel_list,
                  "redis_sentinel_master": MASTER_NAME}
        if self.sentinel_password:
            values["redis_sentinel_password"] = self.sentinel_password
        return values

    def describe(self) -> str:
        parts = [f"{s.port}:{_info(s, 'replication').get('role') if s.running else 'down'}"
                 for s in self.servers]
        parts += [f"sentinel {s.port} names {s.master_port()}" for s in self.sentinels]
        return ", ".join(parts)

    async def in_sync(self, timeout: float = 15.0) -> None:
        """Wait until every live replica has every write the primary has (the replication
        offsets of INFO replication are equal)."""
        primary = self.primary

        def synced() -> bool:
            offset = _info(primary, "replication").get("master_repl_offset")
            replicas = [r for r in self.replicas if r.running]
            return offset is not None and all(
                _info(r, "replication").get("slave_repl_offset") == offset for r in replicas)

        await eventually(synced, timeout=timeout, interval=0.05,
                         what=lambda: f"replicas behind: {self.describe()}")

    async def kill_primary(self, timeout: float = 30.0) -> RedisServer:
        """kill -9 the primary and wait until every Sentinel names a replica that took its
        place (promoted: it answers ROLE as master). Returns the new primary."""
        old = self.primary
        old.kill()

        def promoted() -> RedisServer | None:
            ports = {s.master_port() for s in self.sentinels if s.running}
            if len(ports) != 1 or old.port in ports or None in ports:
                return None
            [port] = ports
            new = next((s for s in self.servers if s.port == port and s.running), None)
            if new is None or _info(new, "replication").get("role") != "master":
                return None
            return new

        return await eventually(promoted, timeout=timeout, interval=0.1,
                                what=lambda: f"no failover: {self.describe()}")

    def cleanup(self) -> None:
        for server in [*self.sentinels, *self.servers]:
            server.cleanup()


# ---- Redis Cluster --------------------------------------------------------------------------


class ClusterNode(RedisServer):
    """A redis-server in cluster mode, its cluster bus on a port of its own
    (`cluster-port`, Redis 7), so that no port + 10000 has to be free."""

    def __init__(self, node_timeout_ms: int) -> None:
        super().__init__(persistent=False, extra_args=QUICK_SYNC)
        self.node_timeout_ms = node_timeout_ms
        self.bus_port = free_port()

    def moved(self) -> None:
        self.bus_port = free_port()

    def command(self, binary: str) -> list[str]:
        return [*super().command(binary),
                "--cluster-enabled", "yes", "--cluster-config-file", "nodes.conf",
                "--cluster-node-timeout", str(self.node_timeout_ms),
                "--cluster-port", str(self.bus_port)]

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"


@dataclass(frozen=True)
class NodeLine:
    """One line of CLUSTER NODES."""

    node_id: str
    port: int
    flags: frozenset[str]
    master_id: str

    @classmethod
    def parse(cls, line: str) -> NodeLine:
        fields = line.split()
        address = fields[1].split("@")[0]
        return cls(fields[0], int(address.rsplit(":", 1)[1]), frozenset(fields[2].split(",")),
                   fields[3])


class RedisClusterProcs:
    """Six nodes (three primaries, three replicas) joined into one cluster."""

    def __init__(self, *, nodes: int = 6, replicas: int = 1, node_timeout_ms: int = 1000) -> None:
        self.replicas_per_primary = replicas
        self.nodes = [ClusterNode(node_timeout_ms) for _ in range(nodes)]

    @property
    def startup_nodes(self) -> list[str]:
        return [n.address for n in self.nodes if n.running]

    async def start(self, timeout: float = 60.0) -> None:
        for node in self.nodes:
            node.start()
        cli = shutil.which("redis-cli")
        assert cli, "redis-cli is not installed"
        create = await asyncio.create_subprocess_exec(
            cli, "--cluster", "create", *[n.address for n in self.nodes],
            "--cluster-replicas", str(self.replicas_per_primary), "--cluster-yes",
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT)
        try:
            output, _ = await asyncio.wait_for(create.communicate(), timeout)
        except TimeoutError:
            create.kill()
            await create.wait()
            raise AssertionError("redis-cli --cluster create did not finish") from None
        assert create.returncode == 0, f"cluster create failed:\n{output.decode(errors='replace')}"
        await self.ready(timeout)

    def node_lines(self) -> list[NodeLine]:
        """CLUSTER NODES as a live node sees it."""
        for node in self.nodes:
            if node.running:
                reply = _ask(node, "CLUSTER", "NODES")
                if isinstance(reply, str):
                    return [NodeLine.parse(line) for line in reply.splitlines() if line.strip()]
        return []

    def state(self, node: ClusterNode) -> str:
        reply = _ask(node, "CLUSTER", "INFO")
        if not isinstance(reply, str):
            return "down"
        info = dict(line.split(":", 1) for line in reply.splitlines() if ":" in line)
        return info.get("cluster_state", "?").strip()

    def describe(self) -> str:
        return ", ".join(f"{n.port}:{self.state(n) if n.running else 'killed'}"
                         for n in self.nodes)

    async def ready(self, timeout: float = 60.0) -> None:
        """CLUSTER INFO says cluster_state:ok on every live node, every live node knows
        every other one, and every live replica is in sync with its primary (else it could
        not be promoted)."""
        live = len([n for n in self.nodes if n.running])

        def synced(node: ClusterNode) -> bool:
            info = _info(node, "replication")
            return info.get("role") == "master" or info.get("master_link_status") == "up"

        def ok() -> bool:
            return all(self.state(n) == "ok" and len(self._known(n)) >= live and synced(n)
                       for n in self.nodes if n.running)

        await eventually(ok, timeout=timeout, interval=0.1,
                         what=lambda: f"cluster not ok: {self.describe()}")

    async def caught_up(self, timeout: float = 30.0) -> None:
        """Every live primary's replicas have all its writes so far (their offsets reached
        the primary's): a primary killed now loses nothing."""
        def offsets_reached() -> bool:
            for node in self.primaries():
                info = _info(node, "replication")
                wanted = int(str(info.get("master_repl_offset", 0)))
                replicas = [v for k, v in info.items() if k.startswith("slave")
                            and isinstance(v, dict)]
                if not replicas or any(int(str(r.get("offset", -1))) < wanted
                                       for r in replicas):
                    return False
            return True

        await eventually(offsets_reached, timeout=timeout, interval=0.05,
                         what=lambda: f"replicas behind: {self.describe()}")

    def _known(self, node: ClusterNode) -> list[str]:
        reply = _ask(node, "CLUSTER", "NODES")
        return reply.splitlines() if isinstance(reply, str) else []

    def primaries(self) -> list[ClusterNode]:
        lines = self.node_lines()
        ports = {line.port for line in lines if "master" in line.flags
                 and not {"fail", "fail?"} & line.flags}
        return [n for n in self.nodes if n.port in ports and n.running]

    async def kill_primary(self, victim: ClusterNode | None = None, timeout: float = 60.0
                           ) -> tuple[ClusterNode, ClusterNode]:
        """kill -9 a primary (`victim`, else the first) and wait until one of its replicas is
        a primary and the cluster is ok again on every live node: (killed, promoted)."""
        victim = victim or self.primaries()[0]
        lines = self.node_lines()
        [victim_line] = [line for line in lines if line.port == victim.port]
        replica_ports = {line.port for line in lines if line.master_id == victim_line.node_id}
        assert replica_ports, f"the primary {victim.port} has no replica"
        victim.kill()

        def promoted() -> ClusterNode | None:
            for node in self.nodes:
                if node.port in replica_ports and node.running:
                    role = _ask(node, "ROLE")
                    if isinstance(role, list) and role and role[0] == "master":
                        return node
            return None

        new = await eventually(promoted, timeout=timeout, interval=0.1,
                               what=lambda: f"no replica of {victim.port} promoted: "
                                            f"{self.describe()}")
        await self.ready(timeout)
        return victim, new

    def cleanup(self) -> None:
        for node in self.nodes:
            node.cleanup()

