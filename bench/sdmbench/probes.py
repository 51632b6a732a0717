"""Client-side probes run inside the driver: time to first byte, and idle connections held open."""

from __future__ import annotations

import socket
import time


def percentile(xs: list[float], q: float) -> float | None:
    """Linear interpolation between closest ranks (q in [0, 1])."""
    if not xs:
        return None
    xs = sorted(xs)
    k = (len(xs) - 1) * q
    lo = int(k)
    hi = min(lo + 1, len(xs) - 1)
    return xs[lo] + (xs[hi] - xs[lo]) * (k - lo)


def ttfb(port: int, count: int, warmup: int, max_seconds: float) -> dict:
    """Sequential new connections: connect, send 1 byte, wait for its echo, close.

    Returns percentiles (ms) of connect start → echoed byte, over `count` connections after
    `warmup` discarded ones; stops early at `max_seconds`.
    """
    samples: list[float] = []
    errors: dict[str, int] = {}
    deadline = time.monotonic() + max_seconds
    for i in range(warmup + count):
        if time.monotonic() > deadline:
            break
        t0 = time.perf_counter()
        s = None
        try:
            s = socket.create_connection(("127.0.0.1", port), timeout=5)
            s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            s.sendall(b"!")
            if s.recv(1) != b"!":
                raise ConnectionError("no echo")
            t1 = time.perf_counter()
            if i >= warmup:
                samples.append((t1 - t0) * 1e3)
        except OSError as e:
            errors[type(e).__name__] = errors.get(type(e).__name__, 0) + 1
        finally:
            if s is not None:
                s.close()
    return {
        "n": len(samples),
        "errors": sum(errors.values()),
        "error_kinds": errors,
        "p50_ms": percentile(samples, 0.50),
        "p90_ms": percentile(samples, 0.90),
        "p99_ms": percentile(samples, 0.99),
        "max_ms": max(samples) if samples else None,
        "mean_ms": sum(samples) / len(samples) if samples else None,
    }


class IdleConnections:
    """Connections that each made one echo round trip (so they are established end to end:
    TLS, lease, upstream) and then stay open and idle until `close`."""

    def __init__(self) -> None:
        self.socks: list[socket.socket] = []
        self.errors = 0

    def open(self, ports: list[int], count: int, max_seconds: float) -> None:
        deadline = time.monotonic() + max_seconds
        for i in range(count):
            if time.monotonic() > deadline:
                self.errors += count - i
                break
            try:
                s = socket.create_connection(("127.0.0.1", ports[i % len(ports)]), timeout=5)
                s.sendall(b"!")
                if s.recv(1) != b"!":
                    raise ConnectionError("no echo")
                self.socks.append(s)
            except OSError:
                self.errors += 1

    def close(self) -> None:
        for s in self.socks:
            s.close()
        self.socks = []
