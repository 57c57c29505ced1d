#!/usr/bin/python3
"""End-to-end tests for the PSP sandbox (the psp-sandbox binary built from
sandbox/) over real, verified HTTPS. The binary is $SANDBOX_BIN, by default
build/sandbox/psp-sandbox (ctest sets SANDBOX_BIN).

Run from the repository root with either:
    /usr/bin/python3 -m unittest tests/sandbox/test_psp_sandbox.py
    /usr/bin/python3 tests/sandbox/test_psp_sandbox.py
"""

from __future__ import annotations

import http.client
import json
import os
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

REPO = Path(__file__).resolve().parents[2]
SANDBOX = Path(os.environ.get("SANDBOX_BIN") or REPO / "build" / "sandbox" / "psp-sandbox")
MAKE_CERTS = REPO / "scripts" / "make-dev-certs.sh"
PYTHON = "/usr/bin/python3" if os.path.exists("/usr/bin/python3") else sys.executable

SECRET = "sk_test_" + uuid.uuid4().hex
APPROVE = "4242424242424242"
DECLINE = "4000000000000002"
NSF = "4000000000009995"
OTHER_OK = "5555555555554444"
ALL_TEST_NUMBERS = (APPROVE, DECLINE, NSF, OTHER_OK)
CVC = "737"
CHARGE_ID_RE = re.compile(r"^ch_[0-9a-f]{24}$")
START_DEADLINE_S = 10.0


def luhn_complete(prefix: str) -> str:
    """Append the Luhn check digit to prefix."""
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


