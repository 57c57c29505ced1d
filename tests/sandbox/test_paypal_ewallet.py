#!/usr/bin/python3
"""End-to-end tests of the sandbox's PayPal-style and e-wallet APIs and of the
per-API fault injection, over real HTTPS verified against the dev CA.

Run from the repository root with either:
    /usr/bin/python3 -m unittest tests/sandbox/test_paypal_ewallet.py
    /usr/bin/python3 tests/sandbox/test_paypal_ewallet.py
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import http.client
import json
import re
import shutil
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
import test_psp_sandbox as base  # noqa: E402  (Sandbox process helper, card helpers)

CLIENT_ID = "AcL1ent" + uuid.uuid4().hex
CLIENT_SECRET = "EPs3cret" + uuid.uuid4().hex
EW_SECRET = "ews_" + uuid.uuid4().hex
DEFAULT_TTL = 32400
CAPTURE_ID_RE = re.compile(r"^CAP[0-9A-F]{17}$")
PAYMENT_ID_RE = re.compile(r"^EW-[0-9A-F]{24}$")
PAYPAL_JOURNAL_KEYS = {"ts", "api", "id", "idempotency_key", "order_id", "amount", "currency",
                       "status", "decline_code"}
EWALLET_JOURNAL_KEYS = {"ts", "api", "provider", "id", "idempotency_key", "amount", "currency",
                        "status", "decline_code", "account_id_last4", "merchant_ref"}
DISCONNECTS = (http.client.RemoteDisconnected, ConnectionError, ssl.SSLError,
               http.client.IncompleteRead)

# Every token and signature the tests send, for the leak check.
SEEN_TOKENS: list[str] = []
SEEN_SIGNATURES: list[str] = []


def new_key(prefix="k") -> str:
    # Dashes every 8 characters: a uuid's hex can hold a Luhn-valid run of 12+
    # digits, which the sandbox masks in its log as a possible card number
    # (and then a test looking for the key in the log cannot find it).
    h = uuid.uuid4().hex
    return f"{prefix}_" + "-".join(h[i:i + 8] for i in range(0, 32, 8))


def new_order(suffix="") -> str:
    return "ORD" + uuid.uuid4().hex[:12].upper() + suffix


def new_account(suffix="0001") -> str:
    return "09" + str(uuid.uuid4().int)[:6] + suffix


class Sandbox(base.Sandbox):
    """The card test's process helper plus PayPal / e-wallet clients."""

    def __init__(self, *args, **kw):
        super().__init__(*args, **kw)
        self._token: str | None = None

    # -- control -------------------------------------------------------------
    def post_config(self, cfg: dict):
        return self.request("POST", "/_sandbox/config", json.dumps(cfg),
                            {"Content-Type": "application/json"})

    def config(self, **cfg) -> dict:
        status, _, body, _ = self.post_config(cfg)
        assert status == 200, (status, body)
        return body

    def get_config(self) -> dict:
        status, _, body, _ = self.request("GET", "/_sandbox/config")
        assert status == 200, (status, body)
        return body

    def reset_config(self) -> dict:
        return self.config(latency_ms=0, latency_jitter_ms=0, error_rate=0, timeout_mode="charge",
                           paypal={"token_ttl_s": DEFAULT_TTL})

    def stats(self) -> dict:
        status, _, body, _ = self.request("GET", "/_sandbox/stats")
        assert status == 200, (status, body)
        return body

    # -- PayPal ----------------------------------------------------------------
    def pp_token(self, cid=CLIENT_ID, secret=CLIENT_SECRET, body="grant_type=client_credentials",
                 auth=None):
        headers = {"Content-Type": "application/x-www-form-urlencoded"}
        if auth is None:
            headers["Authorization"] = "Basic " + base64.b64encode(
                f"{cid}:{secret}".encode()).decode()
        elif auth:
            headers["Authorization"] = auth
        result = self.request("POST", "/v1/oauth2/token", body, headers)
        if result[0] == 200:
            SEEN_TOKENS.append(result[2]["access_token"])
        return result

    def access_token(self) -> str:
        if self._token is None:
            status, _, body, _ = self.pp_token()
            assert status == 200, (status, body)
            self._token = body["access_token"]
        return self._token

    def capture(self, order_id, value="0.99", currency="USD", key=None, token=None, body=None,
                conn=None, content_type="application/json"):
        headers = {"Authorization": f"Bearer {token or self.access_token()}"}
        if content_type:
            headers["Content-Type"] = content_type
        if key is not None:
            headers["PayPal-Request-Id"] = key
        if body is None:
            body = {"amount": {"currency_code": currency, "value": value}}
        raw = body if isinstance(body, (str, bytes)) else json.dumps(body)
        return self.request("POST", f"/v2/checkout/orders/{order_id}/capture", raw, headers, conn)

    def pp_lookup(self, key, token=None):
        return self.request(
            "GET", "/v2/payments/captures?" + urllib.parse.urlencode({"paypal_request_id": key}),
            headers={"Authorization": f"Bearer {token or self.access_token()}"})

    # -- e-wallet --------------------------------------------------------------
    def ew_request(self, method, provider, body=None, key=None, query="", ts=None,
                   secret=EW_SECRET, sig=None, sign_path=None, sign_body=None, sign_ts=None,
                   omit=(), conn=None):
        path = f"/ewallet/v1/{provider}/payments" + (f"?{query}" if query else "")
        raw = b"" if body is None else (body if isinstance(body, bytes)
                                        else json.dumps(body).encode())
        ts = str(int(time.time()) if ts is None else ts)
        msg = (f"{sign_ts or ts}\n{method}\n{sign_path or path}\n".encode()
               + (raw if sign_body is None else sign_body))
        if sig is None:
            sig = hmac.new(secret.encode(), msg, hashlib.sha256).hexdigest()
        SEEN_SIGNATURES.append(sig)
        headers = {"X-Timestamp": ts, "X-Signature": sig}
        if method == "POST":
            headers["Content-Type"] = "application/json"
        if key is not None:
            headers["X-Idempotency-Key"] = key
        for h in omit:
            headers.pop(h, None)
        return self.request(method, path, raw if method == "POST" else None, headers, conn)

    def ew_pay(self, provider="gcash", account=None, amount=5000, currency="PHP", key=None,
               ref="rch_test", conn=None, **kw):
        body = {"merchant_ref": ref, "account_id": account or new_account(), "amount": amount,
                "currency": currency}
        return self.ew_request("POST", provider, body, key=key, conn=conn, **kw)

    def ew_lookup(self, provider, key, **kw):
        return self.ew_request("GET", provider, query=urllib.parse.urlencode(
            {"idempotency_key": key}), **kw)

    # -- refunds -----------------------------------------------------------------
    def pp_refund(self, capture_id, body=None, key=None, token=None, conn=None):
        headers = {"Authorization": f"Bearer {token or self.access_token()}"}
        raw = ""
        if body is not None:
            headers["Content-Type"] = "application/json"
            raw = body if isinstance(body, str) else json.dumps(body)
        if key is not None:
            headers["PayPal-Request-Id"] = key
        return self.request("POST", f"/v2/payments/captures/{capture_id}/refund", raw, headers,
                            conn)

    def pp_get(self, path):
        return self.request("GET", path, headers={"Authorization": f"Bearer {self.access_token()}"})

    def ew_signed(self, method, path, body=None, key=None, conn=None):
        raw = b"" if body is None else json.dumps(body).encode()
        ts = str(int(time.time()))
        sig = hmac.new(EW_SECRET.encode(), f"{ts}\n{method}\n{path}\n".encode() + raw,
                       hashlib.sha256).hexdigest()
        SEEN_SIGNATURES.append(sig)
        headers = {"X-Timestamp": ts, "X-Signature": sig}
        if body is not None:
            headers["Content-Type"] = "application/json"
        if key is not None:
            headers["X-Idempotency-Key"] = key
        return self.request(method, path, raw if method == "POST" else None, headers, conn)

    def ew_refund(self, provider, payment_id, body=None, key=None, conn=None):
        return self.ew_signed("POST", f"/ewallet/v1/{provider}/payments/{payment_id}/refunds",
                              body, key, conn)

    def ew_refund_lookup(self, provider, key):
        return self.ew_signed("GET", f"/ewallet/v1/{provider}/refunds?" +
                              urllib.parse.urlencode({"idempotency_key": key}))


TMP: Path
CERTS: Path
CARD_FILE: Path
PP_FILE: Path
EW_FILE: Path
SB: Sandbox


def sandbox_args():
    return ["--paypal-credentials-file", str(PP_FILE), "--ewallet-secret-file", str(EW_FILE)]


