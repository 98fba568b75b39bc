"""A light HTTP/1.1 load generator for the serving benchmarks: asyncio, persistent keep-alive
connections over raw sockets, nothing from Django, run in a process of its own
(`python -m demo.benchmarks.loadgen SPEC.json`, figures as JSON on stdout) so that it shares
no interpreter lock with the server or the benchmark.

With a fixed number of clients, throughput x mean latency = clients, so the two are measured
apart:

- closed loop: `clients` connections, each sending its next request as soon as the answer to
  the previous one has arrived, for `duration` seconds: the most the server does at that
  concurrency.
- open loop: requests scheduled at a constant `rate`, whatever the server does, and shared by
  `clients` connections. A request's latency runs from the moment it was scheduled, not from
  when a connection was free to send it, so the queue a slow answer builds up is counted
  (no coordinated omission).

A spec is a JSON object: host, port, mode ("closed" or "open"), clients, duration, rate (open
loop), method, path, body (text), headers (object), and optionally tokens: each request then
carries the next one as `Authorization: Token ...`, and no more requests are sent than there
are tokens (`limit` caps the count in any case)."""

import asyncio
import json
import math
import sys
import time
from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any


@dataclass
class Spec:
    host: str
    port: int
    mode: str = "closed"
    clients: int = 16
    duration: float = 10.0
    rate: float = 0.0
    method: str = "GET"
    path: str = "/"
    body: str = ""
    headers: dict[str, str] = field(default_factory=dict)
    tokens: list[str] | None = None
    limit: int | None = None

    def requests(self) -> Iterator[bytes]:
        """The raw requests to send, in order (as many as there are tokens, if any)."""
        body = self.body.encode()
        head = f"{self.method} {self.path} HTTP/1.1\r\nHost: {self.host}:{self.port}\r\n"
        head += "".join(f"{name}: {value}\r\n" for name, value in self.headers.items())
        if body or self.method in ("POST", "PUT", "PATCH"):
            head += f"Content-Length: {len(body)}\r\n"
        if self.tokens is None:
            fixed = (head + "\r\n").encode() + body
            while True:
                yield fixed
        for token in self.tokens:
            yield (head + f"Authorization: Token {token}\r\n\r\n").encode() + body

    def cap(self) -> int:
        tokens = len(self.tokens) if self.tokens is not None else None
        counts = [c for c in (self.limit, tokens) if c is not None]
        return min(counts) if counts else sys.maxsize


@dataclass
class Tally:
    latency: list[float] = field(default_factory=list)  # seconds, per answered request
    service: list[float] = field(default_factory=list)  # open loop: from sending
    lag: list[float] = field(default_factory=list)  # open loop: scheduled -> sent
    status: Counter = field(default_factory=Counter)
    errors: Counter = field(default_factory=Counter)
    sent: int = 0
    started: float = 0.0
    finished: float = 0.0


class Connection:
    """One keep-alive connection; reconnects when the server closes it."""

    def __init__(self, host: str, port: int) -> None:
        self.host, self.port = host, port
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None

    async def connect(self) -> "Connection":
        self.reader, self.writer = await asyncio.open_connection(self.host, self.port)
        return self

    async def exchange(self, request: bytes) -> int:
        """Send one request and read its whole answer; returns the status code."""
        if self.writer is None:
            await self.connect()
        assert self.reader is not None and self.writer is not None
        self.writer.write(request)
        status, keep_alive = await read_response(self.reader)
        if not keep_alive:
            self.close()
        return status

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
        self.reader = self.writer = None


