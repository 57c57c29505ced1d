"""The real stack for end-to-end tests: a Redis server, the PSP sandbox over
HTTPS and the recharge-gateway binary, each on a free loopback port, with all
their files (certificates, secrets, configs, ledger, journal, logs) in one
temporary directory.

    stack = Stack("recharge-api").start()
    stub = stack.stub()                       # recharge.v1.RechargeGateway
    stack.kill_gateway(); stack.start_gateway()
    stack.stop()                              # always, in tearDown/tearDownClass

Every wait is a bounded poll: the sandbox port file, `redis-cli ping`, and the
gRPC health service answering SERVING. Every process runs in its own process
group, which stop() kills, and is killed by the kernel if the test process
dies (PR_SET_PDEATHSIG), so a failing or timed-out test leaves nothing behind.
The gateway gets its card-fingerprint key from RECHARGE_FINGERPRINT_KEY (64
random hex characters per stack); the configs use absolute paths only.

Environment (defaults are relative to the repository root):
    GATEWAY_BIN      build/gateway/recharge-gateway
    RECHARGE_PY_OUT  build/python (the generated recharge/v1 Python stubs)
    E2E_KEEP_TMP     if set, the temporary directory is kept (its path is printed)
"""

from __future__ import annotations

import ctypes
import datetime
import http.client
import json
import os
import secrets
import shutil
import signal
import socket
import sqlite3
import ssl
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
GATEWAY_BIN = Path(os.environ.get("GATEWAY_BIN") or REPO / "build" / "gateway" / "recharge-gateway")
PY_OUT = Path(os.environ.get("RECHARGE_PY_OUT") or REPO / "build" / "python")
SANDBOX = REPO / "sandbox" / "psp_sandbox.py"
MAKE_CERTS = REPO / "scripts" / "make-dev-certs.sh"
PACKAGES_YAML = REPO / "configs" / "packages.yaml"
PYTHON = "/usr/bin/python3" if os.path.exists("/usr/bin/python3") else sys.executable

if not (PY_OUT / "recharge" / "v1" / "recharge_pb2.py").exists():
    raise ImportError(f"no Python stubs under {PY_OUT} (build the recharge_proto_py target "
                      "or set RECHARGE_PY_OUT)")
sys.path.insert(0, str(PY_OUT))

import grpc  # noqa: E402
from recharge.v1 import recharge_pb2 as pb  # noqa: E402,F401  (re-exported for tests)
from recharge.v1 import recharge_pb2_grpc as pb_grpc  # noqa: E402

START_DEADLINE_S = 20.0
STOP_DEADLINE_S = 15.0
HEALTH_SERVING = b"\x08\x01"
HEALTH_NOT_SERVING = b"\x08\x02"
# Reconnect quickly after the gateway (re)starts: the default backoff (1 s,
# growing) would turn every restart into a multi-second wait.
CHANNEL_OPTIONS = [("grpc.initial_reconnect_backoff_ms", 50),
                   ("grpc.min_reconnect_backoff_ms", 50),
                   ("grpc.max_reconnect_backoff_ms", 250)]

# Deterministic test instruments of the sandbox (sandbox/card_api.py).
CARD_APPROVE = "4242424242424242"
CARD_DECLINE = "4000000000000002"
CARD_NSF = "4000000000009995"
CVC = "737"


def new_key(prefix: str = "e2e") -> str:
    """A fresh idempotency key (valid charset, 8..128 characters)."""
    return f"{prefix}-{uuid.uuid4().hex}"


def new_user(prefix: str = "user") -> str:
    return f"{prefix}_{uuid.uuid4().hex[:16]}"


def luhn_complete(prefix: str) -> str:
    """`prefix` plus the digit that makes it pass the Luhn check."""
    for d in "0123456789":
        cand = prefix + d
        total = 0
        for i, ch in enumerate(reversed(cand)):
            v = int(ch)
            if i % 2 == 1:
                v = v * 2 - 9 if v * 2 > 9 else v * 2
            total += v
        if total % 10 == 0:
            return cand
    raise AssertionError("unreachable")


def future_exp_year() -> int:
    return datetime.datetime.now(datetime.timezone.utc).year + 3


