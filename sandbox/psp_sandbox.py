#!/usr/bin/python3
"""PSP sandbox: a real HTTPS server playing the payment service providers the
gateway's adapters call (DESIGN.md section 7). Standard library only.

    psp_sandbox.py --host 127.0.0.1 --port 8443 --cert CERT.pem --key KEY.pem \
        --journal PATH.jsonl --card-secret-file FILE \
        [--paypal-credentials-file FILE] [--ewallet-secret-file FILE] \
        [--latency-ms 0] [--latency-jitter-ms 0] [--error-rate 0.0] [--port-file FILE]

Provider APIs live in their own modules -- card_api.py (Stripe-like),
paypal_api.py (OAuth2 + Orders v2 capture; enabled by
--paypal-credentials-file), ewallet_api.py (HMAC-signed regional wallets;
enabled by --ewallet-secret-file) -- and share the journal, idempotency store
and fault-injection config from sandbox_core.py. Control endpoints (no auth,
for tests):

    GET  /_sandbox/health       -> {"ok":true}
    GET  /_sandbox/config       -> {"latency_ms":..,"latency_jitter_ms":..,"error_rate":..,
                                    "timeout_mode":..,              (top level: all APIs)
                                    "card":{..},"paypal":{..,"token_ttl_s":..},"ewallet":{..}}
                                   (each block: that API's effective settings)
    POST /_sandbox/config       JSON subset of the above -> the new config. Top-level
                                keys set every API; per-API blocks (applied after
                                them) set one. Validated as a whole: 400 changes nothing.
                                latency_ms / latency_jitter_ms: 0..600000 (processing
                                time of charges and lookups); error_rate 0..1 (charges
                                fail with 500 "charged":false before anything is taken);
                                timeout_mode "charge" (default: sleep, then charge --
                                a client that timed out leaves a real charge) or "drop"
                                (charge requests sleep, then the connection is closed
                                with no response, nothing charged or journaled);
                                paypal.token_ttl_s 1..31622400 (default 32400).
    GET  /_sandbox/stats        -> {"paypal_token_grants":N,
                                    "requests":{"card":N,"paypal":N,"ewallet":N}}
    POST /_sandbox/stats/reset  zeroes the counters -> the zeroed stats
"""

from __future__ import annotations

import sys

sys.dont_write_bytecode = True  # keep sandbox/ free of __pycache__

import argparse
import json
import os
import re
import signal
import socket
import socketserver
import ssl
import threading
import time
import traceback
import urllib.parse
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from card_api import CardApi
from ewallet_api import EwalletApi
from paypal_api import PaypalApi, read_credentials
from sandbox_core import (ApiError, DropConnection, IdempotencyStore, Journal, JournalError,
                          Request, Response, Router, SandboxConfig, Stats, error_response)

MAX_BODY_BYTES = 64 * 1024
CONNECTION_TIMEOUT_S = 30.0
_PAN_RE = re.compile(r"\d{12,19}")
_UNPRINTABLE_RE = re.compile(r"[^\x20-\x7e]")
_QUIET_ERRORS = (ConnectionError, TimeoutError, ssl.SSLError, ssl.SSLEOFError, EOFError, OSError)


# --------------------------------------------------------------------------
# Control API
# --------------------------------------------------------------------------

class ControlApi:
    """Test-only knobs; unauthenticated (bind the sandbox to loopback)."""

    def __init__(self, config: SandboxConfig, stats: Stats | None = None):
        self._config = config
        self._stats = stats if stats is not None else Stats(())

    def routes(self):
        return [
            ("GET", r"/_sandbox/health", self.health),
            ("GET", r"/_sandbox/config", self.get_config),
            ("POST", r"/_sandbox/config", self.set_config),
            ("GET", r"/_sandbox/stats", self.get_stats),
            ("POST", r"/_sandbox/stats/reset", self.reset_stats),
        ]

    def get_stats(self, req: Request) -> Response:
        return Response.json(200, self._stats.snapshot())

    def reset_stats(self, req: Request) -> Response:
        return Response.json(200, self._stats.reset())

    def health(self, req: Request) -> Response:
        return Response.json(200, {"ok": True})

    def get_config(self, req: Request) -> Response:
        return Response.json(200, self._config.snapshot())

    def set_config(self, req: Request) -> Response:
        try:
            changes = json.loads(req.body.decode("utf-8") or "{}")
        except (UnicodeDecodeError, ValueError):
            raise ApiError(error_response(400, "invalid_request_error", "parameter_invalid",
                                          "Body must be a JSON object.")) from None
        if not isinstance(changes, dict):
            raise ApiError(error_response(400, "invalid_request_error", "parameter_invalid",
                                          "Body must be a JSON object."))
        try:
            return Response.json(200, self._config.update(changes))
        except ValueError as e:
            raise ApiError(error_response(400, "invalid_request_error", "parameter_invalid",
                                          str(e))) from None