def setUpModule():
    global TMP, CERTS, CARD_FILE, PP_FILE, EW_FILE, SB
    TMP = Path(tempfile.mkdtemp(prefix="psp-sandbox-pp-ew-"))
    CERTS = TMP / "certs"
    subprocess.run(["bash", str(base.MAKE_CERTS), str(CERTS)], check=True, timeout=30,
                   stdout=subprocess.DEVNULL)
    CARD_FILE = TMP / "card.secret"
    CARD_FILE.write_text(base.SECRET + "\n")
    PP_FILE = TMP / "paypal.credentials"
    PP_FILE.write_text(f"{CLIENT_ID}\n  {CLIENT_SECRET}  \n\n")  # whitespace/blank lines ignored
    EW_FILE = TMP / "ewallet.secret"
    EW_FILE.write_text(f"\n {EW_SECRET}\n")
    SB = Sandbox(TMP, CERTS, TMP / "journal.jsonl", CARD_FILE, extra_args=sandbox_args()).start()


def tearDownModule():
    try:
        rc = SB.stop()
        if rc != 0:
            raise AssertionError(f"sandbox exited {rc}:\n{SB.log()}")
    finally:
        shutil.rmtree(TMP, ignore_errors=True)


class SandboxTest(unittest.TestCase):
    def setUp(self):
        SB.reset_config()

    def journaled_once(self, key, api, **expect):
        lines = [r for r in SB.journal_for(key) if r["api"] == api]
        self.assertEqual(len(SB.journal_for(key)), 1, SB.journal_for(key))
        self.assertEqual(len(lines), 1, lines)
        rec = lines[0]
        self.assertEqual(set(rec), PAYPAL_JOURNAL_KEYS if api == "paypal" else EWALLET_JOURNAL_KEYS)
        self.assertIsInstance(rec["ts"], float)
        for k, v in expect.items():
            self.assertEqual(rec[k], v, k)
        return rec


# ----------------------------------------------------------------------------
# PayPal
# ----------------------------------------------------------------------------

class PaypalTokenTest(SandboxTest):
    def test_token_grant(self):
        before = SB.stats()["paypal_token_grants"]
        status, hdrs, body, _ = SB.pp_token()
        self.assertEqual(status, 200, body)
        self.assertEqual(set(body), {"scope", "access_token", "token_type", "app_id",
                                     "expires_in", "nonce"})
        self.assertRegex(body["access_token"], r"^A21AA[A-Za-z0-9_-]{20,}$")
        self.assertEqual(body["token_type"], "Bearer")
        self.assertEqual(body["app_id"], "APP-SANDBOX")
        self.assertEqual(body["expires_in"], DEFAULT_TTL)
        self.assertIsInstance(body["scope"], str)
        self.assertTrue(body["scope"])
        self.assertTrue(body["nonce"])
        self.assertEqual(SB.stats()["paypal_token_grants"], before + 1)
        # Two grants give two different tokens, both usable.
        _, _, body2, _ = SB.pp_token()
        self.assertNotEqual(body["access_token"], body2["access_token"])
        for tok in (body["access_token"], body2["access_token"]):
            self.assertEqual(SB.pp_lookup(new_key(), token=tok)[0], 200)

    def test_bad_credentials_are_401_invalid_client(self):
        expected = {"error": "invalid_client", "error_description": "Client Authentication failed"}
        before = SB.stats()["paypal_token_grants"]
        cases = {
            "wrong secret": dict(secret="wrong" + uuid.uuid4().hex),
            "wrong id": dict(cid="nobody"),
            "secret as id": dict(cid=CLIENT_SECRET, secret=CLIENT_ID),
            "no header": dict(auth=False),
            "bearer": dict(auth=f"Bearer {CLIENT_SECRET}"),
            "not base64": dict(auth="Basic !!!notbase64"),
            "no colon": dict(auth="Basic " + base64.b64encode(CLIENT_ID.encode()).decode()),
        }
        for name, kw in cases.items():
            with self.subTest(name):
                status, _, body, raw = SB.pp_token(**kw)
                self.assertEqual((status, body), (401, expected))
                self.assertNotIn(CLIENT_SECRET.encode(), raw)
        self.assertEqual(SB.stats()["paypal_token_grants"], before)
        status, _, body, _ = SB.pp_token(body="grant_type=password")
        self.assertEqual((status, body["error"]), (400, "unsupported_grant_type"))

    def test_unknown_missing_or_tampered_token_is_401_invalid_token(self):
        expected = {"error": "invalid_token",
                    "error_description": "Token signature verification failed"}
        good = SB.access_token()
        tampered = good[:-3] + ("AAA" if good[-3:] != "AAA" else "BBB")
        for name, tok in (("unknown", "A21AA" + uuid.uuid4().hex * 2), ("tampered", tampered),
                          ("client secret", CLIENT_SECRET)):
            with self.subTest(name):
                key = new_key()
                status, _, body, _ = SB.capture(new_order(), key=key, token=tok)
                self.assertEqual((status, body), (401, expected))
                self.assertEqual(SB.journal_for(key), [])
                self.assertEqual(SB.pp_lookup(key, token=tok)[:3:2], (401, expected))
        status, _, body, _ = SB.request("GET", "/v2/payments/captures?paypal_request_id=x")
        self.assertEqual((status, body), (401, expected))

    def test_expired_token_is_401_invalid_token(self):
        cfg = SB.config(paypal={"token_ttl_s": 1})
        self.assertEqual(cfg["paypal"]["token_ttl_s"], 1)
        self.assertEqual(SB.get_config()["paypal"]["token_ttl_s"], 1)
        t0 = time.monotonic()
        status, _, grant, _ = SB.pp_token()
        self.assertEqual((status, grant["expires_in"]), (200, 1))
        token = grant["access_token"]
        SB.config(paypal={"token_ttl_s": DEFAULT_TTL})  # only new tokens are affected
        self.assertEqual(SB.pp_lookup(new_key(), token=token)[0], 200)  # fresh: valid
        deadline = t0 + 5.0
        while True:  # bounded poll until the server expires it
            status, _, body, _ = SB.pp_lookup(new_key(), token=token)
            if status != 200 or time.monotonic() > deadline:
                break
            time.sleep(0.05)
        self.assertEqual((status, body), (401, {
            "error": "invalid_token", "error_description": "Token signature verification failed"}))
        self.assertGreaterEqual(time.monotonic() - t0, 0.9)
        key = new_key()
        status, _, _, _ = SB.capture(new_order(), key=key, token=token)
        self.assertEqual(status, 401)
        self.assertEqual(SB.journal_for(key), [])
        # A new grant (default TTL again) works.
        _, _, grant2, _ = SB.pp_token()
        self.assertEqual(grant2["expires_in"], DEFAULT_TTL)
        self.assertEqual(SB.capture(new_order(), key=new_key(), token=grant2["access_token"])[0],
                         201)


