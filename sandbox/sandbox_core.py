"""Shared plumbing for the PSP sandbox APIs (standard library only).

Every provider API (card today; PayPal and e-wallet later) is a class that
exposes ``name``, ``routes()`` and ``restore(record)`` and is given the shared
services defined here:

* ``Journal``          append-only JSON-lines file of every charge taken,
                       fsync'd before the response is sent;
* ``IdempotencyStore`` per-API, per-key stored results (status + body) and a
                       per-key lock so concurrent duplicates cannot both charge;
* ``SandboxConfig``    latency / fault-injection knobs, changeable at runtime;
* ``Request`` / ``Response`` / ``Router`` the tiny HTTP abstraction the
                       handlers are written against (the I/O lives in
                       psp_sandbox.py).
"""

from __future__ import annotations

import dataclasses
import json
import os
import random
import re
import threading
import time
from typing import Any, Callable, Iterable


# --------------------------------------------------------------------------
# HTTP abstraction
# --------------------------------------------------------------------------

def json_bytes(obj: Any) -> bytes:
    """Deterministic compact JSON (same object -> same bytes, used for replays)."""
    return json.dumps(obj, separators=(",", ":"), ensure_ascii=True).encode("ascii")


@dataclasses.dataclass
class Request:
    method: str
    path: str                       # without the query string
    query: dict[str, list[str]]     # parse_qs of the query string
    headers: Any                    # email.message.Message (case-insensitive get)
    body: bytes
    client: str
    path_params: dict[str, str] = dataclasses.field(default_factory=dict)

    def header(self, name: str) -> str | None:
        return self.headers.get(name) if self.headers is not None else None


@dataclasses.dataclass
class Response:
    status: int
    body: bytes
    headers: list[tuple[str, str]] = dataclasses.field(default_factory=list)
    content_type: str = "application/json"
    # What the access log should show (never card data or secrets).
    log_key: str | None = None
    replayed: bool = False

    @classmethod
    def json(cls, status: int, obj: Any, headers: Iterable[tuple[str, str]] = ()) -> "Response":
        return cls(status, json_bytes(obj), list(headers))


def error_response(status: int, type_: str, code: str, message: str,
                   headers: Iterable[tuple[str, str]] = (), **extra: Any) -> Response:
    """Stripe-style error envelope: {"error":{"type","code",...extra,"message"}}."""
    err: dict[str, Any] = {"type": type_, "code": code}
    err.update(extra)
    err["message"] = message
    return Response.json(status, {"error": err}, headers)


class ApiError(Exception):
    """Raise from a handler to short-circuit with a prepared response."""

    def __init__(self, response: Response):
        super().__init__(response.status)
        self.response = response


Handler = Callable[[Request], Response]


class Router:
    """Maps (method, full-match path regex) to handlers; 404/405 otherwise."""

    def __init__(self) -> None:
        self._routes: list[tuple[str, re.Pattern[str], Handler]] = []

    def add(self, method: str, pattern: str, handler: Handler) -> None:
        self._routes.append((method.upper(), re.compile(pattern), handler))

    def dispatch(self, req: Request) -> Response:
        allowed: list[str] = []
        for method, pattern, handler in self._routes:
            m = pattern.fullmatch(req.path)
            if not m:
                continue
            if method != req.method:
                allowed.append(method)
                continue
            req.path_params = m.groupdict()
            try:
                return handler(req)
            except ApiError as e:
                return e.response
        if allowed:
            return error_response(405, "invalid_request_error", "method_not_allowed",
                                  "Method not allowed for this URL.",
                                  headers=[("Allow", ", ".join(sorted(set(allowed))))])
        return error_response(404, "invalid_request_error", "resource_missing",
                              "Unrecognized request URL.")


# --------------------------------------------------------------------------
# Journal
# --------------------------------------------------------------------------

class JournalError(Exception):
    pass


