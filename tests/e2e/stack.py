"""The real stack for end-to-end tests: a Redis server, the PSP sandbox over
HTTPS and the recharge-gateway binary, each on a free loopback port, with all
their files (certificates, secrets, configs, ledger, journal, logs) in one
temporary directory.

    stack = Stack("recharge-api").start()
    stub = stack.stub()                       # recharge.v1.RechargeGateway
    stack.kill_gateway(); stack.start_gateway()
    stack.stop()                              # always, in tearDown/tearDownClass

Options for the adapter tests: `Stack(..., paypal=True, ewallet=True)` starts
the sandbox with its PayPal and e-wallet APIs (credentials and secret files
under secrets/); `stack.adapters_text` replaces the generated adapters.yaml,
`stack.ledger_name` picks the ledger file, `stack.extra_env` adds gateway
environment variables; `stack.stop_sandbox()` / `stack.start_sandbox()`
stop and restart the sandbox on its port, and `stack.start_extra_sandbox()`
starts another sandbox (a `Sandbox`, same certificates and secrets, its own
journal) on a chosen port.

Options for the fraud tests: `stack.fraud_rules_text` (a rule file's text,
written as <tmp>/fraud_rules.yaml) or `stack.fraud_rules_source` (a file
copied there, e.g. configs/fraud_rules.yaml) gives the gateway.yaml a
`fraud: {rules: <tmp>/fraud_rules.yaml}` section (neither: no fraud section,
the allow-all policy); `stack.redis_timeout` and `stack.redis_key_prefix` go
to its `redis:` section. `stack.write_fraud_rules(text)` replaces the file
the gateway loads (atomically), `stack.sighup_gateway()` asks it to reload;
`stack.stop_redis()` / `stack.start_redis()` stop and restart Redis on its
port, `stack.redis_command(...)` sends one command (RESP over a socket, e.g.
CLIENT PAUSE), `stack.redis_commandstats()` reads INFO commandstats, and
`stack.gateway_events(name)` returns the gateway's JSON log lines of an event.

Redis Cluster (issue 13): `Stack(..., redis="cluster")` runs a 3-master
Redis Cluster instead of the one server: six nodes (scripts/dev-redis-cluster.sh
`node`, each a Proc of its own so that one can be stopped, killed and started
alone; data under <tmp>/redis-cluster/<port>/, logs log/redis-<port>.log) on
consecutive free ports whose cluster bus ports (+10000) are free too, joined
by `dev-redis-cluster.sh create` (masters: the first three ports, a replica
each: the other three; it runs while the ledger and sandbox start); gateway.yaml's `redis:` names all six in `cluster:`
(and the first in `address:`). `stack.redis_node_timeout_ms` (2000) is their
cluster-node-timeout. `stack.redis_cluster_ports` lists the six,
`stack.redis_port` is the first. On a cluster:
  - `stack.redis_cluster_nodes(port=None)`: CLUSTER NODES parsed (id, port,
    role "master"/"replica", master_id, slots, failing, connected, myself) as
    a running node (or `port`) sees it; `stack.redis_masters()` the ports of
    the masters serving slots, in slot order; `stack.redis_master_for(key=,
    slot=)` the master serving a key's slot (default slot 0); `redis_key_slot(key)`
    (module level) computes a slot as Redis does (CRC16, hash tags);
  - `stack.redis_command(*args, port=None, key=None)` goes to `port` if given,
    else to the master serving `key`'s slot, else the command's first key's
    (COMMAND GETKEYS; a command without keys needs port=), following MOVED
    and ASK; `stack.redis_commandstats(port=None)` sums INFO commandstats
    over the masters (or reads one node);
  - `stack.stop_redis(key=None, slot=None)` stops (SIGTERM) the master
    serving that slot (default slot 0) and returns its port; `start_redis()`
    starts every stopped node again on its port (from its nodes.conf and
    append-only file) and waits until `stack.redis_cluster_ok()`: every node
    says cluster_state:ok and 3 masters each have a replica in sync;
  - `stack.fail_over_redis_master(key=None, slot=None)` kills (-9) the master
    serving that slot, waits until every running node says cluster_state:ok
    with its replica serving the slot (the automatic failover, after
    cluster-node-timeout), starts the old master again and waits until it
    is that node's replica, in sync, and the cluster is ok; it returns the
    ports and the times (see its docstring). Every wait is a bounded poll.

Callers (issue 7): the gateway.yaml lists three callers, each with its own
random bearer token (only the SHA-256 goes into the file): `e2e` (roles app
and ops, the identity of `stack.channel()`, `new_channel()` and `stub()`,
which send its token), `e2e-app` (role app; two tokens, `app_token` and
`app_token_2`, and the certificate subject `app-client`) and `e2e-ops` (role
ops, `ops_token`, subject `ops-client`). `stack.callers_extra` appends caller
entries (YAML text). `stack.transport` is "plaintext" (default), "tls" or
"mtls" (the gateway serves certs/server.pem; mTLS clients present
certs/<name>-client.pem, made for e2e, app and ops); `stack.raw_channel(
token=..., client=..., plaintext=...)` makes a channel with exactly the
credentials given, `stack.limits` sets the `limits:` section and
`stack.log_level` the gateway's log level ("debug" for every debug line).

Every wait is a bounded poll: the sandbox port file, `redis-cli ping`, and the
gRPC health service answering SERVING. Every process runs in its own process
group, which stop() kills, and is killed by the kernel if the test process
dies (PR_SET_PDEATHSIG, set by `setpriv --pdeathsig`), so a failing or timed-out test leaves nothing behind.
The gateway gets its card-fingerprint key from RECHARGE_FINGERPRINT_KEY (64
random hex characters per stack); the configs use absolute paths only.

Environment (defaults are relative to the repository root):
    GATEWAY_BIN      build/gateway/recharge-gateway
    SANDBOX_BIN      build/sandbox/psp-sandbox
    RECHARGE_PY_OUT  build/python (the generated recharge/v1 Python stubs)
    E2E_KEEP_TMP     if set, the temporary directory is kept (its path is printed)
"""

from __future__ import annotations

import datetime
import hmac
import html
import http.client
import json
import os
import random
import re
import secrets
import shutil
import signal
import socket
import sqlite3
import ssl
import string
import subprocess
import sys
import tempfile
import time
import urllib.parse
import uuid
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
GATEWAY_BIN = Path(os.environ.get("GATEWAY_BIN") or REPO / "build" / "gateway" / "recharge-gateway")
PY_OUT = Path(os.environ.get("RECHARGE_PY_OUT") or REPO / "build" / "python")
SANDBOX_BIN = Path(os.environ.get("SANDBOX_BIN") or REPO / "build" / "sandbox" / "psp-sandbox")
MAKE_CERTS = REPO / "scripts" / "make-dev-certs.sh"
DEV_POSTGRES = REPO / "scripts" / "dev-postgres.sh"
DEV_REDIS_CLUSTER = REPO / "scripts" / "dev-redis-cluster.sh"
PACKAGES_YAML = REPO / "configs" / "packages.yaml"
PYTHON = "/usr/bin/python3" if os.path.exists("/usr/bin/python3") else sys.executable

if not (PY_OUT / "recharge" / "v1" / "recharge_pb2.py").exists():
    raise ImportError(f"no Python stubs under {PY_OUT} (build the recharge_proto_py target "
                      "or set RECHARGE_PY_OUT)")
sys.path.insert(0, str(PY_OUT))

import collections  # noqa: E402
import hashlib  # noqa: E402

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

# Deterministic test instruments of the sandbox (sandbox/card_api.h).
CARD_APPROVE = "4242424242424242"
CARD_DECLINE = "4000000000000002"
CARD_NSF = "4000000000009995"
CVC = "737"


def new_key(prefix: str = "e2e") -> str:
    """A fresh idempotency key (valid charset, 8..128 characters)."""
    return f"{prefix}-{uuid.uuid4().hex}"


