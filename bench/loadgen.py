"""Load on loopback: `wrk` when it is installed, else a small asyncio HTTP/1.1 client.

Both keep N connections busy for a fixed duration (and at most a fixed number of requests
with the Python client) and report the requests that got the expected status, the others,
and latency percentiles. The same generator is used for tasksvc and for its baseline in
one run, so the ratio does not depend on which one it is.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import shutil
import subprocess
import tempfile
import time
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from bench.report import percentile

T = TypeVar("T")
HOST = "127.0.0.1"


@dataclass(frozen=True)
class Response:
    status: int
    headers: dict[str, str]
    body: bytes


class Connection:
    """One keep-alive HTTP/1.1 connection: enough of the protocol for uvicorn's answers."""

    def __init__(self, port: int) -> None:
        self.port = port
        self._reader: asyncio.StreamReader | None = None
        self._writer: asyncio.StreamWriter | None = None

    async def request(self, method: str, path: str, body: bytes | None = None) -> Response:
        if self._writer is None:
            self._reader, self._writer = await asyncio.open_connection(HOST, self.port)
        assert self._reader is not None
        head = f"{method} {path} HTTP/1.1\r\nHost: {HOST}:{self.port}\r\n"
        if body is not None:
            head += f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n"
        self._writer.write(head.encode() + b"\r\n" + (body or b""))
        try:
            response = await _read_response(self._reader)
        except BaseException:
            await self.close()
            raise
        if response.headers.get("connection", "").lower() == "close":
            await self.close()
        return response

    async def close(self) -> None:
        writer, self._writer, self._reader = self._writer, None, None
        if writer is not None:
            writer.close()
            with contextlib.suppress(OSError):
                await writer.wait_closed()


async def _read_response(reader: asyncio.StreamReader) -> Response:
    raw = await reader.readuntil(b"\r\n\r\n")
    status_line, *lines = raw.decode("latin-1").split("\r\n")
    headers = {}
    for line in lines:
        name, sep, value = line.partition(":")
        if sep:
            headers[name.strip().lower()] = value.strip()
    if "content-length" in headers:
        body = await reader.readexactly(int(headers["content-length"]))
    elif headers.get("transfer-encoding", "").lower() == "chunked":
        body = await _read_chunked(reader)
    else:
        body = await reader.read()
    return Response(int(status_line.split(" ", 2)[1]), headers, body)


async def _read_chunked(reader: asyncio.StreamReader) -> bytes:
    body = bytearray()
    while True:
        size = int((await reader.readuntil(b"\r\n")).split(b";")[0], 16)
        body += await reader.readexactly(size + 2)
        if size == 0:
            return bytes(body[:-2])
        del body[-2:]


def run(main: Callable[[], Coroutine[Any, Any, T]]) -> T:
    """Run a coroutine on uvloop when it is there (it is, with uvicorn[standard]), else asyncio."""
    try:
        import uvloop
    except ImportError:
        return asyncio.run(main())
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        return runner.run(main())


# --- load --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Load:
    """What to send: one request, repeated."""

    port: int
    method: str
    path: str
    body: bytes | None
    expect: int  # the status that counts as done
    connections: int
    duration_s: float
    max_requests: int = 1_000_000


@dataclass(frozen=True)
class LoadResult:
    tool: str
    ok: int
    errors: int
    elapsed_s: float
    p50_s: float
    p99_s: float

    @property
    def rate(self) -> float:
        """Requests answered with the expected status, per second."""
        return self.ok / self.elapsed_s if self.elapsed_s > 0 else 0.0


def combine(results: list[LoadResult]) -> LoadResult:
    """Rounds of the same load as one: counts and time added up, percentiles averaged over rounds."""
    n = len(results)
    return LoadResult(
        results[0].tool,
        ok=sum(r.ok for r in results),
        errors=sum(r.errors for r in results),
        elapsed_s=sum(r.elapsed_s for r in results),
        p50_s=sum(r.p50_s for r in results) / n,
        p99_s=sum(r.p99_s for r in results) / n,
    )


def generate(load: Load, tool: str) -> LoadResult:
    return _wrk(load) if tool == "wrk" else run(lambda: _python_load(load))


def pick_tool(wanted: str) -> str:
    """`auto`: wrk if it is on PATH (Debian package `wrk`), else the Python client."""
    if wanted == "auto":
        return "wrk" if shutil.which("wrk") else "python"
    if wanted == "wrk" and not shutil.which("wrk"):
        raise SystemExit("bench: --loadgen wrk, but wrk is not installed (Debian package `wrk`)")
    return wanted


async def _python_load(load: Load) -> LoadResult:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + load.duration_s
    latencies: list[float] = []
    counts = {"ok": 0, "errors": 0, "budget": load.max_requests}

    async def client() -> None:
        conn = Connection(load.port)
        try:
            while loop.time() < deadline and counts["budget"] > 0:
                counts["budget"] -= 1
                started = time.perf_counter()
                try:
                    resp = await conn.request(load.method, load.path, load.body)
                except (OSError, asyncio.IncompleteReadError, asyncio.LimitOverrunError, ValueError):
                    counts["errors"] += 1
                    continue
                latencies.append(time.perf_counter() - started)
                counts["ok" if resp.status == load.expect else "errors"] += 1
        finally:
            await conn.close()

    started = time.perf_counter()
    await asyncio.wait_for(asyncio.gather(*(client() for _ in range(load.connections))), load.duration_s + 60)
    elapsed = time.perf_counter() - started
    latencies.sort()
    return LoadResult(
        "python", counts["ok"], counts["errors"], elapsed, percentile(latencies, 50), percentile(latencies, 99)
    )


_WRK_SCRIPT = """
wrk.method = "%(method)s"
wrk.body = [==[%(body)s]==]
wrk.headers["Content-Type"] = "application/json"
function done(summary, latency, requests)
  local e = summary.errors
  io.write(string.format("BENCH %%d %%d %%d %%d %%d %%d\\n", summary.requests, summary.duration, e.status,
    e.connect + e.read + e.write + e.timeout, latency:percentile(50), latency:percentile(99)))
end
"""


def _wrk(load: Load) -> LoadResult:
    """wrk with one thread (the machine's other core serves); non-2xx/3xx count as errors.

    wrk takes whole seconds: the duration is rounded up (at least 1 s).
    """
    body = (load.body or b"").decode()
    with tempfile.TemporaryDirectory(prefix="bench-wrk-") as tmp:
        script = Path(tmp) / "load.lua"
        script.write_text(_WRK_SCRIPT % {"method": load.method, "body": body})
        seconds = max(1, math.ceil(load.duration_s))
        argv = ["wrk", "-t1", f"-c{load.connections}", f"-d{seconds}s", "-s", str(script)]
        argv.append(f"http://{HOST}:{load.port}{load.path}")
        done = subprocess.run(argv, capture_output=True, text=True, timeout=seconds + 60, check=False)
    line = next((x for x in done.stdout.splitlines() if x.startswith("BENCH ")), None)
    if done.returncode != 0 or line is None:
        raise RuntimeError(f"wrk failed ({done.returncode}): {done.stderr.strip() or done.stdout.strip()}")
    requests, duration_us, status_errors, socket_errors, p50_us, p99_us = (int(x) for x in line.split()[1:])
    return LoadResult(
        "wrk",
        ok=requests - status_errors,
        errors=status_errors + socket_errors,
        elapsed_s=duration_us / 1e6,
        p50_s=p50_us / 1e6,
        p99_s=p99_us / 1e6,
    )