class PaypalCaptureTest(SandboxTest):
    def test_capture_approve(self):
        key, order = new_key(), new_order()
        status, hdrs, body, raw = SB.capture(order, "0.99", "USD", key=key)
        self.assertEqual(status, 201, body)
        self.assertNotIn("paypal-request-id-replayed", hdrs)
        self.assertEqual(body["id"], order)
        self.assertEqual(body["status"], "COMPLETED")
        caps = body["purchase_units"][0]["payments"]["captures"]
        self.assertEqual(len(caps), 1)
        self.assertRegex(caps[0]["id"], CAPTURE_ID_RE)
        self.assertEqual(caps[0]["status"], "COMPLETED")
        self.assertEqual(caps[0]["amount"], {"currency_code": "USD", "value": "0.99"})
        self.assertIsInstance(body["payer"]["payer_id"], str)
        self.journaled_once(key, "paypal", id=caps[0]["id"], order_id=order, amount=99,
                            currency="USD", status="succeeded", decline_code="",
                            idempotency_key=key)

    def test_minor_units_per_currency(self):
        cases = [("JPY", "150", 150, "150"), ("KRW", "5000", 5000, "5000"),
                 ("VND", "20000", 20000, "20000"), ("EUR", "10", 1000, "10.00"),
                 ("PHP", "1.5", 150, "1.50"), ("USD", "1234.56", 123456, "1234.56")]
        for currency, value, minor, shown in cases:
            with self.subTest(currency=currency, value=value):
                key = new_key()
                status, _, body, _ = SB.capture(new_order(), value, currency, key=key)
                self.assertEqual(status, 201, body)
                cap = body["purchase_units"][0]["payments"]["captures"][0]
                self.assertEqual(cap["amount"], {"currency_code": currency, "value": shown})
                self.journaled_once(key, "paypal", amount=minor, currency=currency)

    def test_declines_are_422_journaled_and_replayed(self):
        cases = [("DECLINED", "INSTRUMENT_DECLINED"), ("NOTAPPROVED", "ORDER_NOT_APPROVED"),
                 ("CAPTURED", "ORDER_ALREADY_CAPTURED")]
        for suffix, issue in cases:
            with self.subTest(issue=issue):
                key, order = new_key(), new_order(suffix)
                status, hdrs, body, raw = SB.capture(order, "2.50", key=key)
                self.assertEqual(status, 422, body)
                self.assertEqual(body["name"], "UNPROCESSABLE_ENTITY")
                self.assertTrue(body["message"].startswith("The requested action could not be "
                                                           "performed"))
                self.assertTrue(body["debug_id"])
                self.assertEqual(len(body["details"]), 1)
                self.assertEqual(body["details"][0]["issue"], issue)
                self.assertTrue(body["details"][0]["description"])
                rec = self.journaled_once(key, "paypal", order_id=order, amount=250,
                                          status="failed", decline_code=issue)
                self.assertRegex(rec["id"], CAPTURE_ID_RE)
                s2, h2, _, raw2 = SB.capture(order, "2.50", key=key)
                self.assertEqual((s2, raw2, h2.get("paypal-request-id-replayed")),
                                 (422, raw, "true"))
                self.assertEqual(len(SB.journal_for(key)), 1)
        # Suffixes are case-sensitive.
        status, _, _, _ = SB.capture(new_order("declined"), key=new_key())
        self.assertEqual(status, 201)

    def test_unavailable_is_503_not_charged_not_stored(self):
        key, order = new_key(), new_order("UNAVAILABLE")
        for attempt in range(2):
            status, hdrs, body, _ = SB.capture(order, key=key)
            self.assertEqual(status, 503, body)
            self.assertEqual(body["name"], "SERVICE_UNAVAILABLE")
            self.assertIs(body["charged"], False)
            self.assertTrue(body["debug_id"])
            self.assertNotIn("paypal-request-id-replayed", hdrs)  # not stored: never replayed
        self.assertEqual(SB.journal_for(key), [])
        self.assertEqual(SB.pp_lookup(key)[2], {"captures": []})

    def test_validation_errors_name_the_field(self):
        ok = {"currency_code": "USD", "value": "1.00"}
        cases = [
            ("/amount/value", dict(value="0.999")),
            ("/amount/value", dict(value="abc")),
            ("/amount/value", dict(value="0")),
            ("/amount/value", dict(value="-1.00")),
            ("/amount/value", dict(value="01.00")),
            ("/amount/value", dict(value="1.5", currency="JPY")),
            ("/amount/value", dict(body={"amount": {"currency_code": "USD", "value": 1.0}})),
            ("/amount/currency_code", dict(currency="usd")),
            ("/amount/currency_code", dict(currency="US")),
            ("/amount", dict(body={})),
            ("/amount", dict(body={"amount": "1.00"})),
            ("/note", dict(body={"amount": ok, "note": "x"})),
            ("/", dict(body="not json")),
        ]
        for field, kw in cases:
            with self.subTest(field=field, kw=kw):
                key = new_key()
                status, _, body, _ = SB.capture(new_order(), key=key, **kw)
                self.assertEqual(status, 400, body)
                self.assertEqual(body["name"], "INVALID_REQUEST")
                self.assertEqual(body["details"][0]["field"], field)
                self.assertEqual(SB.journal_for(key), [])
                self.assertEqual(SB.pp_lookup(key)[2], {"captures": []})
        status, _, body, _ = SB.capture(new_order(), key="has space")
        self.assertEqual((status, body["details"][0]["field"]), (400, "PayPal-Request-Id"))
        status, _, body, _ = SB.capture("bad.order", key=new_key())
        self.assertEqual((status, body["details"][0]["field"]), (400, "order_id"))
        status, _, body, _ = SB.capture(new_order(), key=new_key(), content_type="text/plain")
        self.assertEqual((status, body["name"]), (415, "UNSUPPORTED_MEDIA_TYPE"))

    def test_idempotent_replay_and_reuse_with_other_order(self):
        key, order = new_key(), new_order()
        s1, h1, b1, raw1 = SB.capture(order, "5.00", key=key)
        s2, h2, b2, raw2 = SB.capture(order, "5.00", key=key)
        self.assertEqual((s1, s2), (201, 201))
        self.assertEqual(raw1, raw2)
        self.assertNotIn("paypal-request-id-replayed", h1)
        self.assertEqual(h2.get("paypal-request-id-replayed"), "true")
        cap_id = b1["purchase_units"][0]["payments"]["captures"][0]["id"]
        for kw in (dict(order_id=new_order()), dict(order_id=order, value="5.01"),
                   dict(order_id=order, value="5.00", currency="EUR")):
            with self.subTest(kw=kw):
                s, _, b, _ = SB.capture(key=key, **kw)
                self.assertEqual(s, 422, b)
                self.assertEqual(b["details"][0]["issue"], "PAYPAL_REQUEST_ID_PREVIOUSLY_USED")
        self.journaled_once(key, "paypal", id=cap_id, amount=500)
        # Without a PayPal-Request-Id every call is a new capture.
        order2 = new_order()
        n_before = len(SB.journal_lines())
        c1 = SB.capture(order2, "1.00")[2]["purchase_units"][0]["payments"]["captures"][0]["id"]
        c2 = SB.capture(order2, "1.00")[2]["purchase_units"][0]["payments"]["captures"][0]["id"]
        self.assertNotEqual(c1, c2)
        self.assertEqual(len(SB.journal_lines()), n_before + 2)

    def test_concurrent_same_request_id_captures_once(self):
        key, order, n = new_key(), new_order(), 16
        SB.access_token()
        SB.config(paypal={"latency_ms": 100})  # widen the race window
        barrier = threading.Barrier(n)
        results: list = [None] * n

        def worker(i):
            c = SB.conn()
            try:
                c.connect()
                barrier.wait(timeout=10)
                results[i] = SB.capture(order, "3.21", key=key, conn=c)
            except Exception as e:  # surfaced by the assertions below
                results[i] = e
            finally:
                c.close()

        threads = [threading.Thread(target=worker, args=(i,)) for i in range(n)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=30)
        for r in results:
            self.assertIsInstance(r, tuple, r)
            self.assertEqual(r[0], 201, r)
        self.assertEqual(len({r[3] for r in results}), 1)  # byte-identical bodies
        originals = [r for r in results if r[1].get("paypal-request-id-replayed") != "true"]
        self.assertEqual(len(originals), 1)
        cap_id = results[0][2]["purchase_units"][0]["payments"]["captures"][0]["id"]
        self.journaled_once(key, "paypal", id=cap_id, amount=321)

    def test_lookup_found_and_not_found(self):
        key, order = new_key(), new_order()
        _, _, body, _ = SB.capture(order, "7.00", key=key)
        cap = body["purchase_units"][0]["payments"]["captures"][0]
        status, _, found, _ = SB.pp_lookup(key)
        self.assertEqual(status, 200)
        self.assertEqual(len(found["captures"]), 1)
        item = found["captures"][0]
        self.assertEqual((item["id"], item["status"], item["order_id"], item["paypal_request_id"],
                          item["amount"], item["issue"]),
                         (cap["id"], "COMPLETED", order, key,
                          {"currency_code": "USD", "value": "7.00"}, ""))
        dkey, dorder = new_key(), new_order("NOTAPPROVED")
        self.assertEqual(SB.capture(dorder, "1.00", key=dkey)[0], 422)
        item = SB.pp_lookup(dkey)[2]["captures"][0]
        self.assertEqual((item["status"], item["order_id"], item["issue"]),
                         ("DECLINED", dorder, "ORDER_NOT_APPROVED"))
        self.assertEqual(item["id"], SB.journal_for(dkey)[0]["id"])
        self.assertEqual(SB.pp_lookup(new_key())[:3:2], (200, {"captures": []}))
        status, _, body, _ = SB.request("GET", "/v2/payments/captures",
                                        headers={"Authorization": f"Bearer {SB.access_token()}"})
        self.assertEqual((status, body["details"][0]["field"]), (400, "paypal_request_id"))


# ----------------------------------------------------------------------------
# E-wallet
# ----------------------------------------------------------------------------

