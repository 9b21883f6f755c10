"""`make demo`: start the bundled FinOps demo agent on a local `adk api_server` (a free
loopback port, in-memory sessions), run the bot's console against it, stop ADK at the end.
Redis is embedded unless REDIS_URL is set. Works interactively and with piped input."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
AGENTS = ROOT / "examples" / "agents"
APP = "finops_cost_data_analyst"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_for(url: str, proc: subprocess.Popen[bytes], seconds: float = 60.0) -> bool:
    deadline = time.monotonic() + seconds
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            return False
        try:
            with opener.open(url, timeout=2) as response:
                if response.status == 200:
                    return True
        except OSError:
            time.sleep(0.2)
    return False


def main() -> int:
    port = free_port()
    adk = Path(sys.executable).with_name("adk")
    log = Path(tempfile.gettempdir()) / f"adk-demo-{port}.log"
    env = {k: v for k, v in os.environ.items() if not k.lower().endswith("_proxy")}
    with open(log, "wb") as log_file:
        server = subprocess.Popen(
            [str(adk), "api_server", "--host", "127.0.0.1", "--port", str(port),
             "--session_service_uri", "memory://", str(AGENTS)],
            stdout=log_file, stderr=subprocess.STDOUT, env=env,
        )
        try:
            if not wait_for(f"http://127.0.0.1:{port}/list-apps", server):
                print(f"demo: the ADK api_server did not start; see {log}", file=sys.stderr)
                return 1
            env.update({"ADK_BASE_URL": f"http://127.0.0.1:{port}", "ADK_APP_NAME": APP})
            if sys.stdin.isatty():
                print(
                    f"FinOps demo agent on http://127.0.0.1:{port}. Try: 'What did we spend on "
                    "BigQuery last month?', 'break that down by team', 'any anomalies?'",
                    file=sys.stderr,
                )
            return subprocess.call([sys.executable, "-m", "bot", "console"], env=env, cwd=ROOT)
        finally:
            server.terminate()
            try:
                server.wait(10)
            except subprocess.TimeoutExpired:
                server.kill()


if __name__ == "__main__":
    sys.exit(main())