# --------------------------------------------------------------------------
# HTTP server
# --------------------------------------------------------------------------

class SandboxServer(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 128

    def __init__(self, address, ssl_context: ssl.SSLContext, router: Router, redact: list[str]):
        if ":" in address[0]:
            self.address_family = socket.AF_INET6
        self.router = router
        self._redact = [r for r in redact if r]
        self._inflight = 0
        self._inflight_cv = threading.Condition()
        super().__init__(address, SandboxHandler)  # binds and listens
        # TLS handshakes happen in the per-connection thread (see
        # SandboxHandler.setup) so a stalled client cannot block accept().
        self.socket = ssl_context.wrap_socket(self.socket, server_side=True,
                                              do_handshake_on_connect=False)

    def server_bind(self):
        # Skip HTTPServer's getfqdn() reverse lookup.
        socketserver.TCPServer.server_bind(self)
        host, port = self.server_address[:2]
        self.server_name = host
        self.server_port = port

    @property
    def port(self) -> int:
        return self.server_address[1]

    # -- logging ----------------------------------------------------------
    def sanitize(self, text: str) -> str:
        for secret in self._redact:
            text = text.replace(secret, "[REDACTED]")
        text = _PAN_RE.sub("[REDACTED]", text)
        text = _UNPRINTABLE_RE.sub("?", text)
        return text[:1000]

    def log(self, text: str) -> None:
        stamp = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime())
        try:
            sys.stderr.write(f"{stamp}Z psp-sandbox {self.sanitize(text)}\n")
            sys.stderr.flush()
        except (OSError, ValueError):
            pass

    def handle_error(self, request, client_address):
        exc = sys.exc_info()[1]
        if isinstance(exc, _QUIET_ERRORS):
            self.log(f"{client_address[0]} connection dropped: {type(exc).__name__}")
        else:
            self.log(f"{client_address[0]} unexpected error: "
                     + " | ".join(traceback.format_exception_only(type(exc), exc)).strip())

    # -- in-flight accounting for clean shutdown -----------------------------
    def enter(self) -> None:
        with self._inflight_cv:
            self._inflight += 1

    def leave(self) -> None:
        with self._inflight_cv:
            self._inflight -= 1
            self._inflight_cv.notify_all()

    def wait_idle(self, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        with self._inflight_cv:
            while self._inflight > 0:
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self._inflight_cv.wait(left)
        return True


class SandboxHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    # Headers and body go out as separate writes: without TCP_NODELAY, Nagle
    # holds the body until the client's delayed ACK (~40 ms per response).
    disable_nagle_algorithm = True
    server_version = "psp-sandbox/1.0"
    sys_version = ""
    timeout = CONNECTION_TIMEOUT_S
    server: SandboxServer

    def setup(self):
        self.request.settimeout(self.timeout)
        self.request.do_handshake()
        super().setup()

    def handle(self):
        try:
            super().handle()
        except _QUIET_ERRORS as e:
            self.close_connection = True
            self.server.log(f"{self.client_address[0]} connection dropped: {type(e).__name__}")

    # Every method goes through the router (404 / 405 as appropriate).
    def do_GET(self):
        self._dispatch()

    def do_POST(self):
        self._dispatch()

    def do_PUT(self):
        self._dispatch()

    def do_DELETE(self):
        self._dispatch()

    def do_PATCH(self):
        self._dispatch()

    def _dispatch(self) -> None:
        started = time.monotonic()
        path = urllib.parse.urlsplit(self.path).path or "/"
        self.server.enter()
        resp: Response | None = None
        try:
            body = self._read_body()
            if body is None:
                return  # error already sent
            query = urllib.parse.urlsplit(self.path).query
            req = Request(method=self.command, path=path,
                          query=urllib.parse.parse_qs(query, keep_blank_values=True),
                          headers=self.headers, body=body, client=self.client_address[0],
                          target=self.path)
            try:
                resp = self.server.router.dispatch(req)
            except DropConnection:
                # Fault injection: the request is "lost" -- no response at all.
                self.close_connection = True
                try:
                    self.request.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass
                ms = (time.monotonic() - started) * 1000.0
                self.server.log(f"{self.client_address[0]} {self.command} {path} dropped "
                                f"(timeout_mode=drop) idempotency_key={self._fallback_log_key()} "
                                f"{ms:.1f}ms")
                return
            except Exception as e:  # a bug in a handler: report, keep serving
                self.server.log(f"handler error on {self.command} {path}: "
                                + "".join(traceback.format_exception(e)).replace("\n", " | "))
                resp = Response.json(500, {"error": {"type": "api_error", "code": "internal_error",
                                                     "charged": False}})
            self._send(resp)
        finally:
            self.server.leave()
            if resp is not None:
                ms = (time.monotonic() - started) * 1000.0
                key = resp.log_key
                if key is None:
                    key = self._fallback_log_key()
                self.server.log(f"{self.client_address[0]} {self.command} {path} {resp.status} "
                                f"idempotency_key={key}{' replayed' if resp.replayed else ''} "
                                f"{ms:.1f}ms")

    def _fallback_log_key(self) -> str:
        for header in ("Idempotency-Key", "PayPal-Request-Id", "X-Idempotency-Key"):
            value = self.headers.get(header)
            if value:
                return value
        query = urllib.parse.parse_qs(urllib.parse.urlsplit(self.path).query)
        for name in ("idempotency_key", "paypal_request_id"):
            if query.get(name):
                return query[name][0]
        return "-"

    def _read_body(self) -> bytes | None:
        if self.headers.get("Transfer-Encoding"):
            self._send_plain_error(501, "not_implemented", "Transfer-Encoding is not supported; "
                                   "send Content-Length.")
            return None
        cl = self.headers.get("Content-Length")
        if cl is None:
            if self.command in ("POST", "PUT", "PATCH"):
                self._send_plain_error(411, "length_required", "Content-Length is required.")
                return None
            return b""
        cl = cl.strip()
        if not cl.isdigit():
            self._send_plain_error(400, "parameter_invalid", "Invalid Content-Length.")
            return None
        n = int(cl)
        if n > MAX_BODY_BYTES:
            self._send_plain_error(413, "request_too_large", "Request body too large.")
            return None
        body = self.rfile.read(n) if n else b""
        if len(body) != n:
            raise ConnectionError("client closed connection mid-body")
        return body

    def _send_plain_error(self, status: int, code: str, message: str) -> None:
        # The body was not (fully) consumed: the connection cannot be reused.
        self.close_connection = True
        resp = error_response(status, "invalid_request_error", code, message)
        self._send(resp)
        self.server.log(f"{self.client_address[0]} {self.command} "
                        f"{urllib.parse.urlsplit(self.path).path} {status}")

    def _send(self, resp: Response) -> None:
        self.send_response(resp.status)
        self.send_header("Content-Type", resp.content_type)
        self.send_header("Content-Length", str(len(resp.body)))
        self.send_header("Cache-Control", "no-store")
        for k, v in resp.headers:
            self.send_header(k, v)
        if self.close_connection:
            self.send_header("Connection", "close")
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(resp.body)
        self.wfile.flush()

    def version_string(self):
        return self.server_version

    # Access logging is done in _dispatch (with the idempotency key).
    def log_request(self, code="-", size="-"):
        pass

    def log_message(self, format, *args):
        self.server.log(f"{self.client_address[0]} " + (format % args))


# --------------------------------------------------------------------------
# main
# --------------------------------------------------------------------------

def parse_args(argv):
    p = argparse.ArgumentParser(description="PSP sandbox HTTPS server (card, PayPal and "
                                            "e-wallet APIs).")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=8443, help="0 binds a free port")
    p.add_argument("--cert", required=True, help="server certificate chain (PEM)")
    p.add_argument("--key", required=True, help="server private key (PEM)")
    p.add_argument("--journal", required=True, help="JSON-lines journal of charges taken")
    p.add_argument("--card-secret-file", required=True,
                   help="file holding the card API bearer secret")
    p.add_argument("--paypal-credentials-file",
                   help="enables the PayPal API: file with two lines, client_id then "
                        "client_secret")
    p.add_argument("--ewallet-secret-file",
                   help="enables the e-wallet API: file holding the shared HMAC secret")
    p.add_argument("--latency-ms", type=float, default=0)
    p.add_argument("--latency-jitter-ms", type=float, default=0)
    p.add_argument("--error-rate", type=float, default=0.0)
    p.add_argument("--port-file", help="write the bound port here once listening")
    return p.parse_args(argv)