class EwalletTest(SandboxTest):
    def test_approve_per_provider(self):
        cases = [("gcash", "PHP", 5000), ("dana", "IDR", 1500000), ("paytm", "INR", 9900),
                 ("grabpay", "SGD", 1000), ("grabpay", "MYR", 1000), ("momo", "VND", 20000),
                 ("kakaopay", "KRW", 5000), ("toypay", "EUR", 199), ("toypay", "USD", 99)]
        for provider, currency, amount in cases:
            with self.subTest(provider=provider, currency=currency):
                key, account, ref = new_key(), new_account("1234"), "rch_" + uuid.uuid4().hex
                status, hdrs, body, _ = SB.ew_pay(provider, account, amount, currency, key, ref)
                self.assertEqual(status, 200, body)
                self.assertRegex(body["payment_id"], PAYMENT_ID_RE)
                self.assertEqual(body, {"payment_id": body["payment_id"], "provider": provider,
                                        "status": "SUCCESS", "amount": amount,
                                        "currency": currency, "account_id": account,
                                        "merchant_ref": ref})
                self.assertNotIn("x-idempotent-replayed", hdrs)
                self.journaled_once(key, "ewallet", provider=provider, id=body["payment_id"],
                                    amount=amount, currency=currency, status="succeeded",
                                    decline_code="", account_id_last4="1234", merchant_ref=ref,
                                    idempotency_key=key)

    def test_bad_signature_is_401_and_charges_nothing(self):
        expected = {"code": "INVALID_SIGNATURE"}
        other_body = json.dumps({"merchant_ref": "r", "account_id": "09990001", "amount": 1,
                                 "currency": "PHP"}).encode()
        now = int(time.time())
        cases = {
            "wrong secret": dict(secret="wrong"),
            "tampered body": dict(sign_body=other_body),
            "other path": dict(sign_path="/ewallet/v1/dana/payments"),
            "other timestamp": dict(ts=now, sign_ts=str(now - 1)),
            "no signature": dict(omit=("X-Signature",)),
            "no timestamp": dict(omit=("X-Timestamp",)),
            "garbage signature": dict(sig="zz" * 32),
            "non-integer timestamp": dict(ts="12.5"),
        }
        for name, kw in cases.items():
            with self.subTest(name):
                key = new_key()
                status, _, body, raw = SB.ew_pay("gcash", key=key, **kw)
                self.assertEqual((status, body), (401, expected))
                self.assertEqual(SB.journal_for(key), [])
                self.assertEqual(SB.ew_lookup("gcash", key)[:3:2], (200, {"payments": []}))
        # Checked before anything else: an unknown provider with a bad signature is 401.
        self.assertEqual(SB.ew_pay("nosuchpay", secret="wrong", key=new_key())[:3:2],
                         (401, expected))
        # Lookups are signed too.
        self.assertEqual(SB.ew_lookup("gcash", new_key(), secret="wrong")[:3:2], (401, expected))

    def test_stale_timestamp_is_401(self):
        now = int(time.time())
        for ts in (now - 400, now + 400):
            with self.subTest(ts=ts - now):
                key = new_key()
                status, _, body, _ = SB.ew_pay("gcash", key=key, ts=ts)
                self.assertEqual((status, body), (401, {"code": "STALE_TIMESTAMP"}))
                self.assertEqual(SB.journal_for(key), [])
        # Within the 300 s window is fine.
        status, _, body, _ = SB.ew_pay("gcash", key=new_key(), ts=now - 200)
        self.assertEqual((status, body["status"]), (200, "SUCCESS"))

    def test_unsupported_currency_and_unknown_provider(self):
        for provider, currency in (("gcash", "USD"), ("grabpay", "PHP"), ("kakaopay", "JPY")):
            with self.subTest(provider=provider, currency=currency):
                key = new_key()
                status, _, body, _ = SB.ew_pay(provider, currency=currency, key=key)
                self.assertEqual((status, body), (400, {"code": "UNSUPPORTED_CURRENCY"}))
                self.assertEqual(SB.journal_for(key), [])
                self.assertEqual(SB.ew_lookup(provider, key)[2], {"payments": []})
        for provider in ("nosuchpay", "GCASH", "xtoypay"):
            with self.subTest(provider=provider):
                status, _, body, _ = SB.ew_pay(provider, key=new_key())
                self.assertEqual((status, body), (404, {"code": "UNKNOWN_PROVIDER"}))

    def test_failed_outcomes_are_journaled_and_replayed(self):
        for suffix, code in (("0002", "INSUFFICIENT_BALANCE"), ("0003", "ACCOUNT_BLOCKED")):
            with self.subTest(code=code):
                key, account = new_key(), new_account(suffix)
                status, _, body, raw = SB.ew_pay("dana", account, 700000, "IDR", key)
                self.assertEqual(status, 200, body)
                self.assertEqual((body["status"], body["failure_code"]), ("FAILED", code))
                self.assertRegex(body["payment_id"], PAYMENT_ID_RE)
                self.journaled_once(key, "ewallet", id=body["payment_id"], status="failed",
                                    decline_code=code, account_id_last4=suffix, provider="dana")
                s2, h2, _, raw2 = SB.ew_pay("dana", account, 700000, "IDR", key)
                self.assertEqual((s2, raw2, h2.get("x-idempotent-replayed")), (200, raw, "true"))
                self.assertEqual(len(SB.journal_for(key)), 1)
                self.assertEqual(SB.ew_lookup("dana", key)[2], {"payments": [body]})

    def test_system_busy_is_503_not_charged_not_stored(self):
        key, account = new_key(), new_account("0005")
        for _ in range(2):
            status, hdrs, body, _ = SB.ew_pay("paytm", account, 100, "INR", key)
            self.assertEqual((status, body), (503, {"code": "SYSTEM_BUSY", "charged": False}))
            self.assertNotIn("x-idempotent-replayed", hdrs)
        self.assertEqual(SB.journal_for(key), [])
        self.assertEqual(SB.ew_lookup("paytm", key)[2], {"payments": []})

    def test_validation_errors_name_the_field(self):
        good = {"merchant_ref": "rch_1", "account_id": "09171234", "amount": 100,
                "currency": "PHP"}
        cases = [
            ("amount", {**good, "amount": "100"}),
            ("amount", {**good, "amount": 0}),
            ("amount", {**good, "amount": 1.5}),
            ("amount", {**good, "amount": True}),
            ("merchant_ref", {k: v for k, v in good.items() if k != "merchant_ref"}),
            ("account_id", {**good, "account_id": "123"}),
            ("account_id", {**good, "account_id": "0917 1234"}),
            ("currency", {**good, "currency": "PESO"}),
            ("note", {**good, "note": "x"}),
        ]
        for field, body in cases:
            with self.subTest(field=field, body=body):
                key = new_key()
                status, _, resp, _ = SB.ew_request("POST", "gcash", body, key=key)
                self.assertEqual(status, 400, resp)
                self.assertEqual((resp["code"], resp["field"]), ("INVALID_REQUEST", field))
                self.assertEqual(SB.journal_for(key), [])
        status, _, resp, _ = SB.ew_request("POST", "gcash", good)  # no X-Idempotency-Key
        self.assertEqual((status, resp["field"]), (400, "X-Idempotency-Key"))

    def test_idempotency_replay_and_conflict(self):
        key, account = new_key(), new_account()
        s1, h1, b1, raw1 = SB.ew_pay("gcash", account, 100, "PHP", key, "rch_a")
        self.assertEqual(s1, 200, b1)
        for kw in (dict(amount=101), dict(ref="rch_b"), dict(account=new_account())):
            with self.subTest(kw=kw):
                args = {"account": account, "amount": 100, "ref": "rch_a", **kw}
                status, _, body, _ = SB.ew_pay("gcash", args["account"], args["amount"], "PHP",
                                               key, args["ref"])
                self.assertEqual((status, body), (409, {"code": "IDEMPOTENCY_CONFLICT"}))
        s2, h2, b2, raw2 = SB.ew_pay("gcash", account, 100, "PHP", key, "rch_a")
        self.assertEqual((s2, raw2, h2.get("x-idempotent-replayed")), (200, raw1, "true"))
        self.assertNotIn("x-idempotent-replayed", h1)
        self.journaled_once(key, "ewallet", id=b1["payment_id"])
        # Keys are scoped per provider: the same key at another wallet is a new payment.
        s3, _, b3, _ = SB.ew_pay("toypay", account, 100, "PHP", key, "rch_a")
        self.assertEqual(s3, 200, b3)
        self.assertNotEqual(b3["payment_id"], b1["payment_id"])
        self.assertEqual(len(SB.journal_for(key)), 2)

    def test_concurrent_same_key_pays_once(self):
        key, account, n = new_key(), new_account(), 12
        SB.config(ewallet={"latency_ms": 100})
        barrier = threading.Barrier(n)
        results: list = [None] * n

        def worker(i):
            c = SB.conn()
            try:
                c.connect()
                barrier.wait(timeout=10)
                results[i] = SB.ew_pay("grabpay", account, 250, "SGD", key, conn=c)
            except Exception as e:
                results[i] = e
            finally:
                c.close()

        threads = [threading.Thread(target=worker, args=(i,)) for i in range(n)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=30)
        for r in results:
            self.assertIsInstance(r, tuple, r)
            self.assertEqual(r[0], 200, r)
        self.assertEqual(len({r[3] for r in results}), 1)
        self.assertEqual(len([r for r in results
                              if r[1].get("x-idempotent-replayed") != "true"]), 1)
        self.journaled_once(key, "ewallet", id=results[0][2]["payment_id"], amount=250)

    def test_lookup(self):
        key = new_key()
        _, _, created, _ = SB.ew_pay("momo", amount=50000, currency="VND", key=key)
        self.assertEqual(SB.ew_lookup("momo", key)[:3:2], (200, {"payments": [created]}))
        self.assertEqual(SB.ew_lookup("momo", new_key())[:3:2], (200, {"payments": []}))
        self.assertEqual(SB.ew_lookup("gcash", key)[:3:2], (200, {"payments": []}))
        status, _, body, _ = SB.ew_request("GET", "momo")
        self.assertEqual((status, body["field"]), (400, "idempotency_key"))


