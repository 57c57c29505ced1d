#!/usr/bin/python3
"""End-to-end tests of the sandbox's asynchronous flows (sandbox/README.md,
"Asynchronous flows"): the card API's 3-D Secure challenge, the e-wallet
redirect (approval) flow, and signed webhooks delivered with retries to a
local HTTPS receiver, over real HTTPS verified against the dev CA.

Run from the repository root with either:
    /usr/bin/python3 -m unittest tests/sandbox/test_async_flows.py
    /usr/bin/python3 tests/sandbox/test_async_flows.py
"""

from __future__ import annotations

import hashlib
import hmac
import http.client
import http.server
import json
import re
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import tempfile
import threading
import time
import unittest
import urllib.parse
import uuid
from pathlib import Path

sys.dont_write_bytecode = True  # keep tests/sandbox/ free of __pycache__
sys.path.insert(0, str(Path(__file__).resolve().parent))
import test_psp_sandbox as base  # noqa: E402  (process helper, card helpers)
import test_paypal_ewallet as pe  # noqa: E402  (e-wallet signing helpers)

WEBHOOK_SECRET = "whsec_" + uuid.uuid4().hex
CHALLENGE = "4000002760003184"
CHALLENGE_FAILS = "4000008400001629"
FRICTIONLESS = "4000000000003055"
CHARGE_URL_RE = r"^https://127\.0\.0\.1:{port}/3ds/{id}\?token=([0-9a-f]{{32}})$"
APPROVAL_URL_RE = r"^https://127\.0\.0\.1:{port}/ewallet/approve/{id}\?token=([0-9a-f]{{32}})$"
AUTH_LINE_KEYS = {"ts", "api", "op", "id", "idempotency_key", "result"}
DECISION_LINE_KEYS = {"ts", "api", "op", "provider", "id", "idempotency_key", "amount",
                      "currency", "status", "decline_code"}
WAIT_S = 10.0

# Every signature and page token seen, for the leak check.
SEEN_SIGNATURES: list[str] = []
SEEN_TOKENS: list[str] = []


