"""Shared plumbing for the PSP sandbox APIs (standard library only).

Every provider API (card_api.py, paypal_api.py, ewallet_api.py) is a class that
exposes ``name``, ``routes()`` and ``restore(record)`` and is given the shared
services defined here:

* ``Journal``          append-only JSON-lines file of every charge taken,
                       fsync'd before the response is sent;
* ``IdempotencyStore`` per-API, per-key stored results (status + body) and a
                       per-key lock so concurrent duplicates cannot both charge;
* ``SandboxConfig``    latency / fault-injection knobs, changeable at runtime,
                       global ("all APIs") and per API (``ApiConfig`` views);
* ``Stats``            request / token-grant counters for the control API;
* ``Request`` / ``Response`` / ``Router`` the tiny HTTP abstraction the
                       handlers are written against (the I/O lives in
                       psp_sandbox.py); ``DropConnection`` makes the server
                       close the connection without answering.
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
    # The raw request target as sent (path plus "?query"), e.g. for signatures.
    target: str = ""

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


class DropConnection(Exception):
    """Raise from a handler to close the connection without any response
    (fault injection: the request was "lost")."""


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
# Money
# --------------------------------------------------------------------------

ZERO_DECIMAL_CURRENCIES = frozenset({"JPY", "KRW", "VND"})


def minor_digits(currency: str) -> int:
    """ISO 4217 minor-unit digits as the sandbox models them: 0 for JPY, KRW
    and VND, 2 for every other currency."""
    return 0 if currency.upper() in ZERO_DECIMAL_CURRENCIES else 2


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

TIMEOUT_MODES = ("charge", "drop")


class SandboxConfig:
    """Fault-injection knobs: top-level values mean "all APIs", and every
    registered API has its own effective copy (``register_api``/``api``).

    ``update`` accepts the top-level fields (``COMMON``) and per-API blocks
    ``{"<api>": {field: value}}`` with the common fields plus the API's extra
    fields (e.g. paypal ``token_ttl_s``). A top-level field is written to the
    global default and to every API; blocks are applied afterwards, so
    ``{"latency_ms": 0, "paypal": {"latency_ms": 500}}`` slows only PayPal.

    The methods ``delay_seconds``/``simulate_latency``/``inject_error`` on the
    config itself use the top-level values (kept for older callers); APIs use
    their ``ApiConfig`` view.
    """

    MAX_LATENCY_MS = 600_000
    MAX_TOKEN_TTL_S = 366 * 86400
    COMMON = ("latency_ms", "latency_jitter_ms", "error_rate", "timeout_mode")

    def __init__(self, latency_ms: float = 0, latency_jitter_ms: float = 0, error_rate: float = 0.0):
        self._lock = threading.Lock()
        self._rng = random.Random()
        self._values: dict[str, Any] = {"latency_ms": 0, "latency_jitter_ms": 0, "error_rate": 0.0,
                                        "timeout_mode": "charge"}
        self._apis: dict[str, dict[str, Any]] = {}
        self.update({"latency_ms": latency_ms, "latency_jitter_ms": latency_jitter_ms,
                     "error_rate": error_rate})

    # -- registration --------------------------------------------------------
    def register_api(self, name: str, extra: dict[str, Any] | None = None) -> "ApiConfig":
        """Give API ``name`` its own settings (a copy of the current top-level
        ones plus ``extra`` fields with their defaults); returns its view."""
        if name in self.COMMON or not re.fullmatch(r"[a-z][a-z0-9_]*", name):
            raise ValueError(f"bad API name {name!r}")
        checked = {k: self._check(k, v) for k, v in (extra or {}).items()}
        with self._lock:
            if name in self._apis:
                raise ValueError(f"API {name!r} already registered")
            values = dict(self._values)
            values.update(checked)
            self._apis[name] = values
        return ApiConfig(self, name)

    def api(self, name: str) -> "ApiConfig":
        with self._lock:
            if name not in self._apis:
                raise KeyError(name)
        return ApiConfig(self, name)

    # -- validation ----------------------------------------------------------
    @classmethod
    def _check(cls, name: str, value: Any) -> Any:
        if name == "timeout_mode":
            if value not in TIMEOUT_MODES:
                raise ValueError("timeout_mode must be one of: " + ", ".join(TIMEOUT_MODES))
            return value
        if isinstance(value, bool) or not isinstance(value, (int, float)) or value != value:
            raise ValueError(f"{name} must be a number")
        if name == "error_rate":
            if not 0.0 <= value <= 1.0:
                raise ValueError("error_rate must be between 0 and 1")
            return float(value)
        if name == "token_ttl_s":
            if not float(value).is_integer() or not 1 <= value <= cls.MAX_TOKEN_TTL_S:
                raise ValueError(f"token_ttl_s must be an integer between 1 and {cls.MAX_TOKEN_TTL_S}")
            return int(value)
        if name in ("latency_ms", "latency_jitter_ms"):
            if not 0 <= value <= cls.MAX_LATENCY_MS:
                raise ValueError(f"{name} must be between 0 and {cls.MAX_LATENCY_MS}")
            return int(value) if float(value).is_integer() else float(value)
        raise ValueError(f"unknown config field: {name}")

    def update(self, changes: dict[str, Any]) -> dict[str, Any]:
        """Validate all changes first, then apply atomically; returns the new
        snapshot. Raises ValueError (nothing applied)."""
        with self._lock:
            api_fields = {name: set(vals) for name, vals in self._apis.items()}
        top: dict[str, Any] = {}
        blocks: dict[str, dict[str, Any]] = {}
        unknown: list[str] = []
        for k, v in changes.items():
            if k in self.COMMON:
                top[k] = self._check(k, v)
            elif k in api_fields:
                if not isinstance(v, dict):
                    raise ValueError(f"{k} must be an object")
                bad = sorted(set(v) - api_fields[k])
                if bad:
                    unknown.extend(f"{k}.{b}" for b in bad)
                    continue
                blocks[k] = {kk: self._check(kk, vv) for kk, vv in v.items()}
            else:
                unknown.append(k)
        if unknown:
            raise ValueError("unknown config field(s): " + ", ".join(sorted(unknown)))
        with self._lock:
            self._values.update(top)
            for vals in self._apis.values():
                vals.update(top)
            for name, block in blocks.items():
                self._apis[name].update(block)
            return self._snapshot_locked()

    def _snapshot_locked(self) -> dict[str, Any]:
        snap: dict[str, Any] = dict(self._values)
        for name, vals in self._apis.items():
            snap[name] = dict(vals)
        return snap

    def snapshot(self) -> dict[str, Any]:
        """Top-level defaults plus one block of effective settings per API."""
        with self._lock:
            return self._snapshot_locked()

    # -- effects (top-level values) ------------------------------------------
    def _values_for(self, api: str | None) -> dict[str, Any]:
        # Caller holds self._lock.
        return self._values if api is None else self._apis[api]

    def _delay(self, api: str | None) -> float:
        with self._lock:
            vals = self._values_for(api)
            base = vals["latency_ms"]
            jitter = vals["latency_jitter_ms"]
            extra = self._rng.uniform(0, jitter) if jitter else 0.0
        return max(0.0, (base + extra) / 1000.0)

    def _inject(self, api: str | None) -> bool:
        with self._lock:
            rate = self._values_for(api)["error_rate"]
            return rate > 0 and self._rng.random() < rate

    def _get(self, api: str | None, field: str) -> Any:
        with self._lock:
            return self._values_for(api)[field]

    def delay_seconds(self) -> float:
        return self._delay(None)

    def simulate_latency(self) -> None:
        d = self._delay(None)
        if d > 0:
            time.sleep(d)

    def inject_error(self) -> bool:
        return self._inject(None)

    def timeout_mode(self) -> str:
        return self._get(None, "timeout_mode")

    def drop_if_configured(self) -> None:
        if self.timeout_mode() == "drop":
            self.simulate_latency()
            raise DropConnection()


class ApiConfig:
    """One API's view of the SandboxConfig (what its handlers call)."""

    def __init__(self, parent: SandboxConfig, name: str):
        self._parent = parent
        self.name = name

    def get(self, field: str) -> Any:
        return self._parent._get(self.name, field)

    def snapshot(self) -> dict[str, Any]:
        return self._parent.snapshot()[self.name]

    def delay_seconds(self) -> float:
        return self._parent._delay(self.name)

    def simulate_latency(self) -> None:
        d = self.delay_seconds()
        if d > 0:
            time.sleep(d)

    def inject_error(self) -> bool:
        return self._parent._inject(self.name)

    def timeout_mode(self) -> str:
        return self.get("timeout_mode")

    def drop_if_configured(self) -> None:
        """timeout_mode "drop": sleep the latency, then lose the request
        (raise DropConnection: nothing charged, journaled or stored)."""
        if self.timeout_mode() == "drop":
            self.simulate_latency()
            raise DropConnection()


# --------------------------------------------------------------------------
# Counters
# --------------------------------------------------------------------------

class Stats:
    """Requests routed to each API (any outcome, dropped ones included) and
    successful PayPal token grants."""

    def __init__(self, apis: Iterable[str]):
        self._lock = threading.Lock()
        self._apis = list(apis)
        self._requests = {a: 0 for a in self._apis}
        self._token_grants = 0

    def count_request(self, api: str) -> None:
        with self._lock:
            self._requests[api] = self._requests.get(api, 0) + 1

    def count_token_grant(self) -> None:
        with self._lock:
            self._token_grants += 1

    def snapshot(self) -> dict[str, Any]:
        with self._lock:
            return {"paypal_token_grants": self._token_grants, "requests": dict(self._requests)}

    def reset(self) -> dict[str, Any]:
        with self._lock:
            self._token_grants = 0
            self._requests = {a: 0 for a in self._apis}
            return {"paypal_token_grants": 0, "requests": dict(self._requests)}