# ----------------------------------------------------------------------------
# Control: per-API fault injection and stats
# ----------------------------------------------------------------------------

class FaultInjectionTest(SandboxTest):
    def test_config_readback_and_per_api_latency(self):
        cfg = SB.get_config()
        for k in ("latency_ms", "latency_jitter_ms", "error_rate", "timeout_mode"):
            self.assertIn(k, cfg)
        for api in ("card", "paypal", "ewallet"):
            self.assertEqual(set(cfg[api]) - {"token_ttl_s"},
                             {"latency_ms", "latency_jitter_ms", "error_rate", "timeout_mode"})
        self.assertEqual(cfg["paypal"]["token_ttl_s"], DEFAULT_TTL)
        self.assertNotIn("token_ttl_s", cfg["card"])

        cfg = SB.config(paypal={"latency_ms": 300})
        self.assertEqual(SB.get_config(), cfg)
        self.assertEqual((cfg["paypal"]["latency_ms"], cfg["card"]["latency_ms"],
                          cfg["ewallet"]["latency_ms"], cfg["latency_ms"]), (300, 0, 0, 0))
        SB.access_token()
        t0 = time.monotonic()
        self.assertEqual(SB.capture(new_order(), key=new_key())[0], 201)
        self.assertGreaterEqual(time.monotonic() - t0, 0.29)  # sleeping is never shorter
        self.assertEqual(SB.charge(key=new_key())[0], 200)     # card still served

        # Top-level keys mean all APIs; blocks are applied after them.
        cfg = SB.config(latency_ms=20, ewallet={"latency_ms": 40, "error_rate": 0.5})
        self.assertEqual((cfg["latency_ms"], cfg["card"]["latency_ms"],
                          cfg["paypal"]["latency_ms"], cfg["ewallet"]["latency_ms"],
                          cfg["ewallet"]["error_rate"], cfg["card"]["error_rate"]),
                         (20, 20, 20, 40, 0.5, 0.0))
        cfg = SB.config(latency_ms=0)
        self.assertEqual([cfg[a]["latency_ms"] for a in ("card", "paypal", "ewallet")], [0, 0, 0])

    def test_config_validation_is_atomic(self):
        before = SB.get_config()
        bad = [
            {"paypal": {"timeout_mode": "bogus"}},
            {"timeout_mode": "lose"},
            {"nosuchapi": {"latency_ms": 1}},
            {"card": {"token_ttl_s": 5}},
            {"token_ttl_s": 5},
            {"paypal": {"token_ttl_s": 0}},
            {"paypal": {"token_ttl_s": 1.5}},
            {"ewallet": {"error_rate": 2}},
            {"ewallet": 5},
            {"latency_ms": 5, "paypal": {"error_rate": 7}},
            {"card": {"latency_ms": 10}, "bogus": 1},
        ]
        for cfg in bad:
            with self.subTest(cfg=cfg):
                status, _, body, _ = SB.post_config(cfg)
                self.assertEqual(status, 400, body)
                self.assertEqual(body["error"]["code"], "parameter_invalid")
                self.assertEqual(SB.get_config(), before)

    def test_timeout_mode_drop_closes_connection_without_charging(self):
        SB.access_token()
        calls = {
            "paypal": lambda key: SB.capture(new_order(), key=key),
            "ewallet": lambda key: SB.ew_pay("gcash", "09170001", key=key),
            "card": lambda key: SB.charge(key=key),
        }
        lookups = {
            "paypal": lambda key: SB.pp_lookup(key)[2]["captures"],
            "ewallet": lambda key: SB.ew_lookup("gcash", key)[2]["payments"],
            "card": lambda key: SB.lookup(key)[2]["data"],
        }
        for api, call in calls.items():
            with self.subTest(api=api):
                cfg = SB.config(**{api: {"timeout_mode": "drop", "latency_ms": 100}})
                self.assertEqual([cfg[a]["timeout_mode"] for a in ("card", "paypal", "ewallet")],
                                 ["drop" if a == api else "charge"
                                  for a in ("card", "paypal", "ewallet")])
                key = new_key()
                t0 = time.monotonic()
                with self.assertRaises(DISCONNECTS):
                    call(key)
                self.assertGreaterEqual(time.monotonic() - t0, 0.09)
                self.assertEqual(SB.journal_for(key), [])
                self.assertEqual(lookups[api](key), [])  # lookups are not dropped
                # Other APIs keep working meanwhile.
                other = next(a for a in calls if a != api)
                self.assertIn(calls[other](new_key())[0], (200, 201))
                SB.config(**{api: {"timeout_mode": "charge", "latency_ms": 0}})
                status, hdrs, _, _ = call(key)
                self.assertIn(status, (200, 201))
                self.assertFalse(any(h.endswith("replayed") for h in hdrs))
                self.assertEqual(len(SB.journal_for(key)), 1)

    def test_timeout_mode_charge_leaves_real_charge_behind(self):
        SB.access_token()
        cfg = SB.config(paypal={"latency_ms": 600})
        self.assertEqual(cfg["paypal"]["timeout_mode"], "charge")
        key, order = new_key(), new_order()
        c = http.client.HTTPSConnection("127.0.0.1", SB.port, context=SB.ssl_ctx, timeout=0.15)
        c.connect()
        with self.assertRaises(TimeoutError):
            SB.capture(order, "4.00", key=key, conn=c)
        c.close()
        SB.config(paypal={"latency_ms": 0})
        caps = SB.pp_lookup(key)[2]["captures"]  # waits for the in-flight capture
        self.assertEqual([(x["status"], x["order_id"]) for x in caps], [("COMPLETED", order)])
        self.journaled_once(key, "paypal", id=caps[0]["id"], amount=400)

    def test_error_rate_per_api(self):
        cfg = SB.config(ewallet={"error_rate": 1})
        self.assertEqual((cfg["ewallet"]["error_rate"], cfg["card"]["error_rate"],
                          cfg["paypal"]["error_rate"]), (1.0, 0.0, 0.0))
        key, account = new_key(), new_account()
        status, _, body, _ = SB.ew_pay("gcash", account, key=key)
        self.assertEqual((status, body), (500, {"code": "SYSTEM_ERROR", "charged": False}))
        self.assertEqual(SB.journal_for(key), [])
        self.assertEqual(SB.charge(key=new_key())[0], 200)
        self.assertEqual(SB.capture(new_order(), key=new_key())[0], 201)
        SB.config(paypal={"error_rate": 1}, ewallet={"error_rate": 0})
        pkey = new_key()
        status, _, body, _ = SB.capture(new_order(), key=pkey)
        self.assertEqual((status, body["name"], body["charged"]),
                         (500, "INTERNAL_SERVER_ERROR", False))
        self.assertEqual(SB.journal_for(pkey), [])
        # Nothing was stored: the retry is processed fresh.
        status, hdrs, body, _ = SB.ew_pay("gcash", account, key=key)
        self.assertEqual((status, body["status"]), (200, "SUCCESS"))
        self.assertNotIn("x-idempotent-replayed", hdrs)
        self.journaled_once(key, "ewallet", id=body["payment_id"])

    def test_stats_counters(self):
        SB.access_token()  # cached before the reset, so captures below grant nothing
        status, _, zero, _ = SB.request("POST", "/_sandbox/stats/reset")
        expected_zero = {"paypal_token_grants": 0, "requests": {"card": 0, "paypal": 0,
                                                                 "ewallet": 0}}
        self.assertEqual((status, zero), (200, expected_zero))
        self.assertEqual(SB.stats(), expected_zero)
        SB.pp_token()                                   # paypal 1, grant 1
        SB.pp_token(secret="wrong")                     # paypal 2, no grant
        SB.pp_token()                                   # paypal 3, grant 2
        SB.capture(new_order(), key=new_key())          # paypal 4
        SB.pp_lookup(new_key())                         # paypal 5
        SB.ew_pay("gcash", key=new_key())               # ewallet 1
        SB.ew_pay("gcash", key=new_key(), secret="x")   # ewallet 2 (rejected, still counted)
        SB.charge(key=new_key())                        # card 1
        SB.request("GET", "/_sandbox/health")           # control: not counted
        self.assertEqual(SB.stats(), {"paypal_token_grants": 2,
                                      "requests": {"card": 1, "paypal": 5, "ewallet": 2}})
        self.assertEqual(SB.request("POST", "/_sandbox/stats/reset")[2], expected_zero)
        self.assertEqual(SB.stats(), expected_zero)


