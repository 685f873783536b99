"""The collector's memory under 1,000 stalled uploads: each announces a 1 MiB body, sends 300 bytes
and stops. RSS of the collector process before, during and after, and what the clients got.

    .venv/bin/python -m bench.stalled_uploads [--uploads 1000] [--hold 8]
"""

from __future__ import annotations

import argparse
import socket
import tempfile
import time
from pathlib import Path

import httpx

from bench.support import RunningCollector, collector_env, session_environment, start_broker

REQUEST = (
    b"POST /v1/events HTTP/1.1\r\nHost: bench\r\nX-Write-Key: test-key\r\n"
    b"Content-Type: application/json\r\nContent-Length: 1048576\r\n\r\n" + b"[" + b" " * 299
)


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def answers(sockets: list[socket.socket]) -> dict[str, int]:
    """What each stalled client has received so far (status line, or nothing)."""
    seen: dict[str, int] = {}
    for s in sockets:
        s.setblocking(False)
        try:
            data = s.recv(64)
            key = data.split(b"\r\n", 1)[0].decode() if data else "closed by the server"
        except BlockingIOError:
            key = "no answer yet"
        except OSError as exc:
            key = f"error: {exc.strerror}"
        seen[key] = seen.get(key, 0) + 1
    return seen


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--uploads", type=int, default=1000)
    ap.add_argument("--hold", type=float, default=8.0, help="seconds the clients stay stalled")
    args = ap.parse_args()
    session_environment()  # as the tests run: the fixed date, no shell settings
    tmp = Path(tempfile.mkdtemp(prefix="shoplake-stalled-"))
    broker = start_broker(tmp / "kafka")
    collector = RunningCollector(collector_env(tmp / "collector", broker.bootstrap))
    host, port = collector.url.removeprefix("http://").split(":")
    try:
        httpx.post(collector.url + "/v1/events", json=[], headers={"X-Write-Key": "test-key"})
        before = rss_mb(collector.pid)
        clients = []
        for _ in range(args.uploads):
            s = socket.create_connection((host, int(port)), timeout=10)
            s.sendall(REQUEST)
            clients.append(s)
        time.sleep(args.hold)
        during = rss_mb(collector.pid)
        got = answers(clients)
        for s in clients:
            s.close()
        time.sleep(3)
        ok = httpx.post(collector.url + "/v1/events", json=[], headers={"X-Write-Key": "test-key"})
        after = rss_mb(collector.pid)
    finally:
        collector.stop()
        broker.stop()
    print(f"{args.uploads} stalled uploads (1 MiB announced, 300 B sent), held {args.hold:g}s")
    print(f"collector RSS: before {before:.0f} MB, during {during:.0f} MB, after {after:.0f} MB")
    print(
        "what the stalled clients had received: " + ", ".join(f"{k}: {v}" for k, v in got.items())
    )
    print(f"a normal request afterwards: HTTP {ok.status_code}")


if __name__ == "__main__":
    main()