class Journal:
    """Append-only JSON-lines journal. ``append`` returns only after fsync."""

    def __init__(self, path: str):
        self.path = path
        self._lock = threading.Lock()
        self._fd: int | None = None

    def load(self) -> list[dict[str, Any]]:
        """Read existing records. A torn final line (crash mid-write: its
        charge was never acknowledged) is truncated away; any other corrupt
        line is an error, because silently dropping a charge would break the
        idempotency guarantee."""
        try:
            with open(self.path, "rb") as f:
                data = f.read()
        except FileNotFoundError:
            return []
        records: list[dict[str, Any]] = []
        good_len = 0
        pos = 0
        lineno = 0
        while pos < len(data):
            nl = data.find(b"\n", pos)
            lineno += 1
            if nl < 0:  # torn tail
                try:
                    tail = json.loads(data[pos:])
                    if isinstance(tail, dict):
                        records.append(tail)
                        good_len = len(data)
                        self._needs_newline = True
                except ValueError:
                    pass
                break
            line = data[pos:nl].strip()
            pos = nl + 1
            if line:
                try:
                    rec = json.loads(line)
                except ValueError as e:
                    raise JournalError(f"{self.path}:{lineno}: corrupt journal line: {e}") from None
                if not isinstance(rec, dict):
                    raise JournalError(f"{self.path}:{lineno}: journal line is not an object")
                records.append(rec)
            good_len = pos
        if good_len < len(data):
            with open(self.path, "r+b") as f:
                f.truncate(good_len)
                f.flush()
                os.fsync(f.fileno())
        return records

    _needs_newline = False

    def open(self) -> None:
        existed = os.path.exists(self.path)
        self._fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o600)
        if self._needs_newline:
            self._write_all(b"\n")
            os.fsync(self._fd)
        if not existed:  # make the new directory entry durable too
            dfd = os.open(os.path.dirname(os.path.abspath(self.path)), os.O_RDONLY)
            try:
                os.fsync(dfd)
            finally:
                os.close(dfd)

    def _write_all(self, data: bytes) -> None:
        assert self._fd is not None
        view = memoryview(data)
        while view:
            n = os.write(self._fd, view)
            view = view[n:]

    def append(self, record: dict[str, Any]) -> None:
        line = json.dumps(record, separators=(",", ":"), ensure_ascii=True).encode("ascii") + b"\n"
        with self._lock:
            if self._fd is None:
                raise JournalError("journal is closed")
            self._write_all(line)
            os.fsync(self._fd)

    def close(self) -> None:
        with self._lock:
            if self._fd is not None:
                os.close(self._fd)
                self._fd = None


# --------------------------------------------------------------------------
# Idempotency store
# --------------------------------------------------------------------------

@dataclasses.dataclass
class StoredResult:
    status: int
    body: bytes
    resource_id: str
    # sha256 over the canonical request parameters (in memory only). None for
    # results rebuilt from the journal, which never holds card data; those are
    # compared on ``summary`` instead.
    fingerprint: str | None
    summary: dict[str, Any]


class IdempotencyStore:
    """Results keyed by (api namespace, idempotency key).

    Usage::

        with store.key_lock("card", key):
            prior = store.get("card", key)
            ... process or replay ...
            store.put("card", key, result)
    """

    def __init__(self) -> None:
        self._guard = threading.Lock()
        self._locks: dict[tuple[str, str], threading.Lock] = {}
        self._results: dict[tuple[str, str], StoredResult] = {}

    def key_lock(self, namespace: str, key: str) -> threading.Lock:
        with self._guard:
            lock = self._locks.get((namespace, key))
            if lock is None:
                lock = self._locks[(namespace, key)] = threading.Lock()
            return lock

    def get(self, namespace: str, key: str) -> StoredResult | None:
        with self._guard:
            return self._results.get((namespace, key))

    def put(self, namespace: str, key: str, result: StoredResult) -> None:
        with self._guard:
            self._results[(namespace, key)] = result

    def __len__(self) -> int:
        with self._guard:
            return len(self._results)


# --------------------------------------------------------------------------
# Runtime configuration (latency / fault injection)
# --------------------------------------------------------------------------

class SandboxConfig:
    MAX_LATENCY_MS = 600_000

    def __init__(self, latency_ms: float = 0, latency_jitter_ms: float = 0, error_rate: float = 0.0):
        self._lock = threading.Lock()
        self._rng = random.Random()
        self._values: dict[str, Any] = {"latency_ms": 0, "latency_jitter_ms": 0, "error_rate": 0.0}
        self.update({"latency_ms": latency_ms, "latency_jitter_ms": latency_jitter_ms,
                     "error_rate": error_rate})

    @classmethod
    def _check(cls, name: str, value: Any) -> Any:
        if isinstance(value, bool) or not isinstance(value, (int, float)) or value != value:
            raise ValueError(f"{name} must be a number")
        if name == "error_rate":
            if not 0.0 <= value <= 1.0:
                raise ValueError("error_rate must be between 0 and 1")
            return float(value)
        if not 0 <= value <= cls.MAX_LATENCY_MS:
            raise ValueError(f"{name} must be between 0 and {cls.MAX_LATENCY_MS}")
        return int(value) if float(value).is_integer() else float(value)

    def update(self, changes: dict[str, Any]) -> dict[str, Any]:
        """Validate all changes first, then apply atomically. Raises ValueError."""
        unknown = set(changes) - set(self._values)
        if unknown:
            raise ValueError("unknown config field(s): " + ", ".join(sorted(unknown)))
        checked = {k: self._check(k, v) for k, v in changes.items()}
        with self._lock:
            self._values.update(checked)
            return dict(self._values)

    def snapshot(self) -> dict[str, Any]:
        with self._lock:
            return dict(self._values)

    def delay_seconds(self) -> float:
        with self._lock:
            base = self._values["latency_ms"]
            jitter = self._values["latency_jitter_ms"]
            extra = self._rng.uniform(0, jitter) if jitter else 0.0
        return max(0.0, (base + extra) / 1000.0)

    def simulate_latency(self) -> None:
        d = self.delay_seconds()
        if d > 0:
            time.sleep(d)

    def inject_error(self) -> bool:
        with self._lock:
            rate = self._values["error_rate"]
            return rate > 0 and self._rng.random() < rate
