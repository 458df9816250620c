"""The processes a phase starts: logged to files, waited on with deadlines, always stopped.

Every process is started in its own session (Ctrl-C in the terminal reaches only the bench,
which then stops them itself) and stopped with its whole tree: SIGTERM to every process of
the tree, then SIGKILL to whatever is still there after a grace period.
"""

from __future__ import annotations

import contextlib
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TypeVar

import psutil  # type: ignore[import-untyped]  # psutil ships no type hints; types-psutil is not a dependency

T = TypeVar("T")
POLL_S = 0.02


class Processes:
    """Every process this bench run started; `stop_all` stops whatever is left."""

    def __init__(self, log_dir: Path) -> None:
        self.log_dir = log_dir
        self.started: list[Proc] = []

    def start(self, name: str, argv: list[str], env: dict[str, str]) -> Proc:
        log = self.log_dir / f"{len(self.started):02d}-{name}.log"
        with log.open("wb") as out:
            popen = subprocess.Popen(
                argv, env=env, cwd=self.log_dir, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
            )
        proc = Proc(name, popen, log)
        self.started.append(proc)
        return proc

    @contextlib.contextmanager
    def running(self, name: str, argv: list[str], env: dict[str, str], grace_s: float = 5.0) -> Iterator[Proc]:
        """Start a process, yield it, stop its tree on the way out (whatever happened)."""
        proc = self.start(name, argv, env)
        try:
            yield proc
        finally:
            stop_tree(proc.popen, grace_s)

    def stop_all(self) -> None:
        for proc in reversed(self.started):
            stop_tree(proc.popen, grace_s=2.0)


class Proc:
    """A started process, its name and its log."""

    def __init__(self, name: str, popen: subprocess.Popen[bytes], log: Path) -> None:
        self.name = name
        self.popen = popen
        self.log = log

    @property
    def pid(self) -> int:
        return self.popen.pid

    def alive(self) -> bool:
        return self.popen.poll() is None

    def tail(self, lines: int = 20) -> str:
        try:
            text = self.log.read_text(errors="replace")
        except OSError:
            return ""
        return "\n".join(text.splitlines()[-lines:])

    def check(self) -> None:
        """Raise (with the end of its log) if the process died."""
        if not self.alive():
            raise RuntimeError(f"{self.name} exited with {self.popen.returncode}:\n{self.tail()}")


def stop_tree(proc: subprocess.Popen[bytes], grace_s: float) -> None:
    """SIGTERM the process and all its descendants, then SIGKILL what is left after `grace_s`."""
    if proc.poll() is not None:  # gone (and reaped): its pid may name someone else's process now
        return
    try:
        root = psutil.Process(proc.pid)
        family = [root, *root.children(recursive=True)]
    except psutil.NoSuchProcess:
        family = []
    for member in family:
        with contextlib.suppress(psutil.NoSuchProcess):
            member.send_signal(signal.SIGTERM)
    _, alive = psutil.wait_procs(family, timeout=grace_s)
    for member in alive:
        with contextlib.suppress(psutil.NoSuchProcess):
            member.kill()
    psutil.wait_procs(alive, timeout=grace_s)
    with contextlib.suppress(subprocess.TimeoutExpired):
        proc.wait(timeout=grace_s)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_until(condition: Callable[[], T | None], *, timeout_s: float, what: str, watch: tuple[Proc, ...] = ()) -> T:
    """Poll `condition` until it returns something truthy; fail if a watched process dies first."""
    deadline = time.monotonic() + timeout_s
    while True:
        value = condition()
        if value:
            return value
        for proc in watch:
            proc.check()
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {timeout_s:g} s waiting for {what}")
        time.sleep(POLL_S)


def http_ok(port: int, path: str) -> bool:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=2) as resp:
            return int(resp.status) == 200
    except (urllib.error.URLError, OSError):
        return False


def wait_http(proc: Proc, port: int, path: str, timeout_s: float = 30.0) -> None:
    """Wait until `GET path` answers 200 on the loopback port."""
    wait_until(lambda: http_ok(port, path), timeout_s=timeout_s, what=f"{proc.name} on :{port}{path}", watch=(proc,))