class ZzSecretsNotLeakedTest(SandboxTest):
    """Runs last (alphabetical): checks everything the module sent so far."""

    def test_journal_and_log_hold_no_token_secret_or_signature(self):
        key = new_key()
        self.assertEqual(SB.capture(new_order(), key=key)[0], 201)
        self.assertEqual(SB.ew_pay("gcash", key=key)[0], 200)
        deadline = time.monotonic() + 5
        while SB.log().count(key) < 2 and time.monotonic() < deadline:
            time.sleep(0.02)
        log, journal = SB.log(), SB.journal.read_text()
        self.assertEqual(log.count(key), 2)
        self.assertGreater(len(SEEN_TOKENS), 3)
        self.assertGreater(len(SEEN_SIGNATURES), 10)
        for text in (log, journal):
            for secret in (CLIENT_SECRET, EW_SECRET, base.SECRET, *SEEN_TOKENS, *SEEN_SIGNATURES):
                self.assertNotIn(secret, text)
        for rec in SB.journal_lines():
            if rec["api"] == "paypal":
                self.assertEqual(set(rec), PAYPAL_JOURNAL_KEYS)
            elif rec["api"] == "ewallet":
                self.assertEqual(set(rec), EWALLET_JOURNAL_KEYS)


# ----------------------------------------------------------------------------
# Refunds (PayPal captures, e-wallet payments)
# ----------------------------------------------------------------------------

PAYPAL_REFUND_JOURNAL_KEYS = {"ts", "api", "op", "id", "capture_id", "idempotency_key", "amount",
                              "currency", "status", "note_to_payer"}
EWALLET_REFUND_JOURNAL_KEYS = {"ts", "api", "op", "provider", "id", "payment_id",
                               "idempotency_key", "amount", "currency", "status", "reason"}
REFUND_ID_RE = re.compile(r"^REF[0-9A-F]{17}$")
EW_REFUND_ID_RE = re.compile(r"^RF-[0-9A-F]{24}$")


def race(sb, calls):
    """Runs the calls (functions of a connection) at once; their results."""
    barrier = threading.Barrier(len(calls))
    results: list = [None] * len(calls)

    def worker(i):
        c = sb.conn()
        try:
            c.connect()
            barrier.wait(timeout=10)
            results[i] = calls[i](c)
        except Exception as e:  # surfaced by the callers' assertions
            results[i] = e
        finally:
            c.close()

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(len(calls))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=30)
    return results


