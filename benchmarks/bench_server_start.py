"""Server start: seconds from launching `ambient serve` to its first answer to GET /login, median of 5 starts
over loopback on an empty database (created once, before the first start).

`python benchmarks/bench_server_start.py [--repo CHECKOUT ...] [--starts N]`: each --repo (default this one) is
timed in turn, its server started from that checkout, so that two versions compare back to back.
"""
from __future__ import annotations

import argparse
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[1]
POLL_S = 0.02                      # the first answer is seen within this of its being ready
DEADLINE_S = 60


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def time_to_first_answer(repo: Path, url: str) -> float:
    """Seconds from the `ambient serve` process's launch to a 200 from /login."""
    port = free_port()
    started = time.monotonic()
    process = subprocess.Popen([sys.executable, "-m", "backend.cli", "serve", "--db", url, "--port", str(port)],
                               cwd=repo, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                               env={**os.environ, "PYTHONPATH": str(repo)})
    try:
        while True:
            try:
                if httpx.get(f"http://127.0.0.1:{port}/login", timeout=1).status_code == 200:
                    return time.monotonic() - started
            except httpx.TransportError:
                pass
            if process.poll() is not None or time.monotonic() - started > DEADLINE_S:
                raise RuntimeError(f"{repo}: the server did not answer: {process.stdout.read().decode()[-2000:]}")
            time.sleep(POLL_S)
    finally:
        process.terminate()
        process.wait(timeout=10)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repo", type=Path, action="append", help="a checkout to start the server from")
    parser.add_argument("--starts", type=int, default=5)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        url = f"sqlite:///{tmp}/bench.db"
        for repo in args.repo or [ROOT]:
            time_to_first_answer(repo.resolve(), url)      # creates the database: not a start to count
            seconds = [time_to_first_answer(repo.resolve(), url) for _ in range(args.starts)]
            print(f"{repo}: first answer to GET /login after {statistics.median(seconds):.2f} s "
                  f"(median of {args.starts}; {', '.join(f'{s:.2f}' for s in seconds)})")


if __name__ == "__main__":
    main()