def new_user(prefix: str = "user") -> str:
    """A fresh user id of letters only: the card-number scans of the logs
    (card_scan.Scanner) can never mistake part of it for a card number, as
    they could a run of 13+ digits in a hex id."""
    return f"{prefix}_{''.join(secrets.choice(string.ascii_lowercase) for _ in range(16))}"


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


def free_cluster_base(count: int = 6) -> int:
    """A port P such that P..P+count-1 and their cluster bus ports (+10000)
    can all be bound on loopback now. P + 10000 + count stays below the
    kernel's ephemeral range (32768+), so outgoing connections do not take a
    bus port meanwhile; a node that loses a race for its port exits, and
    the caller tries another base."""
    for _ in range(500):
        base = random.randrange(12000, 22768 - count)
        ok = True
        for port in [base + i for i in range(count)] + [base + 10000 + i for i in range(count)]:
            with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
                try:
                    s.bind(("127.0.0.1", port))
                except OSError:
                    ok = False
                    break
        if ok:
            return base
    raise AssertionError(f"no {count} consecutive free ports (and bus ports +10000) on loopback")


def _crc16(data: bytes) -> int:
    """CRC16-CCITT (XMODEM), the hash of Redis Cluster key slots."""
    crc = 0
    for byte in data:
        crc ^= byte << 8
        for _ in range(8):
            crc = ((crc << 1) ^ 0x1021) & 0xFFFF if crc & 0x8000 else (crc << 1) & 0xFFFF
    return crc


def redis_key_slot(key: str | bytes) -> int:
    """The Redis Cluster slot of `key`: CRC16 of its hash tag (the part
    between the first "{" and the next "}", if not empty) or of the whole key,
    modulo 16384."""
    k = key if isinstance(key, bytes) else key.encode()
    start = k.find(b"{")
    if start != -1:
        end = k.find(b"}", start + 1)
        if end > start + 1:
            k = k[start + 1:end]
    return _crc16(k) % 16384


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


def _dying_with_parent(argv: list[str]) -> list[str]:
    """`argv` run through setpriv --pdeathsig KILL: the child gets SIGKILL
    when the test process (the thread that started it) dies, even by SIGKILL
    (a ctest timeout), so no server outlives its test. Not a preexec_fn:
    Python code run between fork and exec can deadlock on a lock another
    thread (gRPC's) held at the fork, and Popen then waits for the exec
    forever (a fault suite run hung 10 minutes starting a replica)."""
    return ["setpriv", "--pdeathsig", "KILL", "--", *argv]


class _CallDetails(collections.namedtuple(
        "_CallDetails", ("method", "timeout", "metadata", "credentials", "wait_for_ready",
                         "compression")), grpc.ClientCallDetails):
    pass


class BearerToken(grpc.UnaryUnaryClientInterceptor, grpc.UnaryStreamClientInterceptor,
                  grpc.StreamUnaryClientInterceptor, grpc.StreamStreamClientInterceptor):
    """Adds `authorization: Bearer <token>` to every call of a channel."""

    def __init__(self, token: str):
        self._header = ("authorization", f"Bearer {token}")

    def _with_token(self, d):
        metadata = list(d.metadata or []) + [self._header]
        return _CallDetails(d.method, d.timeout, metadata, d.credentials,
                            getattr(d, "wait_for_ready", None), getattr(d, "compression", None))

    def intercept_unary_unary(self, continuation, details, request):
        return continuation(self._with_token(details), request)

    def intercept_unary_stream(self, continuation, details, request):
        return continuation(self._with_token(details), request)

    def intercept_stream_unary(self, continuation, details, request_iterator):
        return continuation(self._with_token(details), request_iterator)

    def intercept_stream_stream(self, continuation, details, request_iterator):
        return continuation(self._with_token(details), request_iterator)