class RefundTest(unittest.TestCase):
    """On a sandbox of its own: its journal holds refund lines ("op"), which
    the module's whole-journal checks do not expect."""

    sb: Sandbox

    @classmethod
    def setUpClass(cls):
        workdir = TMP / "refunds"
        workdir.mkdir()
        cls.sb = Sandbox(workdir, CERTS, workdir / "journal.jsonl", CARD_FILE,
                         extra_args=sandbox_args()).start()

    @classmethod
    def tearDownClass(cls):
        rc = cls.sb.stop()
        if rc != 0:
            raise AssertionError(f"sandbox exited {rc}:\n{cls.sb.log()}")

    def setUp(self):
        self.sb.reset_config()

    def captured(self, value="9.99", currency="USD"):
        status, _, body, _ = self.sb.capture(new_order(), value, currency, key=new_key())
        self.assertEqual(status, 201, body)
        return body["purchase_units"][0]["payments"]["captures"][0]["id"]

    def paid(self, provider="gcash", amount=5000, currency="PHP", account=None):
        status, _, body, _ = self.sb.ew_pay(provider, account, amount, currency, new_key())
        self.assertEqual(status, 200, body)
        return body["payment_id"]

    def refund_lines(self, key):
        return [r for r in self.sb.journal_for(key) if r.get("op") == "refund"]

    # -- PayPal ------------------------------------------------------------------
    def test_paypal_refund(self):
        cap_key, order = new_key(), new_order()
        status, _, cap_body, cap_raw = self.sb.capture(order, "12.50", key=cap_key)
        cap_id = cap_body["purchase_units"][0]["payments"]["captures"][0]["id"]
        key = new_key()
        status, hdrs, body, raw = self.sb.pp_refund(cap_id, {"note_to_payer": "sorry"}, key)
        self.assertEqual(status, 201, body)
        self.assertNotIn("paypal-request-id-replayed", hdrs)
        self.assertRegex(body["id"], REFUND_ID_RE)
        self.assertEqual((body["status"], body["amount"], body["note_to_payer"]),
                         ("COMPLETED", {"currency_code": "USD", "value": "12.50"}, "sorry"))
        self.assertEqual({(l["rel"], l["href"]) for l in body["links"]},
                         {("self", f"/v2/payments/refunds/{body['id']}"),
                          ("up", f"/v2/payments/captures/{cap_id}")})
        lines = self.refund_lines(key)
        self.assertEqual(len(self.sb.journal_for(key)), 1)
        self.assertEqual(set(lines[0]), PAYPAL_REFUND_JOURNAL_KEYS)
        self.assertEqual((lines[0]["api"], lines[0]["id"], lines[0]["capture_id"],
                          lines[0]["amount"], lines[0]["currency"], lines[0]["status"],
                          lines[0]["note_to_payer"]),
                         ("paypal", body["id"], cap_id, 1250, "USD", "succeeded", "sorry"))
        # Replay (byte-identical), GET and search by PayPal-Request-Id.
        s2, h2, _, raw2 = self.sb.pp_refund(cap_id, {"note_to_payer": "sorry"}, key)
        self.assertEqual((s2, raw2, h2.get("paypal-request-id-replayed")), (201, raw, "true"))
        self.assertEqual(len(self.sb.journal_for(key)), 1)
        self.assertEqual(self.sb.pp_get(f"/v2/payments/refunds/{body['id']}")[:3:2], (200, body))
        self.assertEqual(self.sb.pp_get("/v2/payments/refunds?paypal_request_id=" + key)[2],
                         {"refunds": [body]})
        self.assertEqual(self.sb.pp_get("/v2/payments/refunds?paypal_request_id=x" + key)[2],
                         {"refunds": []})
        # The capture now shows REFUNDED; the capture call's replay is unchanged.
        self.assertEqual(self.sb.pp_lookup(cap_key)[2]["captures"][0]["status"], "REFUNDED")
        self.assertEqual(self.sb.pp_get(f"/v2/payments/captures/{cap_id}")[2]["status"],
                         "REFUNDED")
        self.assertEqual(self.sb.capture(order, "12.50", key=cap_key)[3], cap_raw)
        # Without a body, or with the full amount; without a PayPal-Request-Id.
        s, _, b, _ = self.sb.pp_refund(self.captured("3.00"))
        self.assertEqual((s, b["amount"]["value"], "note_to_payer" in b), (201, "3.00", False))
        s, _, b, _ = self.sb.pp_refund(self.captured("150", "JPY"),
                                       {"amount": {"currency_code": "JPY", "value": "150"}})
        self.assertEqual((s, b["amount"]), (201, {"currency_code": "JPY", "value": "150"}))

    def test_paypal_refund_refusals_journal_nothing(self):
        refunded = self.captured()
        self.assertEqual(self.sb.pp_refund(refunded)[0], 201)
        dkey = new_key()
        self.assertEqual(self.sb.capture(new_order("DECLINED"), key=dkey)[0], 422)
        declined = self.sb.journal_for(dkey)[0]["id"]
        ok = self.captured("5.00")
        cases = [
            ("refunded", refunded, None, 422, "CAPTURE_FULLY_REFUNDED", "capture_id"),
            ("declined", declined, None, 422, "REFUND_NOT_ALLOWED", "capture_id"),
            ("unknown", "CAP00000000000000000", None, 404, "INVALID_RESOURCE_ID", "capture_id"),
            ("partial", ok, {"amount": {"currency_code": "USD", "value": "4.99"}}, 422,
             "PARTIAL_REFUND_NOT_ALLOWED", "/amount/value"),
            ("more", ok, {"amount": {"currency_code": "USD", "value": "5.01"}}, 422,
             "REFUND_AMOUNT_EXCEEDED", "/amount/value"),
            ("currency", ok, {"amount": {"currency_code": "EUR", "value": "5.00"}}, 422,
             "REFUND_CAPTURE_CURRENCY_MISMATCH", "/amount/currency_code"),
            ("bad value", ok, {"amount": {"currency_code": "USD", "value": "5.001"}}, 400,
             "INVALID_PARAMETER_VALUE", "/amount/value"),
            ("long note", ok, {"note_to_payer": "x" * 256}, 400, "INVALID_PARAMETER_VALUE",
             "/note_to_payer"),
            ("unknown field", ok, {"invoice_id": "x"}, 400, "UNKNOWN_FIELD", "/invoice_id"),
            ("not json", ok, "{", 400, "MALFORMED_REQUEST_JSON", "/"),
        ]
        for name, cap_id, body, status, issue, field in cases:
            with self.subTest(name):
                key = new_key()
                st, _, resp, _ = self.sb.pp_refund(cap_id, body, key)
                self.assertEqual((st, resp["details"][0]["issue"], resp["details"][0]["field"]),
                                 (status, issue, field), resp)
                if status == 404:
                    self.assertEqual(resp["name"], "RESOURCE_NOT_FOUND")
                self.assertEqual(self.sb.journal_for(key), [])
        self.assertEqual(self.sb.pp_get(f"/v2/payments/captures/{ok}")[2]["status"], "COMPLETED")
        self.assertEqual(self.sb.pp_refund(ok, token="A21AAbogus")[0], 401)
        self.assertEqual(self.sb.pp_get("/v2/payments/refunds/REF0")[0], 404)

    def test_paypal_request_id_reused_for_another_request(self):
        a, b = self.captured(), self.captured()
        key = new_key()
        self.assertEqual(self.sb.pp_refund(a, {"note_to_payer": "n"}, key)[0], 201)
        for name, result in (("other capture", self.sb.pp_refund(b, {"note_to_payer": "n"}, key)),
                             ("other note", self.sb.pp_refund(a, {"note_to_payer": "m"}, key)),
                             ("a capture", self.sb.capture(new_order(), key=key))):
            with self.subTest(name):
                st, _, body, _ = result
                self.assertEqual((st, body["details"][0]["issue"]),
                                 (422, "PAYPAL_REQUEST_ID_PREVIOUSLY_USED"))
        self.assertEqual(len(self.sb.journal_for(key)), 1)
        self.assertEqual(self.sb.pp_get(f"/v2/payments/captures/{b}")[2]["status"], "COMPLETED")

    def test_paypal_concurrent_refunds_have_one_winner(self):
        cap_id = self.captured()
        self.sb.access_token()
        self.sb.config(paypal={"latency_ms": 50})
        results = race(self.sb, [lambda c: self.sb.pp_refund(cap_id, key=new_key(), conn=c)
                                 for _ in range(6)])
        for r in results:
            self.assertIsInstance(r, tuple, r)
        self.assertEqual(sorted(r[0] for r in results), [201] + [422] * 5)
        self.assertEqual({r[2]["details"][0]["issue"] for r in results if r[0] == 422},
                         {"CAPTURE_FULLY_REFUNDED"})
        self.assertEqual(len([r for r in self.sb.journal_lines()
                              if r.get("op") == "refund" and r.get("capture_id") == cap_id]), 1)

    # -- e-wallet ----------------------------------------------------------------
    def test_ewallet_refund(self):
        pay_key, account = new_key(), new_account()
        status, _, payment, pay_raw = self.sb.ew_pay("gcash", account, 4500, "PHP", pay_key)
        self.assertEqual(status, 200)
        pid = payment["payment_id"]
        key = new_key()
        status, hdrs, body, raw = self.sb.ew_refund("gcash", pid, {"reason": "duplicate"}, key)
        self.assertEqual(status, 200, body)
        self.assertNotIn("x-idempotent-replayed", hdrs)
        self.assertRegex(body["refund_id"], EW_REFUND_ID_RE)
        self.assertEqual({k: v for k, v in body.items() if k not in ("refund_id", "created")},
                         {"payment_id": pid, "provider": "gcash", "status": "REFUNDED",
                          "amount": 4500, "currency": "PHP", "reason": "duplicate",
                          "idempotency_key": key})
        lines = self.refund_lines(key)
        self.assertEqual(len(self.sb.journal_for(key)), 1)
        self.assertEqual(set(lines[0]), EWALLET_REFUND_JOURNAL_KEYS)
        self.assertEqual((lines[0]["api"], lines[0]["provider"], lines[0]["id"],
                          lines[0]["payment_id"], lines[0]["amount"], lines[0]["status"]),
                         ("ewallet", "gcash", body["refund_id"], pid, 4500, "succeeded"))
        s2, h2, _, raw2 = self.sb.ew_refund("gcash", pid, {"reason": "duplicate"}, key)
        self.assertEqual((s2, raw2, h2.get("x-idempotent-replayed")), (200, raw, "true"))
        self.assertEqual(len(self.sb.journal_for(key)), 1)
        self.assertEqual(self.sb.ew_refund_lookup("gcash", key)[:3:2], (200, {"refunds": [body]}))
        self.assertEqual(self.sb.ew_refund_lookup("gcash", new_key())[2], {"refunds": []})
        self.assertEqual(self.sb.ew_refund_lookup("dana", key)[2], {"refunds": []})
        # The payment's replay is unchanged; no body works too.
        self.assertEqual(self.sb.ew_pay("gcash", account, 4500, "PHP", pay_key)[3], pay_raw)
        s, _, b, _ = self.sb.ew_refund("toypay", self.paid("toypay", 10, "EUR"), key=new_key())
        self.assertEqual((s, b["reason"], b["amount"]), (200, None, 10))
        s, _, b, _ = self.sb.ew_refund("gcash", self.paid(amount=77), {"amount": 77}, new_key())
        self.assertEqual((s, b["amount"]), (200, 77))

    def test_ewallet_refund_refusals_journal_nothing(self):
        refunded = self.paid()
        self.assertEqual(self.sb.ew_refund("gcash", refunded, key=new_key())[0], 200)
        failed = self.paid(account=new_account("0002"))
        ok = self.paid(amount=800)
        cases = [
            ("refunded", "gcash", refunded, None, 409, {"code": "ALREADY_REFUNDED"}),
            ("failed", "gcash", failed, None, 409, {"code": "PAYMENT_NOT_REFUNDABLE"}),
            ("unknown", "gcash", "EW-000000000000000000000000", None, 404,
             {"code": "PAYMENT_NOT_FOUND"}),
            ("other provider", "dana", ok, None, 404, {"code": "PAYMENT_NOT_FOUND"}),
            ("unknown provider", "nopay", ok, None, 404, {"code": "UNKNOWN_PROVIDER"}),
            ("partial", "gcash", ok, {"amount": 799}, 400, "amount"),
            ("long reason", "gcash", ok, {"reason": "x" * 256}, 400, "reason"),
            ("unknown field", "gcash", ok, {"note": "x"}, 400, "note"),
        ]
        for name, provider, pid, body, status, expect in cases:
            with self.subTest(name):
                key = new_key()
                st, _, resp, _ = self.sb.ew_refund(provider, pid, body, key)
                if isinstance(expect, dict):
                    self.assertEqual((st, resp), (status, expect))
                else:
                    self.assertEqual((st, resp["code"], resp["field"]),
                                     (status, "INVALID_REQUEST", expect))
                self.assertEqual(self.sb.journal_for(key), [])
        st, _, resp, _ = self.sb.ew_refund("gcash", ok)  # no key
        self.assertEqual((st, resp["field"]), (400, "X-Idempotency-Key"))
        st, _, resp, _ = self.sb.request(
            "POST", f"/ewallet/v1/gcash/payments/{ok}/refunds", "",
            {"X-Timestamp": str(int(time.time())), "X-Signature": "0" * 64,
             "X-Idempotency-Key": new_key()})
        self.assertEqual((st, resp), (401, {"code": "INVALID_SIGNATURE"}))
        self.assertEqual(self.sb.ew_refund("gcash", ok, key=new_key())[0], 200)  # still refundable

    def test_ewallet_key_reused_for_another_request(self):
        a, b = self.paid(), self.paid()
        key = new_key()
        self.assertEqual(self.sb.ew_refund("gcash", a, {"reason": "r"}, key)[0], 200)
        for name, result in (("other payment", self.sb.ew_refund("gcash", b, {"reason": "r"}, key)),
                             ("other reason", self.sb.ew_refund("gcash", a, {"reason": "s"}, key)),
                             ("a payment", self.sb.ew_pay("gcash", key=key))):
            with self.subTest(name):
                self.assertEqual(result[:3:2], (409, {"code": "IDEMPOTENCY_CONFLICT"}))
        self.assertEqual(len(self.sb.journal_for(key)), 1)
        self.assertEqual(self.sb.ew_refund("gcash", b, key=new_key())[0], 200)

    def test_ewallet_concurrent_refunds_have_one_winner(self):
        pid = self.paid()
        self.sb.config(ewallet={"latency_ms": 50})
        results = race(self.sb, [lambda c: self.sb.ew_refund("gcash", pid, key=new_key(), conn=c)
                                 for _ in range(6)])
        for r in results:
            self.assertIsInstance(r, tuple, r)
        self.assertEqual(sorted(r[0] for r in results), [200] + [409] * 5)
        self.assertEqual(len([r for r in self.sb.journal_lines()
                              if r.get("op") == "refund" and r.get("payment_id") == pid]), 1)

    def test_refund_errors_injected_change_nothing(self):
        cap_id, pid = self.captured(), self.paid()
        pkey, ekey = new_key(), new_key()
        self.sb.config(error_rate=1.0)
        self.assertEqual(self.sb.pp_refund(cap_id, key=pkey)[0], 500)
        self.assertEqual(self.sb.ew_refund("gcash", pid, key=ekey)[0], 500)
        self.sb.config(error_rate=0)
        self.assertEqual((self.sb.journal_for(pkey), self.sb.journal_for(ekey)), ([], []))
        self.assertEqual(self.sb.pp_refund(cap_id, key=pkey)[0], 201)
        self.assertEqual(self.sb.ew_refund("gcash", pid, key=ekey)[0], 200)

    def test_zz_no_secret_in_refund_journal_or_log(self):
        log, journal = self.sb.log(), self.sb.journal.read_text()
        for text in (log, journal):
            for secret in (CLIENT_SECRET, EW_SECRET, base.SECRET, *SEEN_TOKENS, *SEEN_SIGNATURES):
                self.assertNotIn(secret, text)