def read_secret(path: str) -> str:
    with open(path, "r", encoding="utf-8") as f:
        secret = f.read().strip()
    if not secret:
        raise ValueError(f"secret file {path} is empty")
    return secret


def write_port_file(path: str, port: int) -> None:
    tmp = f"{path}.tmp.{os.getpid()}"
    with open(tmp, "w", encoding="ascii") as f:
        f.write(f"{port}\n")
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def build_ssl_context(cert: str, key: str) -> ssl.SSLContext:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.load_cert_chain(certfile=cert, keyfile=key)
    ctx.set_alpn_protocols(["http/1.1"])
    return ctx


def main(argv=None) -> int:
    args = parse_args(sys.argv[1:] if argv is None else argv)

    def fail(msg: str) -> int:
        sys.stderr.write(f"psp-sandbox: {msg}\n")
        return 2

    try:
        card_secret = read_secret(args.card_secret_file)
    except (OSError, ValueError) as e:
        return fail(f"cannot read card secret: {e}")
    paypal_credentials = None
    if args.paypal_credentials_file:
        try:
            paypal_credentials = read_credentials(args.paypal_credentials_file)
        except (OSError, ValueError, UnicodeDecodeError) as e:
            return fail(f"cannot read PayPal credentials: {e}")
    ewallet_secret = None
    if args.ewallet_secret_file:
        try:
            ewallet_secret = read_secret(args.ewallet_secret_file)
        except (OSError, ValueError, UnicodeDecodeError) as e:
            return fail(f"cannot read e-wallet secret: {e}")
    try:
        ssl_ctx = build_ssl_context(args.cert, args.key)
    except (OSError, ssl.SSLError) as e:
        return fail(f"cannot load certificate/key: {e}")
    try:
        config = SandboxConfig(args.latency_ms, args.latency_jitter_ms, args.error_rate)
    except ValueError as e:
        return fail(str(e))

    journal = Journal(args.journal)
    store = IdempotencyStore()
    stats = Stats(("card", "paypal", "ewallet"))
    apis = [
        CardApi(card_secret, store, journal, config.register_api("card")),
        PaypalApi(paypal_credentials, store, journal,
                  config.register_api("paypal", PaypalApi.CONFIG_EXTRA), stats),
        EwalletApi(ewallet_secret, store, journal, config.register_api("ewallet")),
    ]
    by_name = {api.name: api for api in apis}
    try:
        records = journal.load()
        for rec in records:
            api = by_name.get(rec.get("api"))
            if api is None:
                sys.stderr.write(f"psp-sandbox: skipping journal record for unknown api "
                                 f"{rec.get('api')!r}\n")
                continue
            api.restore(rec)
        journal.open()
    except (OSError, JournalError, KeyError, TypeError, ValueError) as e:
        return fail(f"cannot load journal {args.journal}: {e!r}")

    def counted(api_name, handler):
        def wrapper(req: Request) -> Response:
            stats.count_request(api_name)
            return handler(req)
        return wrapper

    router = Router()
    for method, pattern, handler in ControlApi(config, stats).routes():
        router.add(method, pattern, handler)
    for api in apis:
        for method, pattern, handler in api.routes():
            router.add(method, pattern, counted(api.name, handler))

    redact = [card_secret, ewallet_secret or ""]
    if paypal_credentials:
        redact.append(paypal_credentials[1])
    try:
        server = SandboxServer((args.host, args.port), ssl_ctx, router, redact=redact)
    except OSError as e:
        journal.close()
        return fail(f"cannot listen on {args.host}:{args.port}: {e}")

    stopping = threading.Event()

    def on_signal(signum, frame):
        if not stopping.is_set():
            stopping.set()
            threading.Thread(target=server.shutdown, name="shutdown", daemon=True).start()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)

    if args.port_file:
        try:
            write_port_file(args.port_file, server.port)
        except OSError as e:
            server.server_close()
            journal.close()
            return fail(f"cannot write port file: {e}")

    enabled = ["card"] + (["paypal"] if paypal_credentials else []) + \
        (["ewallet"] if ewallet_secret else [])
    server.log(f"listening on https://{args.host}:{server.port} "
               f"(apis {','.join(enabled)}; "
               f"journal {args.journal}, {len(records)} charges restored, config "
               f"{json.dumps(config.snapshot(), separators=(',', ':'))})")
    try:
        server.serve_forever(poll_interval=0.2)
    finally:
        server.server_close()
        # Let in-flight requests finish their journal write and response.
        server.wait_idle(5.0)
        journal.close()
    server.log("stopped")
    return 0


if __name__ == "__main__":
    sys.exit(main())