def sha256_hex(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


class Proc:
    """A child process in its own process group (killed with the group), its
    output in a log file; it dies with the test process."""

    def __init__(self, name: str, argv: list[str], log_path: Path, env=None, cwd=None):
        self.name = name
        self.log_path = log_path
        self._log = open(log_path, "ab")
        self.popen = subprocess.Popen(_dying_with_parent(argv), stdin=subprocess.DEVNULL,
                                      stdout=self._log, stderr=self._log, env=env, cwd=cwd,
                                      start_new_session=True)
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



def charges_taken(lines: list[dict]) -> list[dict]:
    """The charge lines of a sandbox journal that took money: every charge
    line (no "op"), except a card authorisation hold or 3-D Secure charge
    (captured false) that no capture line captured since, and an e-wallet
    redirect payment (PENDING_APPROVAL) that no approve line with status
    SUCCESS completed since. An op line's "id" is its payment's
    (sandbox/README.md)."""
    completed_later = {r.get("id") for r in lines
                       if r.get("op") == "capture" or
                       (r.get("op") == "approve" and r.get("status") == "SUCCESS")}
    return [r for r in lines if "op" not in r
            and ((r.get("captured") is not False and r.get("status") != "PENDING_APPROVAL")
                 or r.get("id") in completed_later)]


class Sandbox:
    """One PSP sandbox process (the psp-sandbox binary, $SANDBOX_BIN) over HTTPS, with its
    journal, port file and log in `directory`. Can be stopped and started
    again (by default on the same port); its journal survives restarts."""

    def __init__(self, name: str, directory: Path, certs: Path, card_secret_file: Path,
                 card_secret: str, paypal_credentials_file: Path | None = None,
                 ewallet_secret_file: Path | None = None, log_path: Path | None = None,
                 webhook_secret_file: Path | None = None):
        self.name = name
        # Signed webhooks to the gateway (trusting certs/ca.pem); None: none sent.
        self.webhook_secret_file = webhook_secret_file
        self.dir = directory
        self.certs = certs
        self.card_secret_file = card_secret_file
        self.card_secret = card_secret
        self.paypal_credentials_file = paypal_credentials_file
        self.ewallet_secret_file = ewallet_secret_file
        self.log_path = log_path or directory / "sandbox.log"
        self.proc: Proc | None = None
        self.port = 0
        self._ctx = ssl.create_default_context(cafile=str(certs / "ca.pem"))
        self.dir.mkdir(mode=0o700, exist_ok=True)

    @property
    def journal_path(self) -> Path:
        return self.dir / "journal.jsonl"

    def alive(self) -> bool:
        return self.proc is not None and self.proc.alive()

    def start(self, port: int | None = None) -> "Sandbox":
        """Starts on `port` (None: the port it had before, or a free one) and
        waits for its port file."""
        assert not self.alive(), f"{self.name} already running"
        if port is None:
            port = self.port
        port_file = self.dir / "port"
        port_file.unlink(missing_ok=True)
        argv = [str(SANDBOX_BIN), "--host", "127.0.0.1", "--port", str(port),
                "--cert", str(self.certs / "server.pem"), "--key", str(self.certs / "server.key"),
                "--journal", str(self.journal_path),
                "--card-secret-file", str(self.card_secret_file),
                "--port-file", str(port_file)]
        if self.paypal_credentials_file is not None:
            argv += ["--paypal-credentials-file", str(self.paypal_credentials_file)]
        if self.ewallet_secret_file is not None:
            argv += ["--ewallet-secret-file", str(self.ewallet_secret_file)]
        if self.webhook_secret_file is not None:
            argv += ["--webhook-secret-file", str(self.webhook_secret_file),
                     "--webhook-ca-file", str(self.certs / "ca.pem")]
        self.proc = Proc(self.name, argv, self.log_path)

        def ready():
            if not self.proc.alive():
                raise AssertionError(f"{self.name} exited {self.proc.popen.returncode}:\n"
                                     f"{self.proc.log()}")
            if port_file.exists():
                text = port_file.read_text()
                if text.endswith("\n"):
                    return int(text)
            return None

        self.port = wait_until(ready, START_DEADLINE_S, f"the {self.name} port file")
        return self

    def stop(self, sig: int = signal.SIGTERM) -> int | None:
        """Stops the process (if running); the port is kept for start()."""
        if self.proc is None:
            return None
        rc = self.proc.stop(sig)
        self.proc = None
        return rc

    def log(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def request(self, method: str, path: str, body: bytes | None = None,
                headers: dict | None = None):
        c = http.client.HTTPSConnection("127.0.0.1", self.port, context=self._ctx, timeout=15)
        try:
            c.request(method, path, body=body, headers=headers or {})
            r = c.getresponse()
            raw = r.read()
            return r.status, json.loads(raw) if raw else None
        finally:
            c.close()

    def press(self, url: str, button: str) -> tuple[int, str]:
        """What a buyer does on one of the sandbox's pages (a 3-D Secure
        challenge, a wallet approval): GETs `url`, finds the form whose
        submit button has id `button` (approve, fail, cancel), and POSTs its
        fields as the browser would. Returns (status, page text)."""
        parts = urllib.parse.urlsplit(url)
        assert parts.port == self.port, f"{url} is not a page of {self.name}"
        c = http.client.HTTPSConnection("127.0.0.1", self.port, context=self._ctx, timeout=15)
        try:
            c.request("GET", f"{parts.path}?{parts.query}")
            r = c.getresponse()
            page = r.read().decode()
            if r.status != 200:
                return r.status, page
            for form in re.findall(r'<form method="post" action="([^"]+)">(.*?)</form>', page, re.S):
                action, inner = form
                if f'id="{button}"' not in inner:
                    continue
                fields = dict(re.findall(r'<input type="hidden" name="([^"]+)" value="([^"]*)"',
                                         inner))
                c.request("POST", html.unescape(action),
                          body=urllib.parse.urlencode({k: html.unescape(v)
                                                       for k, v in fields.items()}),
                          headers={"Content-Type": "application/x-www-form-urlencoded"})
                r = c.getresponse()
                return r.status, r.read().decode()
            raise AssertionError(f"no {button!r} button on {url}:\n{page}")
        finally:
            c.close()

    def webhooks(self) -> list[dict]:
        """GET /_sandbox/webhooks: every webhook sent (body, attempts, delivered)."""
        status, body = self.request("GET", "/_sandbox/webhooks")
        if status != 200:
            raise AssertionError(f"{self.name} webhooks: HTTP {status} {body}")
        return body["webhooks"]

    def config(self, **changes) -> dict:
        """POST /_sandbox/config: top-level fields, or per-API blocks such as
        config(card={"latency_ms": 2000}, paypal={"token_ttl_s": 2})."""
        status, body = self.request("POST", "/_sandbox/config", json.dumps(changes).encode(),
                                    {"Content-Type": "application/json"})
        if status != 200:
            raise AssertionError(f"{self.name} config {changes}: HTTP {status} {body}")
        return body

    def stats(self) -> dict:
        """GET /_sandbox/stats: {"paypal_token_grants", "requests": {api: n}}."""
        status, body = self.request("GET", "/_sandbox/stats")
        if status != 200:
            raise AssertionError(f"{self.name} stats: HTTP {status} {body}")
        return body

    def reset_stats(self) -> dict:
        status, body = self.request("POST", "/_sandbox/stats/reset")
        if status != 200:
            raise AssertionError(f"{self.name} stats reset: HTTP {status} {body}")
        return body

    def journal(self, ops: bool = False) -> list[dict]:
        """The charges that took money (see `charges_taken`); with `ops`
        every line as written, holds and capture / void / refund lines
        (those with "op", see sandbox/README.md) included."""
        if not self.journal_path.exists():
            return []
        lines = [json.loads(line) for line in self.journal_path.read_text().splitlines()
                 if line.strip()]
        return lines if ops else charges_taken(lines)

    def journal_for(self, key: str) -> list[dict]:
        return [r for r in self.journal() if r.get("idempotency_key") == key]


class Replica:
    """A second (third...) gateway of a Stack: the same config but its own
    gRPC, webhook and metrics ports, the same ledger (postgres), Redis and
    sandbox; its channel speaks as the caller `e2e`."""

    def __init__(self, stack: "Stack", index: int):
        self.stack = stack
        self.index = index
        self.port = 0
        self.proc: Proc | None = None
        self._channel: grpc.Channel | None = None

    @property
    def yaml_path(self) -> Path:
        return self.stack.tmp / f"gateway-replica{self.index}.yaml"

    def start(self) -> None:
        st = self.stack
        override = {}
        if st.metrics:
            override["metrics"] = f"\n  listen: 127.0.0.1:{free_port()}"
        if st.webhooks:
            override["webhooks"] = (f"\n  listen: 127.0.0.1:{free_port()}"
                                    f"\n  cert_file: {st.certs / 'server.pem'}"
                                    f"\n  key_file: {st.certs / 'server.key'}")
        self.yaml_path.write_text(st.gateway_yaml_text(**override))
        self.port = self.port or free_port()
        self.proc = Proc(f"replica{self.index}", [
            str(GATEWAY_BIN), "--config", str(self.yaml_path), "--listen", f"127.0.0.1:{self.port}"],
            st.tmp / "log" / f"gateway-replica{self.index}.log", env=st.gateway_env(), cwd=str(st.tmp))

        if st.wait_serving(self.proc, self.port, self.channel,
                           f"replica {self.index} to be SERVING") == "exited":
            raise AssertionError(f"replica {self.index} exited:\n{self.proc.log()}")

    def channel(self) -> grpc.Channel:
        if self._channel is None:
            self._channel = self.stack.new_channel(port=self.port)
        return self._channel

    def stub(self) -> "pb_grpc.RechargeGatewayStub":
        return pb_grpc.RechargeGatewayStub(self.channel())

    def admin(self) -> "pb_grpc.FraudAdminStub":
        return pb_grpc.FraudAdminStub(self.channel())

    def log(self) -> str:
        return self.proc.log() if self.proc is not None else ""

    def stop(self, sig: int = signal.SIGTERM) -> int | None:
        if self._channel is not None:
            self._channel.close()
            self._channel = None
        if self.proc is None:
            return None
        rc = self.proc.stop(sig)
        self.proc = None
        return rc


class Stack:
    """Redis + PSP sandbox + gateway, for one test module."""

    def __init__(self, name: str, *, card_timeout: str = "5s", recovery_interval: str = "5s",
                 settle_after: str = "15s", shutdown_grace: str = "10s", io_threads: int = 2,
                 paypal: bool = False, ewallet: bool = False, webhooks: bool = False,
                 metrics: bool = False, ledger: str = "sqlite", redis: str = "single"):
        self.name = name
        # Redis: "single" (one server) or "cluster" (a 3-master Redis Cluster
        # of six nodes, see the module docstring).
        assert redis in ("single", "cluster"), redis
        self.redis_mode = redis
        self.redis_nodes: dict[int, Proc] = {}  # cluster: port -> its running node
        self.redis_cluster_ports: list[int] = []
        self.redis_node_timeout_ms = 2000       # cluster-node-timeout
        self._redis_stopped: list[int] = []      # cluster nodes stop_redis() stopped
        self._redis_create: Proc | None = None   # `dev-redis-cluster.sh create`, while it runs
        # The ledger backend: "sqlite" (a file under ledger/) or "postgres"
        # (a throwaway cluster under postgres/, started by
        # scripts/dev-postgres.sh, fsync off), which replicas can share.
        self.ledger_backend = ledger
        self.postgres: Proc | None = None
        self.postgres_port = 0
        self.pg_password = "pg-e2e-" + secrets.token_hex(16)
        self.replicas: list["Replica"] = []
        # Provider notifications: the gateway's webhook port (gateway.yaml
        # `webhooks`, on a port kept across gateway restarts) and the
        # sandbox sending signed webhooks to it. Adapters opt in with
        # notify_lines(instance).
        self.webhooks = webhooks
        self.webhook_secret = "whsec_e2e_" + secrets.token_hex(24)
        self.webhook_port = 0
        # The Prometheus port (gateway.yaml `metrics`), on a port kept across
        # gateway restarts: scrape() reads it.
        self.metrics = metrics
        self.metrics_port = 0
        # The sandbox's PayPal / e-wallet APIs (off: those paths answer 404).
        self.paypal = paypal
        self.ewallet = ewallet
        self.paypal_client_id = "AZe2e" + secrets.token_hex(16)
        self.paypal_client_secret = "EPe2e" + secrets.token_hex(24)
        self.ewallet_secret = "ews_e2e_" + secrets.token_hex(24)
        # When set, written as adapters.yaml instead of the generated one.
        self.adapters_text: str | None = None
        # The ledger file under ledger/ (a test may switch to a fresh one).
        self.ledger_name = "ledger.db"
        # Extra environment for the gateway process.
        self.extra_env: dict[str, str] = {}
        # Fraud rules: the text (or a file to copy) written as <tmp>/fraud_rules.yaml
        # and named by gateway.yaml `fraud.rules`; neither set: allow-all.
        self.fraud_rules_text: str | None = None
        self.fraud_rules_source: Path | None = None
        # gateway.yaml `redis:` section.
        # Generous: the instrumented (ASan) gateway under 40 concurrent calls
        # can take longer than the production 50ms; fail-mode tests set their own.
        self.redis_timeout = "1s"
        self.redis_key_prefix: str | None = None  # None: the gateway's default ("rc")
        self.psp: Sandbox | None = None
        self.extra_sandboxes: list[Sandbox] = []
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
        # Callers and transport (see the module docstring).
        self.token = "e2e-" + secrets.token_urlsafe(24)
        self.app_token = "app-" + secrets.token_urlsafe(24)
        self.app_token_2 = "app2-" + secrets.token_urlsafe(24)
        self.ops_token = "ops-" + secrets.token_urlsafe(24)
        self.callers_extra = ""
        self.transport = "plaintext"
        self.limits: str | None = None
        self.log_level: str | None = None  # gateway.yaml log_level (None: the default, info)
        # gateway.yaml review.hold_expiry (None: the default, 168h).
        self.review_hold_expiry: str | None = None
        self.card_secret = "sk_test_" + secrets.token_hex(24)

    # ------------------------------------------------------------------ paths

    @property
    def certs(self) -> Path:
        return self.tmp / "certs"

    @property
    def secrets_dir(self) -> Path:
        return self.tmp / "secrets"

    @property
    def card_secret_file(self) -> Path:
        return self.secrets_dir / "card_api_key"

    @property
    def paypal_credentials_file(self) -> Path:
        return self.secrets_dir / "paypal_credentials"

    @property
    def ewallet_secret_file(self) -> Path:
        return self.secrets_dir / "ewallet_secret"

    @property
    def webhook_secret_file(self) -> Path:
        return self.secrets_dir / "webhook_secret"

    def notify_lines(self, instance: str, action_expiry: str | None = None) -> str:
        """The adapters.yaml lines (4-space indent) that have `instance` send
        notify_url to the gateway's webhook route and check signatures."""
        text = (f"    notify_url: https://127.0.0.1:{self.webhook_port}/webhooks/{instance}\n"
                f"    webhook_secret_file: {self.webhook_secret_file}\n")
        if action_expiry is not None:
            text += f"    action_expiry: {action_expiry}\n"
        return text

    def webhook_request(self, instance: str, body: bytes, headers: dict | None = None,
                        method: str = "POST", timeout: float = 10.0) -> tuple[int, dict | str]:
        """Sends a request to the gateway's webhook port; (status, JSON body or text)."""
        ctx = ssl.create_default_context(cafile=str(self.certs / "ca.pem"))
        conn = http.client.HTTPSConnection("127.0.0.1", self.webhook_port, context=ctx,
                                           timeout=timeout)
        try:
            conn.request(method, f"/webhooks/{instance}", body=body,
                         headers={"Content-Type": "application/json", **(headers or {})})
            resp = conn.getresponse()
            data = resp.read().decode("utf-8", "replace")
            try:
                return resp.status, json.loads(data)
            except ValueError:
                return resp.status, data
        finally:
            conn.close()

    def scrape(self, path: str = "/metrics") -> tuple[int, str, str]:
        """GET the gateway's metrics port: (status, content type, text)."""
        conn = http.client.HTTPConnection("127.0.0.1", self.metrics_port, timeout=10)
        try:
            conn.request("GET", path)
            resp = conn.getresponse()
            return resp.status, resp.getheader("Content-Type") or "", resp.read().decode()
        finally:
            conn.close()

    def sign_webhook(self, body: bytes, timestamp: int | None = None,
                     secret: str | None = None) -> str:
        """A Sandbox-Signature header value for `body`."""
        t = int(time.time()) if timestamp is None else timestamp
        mac = hmac.new((secret or self.webhook_secret).encode(), f"{t}.".encode() + body,
                       hashlib.sha256).hexdigest()
        return f"t={t},v1={mac}"

    @property
    def journal_path(self) -> Path:
        return self.tmp / "sandbox" / "journal.jsonl"

    @property
    def ledger_path(self) -> Path:
        return self.tmp / "ledger" / self.ledger_name

    @property
    def gateway_yaml(self) -> Path:
        return self.tmp / "gateway.yaml"

    @property
    def adapters_yaml(self) -> Path:
        return self.tmp / "adapters.yaml"

    @property
    def gateway_log_path(self) -> Path:
        return self.tmp / "log" / "gateway.log"

    @property
    def fraud_rules_path(self) -> Path:
        """The rule file the gateway loads (when fraud rules are configured)."""
        return self.tmp / "fraud_rules.yaml"

    @property
    def fraud_configured(self) -> bool:
        return self.fraud_rules_text is not None or self.fraud_rules_source is not None

    # -------------------------------------------------------------- lifecycle

    def start(self) -> "Stack":
        if not GATEWAY_BIN.exists():
            raise AssertionError(f"gateway binary {GATEWAY_BIN} not found (build recharge-gateway "
                                 "or set GATEWAY_BIN)")
        self.tmp = Path(tempfile.mkdtemp(prefix=f"e2e-{self.name}-"))
        try:
            for d in ("certs", "secrets", "redis", "sandbox", "ledger", "log"):
                (self.tmp / d).mkdir(mode=0o700)
            subprocess.run(["bash", str(MAKE_CERTS), str(self.certs), "e2e", "app", "ops"],
                           check=True, timeout=60, stdout=subprocess.DEVNULL)
            self._write_secret(self.card_secret_file, self.card_secret + "\n")
            if self.paypal:
                self._write_secret(self.paypal_credentials_file,
                                   f"{self.paypal_client_id}\n{self.paypal_client_secret}\n")
            if self.ewallet:
                self._write_secret(self.ewallet_secret_file, self.ewallet_secret + "\n")
            if self.webhooks:
                self._write_secret(self.webhook_secret_file, self.webhook_secret + "\n")
                self.webhook_port = free_port()
            if self.metrics:
                self.metrics_port = free_port()
            if self.redis_mode == "cluster":
                self._start_redis_cluster()  # forms in the background meanwhile
            else:
                self._start_redis()
            if self.ledger_backend == "postgres":
                self._start_postgres()
            self._start_sandbox()
            if self.redis_mode == "cluster":
                self._wait_redis_cluster_created()
            self.write_configs()
            self.start_gateway()
        except BaseException:
            self.stop()
            raise
        return self

    @staticmethod
    def _write_secret(path: Path, text: str) -> None:
        path.write_text(text)
        path.chmod(0o600)

    def stop(self) -> None:
        """Stops everything that was started; safe to call more than once."""
        self._close_channel()
        errors = []
        for extra in self.extra_sandboxes:
            try:
                extra.stop()
            except Exception as e:  # keep tearing down the others
                errors.append(f"{extra.name}: {e!r}")
        self.extra_sandboxes = []
        for replica in self.replicas:
            try:
                replica.stop()
            except Exception as e:  # keep tearing down the others
                errors.append(f"replica {replica.port}: {e!r}")
        self.replicas = []
        for attr in ("gateway", "sandbox", "redis", "postgres"):
            if attr == "redis":
                if self._redis_create is not None:
                    self._redis_create.stop(signal.SIGKILL)
                    self._redis_create = None
                # Cluster nodes: SIGKILL (their data is thrown away; a master's
                # SIGTERM would wait for replicas being stopped too).
                for port, node in list(self.redis_nodes.items()):
                    try:
                        node.stop(signal.SIGKILL)
                    except Exception as e:  # keep tearing down the others
                        errors.append(f"redis node {port}: {e!r}")
                self.redis_nodes = {}
            if attr == "sandbox" and self.psp is not None:
                try:
                    self.psp.stop()
                except Exception as e:  # keep tearing down the others
                    errors.append(f"sandbox: {e!r}")
                self.psp = None
                self.sandbox = None
                continue
            proc = getattr(self, attr)
            if proc is not None:
                try:
                    # PostgreSQL: fast shutdown (SIGTERM waits for clients).
                    proc.stop(signal.SIGINT if attr == "postgres" else signal.SIGTERM)
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

    def _start_postgres(self) -> None:
        """A PostgreSQL cluster under <tmp>/postgres on a free port, with the
        role and database `recharge` (password in secrets/pg_password)."""
        directory = self.tmp / "postgres"
        if os.geteuid() == 0:
            # The server runs as `postgres`: it must reach its directory.
            self.tmp.chmod(0o711)
        self._write_secret(self.tmp / "secrets" / "pg_password", self.pg_password + "\n")
        subprocess.run(["bash", str(DEV_POSTGRES), "init", str(directory)], check=True,
                       timeout=120, stdout=subprocess.DEVNULL)
        self.postgres_port = free_port()
        self.start_postgres()

    def stop_postgres(self) -> None:
        """Fast shutdown of the ledger's PostgreSQL (its data stays)."""
        if self.postgres is not None:
            self.postgres.stop(signal.SIGINT)
            self.postgres = None

    def start_postgres(self) -> None:
        """PostgreSQL again, on the port it had; waits until it answers."""
        assert self.postgres is None or not self.postgres.alive(), "postgres already running"
        directory = self.tmp / "postgres"
        self.postgres = Proc("postgres", [
            "bash", str(DEV_POSTGRES), "run", str(directory), str(self.postgres_port),
            "-c", "fsync=off", "-c", "synchronous_commit=off", "-c", "max_connections=200"],
            self.tmp / "log" / "postgres.log")
        subprocess.run(["bash", str(DEV_POSTGRES), "setup", str(directory), str(self.postgres_port),
                        str(self.tmp / "secrets" / "pg_password")], check=True, timeout=120)

    def signal_postgres(self, sig: int) -> None:
        """`sig` to the postmaster and every backend (each backend is a
        session of its own: a process-group signal would miss them)."""
        assert self.postgres is not None
        pids = [self.postgres.pid]
        for entry in Path("/proc").iterdir():
            if entry.name.isdigit():
                try:
                    stat = (entry / "stat").read_text()
                except OSError:
                    continue
                if int(stat.rsplit(")", 1)[1].split()[1]) == self.postgres.pid:
                    pids.append(int(entry.name))
        if sig == signal.SIGCONT:
            pids.reverse()  # the children first, the postmaster last
        for pid in pids:
            try:
                os.kill(pid, sig)
            except ProcessLookupError:
                pass

    def postgres_sql(self, sql: str) -> str:
        """Runs `sql` in the ledger database as the superuser (psql over the
        cluster's socket); its output, unaligned."""
        bindir = sorted(Path("/usr/lib/postgresql").glob("*/bin"))[-1]
        r = subprocess.run([str(bindir / "psql"), "-h", str(self.tmp / "postgres"),
                            "-p", str(self.postgres_port), "-U", "postgres", "-d", "recharge",
                            "-qAt", "-v", "ON_ERROR_STOP=1", "-c", sql],
                           capture_output=True, text=True, timeout=30)
        if r.returncode != 0:
            raise AssertionError(f"psql: {r.stderr}")
        return r.stdout

    def start_replica(self) -> "Replica":
        """Another gateway on the same ledger (postgres), Redis and sandbox,
        on ports of its own; waits until it is SERVING."""
        assert self.ledger_backend == "postgres", "replicas share a postgres ledger"
        replica = Replica(self, len(self.replicas) + 1)
        self.replicas.append(replica)
        replica.start()
        return replica

    def stop_redis(self, key: str | None = None, slot: int | None = None) -> int | None:
        """One server: stops Redis (its data is lost: no persistence);
        start_redis() brings it back on the same port. A cluster: stops
        (SIGTERM) the master serving `key`'s slot, or `slot` (default 0), and
        returns its port; start_redis() starts it again."""
        if self.redis_mode == "cluster":
            port = self.redis_master_for(key=key, slot=slot)
            self.redis_nodes.pop(port).stop()
            self._redis_stopped.append(port)
            return port
        if self.redis is not None:
            self.redis.stop()
            self.redis = None
        return None

    def start_redis(self) -> None:
        """One server: (re)starts Redis on the port it had and waits for
        PONG. A cluster: starts the nodes stop_redis() stopped, on their
        ports, and waits until redis_cluster_ok()."""
        if self.redis_mode == "cluster":
            ports, self._redis_stopped = self._redis_stopped, []
            for port in ports:
                self._start_redis_node(port)
            if self._redis_nodes_answer(ports) != "ok":
                raise AssertionError("a Redis Cluster node exited:\n" +
                                     "\n".join(self.redis_nodes[p].log() for p in ports))
            wait_until(self.redis_cluster_ok, 30.0,
                       "the Redis Cluster to be ok with 3 masters and their replicas", interval=0.05)
            return
        assert self.redis is None or not self.redis.alive(), "redis already running"
        self.redis = Proc("redis", [
            "redis-server", "--bind", "127.0.0.1", "--port", str(self.redis_port),
            "--dir", str(self.tmp / "redis"), "--save", "", "--appendonly", "no",
            "--daemonize", "no", "--loglevel", "warning"], self.tmp / "log" / "redis.log")

        def ready():
            if not self.redis.alive():
                raise AssertionError("redis-server exited:\n" +
                                     (self.tmp / "log" / "redis.log").read_text())
            try:
                return self.redis_command("PING", timeout=1.0) == "PONG"
            except OSError:
                return None

        wait_until(ready, START_DEADLINE_S, "redis to answer PING again", interval=0.05)

    def redis_command(self, *args, timeout: float = 5.0, port: int | None = None,
                      key: str | bytes | None = None):
        """Sends one command on a new connection and returns the decoded
        reply: str for simple strings, bytes for bulk strings (None for nil),
        int, list; an error reply raises RedisError. It goes to `port` if
        given, else to the stack's Redis; on a cluster, to the master serving
        `key`'s slot, or the command's first key's (asked of the cluster with
        COMMAND GETKEYS; a command without keys needs `port`), following
        MOVED and ASK replies."""
        if port is not None or self.redis_mode != "cluster":
            return self._redis_send(port or self.redis_port, args, timeout)
        if key is None:
            try:
                keys = self._redis_send(self._any_redis_node(), ("COMMAND", "GETKEYS") + args,
                                        timeout)
            except RedisError as e:
                raise ValueError(f"{args[0]}: no key to route it by on a cluster ({e}); "
                                 "pass port= or key=") from None
            key = keys[0]
        target = self.redis_master_for(key=key)
        asking = False
        for _ in range(5):
            try:
                return self._redis_send(target, args, timeout, asking=asking)
            except RedisError as e:
                words = str(e).split()
                if len(words) != 3 or words[0] not in ("MOVED", "ASK"):
                    raise
                target, asking = int(words[2].rsplit(":", 1)[1]), words[0] == "ASK"
        raise AssertionError(f"{args[0]}: more than 5 MOVED/ASK redirects")

    @staticmethod
    def _redis_send(port: int, args, timeout: float, asking: bool = False):
        """One command (after ASKING, if `asking`) on a new connection to `port`."""
        def encode(command) -> bytes:
            out = [f"*{len(command)}\r\n".encode()]
            for a in command:
                b = a if isinstance(a, bytes) else str(a).encode()
                out.append(f"${len(b)}\r\n".encode() + b + b"\r\n")
            return b"".join(out)

        with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
            sock.sendall((encode(["ASKING"]) if asking else b"") + encode(args))
            replies = sock.makefile("rb")
            if asking:
                _read_resp(replies)
            return _read_resp(replies)

    def redis_commandstats(self, port: int | None = None) -> dict[str, int]:
        """INFO commandstats as {command: calls}, e.g. {"evalsha": 12,
        "script|load": 1, "info": 3}: of the stack's Redis, or `port`; on a
        cluster (no `port`) summed over the masters."""
        ports = ([port] if port is not None or self.redis_mode != "cluster"
                 else self.redis_masters())
        out: dict[str, int] = {}
        for p in ports:
            text = self.redis_command("INFO", "commandstats", port=p).decode()
            for line in text.splitlines():
                if line.startswith("cmdstat_"):
                    name, _, fields = line[len("cmdstat_"):].partition(":")
                    stats = dict(kv.split("=", 1) for kv in fields.split(","))
                    out[name] = out.get(name, 0) + int(stats["calls"])
        return out

    # ---------------------------------------------------------- Redis Cluster

    @property
    def redis_cluster_dir(self) -> Path:
        return self.tmp / "redis-cluster"

    def _start_redis_cluster(self) -> None:
        """Six nodes on consecutive free ports (another base if one loses a
        race for its port), then `dev-redis-cluster.sh create` in the
        background (_wait_redis_cluster_created waits for it)."""
        logs = ""
        for attempt in range(3):
            base = free_cluster_base()
            ports = [base + i for i in range(6)]
            for port in ports:
                self._start_redis_node(port)
            if self._redis_nodes_answer(ports) == "ok":
                break
            logs = "\n".join(node.log() for node in self.redis_nodes.values())
            for node in self.redis_nodes.values():
                node.stop(signal.SIGKILL)
            self.redis_nodes = {}
            shutil.rmtree(self.redis_cluster_dir, ignore_errors=True)
        else:
            raise AssertionError(f"the Redis Cluster nodes did not start:\n{logs}")
        self.redis_cluster_ports = ports
        self.redis_port = base
        self._redis_create = Proc("redis-cluster-create", [
            "bash", str(DEV_REDIS_CLUSTER), "create", str(self.redis_cluster_dir), str(base)],
            self.tmp / "log" / "redis-cluster-create.log", env=self._redis_node_env())

    def _wait_redis_cluster_created(self) -> None:
        """Waits for `dev-redis-cluster.sh create` (itself bounded: 30 s for
        the nodes, 60 s for redis-cli, 30 s for the cluster to be ok)."""
        create, self._redis_create = self._redis_create, None
        try:
            rc = create.wait(timeout=150)
        except subprocess.TimeoutExpired:
            rc = None
        create.stop(signal.SIGKILL)
        if rc != 0:
            raise AssertionError(f"dev-redis-cluster.sh create failed ({rc}):\n{create.log()}")

    def _redis_node_env(self) -> dict:
        return dict(os.environ, REDIS_CLUSTER_NODE_TIMEOUT_MS=str(self.redis_node_timeout_ms))

    def _start_redis_node(self, port: int) -> Proc:
        node = Proc(f"redis-{port}", [
            "bash", str(DEV_REDIS_CLUSTER), "node", str(self.redis_cluster_dir), str(port)],
            self.tmp / "log" / f"redis-{port}.log", env=self._redis_node_env())
        self.redis_nodes[port] = node
        return node

    def _redis_nodes_answer(self, ports: list[int]) -> str:
        """Waits until the nodes on `ports` answer PING: "ok", or "exited"
        as soon as one of them has exited."""
        def ready():
            if any(not self.redis_nodes[p].alive() for p in ports):
                return "exited"
            for p in ports:
                try:
                    if self.redis_command("PING", port=p, timeout=1.0) != "PONG":
                        return None
                except (OSError, RedisError):  # not listening yet, or LOADING
                    return None
            return "ok"

        return wait_until(ready, START_DEADLINE_S, f"Redis Cluster nodes {ports} to answer PING",
                          interval=0.05)

    def _any_redis_node(self) -> int:
        """A running cluster node (the lowest port)."""
        for port in sorted(self.redis_nodes):
            if self.redis_nodes[port].alive():
                return port
        raise AssertionError("no Redis Cluster node is running")

    def redis_cluster_nodes(self, port: int | None = None) -> list[dict]:
        """CLUSTER NODES as the node on `port` (default: a running node) sees
        it: per node {"id", "port", "role": "master" | "replica", "master_id"
        (a replica's master, else None), "slots": [(first, last)...],
        "failing" (flagged fail or fail?), "connected" (its cluster bus link),
        "myself"}."""
        text = self.redis_command("CLUSTER", "NODES", port=port or self._any_redis_node(),
                                  timeout=2.0).decode()
        nodes = []
        for line in text.splitlines():
            f = line.split()
            if len(f) < 8:
                continue
            flags = f[2].split(",")
            slots = []
            for r in f[8:]:
                if not r.startswith("["):  # [slot->-id] / [slot-<-id]: a migration
                    first, _, last = r.partition("-")
                    slots.append((int(first), int(last or first)))
            nodes.append({"id": f[0], "port": int(f[1].split("@")[0].rsplit(":", 1)[1]),
                          "role": "master" if "master" in flags else "replica",
                          "master_id": None if f[3] == "-" else f[3], "slots": slots,
                          "failing": "fail" in flags or "fail?" in flags,
                          "connected": f[7] == "connected", "myself": "myself" in flags})
        return nodes

    def redis_masters(self, port: int | None = None) -> list[int]:
        """The ports of the masters serving slots (not flagged failing), in
        slot order, as the node on `port` (default: a running node) sees it."""
        masters = [n for n in self.redis_cluster_nodes(port)
                   if n["role"] == "master" and n["slots"] and not n["failing"]]
        return [n["port"] for n in sorted(masters, key=lambda n: min(n["slots"]))]

    def redis_master_for(self, key: str | bytes | None = None, slot: int | None = None,
                         port: int | None = None) -> int | None:
        """The port of the master serving `key`'s slot, or `slot` (default 0),
        as the node on `port` (default: a running node) sees it; None if no
        node serves it."""
        if key is not None:
            slot = redis_key_slot(key)
        slot = slot or 0
        for n in self.redis_cluster_nodes(port):
            if n["role"] == "master" and any(a <= slot <= b for a, b in n["slots"]):
                return n["port"]
        return None

    def redis_cluster_ok(self) -> bool:
        """Whether all six nodes run, every one says cluster_state:ok and
        sees 3 masters (not failing, with slots) each with a connected
        replica, and every replica's link to its master is up."""
        if len(self.redis_nodes) != 6 or not all(n.alive() for n in self.redis_nodes.values()):
            return False
        try:
            for port in self.redis_nodes:
                if b"cluster_state:ok" not in self.redis_command("CLUSTER", "INFO", port=port,
                                                                 timeout=2.0):
                    return False
                nodes = self.redis_cluster_nodes(port)
                masters = {n["id"] for n in nodes
                           if n["role"] == "master" and n["slots"] and not n["failing"]}
                served = {n["master_id"] for n in nodes
                          if n["role"] == "replica" and not n["failing"] and n["connected"]}
                if len(masters) != 3 or not masters <= served:
                    return False
                info = self.redis_command("INFO", "replication", port=port, timeout=2.0)
                if b"role:slave" in info and b"master_link_status:up" not in info:
                    return False
        except (OSError, RedisError):
            return False
        return True

    def fail_over_redis_master(self, key: str | bytes | None = None, slot: int | None = None,
                               timeout: float = 30.0) -> dict:
        """Fails the master serving `key`'s slot, or `slot` (default 0), over
        to its replica the way a crash does: kill -9 of the master; waits
        until every running node says cluster_state:ok with the replica
        serving the slot (it takes cluster-node-timeout to notice, then an
        election); starts the old master again (from its nodes.conf and
        append-only file) and waits until it is the new master's replica, in
        sync, and redis_cluster_ok(). Returns {"slot", "old_master",
        "new_master" (ports), "killed_at", "promoted_at", "rejoined_at" (wall
        clock, ms), "promoted_s" (kill to promotion), "rejoined_s" (restart to
        in sync)}."""
        slot = redis_key_slot(key) if key is not None else (slot or 0)
        old = self.redis_master_for(slot=slot)
        assert old is not None, f"no master serves slot {slot}"
        old_id = next(n["id"] for n in self.redis_cluster_nodes(old) if n["myself"])
        replicas = {n["port"] for n in self.redis_cluster_nodes(old)
                    if n["master_id"] == old_id and not n["failing"]}
        assert replicas, f"the master on {old} (slot {slot}) has no replica"

        t0 = time.monotonic()
        killed_at = int(time.time() * 1000)
        self.redis_nodes.pop(old).stop(signal.SIGKILL)

        def promoted():
            try:
                owners = set()
                for port in self.redis_nodes:
                    if b"cluster_state:ok" not in self.redis_command("CLUSTER", "INFO", port=port,
                                                                     timeout=2.0):
                        return None
                    owners.add(self.redis_master_for(slot=slot, port=port))
            except (OSError, RedisError):
                return None
            return owners.pop() if len(owners) == 1 and owners <= replicas else None

        new = wait_until(promoted, timeout, f"a replica of {old} to serve slot {slot}, cluster ok",
                         interval=0.05)
        t1 = time.monotonic()
        promoted_at = int(time.time() * 1000)

        self._start_redis_node(old)
        if self._redis_nodes_answer([old]) != "ok":
            raise AssertionError(f"the old master {old} exited:\n{self.redis_nodes[old].log()}")

        def rejoined():
            if not self.redis_cluster_ok():
                return False
            me = next(n for n in self.redis_cluster_nodes(old) if n["myself"])
            new_id = next(n["id"] for n in self.redis_cluster_nodes(new) if n["myself"])
            return me["role"] == "replica" and me["master_id"] == new_id

        wait_until(rejoined, timeout, f"{old} to be a replica of {new} in sync, cluster ok",
                   interval=0.05)
        t2 = time.monotonic()
        return {"slot": slot, "old_master": old, "new_master": new, "killed_at": killed_at,
                "promoted_at": promoted_at, "rejoined_at": int(time.time() * 1000),
                "promoted_s": round(t1 - t0, 3), "rejoined_s": round(t2 - t1, 3)}

    def new_sandbox(self, name: str) -> Sandbox:
        """A (not yet started) sandbox with this stack's certificates and
        secrets (and its PayPal / e-wallet APIs if the stack has them), its
        journal and log under <tmp>/<name>/."""
        return Sandbox(name, self.tmp / name, self.certs, self.card_secret_file, self.card_secret,
                       self.paypal_credentials_file if self.paypal else None,
                       self.ewallet_secret_file if self.ewallet else None,
                       webhook_secret_file=self.webhook_secret_file if self.webhooks else None)

    def _start_sandbox(self) -> None:
        if self.psp is None:
            self.sandbox_port = 0
            self.psp = Sandbox("sandbox", self.tmp / "sandbox", self.certs, self.card_secret_file,
                               self.card_secret,
                               self.paypal_credentials_file if self.paypal else None,
                               self.ewallet_secret_file if self.ewallet else None,
                               log_path=self.tmp / "log" / "sandbox.log",
                               webhook_secret_file=(self.webhook_secret_file if self.webhooks
                                                    else None))
        self.psp.start(self.sandbox_port)
        self.sandbox = self.psp.proc
        self.sandbox_port = self.psp.port
        self._sandbox_ctx = self.psp._ctx

    def stop_sandbox(self, sig: int = signal.SIGTERM) -> int | None:
        """Stops the stack's sandbox; start_sandbox() brings it back on the same port."""
        rc = self.psp.stop(sig) if self.psp is not None else None
        self.sandbox = None
        return rc

    def start_sandbox(self) -> None:
        """(Re)starts the stack's sandbox on the port it had."""
        self._start_sandbox()

    def start_extra_sandbox(self, name: str, port: int = 0) -> Sandbox:
        """Starts another sandbox on `port` (0: a free one); stop() stops it."""
        box = self.new_sandbox(name)
        self.extra_sandboxes.append(box)
        return box.start(port)

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
                       "\n  group_commit_max: 512\n  key_retention: 24h"
                       if self.ledger_backend == "sqlite" else
                       "\n  backend: postgres\n  postgres:"
                       f"\n    dsn: host=127.0.0.1 port={self.postgres_port} dbname=recharge"
                       " user=recharge connect_timeout=5"
                       f"\n    password_file: {self.tmp / 'secrets' / 'pg_password'}"
                       "\n  group_commit_max: 512\n  key_retention: 24h"),
            "redis": (f"\n  address: 127.0.0.1:{self.redis_port}" +
                      ("\n  cluster: " + ",".join(f"127.0.0.1:{p}" for p in self.redis_cluster_ports)
                       if self.redis_mode == "cluster" else "") +
                      f"\n  timeout: {self.redis_timeout}" +
                      (f"\n  key_prefix: {self.redis_key_prefix}"
                       if self.redis_key_prefix is not None else "")),
            "fingerprint_key_file": str(self.tmp / "secrets" / "fingerprint.key"),
            "recovery": (f"\n  interval: {self.recovery_interval}"
                         f"\n  settle_after: {self.settle_after}"),
        }
        if self.fraud_configured:
            values["fraud"] = f"\n  rules: {self.fraud_rules_path}"
        values["transport"] = self.transport
        if self.transport != "plaintext":
            values["tls"] = (f"\n  cert_file: {self.certs / 'server.pem'}"
                             f"\n  key_file: {self.certs / 'server.key'}"
                             f"\n  client_ca_file: {self.certs / 'ca.pem'}")
        values["callers"] = (
            f"\n  - name: e2e\n    roles: [app, ops]"
            f"\n    token_sha256: [{sha256_hex(self.token)}]"
            f"\n    certificate_subjects: [e2e-client]"
            f"\n  - name: e2e-app\n    roles: [app]"
            f"\n    token_sha256: [{sha256_hex(self.app_token)}, {sha256_hex(self.app_token_2)}]"
            f"\n    certificate_subjects: [app-client]"
            f"\n  - name: e2e-ops\n    roles: [ops]"
            f"\n    token_sha256: [{sha256_hex(self.ops_token)}]"
            f"\n    certificate_subjects: [ops-client]" + self.callers_extra)
        if self.limits is not None:
            values["limits"] = self.limits
        if self.log_level is not None:
            values["log_level"] = self.log_level
        if self.review_hold_expiry is not None:
            values["review"] = f"\n  hold_expiry: {self.review_hold_expiry}"
        if self.metrics:
            values["metrics"] = f"\n  listen: 127.0.0.1:{self.metrics_port}"
        if self.webhooks:
            values["webhooks"] = (f"\n  listen: 127.0.0.1:{self.webhook_port}"
                                  f"\n  cert_file: {self.certs / 'server.pem'}"
                                  f"\n  key_file: {self.certs / 'server.key'}")
        values.update(override)
        lines = ["# Written by tests/e2e/stack.py"]
        for k, v in values.items():
            lines.append(f"{k}:{v}" if v.startswith("\n") else f"{k}: {v}")
        return "\n".join(lines) + "\n"

    def write_configs(self) -> None:
        if self.fraud_rules_text is not None:
            self.write_fraud_rules(self.fraud_rules_text)
        elif self.fraud_rules_source is not None:
            self.write_fraud_rules(Path(self.fraud_rules_source).read_text())
        self.gateway_yaml.write_text(self.gateway_yaml_text())
        self.adapters_yaml.write_text(self.adapters_text if self.adapters_text is not None
                                      else self.default_adapters_text())

    def default_adapters_text(self) -> str:
        """The generated adapters.yaml: one card instance on the sandbox."""
        return (
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
        env.update(self.extra_env)
        return env

    def run_gateway_once(self, config: Path, timeout: float = 20.0) -> subprocess.CompletedProcess:
        """Runs the gateway with `config` (expected to fail at start-up) and
        returns its exit status and output; kills it if it is still running
        after `timeout`."""
        proc = subprocess.Popen(_dying_with_parent([str(GATEWAY_BIN), "--config", str(config),
                                                    "--listen", f"127.0.0.1:{free_port()}"]),
                                stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, env=self.gateway_env(), cwd=str(self.tmp),
                                start_new_session=True)
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

            def channel():
                if self._channel is None:
                    self._channel = self.new_channel()
                return self._channel

            state = self.wait_serving(self.gateway, self.gateway_port, channel,
                                      "the gateway health check to be SERVING")
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

    def wait_serving(self, proc: Proc, port: int, channel, what: str) -> str:
        """Waits (bounded) until the gateway `proc` on `port` answers the
        health check SERVING on `channel()`: "ok", or "exited" if it ended
        first. TCP first (a channel that saw "connection refused" backs off
        for seconds), then the channel and the health check."""
        def ready():
            if not proc.alive():
                return "exited"
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
            except OSError:
                return None
            try:
                serving = self.health(timeout=2.0, channel=channel(),
                                      wait_for_ready=True) == HEALTH_SERVING
            except grpc.RpcError:
                return None
            return "ok" if serving else None

        return wait_until(ready, START_DEADLINE_S, what, interval=0.05)

    def stop_gateway(self, sig: int = signal.SIGTERM, timeout: float = STOP_DEADLINE_S) -> int:
        """Sends `sig` and waits for the exit; returns the exit status."""
        rc = self.gateway.stop(sig, timeout)
        self._close_channel()
        return rc

    def kill_gateway(self) -> int:
        """kill -9: no chance to finish anything."""
        return self.stop_gateway(signal.SIGKILL)

    def write_fraud_rules(self, text: str) -> None:
        """Replaces the rule file the gateway loads, atomically (a reload
        never reads half a file)."""
        tmp_path = self.fraud_rules_path.with_suffix(".yaml.tmp")
        tmp_path.write_text(text)
        os.replace(tmp_path, self.fraud_rules_path)

    def sighup_gateway(self) -> None:
        """SIGHUP: the gateway reloads its fraud rules."""
        assert self.gateway is not None and self.gateway.alive(), "gateway not running"
        os.kill(self.gateway.pid, signal.SIGHUP)

    def restart_gateway(self) -> None:
        if self.gateway is not None and self.gateway.alive():
            self.stop_gateway()
        self.start_gateway()

    def close_channel(self) -> None:
        """Closes the stack's channel. Before a planned stop: the gateway's
        graceful shutdown waits about 5 s for a client that keeps an idle
        connection open, and returns at once when there is none."""
        self._close_channel()

    def _close_channel(self) -> None:
        if self._channel is not None:
            self._channel.close()
            self._channel = None

    # ----------------------------------------------------------------- gRPC

    def channel(self) -> grpc.Channel:
        assert self._channel is not None, "gateway not started"
        return self._channel

    def new_channel(self, port: int | None = None) -> grpc.Channel:
        """A separate channel (own connection) as the caller `e2e` (roles app
        and ops): its token, and on an mTLS port its certificate; to the
        gateway, or the one on `port` (a replica). The caller closes it."""
        return self.raw_channel(token=self.token, client="e2e", port=port)

    def raw_channel(self, token: str | None = None, client: str | None = None,
                    plaintext: bool | None = None, ca: Path | None = None,
                    client_dir: Path | None = None, port: int | None = None) -> grpc.Channel:
        """A channel with exactly these credentials: `token` as a bearer
        token (None: no authorization metadata), `client` the name of a
        client certificate under certs/ (or `client_dir`) presented on a TLS
        port, `plaintext` (default: as the stack's transport) no TLS at all,
        `ca` the CA file trusted for the server (default certs/ca.pem); to
        the gateway, or the one on `port` (a replica)."""
        target = f"127.0.0.1:{port or self.gateway_port}"
        if plaintext is None:
            plaintext = self.transport == "plaintext"
        if plaintext:
            channel = grpc.insecure_channel(target, options=CHANNEL_OPTIONS)
        else:
            key = chain = None
            if client is not None:
                d = client_dir or self.certs
                key = (d / f"{client}-client.key").read_bytes()
                chain = (d / f"{client}-client.pem").read_bytes()
            creds = grpc.ssl_channel_credentials(
                root_certificates=(ca or self.certs / "ca.pem").read_bytes(),
                private_key=key, certificate_chain=chain)
            channel = grpc.secure_channel(target, creds, options=CHANNEL_OPTIONS)
        if token is not None:
            channel = grpc.intercept_channel(channel, BearerToken(token))
        return channel

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

    def gateway_events(self, event: str, log: str | None = None) -> list[dict]:
        """The gateway's JSON log lines whose "event" is `event` (from `log`,
        default the whole gateway log)."""
        out = []
        for line in (self.gateway_log() if log is None else log).splitlines():
            line = line.strip()
            if not line.startswith("{"):
                continue
            try:
                obj = json.loads(line)
            except ValueError:
                continue
            if obj.get("event") == event:
                out.append(obj)
        return out

    def sandbox_log(self) -> str:
        return self.psp.log() if self.psp else ""

    def journal(self, ops: bool = False) -> list[dict]:
        """The sandbox's JSON-lines journal: the charges that took money
        (see `charges_taken`); with `ops` every line as written."""
        if not self.journal_path.exists():
            return []
        lines = [json.loads(line) for line in self.journal_path.read_text().splitlines()
                 if line.strip()]
        return lines if ops else charges_taken(lines)

    def payment_ops(self, key: str) -> list[str]:
        """The capture / void / refund lines ("op") of the payment made under
        `key`, in journal order: e.g. ["capture"] for an approved card hold,
        ["void"] for a rejected one, ["refund"] for a refunded charge."""
        lines = self.journal(ops=True)
        ids = {r.get("id") for r in lines if "op" not in r and r.get("idempotency_key") == key}
        ids.discard(None)
        return [r["op"] for r in lines if "op" in r and
                ({r.get("id"), r.get("charge"), r.get("capture_id"), r.get("payment_id")} & ids)]

    def holds_for(self, key: str) -> list[dict]:
        """Card authorisation holds (charge lines with captured false) made
        under `key`, captured since or not."""
        return [r for r in self.journal(ops=True)
                if "op" not in r and r.get("idempotency_key") == key and r.get("captured") is False]

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
        return self.psp.request(method, path, body, headers)

    def sandbox_stats(self) -> dict:
        """The sandbox's /_sandbox/stats (requests per API, PayPal token grants)."""
        return self.psp.stats()

    def sandbox_reset_stats(self) -> dict:
        return self.psp.reset_stats()

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


class RedisError(Exception):
    """An error reply from Redis."""


def _read_resp(f):
    line = f.readline()
    if not line.endswith(b"\r\n"):
        raise OSError("redis: connection closed mid-reply")
    kind, rest = line[:1], line[1:-2]
    if kind == b"+":
        return rest.decode()
    if kind == b"-":
        raise RedisError(rest.decode())
    if kind == b":":
        return int(rest)
    if kind == b"$":
        n = int(rest)
        if n < 0:
            return None
        data = f.read(n + 2)
        if len(data) != n + 2:
            raise OSError("redis: connection closed mid-reply")
        return data[:-2]
    if kind == b"*":
        n = int(rest)
        return None if n < 0 else [_read_resp(f) for _ in range(n)]
    raise OSError(f"redis: unexpected reply {line!r}")


def status_name(code: int) -> str:
    return pb.RechargeStatus.Name(code)
