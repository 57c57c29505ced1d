#!/usr/bin/python3
"""Issue 7 acceptance, on the real gateway: callers and roles (bearer
tokens, client certificates), TLS and mTLS, certificate rotation on SIGHUP,
per-caller rate limits, and the audit log of admin actions.

    /usr/bin/python3 -m unittest -v tests/e2e/test_security.py
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import time
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import grpc  # noqa: E402

from stack import (GATEWAY_BIN, MAKE_CERTS, HEALTH_SERVING, Stack, card_request,  # noqa: E402
                   free_port, new_key, pb, pb_grpc, sha256_hex, wait_until)

RPC_TIMEOUT_S = 20
APPROVED = pb.RECHARGE_STATUS_APPROVED

REVIEW_RULES = """
version: "security-e2e.1"
fail_mode: open
counters:
  user_recharges_1h: { count: true, per: user_id, window: 1h }
rules:
  - id: review-coins-330
    when: package_id == "coins_330"
    action: review
    reason: held for the security tests
"""


def all_methods() -> list[str]:
    """Every RPC of RechargeGateway and FraudAdmin, from the proto itself."""
    out = []
    for service in ("RechargeGateway", "FraudAdmin"):
        for m in pb.DESCRIPTOR.services_by_name[service].methods:
            out.append(f"/{pb.DESCRIPTOR.package}.{service}/{m.name}")
    return out


def call_raw(channel: grpc.Channel, method: str, body: bytes = b"", timeout: float = RPC_TIMEOUT_S):
    """Calls `method` with a raw (serialized) request; returns the response bytes."""
    fn = channel.unary_unary(method, request_serializer=lambda x: x,
                             response_deserializer=lambda x: x)
    return fn(body, timeout=timeout)


def code_of(fn, *args, **kwargs) -> tuple[grpc.StatusCode, str]:
    try:
        fn(*args, **kwargs)
    except grpc.RpcError as e:
        return e.code(), e.details() or ""
    return grpc.StatusCode.OK, ""


def key_claimed(stack: Stack, key: str) -> bool:
    rows = stack.ledger_rows("SELECT count(*) FROM idempotency_keys WHERE key = ?", (key,))
    return rows[0][0] > 0


def review_request(**extra):
    return card_request(package_id="coins_330", minor_units=499, **extra)


class TokenAuthTest(unittest.TestCase):
    """Plaintext on loopback (as run.sh serves it), callers enforced."""

    stack: Stack

    @classmethod
    def setUpClass(cls):
        cls.stack = Stack("security-tokens")
        cls.stack.fraud_rules_text = REVIEW_RULES
        cls.stack.limited_token = "lim-" + os.urandom(16).hex()
        cls.stack.callers_extra = (
            "\n  - name: e2e-limited\n    roles: [app]"
            f"\n    token_sha256: [{sha256_hex(cls.stack.limited_token)}]"
            "\n    rate_limit: { per_second: 1, burst: 3 }")
        cls.stack.start()

    @classmethod
    def tearDownClass(cls):
        cls.stack.stop()

    def channel(self, token=None) -> grpc.Channel:
        ch = self.stack.raw_channel(token=token)
        self.addCleanup(ch.close)
        return ch

    def test_every_rpc_without_a_token_is_unauthenticated_but_health_and_reflection_answer(self):
        ch = self.channel()
        methods = all_methods()
        self.assertGreaterEqual(len(methods), 13)
        for method in methods:
            with self.subTest(method=method):
                code, details = code_of(call_raw, ch, method)
                self.assertEqual(code, grpc.StatusCode.UNAUTHENTICATED, details)
                self.assertIn("no credentials", details)
        self.assertEqual(self.stack.health(channel=ch), HEALTH_SERVING)
        call = ch.stream_stream("/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo",
                                request_serializer=lambda x: x, response_deserializer=lambda x: x)
        listing = b"".join(call(iter([b"\x3a\x00"]), timeout=RPC_TIMEOUT_S))
        self.assertIn(b"recharge.v1.FraudAdmin", listing)

    def test_a_wrong_token_is_unauthenticated_everywhere_and_never_logged(self):
        wrong = "wrong-" + os.urandom(12).hex()
        ch = self.channel(wrong)
        for method in all_methods():
            with self.subTest(method=method):
                code, details = code_of(call_raw, ch, method)
                self.assertEqual(code, grpc.StatusCode.UNAUTHENTICATED, details)
                self.assertNotIn(wrong, details)
        # A malformed header too.
        bad = grpc.intercept_channel(self.stack.raw_channel(), _Header("Basic dXNlcjpwYXNz"))
        self.addCleanup(bad.close)
        code, _ = code_of(pb_grpc.RechargeGatewayStub(bad).ListPackages,
                          pb.ListPackagesRequest(region="US"), timeout=RPC_TIMEOUT_S)
        self.assertEqual(code, grpc.StatusCode.UNAUTHENTICATED)
        log = self.stack.gateway_log()
        self.assertTrue(self.stack.gateway_events("call_unauthenticated"))
        for secret in (wrong, self.stack.token, self.stack.app_token, self.stack.ops_token):
            self.assertNotIn(secret, log)

    def test_the_app_token_is_denied_every_fraud_admin_rpc_naming_the_role(self):
        ch = self.channel(self.stack.app_token)
        admin = [m for m in all_methods() if "/recharge.v1.FraudAdmin/" in m]
        self.assertGreaterEqual(len(admin), 9)
        for method in admin:
            with self.subTest(method=method):
                code, details = code_of(call_raw, ch, method)
                self.assertEqual(code, grpc.StatusCode.PERMISSION_DENIED, details)
                self.assertIn("requires role ops", details)
                self.assertIn('"e2e-app"', details)
        # The app role's own RPCs work.
        gw = pb_grpc.RechargeGatewayStub(ch)
        self.assertTrue(gw.ListPackages(pb.ListPackagesRequest(region="US"),
                                        timeout=RPC_TIMEOUT_S).packages)

    def test_the_ops_token_works_on_fraud_admin_and_reads_but_cannot_record(self):
        ch = self.channel(self.stack.ops_token)
        admin = pb_grpc.FraudAdminStub(ch)
        admin.ListFlaggedSellers(pb.ListFlaggedSellersRequest(), timeout=RPC_TIMEOUT_S)
        stats = admin.GetRuleStats(pb.GetRuleStatsRequest(), timeout=RPC_TIMEOUT_S)
        self.assertEqual(stats.rules_version, "security-e2e.1")
        admin.ListAuditEvents(pb.ListAuditEventsRequest(), timeout=RPC_TIMEOUT_S)
        gw = pb_grpc.RechargeGatewayStub(ch)
        code, details = code_of(gw.RecordRecharge, card_request(), timeout=RPC_TIMEOUT_S)
        self.assertEqual(code, grpc.StatusCode.PERMISSION_DENIED)
        self.assertIn("requires role app", details)
        # A recharge recorded by the app is readable by ops.
        app = pb_grpc.RechargeGatewayStub(self.channel(self.stack.app_token))
        r = app.RecordRecharge(card_request(), timeout=RPC_TIMEOUT_S)
        self.assertEqual(r.status, APPROVED)
        got = gw.GetRecharge(pb.GetRechargeRequest(recharge_id=r.recharge_id), timeout=RPC_TIMEOUT_S)
        self.assertEqual(got.recharge_id, r.recharge_id)

    def test_both_tokens_of_one_caller_work(self):
        for token in (self.stack.app_token, self.stack.app_token_2):
            gw = pb_grpc.RechargeGatewayStub(self.channel(token))
            r = gw.RecordRecharge(card_request(), timeout=RPC_TIMEOUT_S)
            self.assertEqual(r.status, APPROVED)

    def test_past_the_rate_limit_calls_are_refused_and_nothing_is_stored(self):
        gw = pb_grpc.RechargeGatewayStub(self.channel(self.stack.limited_token))
        ok, refused = [], []
        t0 = time.monotonic()
        for _ in range(10):
            req = card_request()
            try:
                gw.RecordRecharge(req, timeout=RPC_TIMEOUT_S)
                ok.append(req)
            except grpc.RpcError as e:
                self.assertEqual(e.code(), grpc.StatusCode.RESOURCE_EXHAUSTED, e.details())
                self.assertIn("rate limit of 1 calls/s (burst 3)", e.details())
                refused.append(req)
        elapsed = time.monotonic() - t0
        # Burst 3, refilled at 1/s: at most 3 + elapsed (+1 for rounding).
        self.assertGreaterEqual(len(ok), 3)
        self.assertLessEqual(len(ok), 3 + int(elapsed) + 1)
        self.assertTrue(refused)
        for req in refused:
            self.assertFalse(key_claimed(self.stack, req.idempotency_key))
            self.assertEqual(self.stack.journal_for(req.idempotency_key), [])
        # Other callers are not limited by it.
        other = pb_grpc.RechargeGatewayStub(self.channel(self.stack.app_token))
        self.assertEqual(other.RecordRecharge(card_request(), timeout=RPC_TIMEOUT_S).status, APPROVED)

    def test_refunds_are_open_to_app_and_ops_and_audited(self):
        app = pb_grpc.RechargeGatewayStub(self.channel(self.stack.app_token))
        ops_gw = pb_grpc.RechargeGatewayStub(self.channel(self.stack.ops_token))
        ops = pb_grpc.FraudAdminStub(self.channel(self.stack.ops_token))
        for who, stub in (("e2e-app", app), ("e2e-ops", ops_gw)):
            with self.subTest(caller=who):
                paid = app.RecordRecharge(card_request(), timeout=RPC_TIMEOUT_S)
                self.assertEqual(paid.status, APPROVED)
                refunded = stub.RefundRecharge(pb.RefundRechargeRequest(
                    recharge_id=paid.recharge_id, idempotency_key="rf-" + os.urandom(8).hex(),
                    reason=f"asked by {who}"), timeout=RPC_TIMEOUT_S)
                self.assertEqual(refunded.status, pb.RECHARGE_STATUS_REFUNDED)
                self.assertEqual(refunded.refund.refunded_by, who)
                events = ops.ListAuditEvents(pb.ListAuditEventsRequest(page_size=100),
                                             timeout=RPC_TIMEOUT_S).events
                mine = [e for e in events if e.target == paid.recharge_id]
                self.assertEqual([(e.caller, e.rpc, e.note, e.outcome, e.detail) for e in mine],
                                 [(who, "RefundRecharge", f"asked by {who}", "OK",
                                   "RECHARGE_STATUS_REFUNDED")])

    def test_admin_actions_are_audited_in_the_ledger_and_the_log(self):
        ops = pb_grpc.FraudAdminStub(self.channel(self.stack.ops_token))
        seller = "seller-audit-" + os.urandom(4).hex()
        ops.ClearSellerFlag(pb.ClearSellerFlagRequest(seller_id=seller, note="called the seller"),
                            timeout=RPC_TIMEOUT_S)
        lines = [e for e in self.stack.gateway_events("admin_action") if e.get("target") == seller]
        self.assertEqual(len(lines), 1, lines)
        self.assertEqual(lines[0]["caller"], "e2e-ops")
        self.assertEqual(lines[0]["rpc"], "ClearSellerFlag")
        self.assertEqual(lines[0]["outcome"], "OK")
        events = ops.ListAuditEvents(pb.ListAuditEventsRequest(page_size=100),
                                     timeout=RPC_TIMEOUT_S).events
        mine = [e for e in events if e.target == seller]
        self.assertEqual(len(mine), 1)
        self.assertEqual((mine[0].caller, mine[0].rpc, mine[0].note, mine[0].outcome),
                         ("e2e-ops", "ClearSellerFlag", "called the seller", "OK"))
        self.assertGreater(mine[0].at.seconds, 0)

        # A denied attempt by a known caller is a fact too.
        app = pb_grpc.FraudAdminStub(self.channel(self.stack.app_token))
        code, _ = code_of(app.ClearSellerFlag, pb.ClearSellerFlagRequest(seller_id=seller),
                          timeout=RPC_TIMEOUT_S)
        self.assertEqual(code, grpc.StatusCode.PERMISSION_DENIED)
        events = ops.ListAuditEvents(pb.ListAuditEventsRequest(page_size=100),
                                     timeout=RPC_TIMEOUT_S).events
        denied = [e for e in events if e.target == seller and e.outcome == "PERMISSION_DENIED"]
        self.assertEqual([e.caller for e in denied], ["e2e-app"])
        # Newest first.
        seqs = [e.seq for e in events]
        self.assertEqual(seqs, sorted(seqs, reverse=True))

        # A bad note is refused, and the refused attempt is audited too.
        code, details = code_of(ops.ClearSellerFlag,
                                pb.ClearSellerFlagRequest(seller_id=seller, note="n" * 2000),
                                timeout=RPC_TIMEOUT_S)
        self.assertEqual(code, grpc.StatusCode.INVALID_ARGUMENT)
        self.assertTrue(details.startswith("note: must be at most 1024 bytes"), details)
        top = ops.ListAuditEvents(pb.ListAuditEventsRequest(page_size=1), timeout=RPC_TIMEOUT_S)
        self.assertEqual((top.events[0].target, top.events[0].outcome), (seller, "INVALID_ARGUMENT"))

        # ReloadRules is audited with the version it loaded.
        ops_admin = ops
        ops_admin.ReloadRules(pb.ReloadRulesRequest(), timeout=RPC_TIMEOUT_S)
        top = ops.ListAuditEvents(pb.ListAuditEventsRequest(page_size=1), timeout=RPC_TIMEOUT_S)
        self.assertEqual(top.events[0].rpc, "ReloadRules")
        self.assertIn("security-e2e.1", top.events[0].detail)
        self.assertTrue(top.next_page_token)
        second = ops.ListAuditEvents(pb.ListAuditEventsRequest(page_size=1,
                                                               page_token=top.next_page_token),
                                     timeout=RPC_TIMEOUT_S)
        self.assertLess(second.events[0].seq, top.events[0].seq)

    def test_a_resolved_review_keeps_who_resolved_it_and_the_note(self):
        app = pb_grpc.RechargeGatewayStub(self.channel(self.stack.app_token))
        held = app.RecordRecharge(review_request(), timeout=RPC_TIMEOUT_S)
        self.assertEqual(held.status, pb.RECHARGE_STATUS_PENDING_REVIEW)
        ops = pb_grpc.FraudAdminStub(self.channel(self.stack.ops_token))
        ops.ResolveReview(pb.ResolveReviewRequest(recharge_id=held.recharge_id, approve=False,
                                                  note="buyer could not confirm"),
                          timeout=RPC_TIMEOUT_S)
        got = app.GetRecharge(pb.GetRechargeRequest(recharge_id=held.recharge_id),
                              timeout=RPC_TIMEOUT_S)
        self.assertEqual(got.status, pb.RECHARGE_STATUS_DECLINED)
        self.assertEqual(got.reviewed_by, "e2e-ops")
        self.assertEqual(got.review_note, "buyer could not confirm")
        self.assertGreater(got.reviewed_at.seconds, 0)
        events = ops.ListAuditEvents(pb.ListAuditEventsRequest(page_size=50),
                                     timeout=RPC_TIMEOUT_S).events
        mine = [e for e in events if e.target == held.recharge_id]
        self.assertEqual(len(mine), 1)
        self.assertEqual((mine[0].rpc, mine[0].caller, mine[0].outcome), ("ResolveReview", "e2e-ops", "OK"))
        self.assertIn("reject", mine[0].detail)

    def test_plaintext_off_loopback_and_raw_tokens_in_config_are_refused_at_start(self):
        config = self.stack.tmp / "gateway-public.yaml"
        config.write_text(self.stack.gateway_yaml_text())
        proc = subprocess.run([str(GATEWAY_BIN), "--config", str(config),
                               "--listen", f"0.0.0.0:{free_port()}"],
                              capture_output=True, text=True, timeout=20,
                              env=self.stack.gateway_env(), cwd=str(self.stack.tmp))
        self.assertNotEqual(proc.returncode, 0)
        self.assertIn("plaintext is accepted only on a loopback listen address", proc.stderr)

        raw = self.stack.tmp / "gateway-rawtoken.yaml"
        raw.write_text(self.stack.gateway_yaml_text(
            callers="\n  - name: x\n    roles: [app]\n    token_sha256: [my-plain-token]"))
        result = self.stack.run_gateway_once(raw)
        self.assertNotEqual(result.returncode, 0)
        self.assertIn(b"token_sha256", result.stderr)
        self.assertIn(b"64 hex characters", result.stderr)

        none = self.stack.tmp / "gateway-nocallers.yaml"
        text = "\n".join(line for line in self.stack.gateway_yaml_text().splitlines())
        text = text.split("\ncallers:")[0] + "\n"
        none.write_text(text)
        result = self.stack.run_gateway_once(none)
        self.assertNotEqual(result.returncode, 0)
        self.assertIn(b"callers: is required", result.stderr)


class _Header(grpc.UnaryUnaryClientInterceptor):
    """Sends a given authorization header value as is."""

    def __init__(self, value: str):
        self._value = value

    def intercept_unary_unary(self, continuation, details, request):
        from stack import _CallDetails
        md = list(details.metadata or []) + [("authorization", self._value)]
        return continuation(_CallDetails(details.method, details.timeout, md, details.credentials,
                                         details.wait_for_ready, details.compression), request)


class MtlsTest(unittest.TestCase):
    """transport: mtls, as `GATEWAY_TLS=1 ./scripts/run.sh` serves it."""

    stack: Stack

    @classmethod
    def setUpClass(cls):
        cls.stack = Stack("security-mtls")
        cls.stack.transport = "mtls"
        cls.stack.start()

    @classmethod
    def tearDownClass(cls):
        cls.stack.stop()

    def channel(self, **kw) -> grpc.Channel:
        ch = self.stack.raw_channel(**kw)
        self.addCleanup(ch.close)
        return ch

    def assert_cannot_connect(self, ch: grpc.Channel, what: str):
        code, details = code_of(pb_grpc.RechargeGatewayStub(ch).ListPackages,
                                pb.ListPackagesRequest(region="US"), timeout=5)
        self.assertEqual(code, grpc.StatusCode.UNAVAILABLE, f"{what}: {details}")

    def test_a_plaintext_client_fails(self):
        self.assert_cannot_connect(self.channel(plaintext=True, token=self.stack.app_token),
                                   "plaintext client")

    def test_a_tls_client_without_a_certificate_fails(self):
        self.assert_cannot_connect(self.channel(token=self.stack.app_token), "no client certificate")

    def test_a_certificate_from_another_ca_fails(self):
        other = self.stack.tmp / "other-ca"
        subprocess.run(["bash", str(MAKE_CERTS), str(other), "app"], check=True, timeout=60,
                       stdout=subprocess.DEVNULL)
        # Same subject CN (app-client), wrong issuer.
        self.assert_cannot_connect(self.channel(client="app", client_dir=other),
                                   "a client certificate of another CA")

    def test_the_app_certificate_records_and_is_denied_fraud_admin(self):
        ch = self.channel(client="app")
        r = pb_grpc.RechargeGatewayStub(ch).RecordRecharge(card_request(), timeout=RPC_TIMEOUT_S)
        self.assertEqual(r.status, APPROVED)
        code, details = code_of(pb_grpc.FraudAdminStub(ch).ListFlaggedSellers,
                                pb.ListFlaggedSellersRequest(), timeout=RPC_TIMEOUT_S)
        self.assertEqual(code, grpc.StatusCode.PERMISSION_DENIED)
        self.assertIn('requires role ops; caller "e2e-app"', details)

    def test_the_ops_certificate_calls_fraud_admin(self):
        ch = self.channel(client="ops")
        admin = pb_grpc.FraudAdminStub(ch)
        admin.ListReviews(pb.ListReviewsRequest(), timeout=RPC_TIMEOUT_S)
        admin.ListAuditEvents(pb.ListAuditEventsRequest(), timeout=RPC_TIMEOUT_S)
        code, _ = code_of(pb_grpc.RechargeGatewayStub(ch).RecordRecharge, card_request(),
                          timeout=RPC_TIMEOUT_S)
        self.assertEqual(code, grpc.StatusCode.PERMISSION_DENIED)

    def test_a_certificate_and_a_token_of_different_callers_are_refused(self):
        ch = self.channel(client="app", token=self.stack.ops_token)
        code, details = code_of(pb_grpc.FraudAdminStub(ch).ListFlaggedSellers,
                                pb.ListFlaggedSellersRequest(), timeout=RPC_TIMEOUT_S)
        self.assertEqual(code, grpc.StatusCode.UNAUTHENTICATED, details)
        self.assertIn("different callers", details)

    def served_certificate(self) -> bytes:
        """The DER certificate the gateway presents to a new mTLS connection."""
        ctx = ssl.create_default_context(cafile=str(self.stack.certs / "ca.pem"))
        ctx.load_cert_chain(str(self.stack.certs / "app-client.pem"),
                            str(self.stack.certs / "app-client.key"))
        ctx.set_alpn_protocols(["h2"])
        with socket.create_connection(("127.0.0.1", self.stack.gateway_port), timeout=5) as raw:
            with ctx.wrap_socket(raw, server_hostname="localhost") as tls:
                return tls.getpeercert(binary_form=True)

    def test_a_rotated_certificate_is_served_after_sighup_and_a_bad_one_is_refused(self):
        certs = self.stack.certs
        old = self.served_certificate()
        self.assertEqual(old, ssl.PEM_cert_to_DER_cert((certs / "server.pem").read_text()))
        keep = self.stack.tmp / "server-old"
        keep.mkdir(exist_ok=True)
        shutil.copy(certs / "server.pem", keep / "server.pem")
        shutil.copy(certs / "server.key", keep / "server.key")
        # Rotate: a new key and certificate from the same CA.
        (certs / "server.pem").unlink()
        (certs / "server.key").unlink()
        subprocess.run(["bash", str(MAKE_CERTS), str(certs), "e2e", "app", "ops"], check=True,
                       timeout=60, stdout=subprocess.DEVNULL)
        new = ssl.PEM_cert_to_DER_cert((certs / "server.pem").read_text())
        self.assertNotEqual(new, old)
        # Not before the signal.
        self.assertEqual(self.served_certificate(), old)
        self.stack.sighup_gateway()
        wait_until(lambda: self.served_certificate() == new, 10,
                   "the rotated certificate to be served")
        self.assertTrue(self.stack.gateway_events("tls_reloaded"))
        # Calls work on the new certificate.
        r = pb_grpc.RechargeGatewayStub(self.channel(client="app")).RecordRecharge(
            card_request(), timeout=RPC_TIMEOUT_S)
        self.assertEqual(r.status, APPROVED)

        # A key that does not match the certificate: refused, the new one stays.
        shutil.copy(keep / "server.key", certs / "server.key")
        failures = len(self.stack.gateway_events("tls_reload_failed"))
        self.stack.sighup_gateway()
        wait_until(lambda: len(self.stack.gateway_events("tls_reload_failed")) > failures, 10,
                   "the tls_reload_failed line")
        event = self.stack.gateway_events("tls_reload_failed")[-1]
        self.assertIn("is not the key of the certificate", event["error"])
        self.assertEqual(self.served_certificate(), new)
        self.assertTrue(self.stack.gateway.alive())


class TlsTokenTest(unittest.TestCase):
    """transport: tls (no client certificates): tokens over TLS."""

    def test_tokens_work_over_tls_and_a_plaintext_client_fails(self):
        stack = Stack("security-tls")
        stack.transport = "tls"
        stack.start()
        try:
            ch = stack.raw_channel(token=stack.app_token)
            try:
                r = pb_grpc.RechargeGatewayStub(ch).RecordRecharge(card_request(),
                                                                   timeout=RPC_TIMEOUT_S)
                self.assertEqual(r.status, APPROVED)
            finally:
                ch.close()
            ch = stack.raw_channel()
            try:
                code, _ = code_of(pb_grpc.RechargeGatewayStub(ch).ListPackages,
                                  pb.ListPackagesRequest(region="US"), timeout=RPC_TIMEOUT_S)
                self.assertEqual(code, grpc.StatusCode.UNAUTHENTICATED)
            finally:
                ch.close()
            ch = stack.raw_channel(token=stack.app_token, plaintext=True)
            try:
                code, _ = code_of(pb_grpc.RechargeGatewayStub(ch).ListPackages,
                                  pb.ListPackagesRequest(region="US"), timeout=5)
                self.assertEqual(code, grpc.StatusCode.UNAVAILABLE)
            finally:
                ch.close()
        finally:
            stack.stop()


if __name__ == "__main__":
    unittest.main()