def wait_for(predicate, what, timeout=WAIT_S):
    """Polls `predicate` until it returns a truthy value (returned) or the
    deadline passes (a failure naming `what`)."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.02)


def check_signature(test, header, body: bytes, secret=WEBHOOK_SECRET):
    """Verifies a Sandbox-Signature header over `body`; returns its t."""
    m = re.fullmatch(r"t=(\d+),v1=([0-9a-f]{64})", header)
    test.assertIsNotNone(m, header)
    t, v1 = int(m.group(1)), m.group(2)
    expected = hmac.new(secret.encode(), f"{t}.".encode() + body, hashlib.sha256).hexdigest()
    test.assertEqual(v1, expected)
    test.assertLess(abs(time.time() - t), 120)
    SEEN_SIGNATURES.append(v1)
    return t


class Receiver:
    """A webhook receiver: HTTPS (the test CA's server certificate) on a
    free port, recording every POST; a path can be told to answer another
    status, or to answer late."""

    def __init__(self, certdir: Path):
        self.lock = threading.Lock()
        self.received: list[dict] = []
        self.status_for: dict[str, int] = {}
        self.delay_for: dict[str, float] = {}
        receiver = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self):  # noqa: N802 (http.server's name)
                body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
                with receiver.lock:
                    receiver.received.append({"path": self.path, "headers": dict(self.headers),
                                              "body": body, "at": time.monotonic()})
                    status = receiver.status_for.get(self.path, 200)
                    delay = receiver.delay_for.get(self.path, 0)
                if delay:
                    time.sleep(delay)  # a slow receiver (the sandbox must not wait)
                self.send_response(status)
                self.send_header("Content-Length", "2")
                self.end_headers()
                self.wfile.write(b"ok")

            def log_message(self, *args):
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True  # a slow answer must not hold up close()
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.load_cert_chain(str(certdir / "server.pem"), str(certdir / "server.key"))
        self.server.socket = ctx.wrap_socket(self.server.socket, server_side=True)
        self.port = self.server.server_address[1]
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def new_url(self) -> tuple[str, str]:
        """A fresh notify_url (and its path) for one test."""
        path = f"/hooks/{uuid.uuid4().hex}?source=sandbox"
        return f"https://127.0.0.1:{self.port}{path}", path

    def requests(self, path) -> list[dict]:
        with self.lock:
            return [r for r in self.received if r["path"] == path]

    def close(self):
        self.server.shutdown()
        self.server.server_close()


class Sandbox(pe.Sandbox):
    """The e-wallet test's process helper plus pages, webhooks and cards."""

    def page(self, method, path, form=None, content_type="application/x-www-form-urlencoded"):
        """An HTML page: (status, content type, text)."""
        c = self.conn()
        try:
            body = urllib.parse.urlencode(form) if form is not None else None
            headers = {"Content-Type": content_type} if form is not None else {}
            c.request(method, path, body=body, headers=headers)
            r = c.getresponse()
            return r.status, r.getheader("Content-Type"), r.read().decode()
        finally:
            c.close()

    def webhooks(self) -> list[dict]:
        status, _, body, _ = self.request("GET", "/_sandbox/webhooks")
        assert status == 200, (status, body)
        return body["webhooks"]

    def webhook(self, event_id) -> dict:
        return next(w for w in self.webhooks() if w["event_id"] == event_id)

    def card_post(self, path, key=None, form=None):
        headers = {"Authorization": f"Bearer {base.SECRET}"}
        body = ""
        if form is not None:
            headers["Content-Type"] = "application/x-www-form-urlencoded"
            body = urllib.parse.urlencode(form)
        if key is not None:
            headers["Idempotency-Key"] = key
        return self.request("POST", path, body, headers)

    def card_get(self, path):
        return self.request("GET", path, headers={"Authorization": f"Bearer {base.SECRET}"})

    def ew_create(self, provider="gcash", account=None, amount=5000, currency="PHP", key=None,
                  **extra):
        body = {"merchant_ref": "rch_async", "account_id": account or pe.new_account(),
                "amount": amount, "currency": currency, **extra}
        return self.ew_request("POST", provider, body, key=key)

    def ew_cancel(self, provider, payment_id, body=None):
        return self.ew_signed("POST", f"/ewallet/v1/{provider}/payments/{payment_id}/cancel", body)


def page_path(url: str) -> str:
    """The path and query of a sandbox page URL; its token is recorded."""
    parts = urllib.parse.urlsplit(url)
    SEEN_TOKENS.append(urllib.parse.parse_qs(parts.query)["token"][0])
    return f"{parts.path}?{parts.query}"


def token_of(url: str) -> str:
    return urllib.parse.parse_qs(urllib.parse.urlsplit(url).query)["token"][0]


TMP: Path
CERTS: Path
CARD_FILE: Path
EW_FILE: Path
HOOK_FILE: Path
SB: Sandbox
RX: Receiver


def sandbox_args(webhooks=True):
    args = ["--ewallet-secret-file", str(EW_FILE)]
    if webhooks:
        args += ["--webhook-secret-file", str(HOOK_FILE), "--webhook-ca-file",
                 str(CERTS / "ca.pem")]
    return args


def setUpModule():
    global TMP, CERTS, CARD_FILE, EW_FILE, HOOK_FILE, SB, RX
    TMP = Path(tempfile.mkdtemp(prefix="psp-sandbox-async-"))
    CERTS = TMP / "certs"
    subprocess.run(["bash", str(base.MAKE_CERTS), str(CERTS)], check=True, timeout=30,
                   stdout=subprocess.DEVNULL)
    CARD_FILE = TMP / "card.secret"
    CARD_FILE.write_text(base.SECRET + "\n")
    EW_FILE = TMP / "ewallet.secret"
    EW_FILE.write_text(pe.EW_SECRET + "\n")
    HOOK_FILE = TMP / "webhook.secret"
    HOOK_FILE.write_text(f" {WEBHOOK_SECRET}\n")
    RX = Receiver(CERTS)
    SB = Sandbox(TMP, CERTS, TMP / "journal.jsonl", CARD_FILE, extra_args=sandbox_args()).start()


def tearDownModule():
    try:
        rc = SB.stop()
        if rc != 0:
            raise AssertionError(f"sandbox exited {rc}:\n{SB.log()}")
    finally:
        RX.close()
        shutil.rmtree(TMP, ignore_errors=True)


class AsyncTest(unittest.TestCase):
    sb: Sandbox = None  # the module's sandbox unless a class has its own

    def setUp(self):
        self.s = self.sb or SB
        self.s.config(webhook_retry_base_ms=500, webhook_max_attempts=12)

    # -- card ------------------------------------------------------------------
    def challenged(self, number=CHALLENGE, region=None, notify=True, key=None, sb=None):
        """A charge answered requires_action: (key, body, raw, notify path)."""
        sb = sb or self.s
        key = key or pe.new_key()
        extra = {"return_url": "https://merchant.example/back?o=1"}
        path = None
        if notify:
            extra["notify_url"], path = RX.new_url()
        if region:
            extra["region"] = region
        status, _, body, raw = sb.charge(number, key=key, extra=extra)
        self.assertEqual(status, 200, body)
        self.assertEqual(body["status"], "requires_action", body)
        return key, body, raw, path

    def complete(self, charge, result, token=None, sb=None):
        sb = sb or self.s
        url = charge["next_action"]["redirect_to_url"]["url"]
        return sb.page("POST", f"/3ds/{charge['id']}/complete",
                       {"token": token or token_of(url), "result": result})

    def current(self, key, sb=None):
        status, _, body, _ = (sb or self.s).lookup(key)
        self.assertEqual(status, 200, body)
        self.assertEqual(len(body["data"]), 1, body)
        return body["data"][0]

    def delivered(self, path, n=1):
        """Waits for the receiver to have `n` deliveries on `path`."""
        return wait_for(lambda: len(RX.requests(path)) >= n and RX.requests(path),
                        f"{n} webhook(s) on {path}")

    def check_webhook(self, path, event_type, obj_key):
        """The one delivery on `path`: headers, signature and event; returns
        the event."""
        (req,) = self.delivered(path)
        self.assertEqual(req["headers"]["Content-Type"], "application/json")
        check_signature(self, req["headers"]["Sandbox-Signature"], req["body"])
        event = json.loads(req["body"])
        type_key = "type" if obj_key == "data" else "event_type"
        self.assertEqual(event[type_key], event_type)
        listed = wait_for(lambda: [w for w in self.s.webhooks()
                                   if w["body"] == req["body"].decode() and w["delivered"]],
                          "the delivery in /_sandbox/webhooks")
        self.assertEqual(len(listed), 1)
        hook = listed[0]
        self.assertEqual((hook["type"], hook["attempts"], hook["last_status"], hook["last_error"]),
                         (event_type, 1, 200, ""))
        self.assertEqual(hook["signature"], req["headers"]["Sandbox-Signature"])
        self.assertTrue(hook["url"].endswith(path))
        return event


# ----------------------------------------------------------------------------
# Card 3-D Secure
# ----------------------------------------------------------------------------

class ThreeDSecureTest(AsyncTest):
    def test_challenge_card_approved_becomes_a_hold_then_captured(self):
        key, charge, raw, path = self.challenged()
        cid = charge["id"]
        self.assertEqual((charge["paid"], charge["captured"], charge["voided"]),
                         (False, False, False))
        action = charge["next_action"]
        self.assertEqual(action["type"], "redirect_to_url")
        self.assertEqual(action["redirect_to_url"]["return_url"],
                         "https://merchant.example/back?o=1")
        url = action["redirect_to_url"]["url"]
        self.assertRegex(url, CHARGE_URL_RE.format(port=self.s.port, id=cid))
        (line,) = [r for r in self.s.journal_for(key)]
        self.assertEqual((line["id"], line["status"], line["captured"], line["three_d_secure"],
                          line["last4"]), (cid, "requires_action", False, "challenge", "3184"))
        self.assertEqual(self.current(key)["status"], "requires_action")
        # The create call replays its own answer.
        status, hdrs, _, raw2 = self.s.charge(CHALLENGE, key=key, extra={
            "return_url": "https://merchant.example/back?o=1",
            "notify_url": f"https://127.0.0.1:{RX.port}{path}"})
        self.assertEqual((status, raw2, hdrs.get("idempotent-replayed")), (200, raw, "true"))

        # The page: amount, currency, last 4, merchant and two buttons.
        status, ctype, html = self.s.page("GET", page_path(url))
        self.assertEqual(status, 200, html)
        self.assertTrue(ctype.startswith("text/html"), ctype)
        for text in ('id="amount">1000<', 'id="currency">USD<', "**** 3184", 'id="merchant"',
                     f'action="/3ds/{cid}/complete"', 'name="result" value="approve"',
                     'name="result" value="fail"'):
            self.assertIn(text, html)
        self.assertNotIn(CHALLENGE, html)
        # Wrong or missing token: 404, on the page and on completion.
        for bad in (f"/3ds/{cid}?token={'0' * 32}", f"/3ds/{cid}", f"/3ds/ch_{'0' * 24}?token=x"):
            self.assertEqual(self.s.page("GET", bad)[0], 404, bad)
        self.assertEqual(self.complete(charge, "approve", token="0" * 32)[0], 404)
        self.assertEqual(self.complete(charge, "maybe")[0], 400)
        # Not authenticated yet: no capture, no refund.
        s, _, b, _ = self.s.card_post(f"/v1/charges/{cid}/capture")
        self.assertEqual((s, b["error"]["code"]), (400, "charge_not_authenticated"))
        s, _, b, _ = self.s.card_post("/v1/refunds", form={"charge": cid})
        self.assertEqual((s, b["error"]["code"]), (400, "charge_not_authenticated"))

        status, _, html = self.complete(charge, "approve")
        self.assertEqual(status, 200, html)
        self.assertIn("approved", html)
        status, _, html = self.complete(charge, "approve")
        self.assertEqual(status, 409)
        self.assertIn("already completed", html)
        self.assertEqual(self.complete(charge, "fail")[0], 409)
        now = self.current(key)
        self.assertEqual((now["status"], now["paid"], now["captured"]), ("succeeded", True, False))
        self.assertNotIn("next_action", now)
        self.assertEqual(self.s.card_get(f"/v1/charges/{cid}")[2], now)
        auth = [r for r in self.s.journal_for(key) if r.get("op") == "authenticate"]
        self.assertEqual(len(auth), 1)
        self.assertEqual(set(auth[0]), AUTH_LINE_KEYS)
        self.assertEqual((auth[0]["api"], auth[0]["id"], auth[0]["result"]),
                         ("card", cid, "approved"))
        self.assertEqual(self.s.page("GET", page_path(url))[2].count("<form"), 0)

        event = self.check_webhook(path, "charge.authenticated", "data")
        self.assertRegex(event["id"], r"^evt_[0-9a-f]{24}$")
        self.assertIsInstance(event["created"], int)
        self.assertEqual(event["data"]["object"], now)

        # The merchant captures the hold.
        ckey = pe.new_key()
        s, _, b, _ = self.s.card_post(f"/v1/charges/{cid}/capture", key=ckey)
        self.assertEqual((s, b["captured"], b["status"]), (200, True, "succeeded"))
        self.assertEqual(self.current(key)["captured"], True)
        self.assertEqual(self.s.charge(CHALLENGE, key=key, extra={
            "return_url": "https://merchant.example/back?o=1",
            "notify_url": f"https://127.0.0.1:{RX.port}{path}"})[3], raw)

    def test_challenge_card_fail_button_fails_the_charge(self):
        key, charge, _, path = self.challenged()
        status, _, html = self.complete(charge, "fail")
        self.assertEqual(status, 200, html)
        now = self.current(key)
        self.assertEqual((now["status"], now["failure_code"], now["paid"]),
                         ("failed", "authentication_failed", False))
        event = self.check_webhook(path, "charge.authentication_failed", "data")
        self.assertEqual(event["data"]["object"], now)
        self.assertEqual([r["result"] for r in self.s.journal_for(key) if r.get("op")], ["failed"])
        s, _, b, _ = self.s.card_post(f"/v1/charges/{charge['id']}/capture")
        self.assertEqual((s, b["error"]["code"]), (400, "charge_not_authorized"))

    def test_always_failing_card_fails_even_when_approved(self):
        key, charge, _, path = self.challenged(CHALLENGE_FAILS, region="US")
        self.assertEqual(self.complete(charge, "approve")[0], 200)
        now = self.current(key)
        self.assertEqual((now["status"], now["failure_code"]), ("failed", "authentication_failed"))
        (line,) = [r for r in self.s.journal_for(key) if "op" not in r]
        self.assertEqual(line["three_d_secure"], "challenge_fails")
        self.assertEqual([r["result"] for r in self.s.journal_for(key) if r.get("op")], ["failed"])
        self.check_webhook(path, "charge.authentication_failed", "data")

    def test_region_decides_for_other_cards(self):
        for number in (base.APPROVE, base.OTHER_OK):
            for region in ("DE", "gb", "IN"):
                with self.subTest(number=number, region=region):
                    key, charge, _, _ = self.challenged(number, region=region, notify=False)
                    (line,) = self.s.journal_for(key)
                    self.assertEqual((line["region"], line["three_d_secure"]),
                                     (region.upper(), "challenge"))
                    self.assertNotIn("notify_url", line)
            for region in ("US", "FR", None):
                with self.subTest(number=number, region=region):
                    extra = {"region": region} if region else {}
                    s, _, b, _ = self.s.charge(number, key=pe.new_key(), extra=extra)
                    self.assertEqual((s, b["status"], b["captured"]), (200, "succeeded", True))
                    self.assertNotIn("next_action", b)

    def test_frictionless_card_succeeds_at_once_everywhere(self):
        for region in ("DE", "GB", "IN", "US", None):
            with self.subTest(region=region):
                key = pe.new_key()
                extra = {"notify_url": RX.new_url()[0]}
                if region:
                    extra["region"] = region
                s, _, b, _ = self.s.charge(FRICTIONLESS, key=key, extra=extra)
                self.assertEqual((s, b["status"], b["captured"], b["card_last4"]),
                                 (200, "succeeded", True, "3055"))
                self.assertNotIn("next_action", b)
                (line,) = self.s.journal_for(key)
                self.assertNotIn("three_d_secure", line)
                self.assertNotIn("captured", line)

    def test_declining_cards_decline_without_challenge(self):
        for number, code in ((base.DECLINE, "card_declined"), (base.NSF, "insufficient_funds")):
            with self.subTest(number=number):
                key = pe.new_key()
                s, _, b, _ = self.s.charge(number, key=key, extra={"region": "DE",
                                                                  "notify_url": RX.new_url()[0]})
                self.assertEqual((s, b["error"]["decline_code"]), (402, code))
                self.assertEqual(self.current(key)["status"], "failed")

    def test_void_cancels_a_charge_awaiting_authentication(self):
        key, charge, _, path = self.challenged()
        cid = charge["id"]
        vkey = pe.new_key()
        s, _, b, _ = self.s.card_post(f"/v1/charges/{cid}/void", key=vkey)
        self.assertEqual((s, b["status"], b["voided"], b["captured"], b["paid"]),
                         (200, "canceled", True, False, False))
        self.assertNotIn("next_action", b)
        self.assertEqual(self.current(key), b)
        (void,) = self.s.journal_for(vkey)
        self.assertEqual((void["op"], void["id"]), ("void", cid))
        status, _, html = self.complete(charge, "approve")
        self.assertEqual(status, 409)
        self.assertIn("expired", html)
        url = charge["next_action"]["redirect_to_url"]["url"]
        self.assertIn("Expired", self.s.page("GET", page_path(url))[2])
        for op, code in (("capture", "charge_voided"), ("void", "charge_already_voided")):
            s, _, b, _ = self.s.card_post(f"/v1/charges/{cid}/{op}")
            self.assertEqual((s, b["error"]["code"]), (400, code))
        self.assertEqual([r.get("op") for r in self.s.journal_for(key)], [None])
        self.assertEqual(RX.requests(path), [])
        self.assertFalse([w for w in self.s.webhooks() if cid in w["body"]])

    def test_without_notify_url_the_result_is_polled(self):
        key, charge, _, _ = self.challenged(notify=False)
        self.assertEqual(charge["next_action"]["redirect_to_url"]["return_url"],
                         "https://merchant.example/back?o=1")
        before = len(self.s.webhooks())
        self.assertEqual(self.complete(charge, "approve")[0], 200)
        self.assertEqual(self.current(key)["status"], "succeeded")
        self.assertEqual(len(self.s.webhooks()), before)

    def test_bad_parameters_are_refused(self):
        cases = {"region": ["DEU", "D", "1A", ""],
                 "notify_url": ["http://127.0.0.1/x", "https://", "https://h/a b", "ftp://x",
                                "https://h/x#frag", "https://u@h/x", "https://h:0/x"],
                 "return_url": ["", "a b", "x" * 2049]}
        for param, values in cases.items():
            for value in values:
                with self.subTest(param=param, value=value):
                    key = pe.new_key()
                    s, _, b, _ = self.s.charge(CHALLENGE, key=key, extra={param: value})
                    self.assertEqual((s, b["error"]["param"]), (400, param), b)
                    self.assertEqual(self.s.journal_for(key), [])

    def test_key_reuse_with_another_notify_url_is_refused(self):
        key, _, _, _ = self.challenged()
        s, _, b, _ = self.s.charge(CHALLENGE, key=key, extra={
            "return_url": "https://merchant.example/back?o=1", "notify_url": RX.new_url()[0]})
        self.assertEqual((s, b["error"]["type"]), (400, "idempotency_error"))


# ----------------------------------------------------------------------------
# Webhook delivery
# ----------------------------------------------------------------------------

class WebhookDeliveryTest(AsyncTest):
    def test_retries_with_backoff_until_the_receiver_answers_2xx(self):
        self.s.config(webhook_retry_base_ms=100, webhook_max_attempts=12)
        self.s.request("POST", "/_sandbox/stats/reset")
        key, charge, _, path = self.challenged()
        RX.status_for[path] = 500
        t0 = time.monotonic()
        self.assertEqual(self.complete(charge, "approve")[0], 200)
        self.assertLess(time.monotonic() - t0, 2.0)
        failing = self.delivered(path, 4)
        hook = wait_for(lambda: [w for w in self.s.webhooks()
                                 if w["url"].endswith(path) and w["attempts"] >= 4],
                        "4 attempts listed")[0]
        self.assertEqual((hook["delivered"], hook["last_status"], hook["last_error"]),
                         (False, 500, "HTTP 500"))
        RX.status_for[path] = 200
        hook = wait_for(lambda: [w for w in self.s.webhooks()
                                 if w["url"].endswith(path) and w["delivered"]],
                        "delivery once the receiver answers 200")[0]
        reqs = RX.requests(path)
        self.assertGreater(hook["attempts"], 4)
        self.assertEqual(hook["attempts"], len(reqs))
        self.assertEqual((hook["last_status"], hook["last_error"]), (200, ""))
        # Every attempt: the same body, signed afresh, the last one listed.
        self.assertEqual({r["body"] for r in reqs}, {hook["body"].encode()})
        stamps = [check_signature(self, r["headers"]["Sandbox-Signature"], r["body"])
                  for r in reqs]
        self.assertEqual(stamps, sorted(stamps))
        self.assertEqual(hook["signature"], reqs[-1]["headers"]["Sandbox-Signature"])
        self.assertEqual(json.loads(hook["body"])["data"]["object"], self.current(key))
        # Exponential backoff: 100, 200, 400 ... ms between attempts.
        gaps = [b["at"] - a["at"] for a, b in zip(failing, failing[1:])]
        for i, gap in enumerate(gaps[:3]):
            self.assertGreaterEqual(gap, 0.1 * 2 ** i * 0.9, gaps)
        stats = self.s.stats()["webhooks"]
        self.assertEqual(stats, {"attempts": len(reqs), "delivered": 1,
                                 "failed_attempts": len(reqs) - 1, "given_up": 0})

    def test_unreachable_receiver_is_given_up_after_max_attempts(self):
        self.s.config(webhook_retry_base_ms=20, webhook_max_attempts=3)
        self.s.request("POST", "/_sandbox/stats/reset")
        with socket.socket() as sock:  # a port nobody listens on
            sock.bind(("127.0.0.1", 0))
            dead_port = sock.getsockname()[1]
        key = pe.new_key()
        s, _, charge, _ = self.s.charge(CHALLENGE, key=key, extra={
            "notify_url": f"https://127.0.0.1:{dead_port}/hooks"})
        self.assertEqual(s, 200)
        self.assertEqual(self.complete(charge, "approve")[0], 200)
        hook = wait_for(lambda: [w for w in self.s.webhooks() if charge["id"] in w["body"]
                                 and w["attempts"] == 3],
                        "3 attempts")[0]
        self.assertEqual((hook["delivered"], hook["last_status"]), (False, 0))
        self.assertTrue(hook["last_error"])
        # Given up is final: counted once the last attempt failed, no retry follows.
        wait_for(lambda: self.s.stats()["webhooks"]["given_up"] == 1, "given up")
        self.assertEqual(self.s.webhook(hook["event_id"])["attempts"], 3)
        self.assertEqual(self.s.stats()["webhooks"], {"attempts": 3, "delivered": 0,
                                                      "failed_attempts": 3, "given_up": 1})

    def test_a_slow_receiver_does_not_delay_the_request(self):
        key, charge, _, path = self.challenged()
        RX.delay_for[path] = 1.5
        t0 = time.monotonic()
        self.assertEqual(self.complete(charge, "approve")[0], 200)
        self.assertLess(time.monotonic() - t0, 1.0)
        self.check_webhook(path, "charge.authenticated", "data")

    def test_an_attempt_times_out_after_5_s(self):
        self.s.config(webhook_max_attempts=1)
        key, charge, _, path = self.challenged()
        RX.delay_for[path] = 6.0
        self.assertEqual(self.complete(charge, "approve")[0], 200)
        t0 = time.monotonic()
        self.delivered(path)  # the request arrived; the answer will be late
        hook = wait_for(lambda: [w for w in self.s.webhooks()
                                 if w["url"].endswith(path) and w["attempts"] == 1],
                        "the attempt to time out", timeout=WAIT_S)[0]
        self.assertGreaterEqual(time.monotonic() - t0, 4.5)
        self.assertEqual((hook["delivered"], hook["last_status"]), (False, 0))
        self.assertIn("deadline", hook["last_error"])

    def test_retry_config_is_global_and_validated(self):
        cfg = self.s.get_config()
        self.assertEqual((cfg["webhook_retry_base_ms"], cfg["webhook_max_attempts"]), (500, 12))
        for api in ("card", "paypal", "ewallet"):
            self.assertNotIn("webhook_retry_base_ms", cfg[api])
        cfg = self.s.config(webhook_retry_base_ms=250, webhook_max_attempts=3)
        self.assertEqual((cfg["webhook_retry_base_ms"], cfg["webhook_max_attempts"]), (250, 3))
        before = self.s.get_config()
        for bad in ({"webhook_retry_base_ms": 0}, {"webhook_retry_base_ms": 1.5},
                    {"webhook_max_attempts": 0}, {"webhook_max_attempts": 101},
                    {"webhook_max_attempts": "3"}, {"card": {"webhook_max_attempts": 3}},
                    {"webhook_max_attempts": 2, "latency_ms": -1}):
            with self.subTest(bad=bad):
                self.assertEqual(self.s.post_config(bad)[0], 400)
                self.assertEqual(self.s.get_config(), before)


# ----------------------------------------------------------------------------
# E-wallet redirect flow
# ----------------------------------------------------------------------------

class EwalletRedirectTest(AsyncTest):
    def pending(self, account=None, notify=True, provider="gcash", currency="PHP"):
        key = pe.new_key()
        extra = {"flow": "redirect", "return_url": "myshop://paid"}
        path = None
        if notify:
            extra["notify_url"], path = RX.new_url()
        status, _, body, raw = self.s.ew_create(provider, account, currency=currency, key=key,
                                                **extra)
        self.assertEqual(status, 200, body)
        self.assertEqual(body["status"], "PENDING_APPROVAL", body)
        return key, body, raw, path

    def approve(self, pay, action="approve", token=None):
        return self.s.page("POST", f"/ewallet/approve/{pay['payment_id']}/complete",
                           {"token": token or token_of(pay["approval_url"]), "action": action})

    def now(self, key, provider="gcash"):
        status, _, body, _ = self.s.ew_lookup(provider, key)
        self.assertEqual(status, 200, body)
        return body["payments"][0]

    def test_approve_takes_the_money(self):
        key, pay, raw, path = self.pending()
        pid = pay["payment_id"]
        self.assertRegex(pay["approval_url"], APPROVAL_URL_RE.format(port=self.s.port, id=pid))
        self.assertEqual(pay["deep_link"], f"gcash://pay?payment_id={pid}")
        self.assertEqual(pay["qr_payload"], pay["approval_url"])
        self.assertEqual(pay["flow"], "redirect")
        self.assertNotIn("failure_code", pay)
        (line,) = self.s.journal_for(key)
        self.assertEqual((line["status"], line["flow"], line["return_url"], line["notify_url"]),
                         ("PENDING_APPROVAL", "redirect", "myshop://paid",
                          f"https://127.0.0.1:{RX.port}{path}"))
        self.assertEqual(self.now(key), pay)
        s, h, _, raw2 = self.s.ew_create(account=pay["account_id"], key=key, flow="redirect",
                                         return_url="myshop://paid",
                                         notify_url=f"https://127.0.0.1:{RX.port}{path}")
        self.assertEqual((s, raw2, h.get("x-idempotent-replayed")), (200, raw, "true"))
        s, _, b, _ = self.s.ew_refund("gcash", pid, key=pe.new_key())
        self.assertEqual((s, b), (409, {"code": "PAYMENT_NOT_REFUNDABLE"}))

        status, ctype, html = self.s.page("GET", page_path(pay["approval_url"]))
        self.assertEqual(status, 200, html)
        self.assertTrue(ctype.startswith("text/html"))
        for text in ('id="amount">5000<', 'id="currency">PHP<', "rch_async",
                     f"****{pay['account_id'][-4:]}", 'name="action" value="approve"',
                     'name="action" value="cancel"'):
            self.assertIn(text, html)
        self.assertNotIn(pay["account_id"], html)
        for bad in (f"/ewallet/approve/{pid}?token={'0' * 32}", f"/ewallet/approve/{pid}",
                    f"/ewallet/approve/EW-{'0' * 24}?token=x"):
            self.assertEqual(self.s.page("GET", bad)[0], 404, bad)
        self.assertEqual(self.approve(pay, token="0" * 32)[0], 404)
        self.assertEqual(self.approve(pay, action="later")[0], 400)

        status, _, html = self.approve(pay)
        self.assertEqual(status, 200, html)
        self.assertIn("SUCCESS", html)
        status, _, html = self.approve(pay, "cancel")
        self.assertEqual(status, 409)
        self.assertIn("already completed", html)
        now = self.now(key)
        self.assertEqual(now, {k: v for k, v in pay.items()
                               if k not in ("approval_url", "deep_link", "qr_payload")}
                         | {"status": "SUCCESS"})
        ops = [r for r in self.s.journal_for(key) if "op" in r]
        self.assertEqual(len(ops), 1)
        self.assertEqual(set(ops[0]), DECISION_LINE_KEYS)
        self.assertEqual((ops[0]["op"], ops[0]["status"], ops[0]["id"], ops[0]["amount"]),
                         ("approve", "SUCCESS", pid, 5000))

        event = self.check_webhook(path, "payment.succeeded", "payment")
        self.assertRegex(event["event_id"], r"^EV-[0-9A-F]{24}$")
        self.assertIsInstance(event["created_at"], int)
        self.assertEqual(event["payment"], now)
        # Now refundable; no longer cancellable.
        self.assertEqual(self.s.ew_refund("gcash", pid, key=pe.new_key())[0], 200)
        s, _, b, _ = self.s.ew_cancel("gcash", pid)
        self.assertEqual((s, b), (409, {"code": "ALREADY_COMPLETED"}))

    def test_cancel_on_the_page(self):
        key, pay, _, path = self.pending()
        self.assertEqual(self.approve(pay, "cancel")[0], 200)
        now = self.now(key)
        self.assertEqual(now["status"], "CANCELLED")
        self.assertNotIn("approval_url", now)
        event = self.check_webhook(path, "payment.cancelled", "payment")
        self.assertEqual(event["payment"], now)
        ops = [r for r in self.s.journal_for(key) if "op" in r]
        self.assertEqual([(r["op"], r["status"]) for r in ops], [("cancel", "CANCELLED")])
        s, _, b, _ = self.s.ew_refund("gcash", pay["payment_id"], key=pe.new_key())
        self.assertEqual((s, b), (409, {"code": "PAYMENT_NOT_REFUNDABLE"}))
        self.assertEqual(self.approve(pay)[0], 409)

    def test_insufficient_balance_fails_on_approval(self):
        key, pay, _, path = self.pending(account=pe.new_account("0002"))
        self.assertEqual(self.approve(pay)[0], 200)
        now = self.now(key)
        self.assertEqual((now["status"], now["failure_code"]), ("FAILED", "INSUFFICIENT_BALANCE"))
        event = self.check_webhook(path, "payment.failed", "payment")
        self.assertEqual(event["payment"], now)
        (op,) = [r for r in self.s.journal_for(key) if "op" in r]
        self.assertEqual((op["op"], op["status"], op["decline_code"]),
                         ("approve", "FAILED", "INSUFFICIENT_BALANCE"))

    def test_cancel_endpoint(self):
        key, pay, _, path = self.pending(provider="grabpay", currency="SGD")
        pid = pay["payment_id"]
        s, _, b, _ = self.s.ew_cancel("grabpay", pid)
        self.assertEqual((s, b["status"], b["payment_id"]), (200, "CANCELLED", pid))
        self.assertEqual(self.now(key, "grabpay"), b)
        # Cancelling again answers the same; nothing more is journaled or sent.
        self.assertEqual(self.s.ew_cancel("grabpay", pid, {})[:3:2], (200, b))
        self.assertEqual([r["op"] for r in self.s.journal_for(key) if "op" in r], ["cancel"])
        self.check_webhook(path, "payment.cancelled", "payment")
        self.assertEqual(self.approve(pay)[0], 409)
        # Refusals.
        s, _, b, _ = self.s.ew_cancel("gcash", pid)  # another provider's payment
        self.assertEqual((s, b), (404, {"code": "PAYMENT_NOT_FOUND"}))
        self.assertEqual(self.s.ew_cancel("nosuchwallet", pid)[:3:2],
                         (404, {"code": "UNKNOWN_PROVIDER"}))
        self.assertEqual(self.s.ew_cancel("grabpay", pid, {"reason": "x"})[0], 400)
        s, _, direct, _ = self.s.ew_create(key=pe.new_key())
        self.assertEqual((s, direct["status"]), (200, "SUCCESS"))
        self.assertEqual(self.s.ew_cancel("gcash", direct["payment_id"])[:3:2],
                         (409, {"code": "ALREADY_COMPLETED"}))
        status, _, b, _ = self.s.request(
            "POST", f"/ewallet/v1/grabpay/payments/{pid}/cancel", "",
            {"X-Timestamp": str(int(time.time())), "X-Signature": "0" * 64})
        self.assertEqual((status, b), (401, {"code": "INVALID_SIGNATURE"}))

    def test_direct_flow_is_unchanged(self):
        key = pe.new_key()
        s, _, b, _ = self.s.ew_create(key=key, flow="direct")
        self.assertEqual((s, b["status"]), (200, "SUCCESS"))
        self.assertNotIn("flow", b)
        self.assertNotIn("approval_url", b)
        (line,) = self.s.journal_for(key)
        self.assertEqual(set(line), pe.EWALLET_JOURNAL_KEYS)
        for field, value in (("flow", "popup"), ("flow", 1), ("notify_url", "http://x/y"),
                             ("notify_url", 5), ("return_url", "a b")):
            with self.subTest(field=field, value=value):
                s, _, b, _ = self.s.ew_create(key=pe.new_key(), **{field: value})
                self.assertEqual((s, b["code"], b["field"]), (400, "INVALID_REQUEST", field))

    def test_busy_account_is_refused_before_anything_is_pending(self):
        key = pe.new_key()
        s, _, b, _ = self.s.ew_create(account=pe.new_account("0005"), key=key, flow="redirect")
        self.assertEqual((s, b["code"]), (503, "SYSTEM_BUSY"))
        self.assertEqual(self.s.journal_for(key), [])


# ----------------------------------------------------------------------------
# Restart, shutdown, and a sandbox without webhooks
# ----------------------------------------------------------------------------

class RestartTest(AsyncTest):
    def test_restart_restores_pending_and_completed_flows(self):
        workdir = TMP / "restart"
        workdir.mkdir()
        sb = Sandbox(workdir, CERTS, workdir / "journal.jsonl", CARD_FILE,
                     extra_args=sandbox_args()).start()
        self.s = sb
        try:
            pending_key, pending, pending_raw, pending_path = self.challenged(sb=sb)
            done_key, done, _, _ = self.challenged(sb=sb, notify=False)
            self.assertEqual(self.complete(done, "approve", sb=sb)[0], 200)
            void_key, voided, _, _ = self.challenged(sb=sb, notify=False)
            self.assertEqual(sb.card_post(f"/v1/charges/{voided['id']}/void")[0], 200)
            ew_key = pe.new_key()
            notify, ew_path = RX.new_url()
            s, _, ew, _ = sb.ew_create(key=ew_key, flow="redirect", notify_url=notify)
            self.assertEqual((s, ew["status"]), (200, "PENDING_APPROVAL"))
            ew_done_key = pe.new_key()
            s, _, ew_done, _ = sb.ew_create(key=ew_done_key, flow="redirect")
            self.assertEqual(sb.page("POST", f"/ewallet/approve/{ew_done['payment_id']}/complete",
                                     {"token": token_of(ew_done["approval_url"]),
                                      "action": "cancel"})[0], 200)
        finally:
            self.assertEqual(sb.stop(), 0, sb.log())
        self.assertEqual(len(sb.journal_lines()), 8)
        port = sb.port

        sb.extra_args = sandbox_args() + ["--port", str(port)]  # same address: same URLs
        sb.start()
        try:
            self.assertIn("5 charges restored, 3 operations restored", sb.log())
            self.assertEqual(self.current(pending_key, sb)["status"], "requires_action")
            self.assertEqual((self.current(done_key, sb)["status"],
                              self.current(done_key, sb)["captured"]), ("succeeded", False))
            self.assertEqual(self.current(void_key, sb)["status"], "canceled")
            self.assertEqual(sb.ew_lookup("gcash", ew_key)[2]["payments"][0]["status"],
                             "PENDING_APPROVAL")
            self.assertEqual(sb.ew_lookup("gcash", ew_done_key)[2]["payments"][0]["status"],
                             "CANCELLED")
            # The create call replays byte for byte (same port, same token).
            s, h, _, raw = sb.charge(CHALLENGE, key=pending_key, extra={
                "return_url": "https://merchant.example/back?o=1",
                "notify_url": f"https://127.0.0.1:{RX.port}{pending_path}"})
            self.assertEqual((s, raw, h.get("idempotent-replayed")), (200, pending_raw, "true"))
            # The pages still work after the restart; completed stays completed.
            self.assertEqual(self.complete(done, "approve", sb=sb)[0], 409)
            self.assertEqual(self.complete(voided, "approve", sb=sb)[0], 409)
            self.assertEqual(self.complete(pending, "approve", sb=sb)[0], 200)
            self.check_webhook_on(sb, pending_path, "charge.authenticated")
            s, _, b, _ = sb.card_post(f"/v1/charges/{pending['id']}/capture")
            self.assertEqual((s, b["captured"]), (200, True))
            s, _, b, _ = sb.card_post(f"/v1/charges/{done['id']}/capture")
            self.assertEqual((s, b["captured"]), (200, True))
            self.assertEqual(sb.page("POST", f"/ewallet/approve/{ew['payment_id']}/complete",
                                     {"token": token_of(ew["approval_url"]),
                                      "action": "approve"})[0], 200)
            self.assertEqual(sb.ew_lookup("gcash", ew_key)[2]["payments"][0]["status"], "SUCCESS")
            self.check_webhook_on(sb, ew_path, "payment.succeeded")
        finally:
            self.assertEqual(sb.stop(), 0, sb.log())
        # And once more: the operations taken after the first restart restore too.
        sb.start()
        try:
            self.assertIn("5 charges restored, 7 operations restored", sb.log())
            self.assertEqual(self.current(pending_key, sb)["captured"], True)
            self.assertEqual(sb.ew_lookup("gcash", ew_key)[2]["payments"][0]["status"], "SUCCESS")
        finally:
            self.assertEqual(sb.stop(), 0, sb.log())

    def check_webhook_on(self, sb, path, event_type):
        (req,) = self.delivered(path)
        check_signature(self, req["headers"]["Sandbox-Signature"], req["body"])
        event = json.loads(req["body"])
        self.assertEqual(event.get("type", event.get("event_type")), event_type)


class ProcessTest(AsyncTest):
    def test_sigterm_does_not_wait_for_pending_retries(self):
        workdir = TMP / "sigterm"
        workdir.mkdir()
        sb = Sandbox(workdir, CERTS, workdir / "journal.jsonl", CARD_FILE,
                     extra_args=sandbox_args()).start()
        try:
            sb.config(webhook_retry_base_ms=60000)
            key, charge, _, path = self.challenged(sb=sb)
            RX.status_for[path] = 503
            self.assertEqual(self.complete(charge, "approve", sb=sb)[0], 200)
            wait_for(lambda: [w for w in sb.webhooks() if w["attempts"] == 1],
                     "the first attempt")
        finally:
            t0 = time.monotonic()
            rc = sb.stop()
        self.assertEqual(rc, 0, sb.log())
        self.assertLess(time.monotonic() - t0, 3.0)

    def test_without_a_webhook_secret_flows_work_and_nothing_is_sent(self):
        workdir = TMP / "nohooks"
        workdir.mkdir()
        sb = Sandbox(workdir, CERTS, workdir / "journal.jsonl", CARD_FILE,
                     extra_args=sandbox_args(webhooks=False)).start()
        try:
            key, charge, _, path = self.challenged(sb=sb)
            self.assertEqual(self.complete(charge, "approve", sb=sb)[0], 200)
            self.assertEqual(self.current(key, sb)["status"], "succeeded")
            ew_key = pe.new_key()
            s, _, ew, _ = sb.ew_create(key=ew_key, flow="redirect", notify_url=RX.new_url()[0])
            self.assertEqual(sb.page("POST", f"/ewallet/approve/{ew['payment_id']}/complete",
                                     {"token": token_of(ew["approval_url"]),
                                      "action": "approve"})[0], 200)
            self.assertEqual(sb.webhooks(), [])
            self.assertNotIn("webhooks", sb.stats())
            self.assertEqual(RX.requests(path), [])
        finally:
            self.assertEqual(sb.stop(), 0, sb.log())

    def test_bad_webhook_files_fail_startup(self):
        cmd = [str(base.SANDBOX), "--port", "0",
               "--cert", str(CERTS / "server.pem"), "--key", str(CERTS / "server.key"),
               "--journal", str(TMP / "unused.jsonl"), "--card-secret-file", str(CARD_FILE)]
        empty = TMP / "empty-webhook.secret"
        empty.write_text("\n")
        out = subprocess.run(cmd + ["--webhook-secret-file", str(empty)], capture_output=True,
                             timeout=10, stdin=subprocess.DEVNULL)
        self.assertEqual(out.returncode, 2, out.stderr)
        self.assertIn(b"cannot read webhook secret", out.stderr)
        out = subprocess.run(cmd + ["--webhook-secret-file", str(HOOK_FILE), "--webhook-ca-file",
                                    str(TMP / "no-such-ca.pem")],
                             capture_output=True, timeout=10, stdin=subprocess.DEVNULL)
        self.assertEqual(out.returncode, 2, out.stderr)
        self.assertIn(b"cannot set up webhooks", out.stderr)
        self.assertNotIn(WEBHOOK_SECRET.encode(), out.stderr)


class ZzSecretsNotLeakedTest(AsyncTest):
    """Runs last (alphabetical): checks everything the module sent so far."""

    def test_journal_and_log_hold_no_secret_signature_or_token(self):
        self.assertGreater(len(SEEN_SIGNATURES), 10)
        self.assertGreater(len(SEEN_TOKENS), 3)
        hooks = self.s.webhooks()
        self.assertTrue(hooks)
        listed = [w["signature"].split("v1=")[1] for w in hooks if w["signature"]]
        secrets = (WEBHOOK_SECRET, pe.EW_SECRET, base.SECRET, CHALLENGE, CHALLENGE_FAILS,
                   FRICTIONLESS, base.APPROVE, base.OTHER_OK, *SEEN_SIGNATURES, *SEEN_TOKENS,
                   *listed)
        for sb_dir in (TMP, TMP / "restart", TMP / "sigterm", TMP / "nohooks"):
            for f in list(sb_dir.glob("sandbox-*.log")) + list(sb_dir.glob("journal.jsonl")):
                text = f.read_text(errors="replace")
                for secret in secrets:
                    self.assertNotIn(secret, text, f"{f.name} leaks")
        self.assertIn("webhook_attempt", SB.log())


if __name__ == "__main__":
    unittest.main()
