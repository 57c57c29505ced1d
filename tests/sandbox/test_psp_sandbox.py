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


if __name__ == "__main__":
    unittest.main()