def card_request(key: str | None = None, user: str | None = None, number: str = CARD_APPROVE,
                 package_id: str = "coins_65", currency: str = "USD", minor_units: int = 99,
                 region: str = "US", **extra) -> "pb.RecordRechargeRequest":
    """A valid card RecordRechargeRequest (US coins_65 at USD 99 by default)."""
    req = pb.RecordRechargeRequest(
        idempotency_key=new_key() if key is None else key,
        user_id=new_user() if user is None else user, package_id=package_id,
        amount=pb.Money(currency=currency, minor_units=minor_units), region=region,
        card=pb.Card(number=number, exp_month=12, exp_year=future_exp_year(), cvc=CVC,
                     holder_name="E2E Tester"),
        client=pb.ClientContext(ip="203.0.113.7", device_id="dev-e2e", user_agent="e2e/1.0"),
        **extra)
    return req


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_until(predicate, timeout: float, what: str, interval: float = 0.02):
    """Polls `predicate` until it returns a truthy value or `timeout` passes
    (then raises AssertionError naming `what`). Returns the truthy value."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.1f}s waiting for {what}")
        time.sleep(interval)


_LIBC = ctypes.CDLL(None, use_errno=True)
_PR_SET_PDEATHSIG = 1


def _die_with_parent(parent_pid: int):
    """preexec_fn: the child gets SIGKILL when the test process dies, even
    by SIGKILL (a ctest timeout), so no server outlives its test."""
    def hook():
        _LIBC.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)
        if os.getppid() != parent_pid:  # the parent died before prctl
            os._exit(1)
    return hook


class Proc:
    """A child process in its own process group (killed with the group), its
    output in a log file; it dies with the test process."""

    def __init__(self, name: str, argv: list[str], log_path: Path, env=None, cwd=None):
        self.name = name
        self.log_path = log_path
        self._log = open(log_path, "ab")
        self.popen = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=self._log,
                                      stderr=self._log, env=env, cwd=cwd,
                                      start_new_session=True,
                                      preexec_fn=_die_with_parent(os.getpid()))
        self.pid = self.popen.pid

    def alive(self) -> bool:
        return self.popen.poll() is None

    def send(self, sig: int) -> None:
        if self.alive():
            try:
                os.killpg(self.pid, sig)
            except ProcessLookupError:
                pass

    def wait(self, timeout: float | None = None) -> int:
        return self.popen.wait(timeout=timeout)

    def stop(self, sig: int = signal.SIGTERM, timeout: float = STOP_DEADLINE_S) -> int:
        """`sig`, then SIGKILL to the whole group if it has not exited by `timeout`."""
        self.send(sig)
        try:
            rc = self.popen.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.send(signal.SIGKILL)
            rc = self.popen.wait()
        # Anything the process left in its group goes too.
        try:
            os.killpg(self.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
        self._log.close()
        return rc

    def log(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""


class Stack:
    """Redis + PSP sandbox + gateway, for one test module."""

    def __init__(self, name: str, *, card_timeout: str = "5s", recovery_interval: str = "5s",
                 settle_after: str = "15s", shutdown_grace: str = "10s", io_threads: int = 2):
        self.name = name
        self.card_timeout = card_timeout
        self.recovery_interval = recovery_interval
        self.settle_after = settle_after
        self.shutdown_grace = shutdown_grace
        self.io_threads = io_threads
        self.tmp: Path | None = None
        self.redis: Proc | None = None
        self.sandbox: Proc | None = None
        self.gateway: Proc | None = None
        self.redis_port = 0
        self.sandbox_port = 0
        self.gateway_port = 0
        self._channel: grpc.Channel | None = None
        self.fingerprint_key = secrets.token_hex(32)  # 64 hex characters
        self.card_secret = "sk_test_" + secrets.token_hex(24)

    # ------------------------------------------------------------------ paths

    @property
    def certs(self) -> Path:
        return self.tmp / "certs"

    @property
    def journal_path(self) -> Path:
        return self.tmp / "sandbox" / "journal.jsonl"

    @property
    def ledger_path(self) -> Path:
        return self.tmp / "ledger" / "ledger.db"

    @property
    def gateway_yaml(self) -> Path:
        return self.tmp / "gateway.yaml"

    @property
    def adapters_yaml(self) -> Path:
        return self.tmp / "adapters.yaml"

    @property
    def gateway_log_path(self) -> Path:
        return self.tmp / "log" / "gateway.log"

    # -------------------------------------------------------------- lifecycle

    def start(self) -> "Stack":
        if not GATEWAY_BIN.exists():
            raise AssertionError(f"gateway binary {GATEWAY_BIN} not found (build recharge-gateway "
                                 "or set GATEWAY_BIN)")
        self.tmp = Path(tempfile.mkdtemp(prefix=f"e2e-{self.name}-"))
        try:
            for d in ("certs", "secrets", "redis", "sandbox", "ledger", "log"):
                (self.tmp / d).mkdir(mode=0o700)
            subprocess.run(["bash", str(MAKE_CERTS), str(self.certs)], check=True, timeout=60,
                           stdout=subprocess.DEVNULL)
            (self.tmp / "secrets" / "card_api_key").write_text(self.card_secret + "\n")
            (self.tmp / "secrets" / "card_api_key").chmod(0o600)
            self._start_redis()
            self._start_sandbox()
            self.write_configs()
            self.start_gateway()
        except BaseException:
            self.stop()
            raise
        return self

    def stop(self) -> None:
        """Stops everything that was started; safe to call more than once."""
        self._close_channel()
        errors = []
        for attr in ("gateway", "sandbox", "redis"):
            proc = getattr(self, attr)
            if proc is not None:
                try:
                    proc.stop()
                except Exception as e:  # keep tearing down the others
                    errors.append(f"{attr}: {e!r}")
                setattr(self, attr, None)
        if self.tmp is not None:
            if os.environ.get("E2E_KEEP_TMP"):
                sys.stderr.write(f"[e2e] kept {self.tmp}\n")
            else:
                shutil.rmtree(self.tmp, ignore_errors=True)
            self.tmp = None
        if errors:
            raise AssertionError("teardown: " + "; ".join(errors))

    def _start_redis(self) -> None:
        for attempt in range(3):
            self.redis_port = free_port()
            self.redis = Proc("redis", [
                "redis-server", "--bind", "127.0.0.1", "--port", str(self.redis_port),
                "--dir", str(self.tmp / "redis"), "--save", "", "--appendonly", "no",
                "--daemonize", "no", "--loglevel", "warning"], self.tmp / "log" / "redis.log")

            def ready():
                if not self.redis.alive():
                    return "exited"
                r = subprocess.run(["redis-cli", "-h", "127.0.0.1", "-p", str(self.redis_port),
                                    "ping"], capture_output=True, timeout=5)
                return "ok" if r.stdout.strip() == b"PONG" else None

            state = wait_until(ready, START_DEADLINE_S, "redis-cli ping", interval=0.05)
            if state == "ok":
                return
            self.redis.stop()  # lost the race for the port: try another
            self.redis = None
        log = (self.tmp / "log" / "redis.log").read_text()
        raise AssertionError(f"redis-server did not start:\n{log}")

    def _start_sandbox(self) -> None:
        port_file = self.tmp / "sandbox" / "port"
        self.sandbox = Proc("sandbox", [
            PYTHON, str(SANDBOX), "--host", "127.0.0.1", "--port", "0",
            "--cert", str(self.certs / "server.pem"), "--key", str(self.certs / "server.key"),
            "--journal", str(self.journal_path),
            "--card-secret-file", str(self.tmp / "secrets" / "card_api_key"),
            "--port-file", str(port_file)], self.tmp / "log" / "sandbox.log")

        def ready():
            if not self.sandbox.alive():
                raise AssertionError(f"sandbox exited {self.sandbox.popen.returncode}:\n"
                                     f"{self.sandbox.log()}")
            if port_file.exists():
                text = port_file.read_text()
                if text.endswith("\n"):
                    return int(text)
            return None

        self.sandbox_port = wait_until(ready, START_DEADLINE_S, "the sandbox port file")
        self._sandbox_ctx = ssl.create_default_context(cafile=str(self.certs / "ca.pem"))

    def gateway_yaml_text(self, **override) -> str:
        """The gateway.yaml this stack runs with; keyword arguments replace
        top-level values verbatim (e.g. ledger='{path: ""}')."""
        values = {
            "listen": f"127.0.0.1:{self.gateway_port or 50051}",
            "io_threads": str(self.io_threads),
            "shutdown_grace": self.shutdown_grace,
            "catalogue": str(PACKAGES_YAML),
            "adapters": str(self.adapters_yaml),
            "ledger": ("\n  backend: sqlite\n  path: " + str(self.ledger_path) +
                       "\n  group_commit_max: 512\n  key_retention: 24h"),
            "redis": f"\n  address: 127.0.0.1:{self.redis_port}\n  timeout: 50ms",
            "fingerprint_key_file": str(self.tmp / "secrets" / "fingerprint.key"),
            "recovery": (f"\n  interval: {self.recovery_interval}"
                         f"\n  settle_after: {self.settle_after}"),
        }
        values.update(override)
        lines = ["# Written by tests/e2e/stack.py"]
        for k, v in values.items():
            lines.append(f"{k}:{v}" if v.startswith("\n") else f"{k}: {v}")
        return "\n".join(lines) + "\n"

    def write_configs(self) -> None:
        self.gateway_yaml.write_text(self.gateway_yaml_text())
        self.adapters_yaml.write_text(
            "# Written by tests/e2e/stack.py\n"
            "instances:\n"
            "  card-primary:\n"
            "    type: card\n"
            f"    endpoint: https://127.0.0.1:{self.sandbox_port}\n"
            f"    ca_file: {self.certs / 'ca.pem'}\n"
            f"    secret_file: {self.tmp / 'secrets' / 'card_api_key'}\n"
            f"    timeout: {self.card_timeout}\n"
            "    pool_size: 64\n"
            "routes:\n"
            "  - method: card\n"
            "    regions: [\"*\"]\n"
            "    currencies: [\"*\"]\n"
            "    instances: [card-primary]\n")

    def gateway_env(self) -> dict:
        env = dict(os.environ)
        env["RECHARGE_FINGERPRINT_KEY"] = self.fingerprint_key
        return env

    def run_gateway_once(self, config: Path, timeout: float = 20.0) -> subprocess.CompletedProcess:
        """Runs the gateway with `config` (expected to fail at start-up) and
        returns its exit status and output; kills it if it is still running
        after `timeout`."""
        proc = subprocess.Popen([str(GATEWAY_BIN), "--config", str(config),
                                 "--listen", f"127.0.0.1:{free_port()}"],
                                stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, env=self.gateway_env(), cwd=str(self.tmp),
                                start_new_session=True, preexec_fn=_die_with_parent(os.getpid()))
        try:
            out, err = proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            out, err = proc.communicate()
        return subprocess.CompletedProcess(proc.args, proc.returncode, out, err)

    def start_gateway(self) -> None:
        """Starts the gateway (on the port it had before, if any) and waits
        until health answers SERVING."""
        assert self.gateway is None or not self.gateway.alive(), "gateway already running"
        if self.gateway is not None:
            self.gateway.stop()
        self._close_channel()
        for attempt in range(3):
            if not self.gateway_port:
                self.gateway_port = free_port()
            self.gateway = Proc("gateway", [
                str(GATEWAY_BIN), "--config", str(self.gateway_yaml),
                "--listen", f"127.0.0.1:{self.gateway_port}"],
                self.gateway_log_path, env=self.gateway_env(), cwd=str(self.tmp))

            def ready():
                # TCP first (a channel that saw "connection refused" backs off
                # for seconds), then a channel and the health check.
                if not self.gateway.alive():
                    return "exited"
                try:
                    socket.create_connection(("127.0.0.1", self.gateway_port), timeout=1).close()
                except OSError:
                    return None
                if self._channel is None:
                    self._channel = grpc.insecure_channel(f"127.0.0.1:{self.gateway_port}",
                                                          options=CHANNEL_OPTIONS)
                try:
                    serving = self.health(timeout=2.0, wait_for_ready=True) == HEALTH_SERVING
                except grpc.RpcError:
                    return None
                return "ok" if serving else None

            state = wait_until(ready, START_DEADLINE_S, "the gateway health check to be SERVING",
                               interval=0.05)
            if state == "ok":
                return
            rc = self.gateway.stop()
            log = self.gateway.log()
            self._close_channel()
            if "cannot listen" in log[-500:]:
                self.gateway_port = 0  # lost the race for the port: try another
                continue
            raise AssertionError(f"gateway exited {rc} at start-up:\n{log}")
        raise AssertionError(f"gateway could not listen:\n{self.gateway.log()}")

    def stop_gateway(self, sig: int = signal.SIGTERM, timeout: float = STOP_DEADLINE_S) -> int:
        """Sends `sig` and waits for the exit; returns the exit status."""
        rc = self.gateway.stop(sig, timeout)
        self._close_channel()
        return rc

    def kill_gateway(self) -> int:
        """kill -9: no chance to finish anything."""
        return self.stop_gateway(signal.SIGKILL)

    def restart_gateway(self) -> None:
        if self.gateway is not None and self.gateway.alive():
            self.stop_gateway()
        self.start_gateway()

    def _close_channel(self) -> None:
        if self._channel is not None:
            self._channel.close()
            self._channel = None

    # ----------------------------------------------------------------- gRPC

    def channel(self) -> grpc.Channel:
        assert self._channel is not None, "gateway not started"
        return self._channel

    def new_channel(self) -> grpc.Channel:
        """A separate channel (own connection); the caller closes it."""
        return grpc.insecure_channel(f"127.0.0.1:{self.gateway_port}", options=CHANNEL_OPTIONS)

    def stub(self, channel: grpc.Channel | None = None) -> pb_grpc.RechargeGatewayStub:
        return pb_grpc.RechargeGatewayStub(channel or self.channel())

    def health(self, timeout: float = 5.0, channel: grpc.Channel | None = None,
               wait_for_ready: bool = False) -> bytes:
        """Raw grpc.health.v1.HealthCheckResponse bytes (b'\\x08\\x01' = SERVING)."""
        check = (channel or self.channel()).unary_unary(
            "/grpc.health.v1.Health/Check",
            request_serializer=lambda x: x, response_deserializer=lambda x: x)
        return check(b"", timeout=timeout, wait_for_ready=wait_for_ready)

    def reflection_list_services(self, timeout: float = 5.0) -> bytes:
        """Raw ServerReflectionResponse bytes for list_services."""
        call = self.channel().stream_stream(
            "/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo",
            request_serializer=lambda x: x, response_deserializer=lambda x: x)
        responses = list(call(iter([b"\x3a\x00"]), timeout=timeout))
        return b"".join(responses)

    # ----------------------------------------------------------- observation

    def gateway_log(self) -> str:
        try:
            return self.gateway_log_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def sandbox_log(self) -> str:
        return self.sandbox.log() if self.sandbox else ""

    def journal(self) -> list[dict]:
        """The sandbox's JSON-lines journal: one record per charge taken."""
        if not self.journal_path.exists():
            return []
        out = []
        for line in self.journal_path.read_text().splitlines():
            if line.strip():
                out.append(json.loads(line))
        return out

    def journal_for(self, key: str) -> list[dict]:
        return [r for r in self.journal() if r.get("idempotency_key") == key]

    def ledger_rows(self, sql: str, params=()) -> list[tuple]:
        """Runs `sql` on the ledger, opened read-only."""
        uri = f"file:{self.ledger_path}?mode=ro"
        con = sqlite3.connect(uri, uri=True, timeout=10)
        try:
            return con.execute(sql, params).fetchall()
        finally:
            con.close()

    def ledger_bytes(self) -> bytes:
        """The ledger's bytes on disk: the database, its WAL and shared memory."""
        data = b""
        for suffix in ("", "-wal", "-shm", "-journal"):
            p = Path(str(self.ledger_path) + suffix)
            if p.exists():
                data += p.read_bytes()
        return data

    def _sandbox_request(self, method: str, path: str, body: bytes | None = None,
                         headers: dict | None = None):
        c = http.client.HTTPSConnection("127.0.0.1", self.sandbox_port,
                                        context=self._sandbox_ctx, timeout=15)
        try:
            c.request(method, path, body=body, headers=headers or {})
            r = c.getresponse()
            raw = r.read()
            return r.status, json.loads(raw) if raw else None
        finally:
            c.close()

    def sandbox_config(self, **changes) -> dict:
        """POSTs to the sandbox's /_sandbox/config (latency_ms, error_rate...)."""
        status, body = self._sandbox_request("POST", "/_sandbox/config",
                                             json.dumps(changes).encode(),
                                             {"Content-Type": "application/json"})
        if status != 200:
            raise AssertionError(f"sandbox config {changes}: HTTP {status} {body}")
        return body

    def sandbox_lookup(self, key: str) -> list[dict]:
        """The sandbox's charges under an idempotency key (GET /v1/charges)."""
        status, body = self._sandbox_request(
            "GET", f"/v1/charges?idempotency_key={key}",
            headers={"Authorization": f"Bearer {self.card_secret}"})
        if status != 200:
            raise AssertionError(f"sandbox lookup {key}: HTTP {status} {body}")
        return body["data"]


def status_name(code: int) -> str:
    return pb.RechargeStatus.Name(code)