async def read_response(reader: asyncio.StreamReader) -> tuple[int, bool]:
    """Read one HTTP/1.1 response (Content-Length, chunked, or to the end of the stream);
    returns its status and whether the connection stays open."""
    head = await reader.readuntil(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    version, status = lines[0].split(" ", 2)[:2]
    headers = {}
    for line in lines[1:]:
        if ":" in line:
            name, value = line.split(":", 1)
            headers[name.strip().lower()] = value.strip().lower()
    keep_alive = version == "HTTP/1.1" and headers.get("connection") != "close"
    if "content-length" in headers:
        await reader.readexactly(int(headers["content-length"]))
    elif headers.get("transfer-encoding") == "chunked":
        while True:
            size = int((await reader.readuntil(b"\r\n")).split(b";")[0], 16)
            if size == 0:
                while await reader.readuntil(b"\r\n") != b"\r\n":
                    pass  # trailers
                break
            await reader.readexactly(size + 2)
    elif int(status) not in (204, 304):
        await reader.read()
        keep_alive = False
    return int(status), keep_alive


async def closed_loop(spec: Spec) -> Tally:
    tally = Tally()
    requests = spec.requests()
    cap = spec.cap()
    connections = await _connect(spec)
    tally.started = time.perf_counter()
    deadline = tally.started + spec.duration

    async def client(connection: Connection) -> None:
        while time.perf_counter() < deadline and tally.sent < cap:
            tally.sent += 1
            request = next(requests)
            start = time.perf_counter()
            if not await _exchange(connection, request, tally):
                continue
            tally.finished = time.perf_counter()
            tally.latency.append(tally.finished - start)
        connection.close()

    await asyncio.gather(*(client(c) for c in connections))
    return tally


async def _connect(spec: Spec) -> list[Connection]:
    """The clients' connections, opened before the clock starts."""
    return list(
        await asyncio.gather(
            *(Connection(spec.host, spec.port).connect() for _ in range(spec.clients))
        )
    )


async def open_loop(spec: Spec) -> Tally:
    tally = Tally()
    total = min(spec.cap(), int(spec.rate * spec.duration))
    requests = spec.requests()
    queue: asyncio.Queue[tuple[float, bytes] | None] = asyncio.Queue()
    connections = await _connect(spec)
    tally.started = time.perf_counter()

    async def schedule() -> None:
        for i in range(total):
            due = tally.started + i / spec.rate
            wait = due - time.perf_counter()
            if wait > 0:
                await asyncio.sleep(wait)
            queue.put_nowait((due, next(requests)))
            tally.sent += 1
        for _ in range(spec.clients):
            queue.put_nowait(None)

    async def client(connection: Connection) -> None:
        while (item := await queue.get()) is not None:
            due, request = item
            sent = time.perf_counter()
            if not await _exchange(connection, request, tally):
                continue
            tally.finished = time.perf_counter()
            tally.latency.append(tally.finished - due)
            tally.service.append(tally.finished - sent)
            tally.lag.append(sent - due)
        connection.close()

    await asyncio.gather(schedule(), *(client(c) for c in connections))
    return tally


def run(spec: Spec) -> dict[str, Any]:
    """Drive the load the spec describes; returns the figures."""
    loop = closed_loop if spec.mode == "closed" else open_loop
    cpu = time.process_time()
    tally = asyncio.run(loop(spec))
    cpu = time.process_time() - cpu
    answered = len(tally.latency)
    seconds = max(tally.finished - tally.started, 1e-9)
    figures: dict[str, Any] = {
        "mode": spec.mode,
        "clients": spec.clients,
        "sent": tally.sent,
        "answered": answered,
        "errors": dict(tally.errors),
        "status": {str(code): n for code, n in sorted(tally.status.items())},
        "seconds": round(seconds, 2),
        "throughput_rps": round(answered / seconds, 1),
        "latency_ms": percentiles(tally.latency),
        "cpu_seconds": round(cpu, 3),
    }
    if spec.mode == "open":
        figures["offered_rps"] = spec.rate
        figures["service_ms"] = percentiles(tally.service)
        figures["send_lag_ms"] = percentiles(tally.lag)
    return figures


def percentiles(samples: Sequence[float]) -> dict[str, float]:
    """Mean, p50, p90, p99, p99.9 and max in milliseconds (nearest rank)."""
    if not samples:
        return {}
    ordered = sorted(samples)

    def rank(q: float) -> float:
        return ordered[min(len(ordered) - 1, max(0, math.ceil(q * len(ordered)) - 1))]

    out = {"mean": sum(ordered) / len(ordered)}
    out.update({"p50": rank(0.5), "p90": rank(0.9), "p99": rank(0.99), "p999": rank(0.999)})
    out["max"] = ordered[-1]
    return {name: round(value * 1000, 2) for name, value in out.items()}


async def _exchange(connection: Connection, request: bytes, tally: Tally) -> bool:
    """Send one request and count its status; on a failure count the error, close the
    connection and return False."""
    try:
        tally.status[await connection.exchange(request)] += 1
    except (OSError, asyncio.IncompleteReadError, ValueError) as error:
        tally.errors[type(error).__name__] += 1
        connection.close()
        return False
    return True


def main(argv: Sequence[str]) -> None:
    with open(argv[0]) as handle:
        spec = Spec(**json.load(handle))
    json.dump(run(spec), sys.stdout)


if __name__ == "__main__":
    main(sys.argv[1:])