class RefundRestartTest(unittest.TestCase):
    def test_refunds_survive_a_restart(self):
        workdir = TMP / "refunds-restart"
        workdir.mkdir()
        sb = Sandbox(workdir, CERTS, workdir / "journal.jsonl", CARD_FILE,
                     extra_args=sandbox_args())
        sb.start()
        try:
            ckey, order = new_key(), new_order()
            cap = sb.capture(order, "8.00", key=ckey)
            cap_id = cap[2]["purchase_units"][0]["payments"]["captures"][0]["id"]
            pkey = new_key()
            pp = sb.pp_refund(cap_id, {"note_to_payer": "n"}, pkey)
            pay = sb.ew_pay("grabpay", new_account(), 900, "SGD", new_key())
            ekey = new_key()
            ew = sb.ew_refund("grabpay", pay[2]["payment_id"], {"reason": "r"}, ekey)
            self.assertEqual([r[0] for r in (cap, pp, pay, ew)], [201, 201, 200, 200])
        finally:
            self.assertEqual(sb.stop(), 0, sb.log())
        self.assertEqual(len(sb.journal_lines()), 4)

        sb.start()
        try:
            s, h, _, raw = sb.pp_refund(cap_id, {"note_to_payer": "n"}, pkey)
            self.assertEqual((s, raw, h.get("paypal-request-id-replayed")), (201, pp[3], "true"))
            s, h, _, raw = sb.ew_refund("grabpay", pay[2]["payment_id"], {"reason": "r"}, ekey)
            self.assertEqual((s, raw, h.get("x-idempotent-replayed")), (200, ew[3], "true"))
            self.assertEqual(sb.pp_lookup(ckey)[2]["captures"][0]["status"], "REFUNDED")
            self.assertEqual(sb.pp_get(f"/v2/payments/refunds/{pp[2]['id']}")[2], pp[2])
            self.assertEqual(sb.ew_refund_lookup("grabpay", ekey)[2], {"refunds": [ew[2]]})
            self.assertEqual(sb.pp_refund(cap_id, key=new_key())[2]["details"][0]["issue"],
                             "CAPTURE_FULLY_REFUNDED")
            self.assertEqual(sb.ew_refund("grabpay", pay[2]["payment_id"], key=new_key())[2],
                             {"code": "ALREADY_REFUNDED"})
            self.assertEqual(sb.pp_refund(cap_id, {"note_to_payer": "x"}, pkey)[0], 422)
            self.assertEqual(len(sb.journal_lines()), 4)
        finally:
            self.assertEqual(sb.stop(), 0, sb.log())
        self.assertIn("2 charges restored, 2 operations restored", sb.log())


# ----------------------------------------------------------------------------
# Process-level behaviour
# ----------------------------------------------------------------------------

class RestartTest(unittest.TestCase):
    def test_restart_keeps_idempotency_for_paypal_and_ewallet(self):
        workdir = TMP / "restart"
        workdir.mkdir()
        sb = Sandbox(workdir, CERTS, workdir / "journal.jsonl", CARD_FILE,
                     extra_args=sandbox_args())
        sb.start()
        try:
            token = sb.access_token()
            pkey, porder = new_key(), new_order()
            dkey, dorder = new_key(), new_order("DECLINED")
            ekey, eacct = new_key(), new_account("4321")
            fkey, facct = new_key(), new_account("0003")
            p1 = sb.capture(porder, "12.34", key=pkey)
            p2 = sb.capture(dorder, "1.00", key=dkey)
            e1 = sb.ew_pay("gcash", eacct, 1200, "PHP", ekey, "rch_e1")
            e2 = sb.ew_pay("kakaopay", facct, 3000, "KRW", fkey, "rch_e2")
            self.assertEqual([r[0] for r in (p1, p2, e1, e2)], [201, 422, 200, 200])
        finally:
            self.assertEqual(sb.stop(), 0, sb.log())
        self.assertEqual(len(sb.journal_lines()), 4)

        sb.start()
        try:
            self.assertEqual(sb.stats()["paypal_token_grants"], 0)
            # The token granted before the restart is still valid (self-verifying).
            for (s, _, _, raw), order, value, key in ((p1, porder, "12.34", pkey),
                                                      (p2, dorder, "1.00", dkey)):
                s2, h2, _, raw2 = sb.capture(order, value, key=key, token=token)
                self.assertEqual((s2, h2.get("paypal-request-id-replayed")), (s, "true"))
                self.assertEqual(raw2, raw)  # byte-identical
            s, _, b, _ = sb.capture(new_order(), "12.34", key=pkey)
            self.assertEqual((s, b["details"][0]["issue"]),
                             (422, "PAYPAL_REQUEST_ID_PREVIOUSLY_USED"))
            cap_id = p1[2]["purchase_units"][0]["payments"]["captures"][0]["id"]
            self.assertEqual([c["id"] for c in sb.pp_lookup(pkey)[2]["captures"]], [cap_id])

            # E-wallet: same status and body, except the full account_id,
            # which is not journaled (documented in sandbox/ewallet_api.h).
            for (s, _, body, _), provider, acct, amount, cur, key, ref in (
                    (e1, "gcash", eacct, 1200, "PHP", ekey, "rch_e1"),
                    (e2, "kakaopay", facct, 3000, "KRW", fkey, "rch_e2")):
                s2, h2, body2, _ = sb.ew_pay(provider, acct, amount, cur, key, ref)
                self.assertEqual((s2, h2.get("x-idempotent-replayed")), (s, "true"))
                self.assertEqual(body2, {**body, "account_id": "****" + acct[-4:]})
                self.assertEqual(sb.ew_lookup(provider, key)[2], {"payments": [body2]})
            self.assertEqual(e2[2]["status"], "FAILED")
            s, _, b, _ = sb.ew_pay("gcash", eacct, 1201, "PHP", ekey, "rch_e1")
            self.assertEqual((s, b), (409, {"code": "IDEMPOTENCY_CONFLICT"}))
            s, _, b, _ = sb.ew_pay("gcash", eacct, 1200, "PHP", ekey, "rch_other")
            self.assertEqual((s, b), (409, {"code": "IDEMPOTENCY_CONFLICT"}))

            # Nothing re-journaled; new work still journals.
            self.assertEqual(len(sb.journal_lines()), 4)
            self.assertEqual(sb.ew_pay("gcash", key=new_key())[0], 200)
            self.assertEqual(len(sb.journal_lines()), 5)
        finally:
            self.assertEqual(sb.stop(), 0, sb.log())
        self.assertIn("4 charges restored", sb.log())


class CliTest(unittest.TestCase):
    def test_new_apis_are_optional_and_report_not_enabled(self):
        workdir = TMP / "cardonly"
        workdir.mkdir()
        sb = Sandbox(workdir, CERTS, workdir / "journal.jsonl", CARD_FILE)  # no new flags
        sb.start()
        try:
            self.assertEqual(sb.charge(key=new_key())[0], 200)
            status, _, body, _ = sb.pp_token()
            self.assertEqual((status, body["name"]), (404, "RESOURCE_NOT_FOUND"))
            status, _, body, _ = sb.ew_pay("gcash", key=new_key())
            self.assertEqual((status, body["code"]), (404, "NOT_ENABLED"))
        finally:
            self.assertEqual(sb.stop(), 0, sb.log())

    def test_bad_credentials_file_fails_startup(self):
        bad = TMP / "bad.credentials"
        bad.write_text("only-one-line\n")
        cmd = [str(base.SANDBOX), "--port", "0",
               "--cert", str(CERTS / "server.pem"), "--key", str(CERTS / "server.key"),
               "--journal", str(TMP / "unused.jsonl"), "--card-secret-file", str(CARD_FILE),
               "--paypal-credentials-file", str(bad)]
        out = subprocess.run(cmd, capture_output=True, timeout=10, stdin=subprocess.DEVNULL)
        self.assertEqual(out.returncode, 2, out.stderr)
        self.assertIn(b"cannot read PayPal credentials", out.stderr)
        empty = TMP / "empty.secret"
        empty.write_text("  \n")
        out = subprocess.run(cmd[:-2] + ["--ewallet-secret-file", str(empty)],
                             capture_output=True, timeout=10, stdin=subprocess.DEVNULL)
        self.assertEqual(out.returncode, 2, out.stderr)
        self.assertIn(b"cannot read e-wallet secret", out.stderr)


if __name__ == "__main__":
    unittest.main()