class Sandbox:
    """One sandbox process; start() waits for --port-file with a deadline."""

    def __init__(self, workdir: Path, certdir: Path, journal: Path, secret_file: Path,
                 extra_args=()):
        self.workdir = workdir
        self.certdir = certdir
        self.journal = journal
        self.secret_file = secret_file
        self.extra_args = list(extra_args)
        self.port_file = workdir / f"port-{uuid.uuid4().hex}"
        self.log_path = workdir / f"sandbox-{uuid.uuid4().hex}.log"
        self.proc: subprocess.Popen | None = None
        self.port: int | None = None
        self.ssl_ctx = ssl.create_default_context(cafile=str(certdir / "ca.pem"))
        assert self.ssl_ctx.check_hostname and self.ssl_ctx.verify_mode == ssl.CERT_REQUIRED

    def start(self) -> "Sandbox":
        if self.port_file.exists():
            self.port_file.unlink()
        cmd = [str(SANDBOX), "--host", "127.0.0.1", "--port", "0",
               "--cert", str(self.certdir / "server.pem"), "--key", str(self.certdir / "server.key"),
               "--journal", str(self.journal), "--card-secret-file", str(self.secret_file),
               "--port-file", str(self.port_file), *self.extra_args]
        self._log = open(self.log_path, "ab")
        self.proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                     stderr=self._log)
        deadline = time.monotonic() + START_DEADLINE_S
        while True:
            if self.port_file.exists():
                text = self.port_file.read_text()
                if text.endswith("\n"):
                    self.port = int(text)
                    return self
            if self.proc.poll() is not None:
                raise AssertionError(f"sandbox exited with {self.proc.returncode}:\n{self.log()}")
            if time.monotonic() > deadline:
                self.proc.kill()
                raise AssertionError(f"sandbox did not write its port file:\n{self.log()}")
            time.sleep(0.02)

    def stop(self) -> int:
        assert self.proc is not None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._log.close()
        return self.proc.returncode

    def log(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def conn(self) -> http.client.HTTPSConnection:
        return http.client.HTTPSConnection("127.0.0.1", self.port, context=self.ssl_ctx, timeout=15)

    def request(self, method, path, body=None, headers=None, conn=None):
        """Returns (status, headers dict lower-cased, parsed JSON)."""
        own = conn is None
        c = conn or self.conn()
        try:
            c.request(method, path, body=body, headers=headers or {})
            r = c.getresponse()
            raw = r.read()
            hdrs = {k.lower(): v for k, v in r.getheaders()}
            return r.status, hdrs, (json.loads(raw) if raw else None), raw
        finally:
            if own:
                c.close()

    def charge(self, number=APPROVE, amount=1000, currency="usd", key=None, auth=True,
               extra=None, omit=(), conn=None):
        fields = {"amount": str(amount), "currency": currency, "card[number]": number,
                  "card[exp_month]": "12", "card[exp_year]": "2034", "card[cvc]": CVC,
                  "description": "coin recharge", "metadata[order_id]": "ord_1"}
        fields.update(extra or {})
        for k in omit:
            fields.pop(k, None)
        headers = {"Content-Type": "application/x-www-form-urlencoded"}
        if auth is True:
            headers["Authorization"] = f"Bearer {SECRET}"
        elif auth:
            headers["Authorization"] = auth
        if key is not None:
            headers["Idempotency-Key"] = key
        return self.request("POST", "/v1/charges", urllib.parse.urlencode(fields), headers, conn)

    def lookup(self, key, auth=True):
        headers = {"Authorization": f"Bearer {SECRET}"} if auth else {}
        return self.request("GET", "/v1/charges?" + urllib.parse.urlencode({"idempotency_key": key}),
                            headers=headers)

    def set_config(self, **cfg):
        status, _, body, _ = self.request("POST", "/_sandbox/config", json.dumps(cfg),
                                          {"Content-Type": "application/json"})
        assert status == 200, (status, body)
        return body

    def journal_lines(self):
        if not self.journal.exists():
            return []
        return [json.loads(line) for line in self.journal.read_text().splitlines() if line.strip()]

    def journal_for(self, key):
        return [r for r in self.journal_lines() if r.get("idempotency_key") == key]


TMP: Path
CERTS: Path
SECRET_FILE: Path
SB: Sandbox


def setUpModule():
    global TMP, CERTS, SECRET_FILE, SB
    TMP = Path(tempfile.mkdtemp(prefix="psp-sandbox-test-"))
    CERTS = TMP / "certs"
    subprocess.run(["bash", str(MAKE_CERTS), str(CERTS)], check=True, timeout=30,
                   stdout=subprocess.DEVNULL)
    SECRET_FILE = TMP / "card.secret"
    SECRET_FILE.write_text(f"  {SECRET}\n")  # surrounding whitespace is stripped
    SB = Sandbox(TMP, CERTS, TMP / "journal.jsonl", SECRET_FILE).start()


def tearDownModule():
    try:
        rc = SB.stop()
        if rc != 0:
            raise AssertionError(f"sandbox exited {rc}:\n{SB.log()}")
    finally:
        shutil.rmtree(TMP, ignore_errors=True)


def new_key() -> str:
    # Dashes every 8 characters: a uuid's hex can hold a Luhn-valid run of 12+
    # digits, which the sandbox masks in its log as a possible card number.
    h = uuid.uuid4().hex
    return "rk_" + "-".join(h[i:i + 8] for i in range(0, 32, 8))


class TlsAndCertsTest(unittest.TestCase):
    def test_https_verifies_against_dev_ca_for_ip_san(self):
        status, _, body, _ = SB.request("GET", "/_sandbox/health")
        self.assertEqual((status, body), (200, {"ok": True}))
        # A client that does not trust the dev CA must be rejected.
        untrusting = ssl.create_default_context()
        c = http.client.HTTPSConnection("127.0.0.1", SB.port, context=untrusting, timeout=5)
        with self.assertRaises(ssl.SSLCertVerificationError):
            c.request("GET", "/_sandbox/health")
        c.close()

    def test_openssl_s_client_verify_ip(self):
        if not shutil.which("openssl"):
            self.skipTest("openssl CLI not installed")
        out = subprocess.run(
            ["openssl", "s_client", "-connect", f"127.0.0.1:{SB.port}",
             "-CAfile", str(CERTS / "ca.pem"), "-verify_ip", "127.0.0.1", "-verify_return_error"],
            input=b"", capture_output=True, timeout=10)
        self.assertEqual(out.returncode, 0, out.stderr.decode(errors="replace"))
        self.assertIn(b"Verify return code: 0 (ok)", out.stdout)

    def test_cert_script_is_idempotent_and_keys_private(self):
        before = {n: (CERTS / n).read_bytes() for n in ("ca.pem", "ca.key", "server.pem", "server.key")}
        subprocess.run(["bash", str(MAKE_CERTS), str(CERTS)], check=True, timeout=30,
                       stdout=subprocess.DEVNULL)
        after = {n: (CERTS / n).read_bytes() for n in before}
        self.assertEqual(before, after)
        for n in ("ca.key", "server.key"):
            self.assertEqual((CERTS / n).stat().st_mode & 0o777, 0o600, n)


class CardChargesTest(unittest.TestCase):
    def assert_journaled_once(self, key, **expect):
        lines = SB.journal_for(key)
        self.assertEqual(len(lines), 1, lines)
        rec = lines[0]
        self.assertEqual(rec["api"], "card")
        self.assertIsInstance(rec["ts"], float)
        for k, v in expect.items():
            self.assertEqual(rec[k], v, k)
        return rec

    def test_approve(self):
        key = new_key()
        status, hdrs, body, _ = SB.charge(APPROVE, amount=1234, currency="usd", key=key)
        self.assertEqual(status, 200, body)
        self.assertRegex(body["id"], CHARGE_ID_RE)
        self.assertEqual(body["object"], "charge")
        self.assertEqual(body["amount"], 1234)
        self.assertEqual(body["currency"], "USD")
        self.assertEqual(body["status"], "succeeded")
        self.assertIs(body["paid"], True)
        self.assertEqual(body["card_last4"], "4242")
        self.assertEqual(body["idempotency_key"], key)
        self.assertLessEqual(abs(body["created"] - time.time()), 60)
        self.assertNotIn("idempotent-replayed", hdrs)
        self.assertEqual(hdrs["content-type"], "application/json")
        self.assert_journaled_once(key, id=body["id"], amount=1234, currency="USD",
                                   status="succeeded", decline_code="", last4="4242")
        # Retrieve by id.
        st, _, got, _ = SB.request("GET", f"/v1/charges/{body['id']}",
                                   headers={"Authorization": f"Bearer {SECRET}"})
        self.assertEqual((st, got), (200, body))

    def test_other_luhn_valid_number_approves(self):
        key = new_key()
        status, _, body, _ = SB.charge(OTHER_OK, amount=1, currency="Php", key=key)
        self.assertEqual(status, 200, body)
        self.assertEqual((body["status"], body["card_last4"], body["currency"]),
                         ("succeeded", "4444", "PHP"))
        self.assert_journaled_once(key, status="succeeded", last4="4444")

    def test_declines(self):
        # 4000000000 + digits + a Luhn check digit: the declining range.
        ranged = luhn_complete("400000000012345")
        for number, code in ((DECLINE, "card_declined"), (NSF, "insufficient_funds"),
                             (ranged, "card_declined")):
            with self.subTest(code=code):
                key = new_key()
                status, _, body, _ = SB.charge(number, amount=500, key=key)
                self.assertEqual(status, 402, body)
                err = body["error"]
                self.assertEqual(err["type"], "card_error")
                self.assertEqual(err["code"], "card_declined")
                self.assertEqual(err["decline_code"], code)
                self.assertEqual(err["message"], "Your card was declined.")
                self.assertRegex(err["charge"], CHARGE_ID_RE)
                self.assert_journaled_once(key, id=err["charge"], status="failed",
                                           decline_code=code, last4=number[-4:], amount=500)
                st, _, ch, _ = SB.request("GET", f"/v1/charges/{err['charge']}",
                                          headers={"Authorization": f"Bearer {SECRET}"})
                self.assertEqual(st, 200)
                self.assertEqual((ch["status"], ch["paid"], ch["failure_code"]),
                                 ("failed", False, code))
                # A replayed decline is byte-identical.
                st2, hdrs2, _, raw2 = SB.charge(number, amount=500, key=key)
                self.assertEqual(st2, 402)
                self.assertEqual(hdrs2.get("idempotent-replayed"), "true")
                self.assertEqual(json.loads(raw2), body)
                self.assertEqual(len(SB.journal_for(key)), 1)

    def test_validation_errors_name_the_param_and_charge_nothing(self):
        cases = [
            ("card[number]", dict(number="4242424242424241")),               # bad Luhn
            ("card[number]", dict(number="42424242")),                       # too short
            ("card[number]", dict(number="4242-4242-4242-4242")),            # not digits
            ("amount", dict(amount=0)),
            ("amount", dict(amount="-5")),
            ("amount", dict(omit=("amount",))),
            ("currency", dict(currency="US")),
            ("card[exp_month]", dict(extra={"card[exp_month]": "13"})),
            ("card[exp_year]", dict(extra={"card[exp_year]": "2001"})),
            ("card[cvc]", dict(omit=("card[cvc]",))),
        ]
        for param, kw in cases:
            with self.subTest(param=param, kw=kw):
                key = new_key()
                status, _, body, raw = SB.charge(key=key, **kw)
                self.assertEqual(status, 400, body)
                self.assertEqual(body["error"]["type"], "invalid_request_error")
                self.assertEqual(body["error"]["code"], "parameter_invalid")
                self.assertEqual(body["error"]["param"], param)
                self.assertNotIn(b"4242424242424241", raw)
                self.assertEqual(SB.journal_for(key), [])
                # Validation errors are not stored under the key.
                st, _, lst, _ = SB.lookup(key)
                self.assertEqual((st, lst["data"]), (200, []))

    def test_missing_or_wrong_auth_is_401(self):
        expected = {"error": {"type": "invalid_request_error", "code": "unauthorized",
                              "message": "Invalid API key provided."}}
        wrong = "sk_test_wrong_" + uuid.uuid4().hex
        for auth in (False, f"Bearer {wrong}", f"Basic {SECRET}"):
            with self.subTest(auth=auth):
                key = new_key()
                status, _, body, raw = SB.charge(key=key, auth=auth)
                self.assertEqual((status, body), (401, expected))
                self.assertNotIn(wrong.encode(), raw)
                self.assertNotIn(SECRET.encode(), raw)
                self.assertEqual(SB.journal_for(key), [])
        self.assertEqual(SB.lookup(new_key(), auth=False)[0], 401)
        self.assertEqual(SB.request("GET", "/v1/charges/ch_000000000000000000000000")[0], 401)

    def test_idempotent_replay(self):
        key = new_key()
        s1, h1, b1, raw1 = SB.charge(key=key, amount=777)
        s2, h2, b2, raw2 = SB.charge(key=key, amount=777)
        self.assertEqual((s1, s2), (200, 200))
        self.assertEqual(raw1, raw2)
        self.assertEqual(b1["id"], b2["id"])
        self.assertNotIn("idempotent-replayed", h1)
        self.assertEqual(h2.get("idempotent-replayed"), "true")
        self.assert_journaled_once(key, id=b1["id"])

    def test_same_key_different_params_is_idempotency_error(self):
        key = new_key()
        s1, _, b1, _ = SB.charge(key=key, amount=100)
        self.assertEqual(s1, 200)
        for kw in (dict(amount=101), dict(currency="eur"), dict(number=OTHER_OK)):
            with self.subTest(kw=kw):
                s2, _, b2, _ = SB.charge(key=key, **{"amount": 100, **kw})
                self.assertEqual(s2, 400, b2)
                self.assertEqual(b2["error"]["type"], "idempotency_error")
                self.assertEqual(b2["error"]["code"], "idempotency_key_reused")
        self.assert_journaled_once(key, id=b1["id"], amount=100)
        # The original still replays.
        s3, h3, b3, _ = SB.charge(key=key, amount=100)
        self.assertEqual((s3, b3["id"], h3.get("idempotent-replayed")), (200, b1["id"], "true"))

    def test_concurrent_same_key_charges_once(self):
        key = new_key()
        n = 20
        SB.set_config(latency_ms=100)  # widen the race window
        try:
            barrier = threading.Barrier(n)
            results = [None] * n

            def worker(i):
                c = SB.conn()
                try:
                    c.connect()  # TLS handshake before the barrier
                    barrier.wait(timeout=10)
                    results[i] = SB.charge(key=key, amount=4321, conn=c)
                except Exception as e:  # surfaced by the assertions below
                    results[i] = e
                finally:
                    c.close()

            threads = [threading.Thread(target=worker, args=(i,)) for i in range(n)]
            t0 = time.monotonic()
            for t in threads:
                t.start()
            for t in threads:
                t.join(timeout=30)
            elapsed = time.monotonic() - t0
        finally:
            SB.set_config(latency_ms=0)
        for r in results:
            self.assertIsInstance(r, tuple, r)
            self.assertEqual(r[0], 200, r)
        ids = {r[2]["id"] for r in results}
        self.assertEqual(len(ids), 1, ids)
        originals = [r for r in results if r[1].get("idempotent-replayed") != "true"]
        self.assertEqual(len(originals), 1)
        self.assertGreaterEqual(elapsed, 0.1)  # latency injection applied
        self.assert_journaled_once(key, id=ids.pop(), amount=4321)

    def test_lookup_by_idempotency_key(self):
        key = new_key()
        s, _, charged, _ = SB.charge(key=key, amount=2500)
        self.assertEqual(s, 200)
        st, _, lst, _ = SB.lookup(key)
        self.assertEqual(st, 200)
        self.assertEqual(lst["object"], "list")
        self.assertEqual(lst["data"], [charged])
        # Declined charges are found too.
        dkey = new_key()
        s, _, dbody, _ = SB.charge(NSF, key=dkey)
        self.assertEqual(s, 402)
        st, _, lst, _ = SB.lookup(dkey)
        self.assertEqual(st, 200)
        self.assertEqual(len(lst["data"]), 1)
        self.assertEqual(lst["data"][0]["id"], dbody["error"]["charge"])
        self.assertEqual(lst["data"][0]["status"], "failed")
        self.assertEqual(lst["data"][0]["failure_code"], "insufficient_funds")
        # Not found.
        st, _, lst, _ = SB.lookup(new_key())
        self.assertEqual((st, lst["object"], lst["data"]), (200, "list", []))

    def test_error_injection_then_retry_succeeds(self):
        key = new_key()
        cfg = SB.set_config(error_rate=1.0)
        try:
            self.assertEqual(cfg["error_rate"], 1.0)
            st, _, cur, _ = SB.request("GET", "/_sandbox/config")
            self.assertEqual((st, cur["error_rate"]), (200, 1.0))
            for _ in range(2):
                status, hdrs, body, _ = SB.charge(key=key, amount=999)
                self.assertEqual(status, 500, body)
                self.assertEqual(body["error"]["type"], "api_error")
                self.assertEqual(body["error"]["code"], "internal_error")
                self.assertIs(body["error"]["charged"], False)
                self.assertNotIn("idempotent-replayed", hdrs)
            self.assertEqual(SB.journal_for(key), [])
            self.assertEqual(SB.lookup(key)[2]["data"], [])
        finally:
            self.assertEqual(SB.set_config(error_rate=0)["error_rate"], 0.0)
        status, hdrs, body, _ = SB.charge(key=key, amount=999)
        self.assertEqual(status, 200, body)
        self.assertNotIn("idempotent-replayed", hdrs)
        self.assert_journaled_once(key, id=body["id"], amount=999)

    def test_journal_and_log_never_contain_card_data_or_secret(self):
        unique = luhn_complete("4" + str(uuid.uuid4().int)[:14])
        keys = []
        for number in (unique, *ALL_TEST_NUMBERS):
            keys.append(new_key())
            SB.charge(number, key=keys[-1])
        self.assertEqual(len(SB.journal_for(keys[0])), 1)
        journal = SB.journal.read_text()
        for number in (unique, *ALL_TEST_NUMBERS):
            self.assertNotIn(number, journal)
        self.assertNotIn(SECRET, journal)
        for rec in SB.journal_lines():
            self.assertEqual(set(rec), {"ts", "api", "id", "idempotency_key", "amount",
                                        "currency", "status", "decline_code", "last4"})
        # The access log line is written after the response; wait for it.
        deadline = time.monotonic() + 5
        while keys[-1] not in SB.log() and time.monotonic() < deadline:
            time.sleep(0.02)
        log = SB.log()
        self.assertIn(keys[-1], log)
        self.assertIn("POST /v1/charges", log)
        for number in (unique, *ALL_TEST_NUMBERS):
            self.assertNotIn(number, log)
        self.assertNotIn(SECRET, log)
        self.assertNotIn(f"cvc={CVC}", log)

    def test_control_config_validation_and_unknown_paths(self):
        st, _, body, _ = SB.request("POST", "/_sandbox/config", json.dumps({"error_rate": 2}),
                                    {"Content-Type": "application/json"})
        self.assertEqual(st, 400, body)
        st, _, body, _ = SB.request("POST", "/_sandbox/config", json.dumps({"bogus": 1}),
                                    {"Content-Type": "application/json"})
        self.assertEqual(st, 400, body)
        self.assertEqual(SB.request("GET", "/_sandbox/config")[2]["error_rate"], 0.0)
        st, _, body, _ = SB.request("GET", "/nope")
        self.assertEqual((st, body["error"]["code"]), (404, "resource_missing"))
        st, _, body, _ = SB.request("GET", "/v1/charges/ch_000000000000000000000000",
                                    headers={"Authorization": f"Bearer {SECRET}"})
        self.assertEqual((st, body["error"]["code"]), (404, "resource_missing"))

    def test_keep_alive_and_robust_to_broken_clients(self):
        # Several requests on one kept-alive connection.
        c = SB.conn()
        try:
            for _ in range(3):
                st, hdrs, body, _ = SB.request("GET", "/_sandbox/health", conn=c)
                self.assertEqual((st, body), (200, {"ok": True}))
                self.assertIn("content-length", hdrs)
        finally:
            c.close()
        # Plain TCP connect and close without a TLS handshake.
        socket.create_connection(("127.0.0.1", SB.port), timeout=5).close()
        # Garbage instead of a TLS ClientHello.
        with socket.create_connection(("127.0.0.1", SB.port), timeout=5) as s:
            s.sendall(b"GET / HTTP/1.1\r\n\r\n")
            try:
                s.recv(100)
            except OSError:
                pass
        # TLS client that disconnects mid-body.
        key = new_key()
        raw = socket.create_connection(("127.0.0.1", SB.port), timeout=5)
        with SB.ssl_ctx.wrap_socket(raw, server_hostname="127.0.0.1") as tls:
            tls.sendall(b"POST /v1/charges HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                        b"Authorization: Bearer " + SECRET.encode() + b"\r\n"
                        b"Idempotency-Key: " + key.encode() + b"\r\n"
                        b"Content-Type: application/x-www-form-urlencoded\r\n"
                        b"Content-Length: 500\r\n\r\namount=10&curr")
        # The server is still healthy and took no charge.
        self.assertEqual(SB.request("GET", "/_sandbox/health")[:1], (200,))
        self.assertEqual(SB.journal_for(key), [])
        s, _, body, _ = SB.charge(key=key)
        self.assertEqual(s, 200, body)


class RestartTest(unittest.TestCase):
    def test_restart_keeps_idempotency_and_exits_cleanly(self):
        workdir = TMP / "restart"
        workdir.mkdir()
        sb = Sandbox(workdir, CERTS, workdir / "journal.jsonl", SECRET_FILE)
        sb.start()
        try:
            key, dkey = new_key(), new_key()
            s1, _, b1, raw1 = sb.charge(key=key, amount=3000)
            s2, _, b2, raw2 = sb.charge(DECLINE, key=dkey, amount=40)
            self.assertEqual((s1, s2), (200, 402))
        finally:
            self.assertEqual(sb.stop(), 0, sb.log())  # SIGTERM -> exit 0
        self.assertEqual(len(sb.journal_lines()), 2)

        sb.start()
        try:
            s, h, b, raw = sb.charge(key=key, amount=3000)
            self.assertEqual(s, 200, b)
            self.assertEqual(b["id"], b1["id"])
            self.assertEqual(raw, raw1)
            self.assertEqual(h.get("idempotent-replayed"), "true")
            s, h, b, raw = sb.charge(DECLINE, key=dkey, amount=40)
            self.assertEqual((s, raw, h.get("idempotent-replayed")), (402, raw2, "true"))
            # Lookup and retrieve work for restored charges.
            st, _, lst, _ = sb.lookup(key)
            self.assertEqual((st, [c["id"] for c in lst["data"]]), (200, [b1["id"]]))
            # Different parameters under a restored key are still refused.
            s, _, b, _ = sb.charge(key=key, amount=3001)
            self.assertEqual((s, b["error"]["type"]), (400, "idempotency_error"))
            # New charges still work and nothing was re-journaled.
            s, _, _, _ = sb.charge(key=new_key())
            self.assertEqual(s, 200)
            self.assertEqual(len(sb.journal_lines()), 3)
            self.assertEqual(len(sb.journal_for(key)), 1)
        finally:
            self.assertEqual(sb.stop(), 0, sb.log())
        self.assertIn("2 charges restored", sb.log())


# ----------------------------------------------------------------------------
# Card lifecycle: authorisation holds, capture, void, refunds
# ----------------------------------------------------------------------------

CHARGE_JOURNAL_KEYS = {"ts", "api", "id", "idempotency_key", "amount", "currency", "status",
                       "decline_code", "last4"}
CAPTURE_VOID_JOURNAL_KEYS = {"ts", "api", "op", "id", "idempotency_key", "amount", "currency"}
REFUND_JOURNAL_KEYS = {"ts", "api", "op", "id", "charge", "idempotency_key", "amount", "currency",
                       "status", "reason"}
REFUND_ID_RE = re.compile(r"^re_[0-9a-f]{24}$")


class Lifecycle:
    """Card lifecycle calls against one sandbox."""

    def __init__(self, sb: Sandbox):
        self.sb = sb

    def auth(self, key=None, form=True):
        h = {"Authorization": f"Bearer {SECRET}"}
        if form:
            h["Content-Type"] = "application/x-www-form-urlencoded"
        if key is not None:
            h["Idempotency-Key"] = key
        return h

    def hold(self, amount=1000, key=None, number=APPROVE):
        status, _, body, raw = self.sb.charge(number, amount=amount, key=key or new_key(),
                                              extra={"capture": "false"})
        return status, body, raw

    def approved_hold(self, amount=1000):
        status, body, _ = self.hold(amount)
        assert status == 200, body
        return body["id"]

    def captured_charge(self, amount=1000):
        status, _, body, _ = self.sb.charge(amount=amount, key=new_key())
        assert status == 200, body
        return body["id"]

    def op(self, charge_id, op, key=None, body=""):
        return self.sb.request("POST", f"/v1/charges/{charge_id}/{op}", body,
                               self.auth(key, form=bool(body)))

    def refund(self, charge_id, key=None, **fields):
        form = {"charge": charge_id, **fields} if charge_id is not None else dict(fields)
        return self.sb.request("POST", "/v1/refunds", urllib.parse.urlencode(form),
                               self.auth(key))

    def retrieve(self, charge_id):
        st, _, body, _ = self.sb.request("GET", f"/v1/charges/{charge_id}",
                                         headers=self.auth(form=False))
        assert st == 200, body
        return body

    def refund_lookup(self, key):
        return self.sb.request("GET", "/v1/refunds?" + urllib.parse.urlencode(
            {"idempotency_key": key}), headers=self.auth(form=False))

    def ops(self, op=None, charge_id=None):
        return [r for r in self.sb.journal_lines() if "op" in r and (op is None or r["op"] == op)
                and (charge_id is None or r.get("charge", r["id"]) == charge_id)]


class CardLifecycleTest(unittest.TestCase):
    """On a sandbox of its own: its journal holds the new lines ("op", and
    "captured" on holds), which CardChargesTest's whole-journal check does not
    expect."""

    sb: Sandbox
    lc: Lifecycle

    @classmethod
    def setUpClass(cls):
        workdir = TMP / "lifecycle"
        workdir.mkdir()
        cls.sb = Sandbox(workdir, CERTS, workdir / "journal.jsonl", SECRET_FILE).start()
        cls.lc = Lifecycle(cls.sb)

    @classmethod
    def tearDownClass(cls):
        rc = cls.sb.stop()
        if rc != 0:
            raise AssertionError(f"sandbox exited {rc}:\n{cls.sb.log()}")

    def assert_refused(self, result, status, code, key=None):
        st, _, body, _ = result
        self.assertEqual((st, body["error"]["code"]), (status, code), body)
        if key is not None:
            self.assertEqual(self.sb.journal_for(key), [])

    def test_hold_then_capture(self):
        key = new_key()
        status, held, raw_held = self.lc.hold(amount=2100, key=key)
        self.assertEqual(status, 200, held)
        self.assertEqual((held["status"], held["paid"], held["captured"], held["voided"],
                          held["refunded"], held["amount_refunded"]),
                         ("succeeded", True, False, False, False, 0))
        line = self.sb.journal_for(key)
        self.assertEqual(len(line), 1)
        self.assertEqual(set(line[0]), CHARGE_JOURNAL_KEYS | {"captured"})
        self.assertIs(line[0]["captured"], False)
        self.assertEqual(self.lc.retrieve(held["id"]), held)

        ckey = new_key()
        st, hdrs, captured, raw = self.lc.op(held["id"], "capture", ckey)
        self.assertEqual(st, 200, captured)
        self.assertNotIn("idempotent-replayed", hdrs)
        self.assertEqual(captured, {**held, "captured": True})
        self.assertEqual(self.lc.retrieve(held["id"]), captured)
        rec = self.sb.journal_for(ckey)
        self.assertEqual(len(rec), 1, rec)
        self.assertEqual(set(rec[0]), CAPTURE_VOID_JOURNAL_KEYS)
        self.assertEqual((rec[0]["api"], rec[0]["op"], rec[0]["id"], rec[0]["amount"],
                          rec[0]["currency"]), ("card", "capture", held["id"], 2100, "USD"))
        self.assertIsInstance(rec[0]["ts"], float)
        # Replay: byte-identical, one journal line.
        st2, hdrs2, _, raw2 = self.lc.op(held["id"], "capture", ckey)
        self.assertEqual((st2, raw2, hdrs2.get("idempotent-replayed")), (200, raw, "true"))
        self.assertEqual(len(self.sb.journal_for(ckey)), 1)
        # The hold's own replay still answers what the create call answered;
        # the lookup shows the charge as it is now.
        st3, _, raw3 = self.lc.hold(amount=2100, key=key)
        self.assertEqual((st3, raw3), (200, raw_held))
        self.assertEqual(self.sb.lookup(key)[2]["data"], [captured])
        # A capture without a key works too (here refused: captured already).
        self.assert_refused(self.lc.op(held["id"], "capture"), 400, "charge_already_captured")
        self.assertEqual(len(self.lc.ops("capture", held["id"])), 1)

    def test_existing_charges_are_captured_and_declines_are_not(self):
        status, _, body, _ = self.sb.charge(key=new_key())
        self.assertEqual((status, body["captured"], body["voided"], body["refunded"],
                          body["amount_refunded"]), (200, True, False, False, 0))
        status, _, body, _ = self.sb.charge(key=new_key(), extra={"capture": "true"})
        self.assertEqual((status, body["captured"]), (200, True))
        key = new_key()
        status, body, _ = self.lc.hold(key=key, number=DECLINE)
        self.assertEqual((status, body["error"]["decline_code"]), (402, "card_declined"))
        failed = self.lc.retrieve(body["error"]["charge"])
        self.assertEqual((failed["status"], failed["captured"]), ("failed", False))
        self.assertNotIn("captured", self.sb.journal_for(key)[0])  # not a hold

    def test_capture_param_is_validated_and_fingerprinted(self):
        for value in ("maybe", "False", "1", ""):
            with self.subTest(value=value):
                key = new_key()
                st, _, body, _ = self.sb.charge(key=key, extra={"capture": value})
                if value == "":  # blank: the default
                    self.assertEqual((st, body["captured"]), (200, True))
                    continue
                self.assertEqual((st, body["error"]["param"]), (400, "capture"), body)
                self.assertEqual(self.sb.journal_for(key), [])
        key = new_key()
        self.assertEqual(self.lc.hold(key=key)[0], 200)
        st, _, body, _ = self.sb.charge(key=key)  # same key, capture omitted
        self.assertEqual((st, body["error"]["type"]), (400, "idempotency_error"))
        self.assertEqual(len(self.sb.journal_for(key)), 1)

    def test_capture_refusals_journal_nothing(self):
        voided = self.lc.approved_hold()
        self.assertEqual(self.lc.op(voided, "void")[0], 200)
        st, _, declined, _ = self.sb.charge(NSF, key=new_key())
        self.assertEqual(st, 402)
        cases = [(self.lc.captured_charge(), 400, "charge_already_captured"),
                 (voided, 400, "charge_voided"),
                 (declined["error"]["charge"], 400, "charge_not_authorized"),
                 ("ch_000000000000000000000000", 404, "resource_missing")]
        for charge_id, status, code in cases:
            with self.subTest(code=code):
                key = new_key()
                for _ in range(2):  # a refusal is not stored under the key
                    result = self.lc.op(charge_id, "capture", key)
                    self.assert_refused(result, status, code, key)
                    self.assertNotIn("idempotent-replayed", result[1])
        self.assertEqual(self.lc.ops("capture", voided), [])

    def test_void_and_its_refusals(self):
        held = self.lc.approved_hold(amount=555)
        key = new_key()
        st, _, body, raw = self.lc.op(held, "void", key)
        self.assertEqual(st, 200, body)
        self.assertEqual((body["captured"], body["voided"], body["refunded"]), (False, True, False))
        rec = self.sb.journal_for(key)
        self.assertEqual(len(rec), 1)
        self.assertEqual(set(rec[0]), CAPTURE_VOID_JOURNAL_KEYS)
        self.assertEqual((rec[0]["op"], rec[0]["id"], rec[0]["amount"]), ("void", held, 555))
        st2, h2, _, raw2 = self.lc.op(held, "void", key)
        self.assertEqual((st2, raw2, h2.get("idempotent-replayed")), (200, raw, "true"))
        self.assert_refused(self.lc.op(held, "void", new_key()), 400, "charge_already_voided")
        self.assert_refused(self.lc.op(self.lc.captured_charge(), "void", new_key()), 400,
                            "charge_already_captured")
        self.assert_refused(self.lc.refund(held, new_key()), 400, "charge_voided")
        self.assert_refused(self.lc.op("ch_nope", "void", new_key()), 404, "resource_missing")
        self.assertEqual(len(self.lc.ops(charge_id=held)), 1)
        # Capture and void take no parameters.
        st, _, body, _ = self.lc.op(self.lc.approved_hold(), "capture", new_key(), "amount=1000")
        self.assertEqual((st, body["error"]["code"]), (400, "parameter_unknown"))

    def test_refund(self):
        charge = self.lc.captured_charge(amount=4200)
        key = new_key()
        st, hdrs, refund, raw = self.lc.refund(charge, key, reason="requested_by_customer")
        self.assertEqual(st, 200, refund)
        self.assertRegex(refund["id"], REFUND_ID_RE)
        self.assertEqual({k: v for k, v in refund.items() if k not in ("id", "created")},
                         {"object": "refund", "charge": charge, "amount": 4200, "currency": "USD",
                          "status": "succeeded", "reason": "requested_by_customer",
                          "idempotency_key": key})
        self.assertLessEqual(abs(refund["created"] - time.time()), 60)
        now = self.lc.retrieve(charge)
        self.assertEqual((now["refunded"], now["amount_refunded"], now["captured"]),
                         (True, 4200, True))
        rec = self.sb.journal_for(key)
        self.assertEqual(len(rec), 1)
        self.assertEqual(set(rec[0]), REFUND_JOURNAL_KEYS)
        self.assertEqual((rec[0]["api"], rec[0]["op"], rec[0]["id"], rec[0]["charge"],
                          rec[0]["amount"], rec[0]["currency"], rec[0]["status"],
                          rec[0]["reason"]),
                         ("card", "refund", refund["id"], charge, 4200, "USD", "succeeded",
                          "requested_by_customer"))
        # Replay, and the lookup by key.
        st2, h2, _, raw2 = self.lc.refund(charge, key, reason="requested_by_customer")
        self.assertEqual((st2, raw2, h2.get("idempotent-replayed")), (200, raw, "true"))
        self.assertNotIn("idempotent-replayed", hdrs)
        st, _, lst, _ = self.lc.refund_lookup(key)
        self.assertEqual((st, lst["object"], lst["data"]), (200, "list", [refund]))
        self.assertEqual(self.lc.refund_lookup(new_key())[2]["data"], [])
        self.assertEqual(self.sb.lookup(key)[2]["data"], [])  # a refund key holds no charge
        # With amount (the charge's) and without reason.
        other = self.lc.captured_charge(amount=99)
        st, _, body, _ = self.lc.refund(other, new_key(), amount="99")
        self.assertEqual((st, body["amount"], body["reason"]), (200, 99, None))
        self.assertEqual(len(self.lc.ops("refund", charge)), 1)

    def test_refund_refusals_journal_nothing(self):
        refunded = self.lc.captured_charge()
        self.assertEqual(self.lc.refund(refunded)[0], 200)
        st, _, declined, _ = self.sb.charge(DECLINE, key=new_key())
        ok = self.lc.captured_charge(amount=1000)
        cases = [
            ("already", self.lc.refund(refunded, k := new_key()), k, 400,
             "charge_already_refunded", None),
            ("hold", self.lc.refund(self.lc.approved_hold(), k := new_key()), k, 400,
             "charge_not_captured", None),
            ("failed", self.lc.refund(declined["error"]["charge"], k := new_key()), k, 400,
             "charge_not_authorized", None),
            ("unknown", self.lc.refund("ch_nope", k := new_key()), k, 404, "resource_missing",
             "charge"),
            ("partial", self.lc.refund(ok, k := new_key(), amount="999"), k, 400,
             "parameter_invalid", "amount"),
            ("more", self.lc.refund(ok, k := new_key(), amount="1001"), k, 400,
             "parameter_invalid", "amount"),
            ("no charge", self.lc.refund(None, k := new_key()), k, 400, "parameter_invalid",
             "charge"),
            ("long reason", self.lc.refund(ok, k := new_key(), reason="x" * 501), k, 400,
             "parameter_invalid", "reason"),
            ("unknown param", self.lc.refund(ok, k := new_key(), metadata="x"), k, 400,
             "parameter_unknown", "metadata"),
        ]
        for name, result, key, status, code, param in cases:
            with self.subTest(name):
                self.assert_refused(result, status, code, key)
                if param:
                    self.assertEqual(result[2]["error"]["param"], param)
                self.assertEqual(self.lc.refund_lookup(key)[2]["data"], [])
        self.assertEqual(self.lc.retrieve(ok)["refunded"], False)
        self.assertEqual(len(self.lc.ops("refund", refunded)), 1)
        self.assertEqual(self.sb.request("POST", "/v1/refunds", "charge=" + ok)[0], 401)

    def test_same_key_for_another_request_is_idempotency_error(self):
        a, b = self.lc.approved_hold(), self.lc.approved_hold()
        key = new_key()
        self.assertEqual(self.lc.op(a, "capture", key)[0], 200)
        for name, result in (("other charge", self.lc.op(b, "capture", key)),
                             ("void", self.lc.op(a, "void", key)),
                             ("refund", self.lc.refund(a, key)),
                             ("charge", self.sb.charge(key=key))):
            with self.subTest(name):
                st, _, body, _ = result
                self.assertEqual((st, body["error"]["type"], body["error"]["code"]),
                                 (400, "idempotency_error", "idempotency_key_reused"))
        rkey = new_key()
        self.assertEqual(self.lc.refund(a, rkey, reason="duplicate")[0], 200)
        st, _, body, _ = self.lc.refund(a, rkey, reason="fraudulent")
        self.assertEqual((st, body["error"]["type"]), (400, "idempotency_error"))
        self.assertEqual(len(self.sb.journal_for(key)), 1)
        self.assertEqual(len(self.sb.journal_for(rkey)), 1)
        self.assertEqual(self.lc.retrieve(b)["captured"], False)

    def test_error_injection_changes_nothing_then_retry_succeeds(self):
        held, key = self.lc.approved_hold(), new_key()
        self.sb.set_config(error_rate=1.0)
        try:
            st, _, body, _ = self.lc.op(held, "capture", key)
            self.assertEqual((st, body["error"]["code"]), (500, "internal_error"))
        finally:
            self.sb.set_config(error_rate=0)
        self.assertEqual((self.sb.journal_for(key), self.lc.retrieve(held)["captured"]),
                         ([], False))
        st, hdrs, body, _ = self.lc.op(held, "capture", key)
        self.assertEqual((st, body["captured"]), (200, True))
        self.assertNotIn("idempotent-replayed", hdrs)

    def race(self, calls):
        """Runs the calls at once (TLS connected first); their results."""
        barrier = threading.Barrier(len(calls))
        results: list = [None] * len(calls)

        def worker(i):
            c = self.sb.conn()
            try:
                c.connect()
                barrier.wait(timeout=10)
                method, path, body, headers = calls[i]
                results[i] = self.sb.request(method, path, body, headers, c)
            except Exception as e:  # surfaced by the assertions
                results[i] = e
            finally:
                c.close()

        threads = [threading.Thread(target=worker, args=(i,)) for i in range(len(calls))]
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=30)
        for r in results:
            self.assertIsInstance(r, tuple, r)
        return results

    def test_concurrent_operations_on_one_charge_have_one_winner(self):
        self.sb.set_config(latency_ms=50)  # widen the race window
        try:
            held = self.lc.approved_hold()
            n = 8
            results = self.race([("POST", f"/v1/charges/{held}/capture", "",
                                  self.lc.auth(new_key(), form=False)) for _ in range(n)])
            self.assertEqual(sorted(r[0] for r in results), [200] + [400] * (n - 1))
            self.assertEqual({r[2]["error"]["code"] for r in results if r[0] == 400},
                             {"charge_already_captured"})
            self.assertEqual(len(self.lc.ops("capture", held)), 1)

            # Capture, void and refund racing on one hold: one of capture or
            # void wins; a refund can only follow a capture.
            held = self.lc.approved_hold()
            calls = []
            for _ in range(3):
                calls.append(("POST", f"/v1/charges/{held}/capture", "",
                              self.lc.auth(new_key(), form=False)))
                calls.append(("POST", f"/v1/charges/{held}/void", "",
                              self.lc.auth(new_key(), form=False)))
            results = self.race(calls)
            self.assertEqual(sorted(r[0] for r in results), [200] + [400] * 5)
            winner = [r[2] for r in results if r[0] == 200][0]
            self.assertNotEqual(winner["captured"], winner["voided"])
            self.assertEqual(len(self.lc.ops(charge_id=held)), 1)

            charge = self.lc.captured_charge()
            results = self.race([("POST", "/v1/refunds", f"charge={charge}", self.lc.auth(new_key()))
                                 for _ in range(n)])
            self.assertEqual(sorted(r[0] for r in results), [200] + [400] * (n - 1))
            self.assertEqual({r[2]["error"]["code"] for r in results if r[0] == 400},
                             {"charge_already_refunded"})
            self.assertEqual(len(self.lc.ops("refund", charge)), 1)
        finally:
            self.sb.set_config(latency_ms=0)


class CardLifecycleRestartTest(unittest.TestCase):
    def test_state_and_replays_survive_a_restart(self):
        workdir = TMP / "lifecycle-restart"
        workdir.mkdir()
        sb = Sandbox(workdir, CERTS, workdir / "journal.jsonl", SECRET_FILE)
        lc = Lifecycle(sb)
        sb.start()
        try:
            hkey, ckey, rkey, vkey = new_key(), new_key(), new_key(), new_key()
            s, held, raw_held = lc.hold(amount=700, key=hkey)
            self.assertEqual(s, 200)
            capture = lc.op(held["id"], "capture", ckey)
            refund = lc.refund(held["id"], rkey, reason="fraudulent")
            voided_id = lc.approved_hold(amount=300)
            void = lc.op(voided_id, "void", vkey)
            self.assertEqual([r[0] for r in (capture, refund, void)], [200, 200, 200])
            before = {i: lc.retrieve(i) for i in (held["id"], voided_id)}
        finally:
            self.assertEqual(sb.stop(), 0, sb.log())
        lines = sb.journal_lines()
        self.assertEqual(len(lines), 5)

        sb.start()
        try:
            self.assertEqual({i: lc.retrieve(i) for i in before}, before)
            self.assertEqual(lc.hold(amount=700, key=hkey)[::2], (200, raw_held))
            for (s, _, _, raw), again in (
                    (capture, lambda: lc.op(held["id"], "capture", ckey)),
                    (refund, lambda: lc.refund(held["id"], rkey, reason="fraudulent")),
                    (void, lambda: lc.op(voided_id, "void", vkey))):
                s2, h2, _, raw2 = again()
                self.assertEqual((s2, raw2, h2.get("idempotent-replayed")), (s, raw, "true"))
            self.assertEqual(lc.refund_lookup(rkey)[2]["data"], [refund[2]])
            # Different requests under restored keys are refused, and state holds.
            self.assertEqual(lc.refund(held["id"], rkey, reason="other")[2]["error"]["type"],
                             "idempotency_error")
            self.assertEqual(lc.op(voided_id, "capture", ckey)[2]["error"]["type"],
                             "idempotency_error")
            self.assertEqual(lc.refund(held["id"], new_key())[2]["error"]["code"],
                             "charge_already_refunded")
            self.assertEqual(lc.op(voided_id, "capture", new_key())[2]["error"]["code"],
                             "charge_voided")
            self.assertEqual(len(sb.journal_lines()), 5)
        finally:
            self.assertEqual(sb.stop(), 0, sb.log())
        self.assertIn("2 charges restored, 3 operations restored", sb.log())

        # A corrupt or impossible operation line stops start-up (DataLoss).
        good = sb.journal.read_text()
        for bad in ("{\"ts\":1.0,\"api\":\"card\",\"op\":\"capture\",\"id\":\"ch_unknown\"}",
                    json.dumps({**lines[2], "op": "frobnicate"}),
                    json.dumps(lines[2])):  # refunded twice
            with self.subTest(bad=bad):
                sb.journal.write_text(good + bad + "\n")
                with self.assertRaises(AssertionError) as cm:
                    sb.start()
                self.assertIn("cannot load journal", str(cm.exception))
                sb._log.close()
        sb.journal.write_text(good)

if __name__ == "__main__":
    unittest.main()
