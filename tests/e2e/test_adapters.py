#!/usr/bin/python3
"""Payment adapters, routing and resilience (DESIGN.md section 7, issue 3)
through the real stack: the gateway binary with adapters.yaml files written
by each test, the PSP sandbox over HTTPS with its card, PayPal and e-wallet
APIs (a second sandbox where a test needs one), Redis and a SQLite ledger,
driven with the Python grpcio client.

    /usr/bin/python3 -m unittest -v tests/e2e/test_adapters.py

Each test starts the gateway on its own ledger file with its own
adapters.yaml, so a recharge one test leaves PENDING cannot send lookups to
the next test's instances. Every wait is a bounded poll.

test_01..test_11 are issue 3's acceptance. test_12..test_16 reproduce gateway
bugs found while writing this module (each docstring says what is expected);
they fail until those are fixed:
    12  a PENDING charge on a fallback instance is never reconciled while an
        earlier instance of the route is down (gateway/reconciler.cc)
    13  the PayPal token fetch ignores the caller's deadline
    14  the Lookup made by a retry of a PENDING key ignores the caller's deadline
    15  PENDING is declared FAILED up to 1 s before settle_after (whole seconds)
    16  after the primary goes down, the call on its dead pooled connection is
        PENDING instead of failing over
"""

from __future__ import annotations

import base64
import os
import re
import shutil
import socket
import sys
import time
import unittest
import uuid

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import grpc  # noqa: E402
import yaml  # noqa: E402  (python3-yaml, Debian)

from stack import (CARD_DECLINE, PACKAGES_YAML, REPO, Stack,  # noqa: E402
                   card_request, free_port, new_key, new_user, pb, status_name, wait_until)

APPROVED = pb.RECHARGE_STATUS_APPROVED
DECLINED = pb.RECHARGE_STATUS_DECLINED
FAILED = pb.RECHARGE_STATUS_FAILED
PENDING = pb.RECHARGE_STATUS_PENDING
RPC_TIMEOUT_S = 20
PACKAGE = "coins_65"
COINS = 65
SETTLE_AFTER_S = 3          # gateway recovery.settle_after
RECOVERY_INTERVAL = "200ms"  # gateway recovery.interval
TOKEN_TTL_S = 4             # sandbox paypal.token_ttl_s in the token test
TOKEN_PREFIX = "A21AA"      # every sandbox PayPal access token starts with it
ADAPTERS_YAML = REPO / "configs" / "adapters.yaml"
# The instances the shipped file sends through the wallet's redirect flow
# (REQUIRES_ACTION; their approvals: tests/e2e/test_regional.py).
REDIRECT_INSTANCES = {name for name, inst in yaml.safe_load(ADAPTERS_YAML.read_text())
                      ["instances"].items() if inst.get("flow") == "redirect"}


def shipped_adapters_direct() -> str:
    """configs/adapters.yaml with every wallet paying directly (flow: direct):
    for the tests of the direct API's answers and declines."""
    return ADAPTERS_YAML.read_text().replace("flow: redirect", "flow: direct")
ADAPTERS_MD = REPO / "docs" / "adapters.md"


def load_prices() -> dict:
    with open(PACKAGES_YAML, encoding="utf-8") as f:
        return yaml.safe_load(f)["regions"]


PRICES = load_prices()


def price(region: str, currency: str, package: str = PACKAGE) -> int:
    return PRICES[region][currency][package]


def client_context() -> "pb.ClientContext":
    return pb.ClientContext(ip="203.0.113.9", device_id="dev-adapters", user_agent="e2e/1.0")


def paypal_request(suffix: str = "", key: str | None = None, user: str | None = None,
                   region: str = "US", currency: str = "USD",
                   order_id: str | None = None) -> "pb.RecordRechargeRequest":
    """A PayPal recharge; the sandbox's outcome follows the order id suffix
    (DECLINED, NOTAPPROVED, UNAVAILABLE..., anything else captures)."""
    return pb.RecordRechargeRequest(
        idempotency_key=key or new_key("pp"), user_id=user or new_user("pp"),
        package_id=PACKAGE, amount=pb.Money(currency=currency,
                                            minor_units=price(region, currency)),
        region=region,
        paypal=pb.PayPal(order_id=order_id or f"ORD-{uuid.uuid4().hex[:16].upper()}{suffix}",
                         payer_id="PAYERE2E01"),
        client=client_context())


def ewallet_request(provider: str, region: str, currency: str, suffix: str = "0001",
                    key: str | None = None, user: str | None = None,
                    account_id: str | None = None) -> "pb.RecordRechargeRequest":
    """An e-wallet recharge; the sandbox's outcome follows the account id's
    last four characters (0002 insufficient balance, 0003 blocked, 0005 busy)."""
    return pb.RecordRechargeRequest(
        idempotency_key=key or new_key("ew"), user_id=user or new_user("ew"),
        package_id=PACKAGE, amount=pb.Money(currency=currency,
                                            minor_units=price(region, currency)),
        region=region,
        ewallet=pb.EWallet(provider=provider,
                           account_id=account_id or f"acct-{uuid.uuid4().hex[:8]}-{suffix}"),
        client=client_context())


class BlackHole:
    """A TCP port that accepts connections (kernel backlog) but never answers:
    a TLS handshake to it hangs until the client gives up."""

    def __init__(self):
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(64)
        self.port = self.sock.getsockname()[1]

    def close(self):
        self.sock.close()


class AdaptersTest(unittest.TestCase):
    stack: Stack

    # ------------------------------------------------------------ lifecycle

    @classmethod
    def setUpClass(cls):
        cls.stack = Stack("adapters", paypal=True, ewallet=True,
                          recovery_interval=RECOVERY_INTERVAL,
                          settle_after=f"{SETTLE_AFTER_S}s").start()
        tmp = cls.stack.tmp
        # configs/adapters.yaml as shipped names var/certs/ca.pem and
        # var/secrets/* relative to the working directory and the sandbox
        # port as ${SANDBOX_PORT}: give the gateway (cwd = tmp) exactly that.
        (tmp / "var" / "certs").mkdir(parents=True)
        (tmp / "var" / "secrets").mkdir(parents=True)
        shutil.copy(cls.stack.certs / "ca.pem", tmp / "var" / "certs" / "ca.pem")
        for f in (cls.stack.card_secret_file, cls.stack.paypal_credentials_file,
                  cls.stack.ewallet_secret_file):
            shutil.copy(f, tmp / "var" / "secrets" / f.name)
        # The shipped instances check provider notifications with this secret.
        (tmp / "var" / "secrets" / "webhook_secret").write_text("whsec_adapters_e2e\n")
        cls.stack.extra_env["SANDBOX_PORT"] = str(cls.stack.sandbox_port)
        # A wrong e-wallet signing secret for the bad-signature test.
        cls.wrong_ewallet_secret = "ews_wrong_" + uuid.uuid4().hex
        cls.wrong_secret_file = cls.stack.secrets_dir / "ewallet_secret_wrong"
        cls.wrong_secret_file.write_text(cls.wrong_ewallet_secret + "\n")

    @classmethod
    def tearDownClass(cls):
        cls.stack.stop()

    def setUp(self):
        self.t_start = time.monotonic()
        self.reset_sandbox()
        self.black_holes: list[BlackHole] = []

    def tearDown(self):
        for hole in self.black_holes:
            hole.close()
        for box in self.stack.extra_sandboxes:
            box.stop()
        self.stack.extra_sandboxes = []
        sys.stderr.write(f"[{self._testMethodName}] {time.monotonic() - self.t_start:.1f}s\n")

    def reset_sandbox(self):
        self.stack.sandbox_config(latency_ms=0, latency_jitter_ms=0, error_rate=0,
                                  timeout_mode="charge", paypal={"token_ttl_s": 32400})
        self.stack.sandbox_reset_stats()

    # ------------------------------------------------------ configuration

    @property
    def ca(self) -> str:
        return str(self.stack.certs / "ca.pem")

    def endpoint(self, port: int | None = None) -> str:
        return f"https://127.0.0.1:{port or self.stack.sandbox_port}"

    def card(self, port: int | None = None, **settings) -> dict:
        return {"type": "card", "endpoint": self.endpoint(port), "ca_file": self.ca,
                "secret_file": str(self.stack.card_secret_file), "timeout": "5s", **settings}

    def paypal(self, port: int | None = None, **settings) -> dict:
        return {"type": "paypal", "endpoint": self.endpoint(port), "ca_file": self.ca,
                "credentials_file": str(self.stack.paypal_credentials_file), "timeout": "5s",
                **settings}

    def ewallet(self, provider: str, regions: list, currencies: list, port: int | None = None,
                **settings) -> dict:
        return {"type": "ewallet", "provider": provider, "regions": regions,
                "currencies": currencies, "endpoint": self.endpoint(port), "ca_file": self.ca,
                "secret_file": str(self.stack.ewallet_secret_file), "timeout": "5s", **settings}

    @staticmethod
    def adapters_text(instances: dict, routes: list) -> str:
        return "# Written by tests/e2e/test_adapters.py\n" + yaml.safe_dump(
            {"instances": instances, "routes": routes}, sort_keys=False)

    def start_gateway(self, adapters_text: str, recovery_interval: str = RECOVERY_INTERVAL):
        """Restarts the gateway with `adapters_text` on a ledger of its own.
        A long `recovery_interval` keeps the background reconciler out of the
        way (it runs once at start-up, then only every interval)."""
        stack = self.stack
        stack.adapters_text = adapters_text
        stack.ledger_name = f"{self._testMethodName}.db"
        stack.recovery_interval = recovery_interval
        stack.write_configs()
        if stack.gateway is not None and stack.gateway.alive():
            stack.close_channel()  # else the gateway's shutdown waits ~5 s on it
            stack.stop_gateway()
        self.log_offset = len(stack.gateway_log())
        stack.start_gateway()
        self.stub = stack.stub()

    def this_run_log(self) -> str:
        return self.stack.gateway_log()[self.log_offset:]

    # ---------------------------------------------------------- helpers

    def record(self, req, timeout: float = RPC_TIMEOUT_S):
        return self.stub.RecordRecharge(req, timeout=timeout)

    def record_all(self, requests: list, timeout: float = RPC_TIMEOUT_S) -> list:
        """Sends all requests at once; their responses in the same order."""
        futures = [self.stub.RecordRecharge.future(r, timeout=timeout) for r in requests]
        return [f.result() for f in futures]

    def get(self, recharge_id: str):
        return self.stub.GetRecharge(pb.GetRechargeRequest(recharge_id=recharge_id),
                                     timeout=RPC_TIMEOUT_S)

    def wait_settled(self, recharge_id: str, timeout: float = 15):
        """Polls GetRecharge until the recharge is no longer PENDING."""
        def settled():
            r = self.get(recharge_id)
            return r if r.status != PENDING else None
        return wait_until(settled, timeout, f"{recharge_id} to leave PENDING", interval=0.1)

    def ledger_count(self, table: str, key: str) -> int:
        column = "key" if table == "idempotency_keys" else "idempotency_key"
        return self.stack.ledger_rows(f"SELECT count(*) FROM {table} WHERE {column} = ?",
                                      (key,))[0][0]

    def ledger_status(self, key: str):
        rows = self.stack.ledger_rows("SELECT status FROM recharges WHERE idempotency_key = ?",
                                      (key,))
        return rows[0][0] if rows else None

    def assert_status(self, resp, status, what=""):
        self.assertEqual(status_name(resp.status), status_name(status),
                         f"{what}: payment={resp.payment}")

    def assert_one_charge(self, journal: list, key: str, api: str, amount: int, currency: str,
                          status: str = "succeeded", decline_code: str = "",
                          provider: str | None = None) -> dict:
        lines = [r for r in journal if r.get("idempotency_key") == key]
        self.assertEqual(len(lines), 1, f"journal lines for {key}: {lines}")
        line = lines[0]
        self.assertEqual((line["api"], line["amount"], line["currency"], line["status"],
                          line.get("decline_code") or ""),
                         (api, amount, currency, status, decline_code), line)
        if provider is not None:
            self.assertEqual(line.get("provider"), provider, line)
        return line

    def assert_approved_once(self, resp, key: str, adapter: str, journal_line: dict):
        """APPROVED by `adapter`, referenced to the journal line, replayed with
        the coins credited and one ledger row."""
        self.assert_status(resp, APPROVED, key)
        self.assertEqual(resp.payment.adapter, adapter)
        self.assertEqual(resp.payment.provider_reference, journal_line["id"])
        self.assertEqual(self.ledger_count("recharges", key), 1)

    def assert_invalid_argument(self, req, field: str) -> grpc.RpcError:
        with self.assertRaises(grpc.RpcError) as cm:
            self.record(req)
        err = cm.exception
        self.assertEqual(err.code(), grpc.StatusCode.INVALID_ARGUMENT, err.details())
        self.assertIn(field, err.details())
        return err

    # ==================================================================
    # 1. Every API approves at the regional price (configs/adapters.yaml)
    # ==================================================================

    def test_01_approved_per_api_at_regional_prices_with_shipped_config(self):
        """configs/adapters.yaml as shipped (sandbox port from ${SANDBOX_PORT},
        var/ paths): PayPal US/USD and every regional wallet at its price from
        configs/packages.yaml are APPROVED by the named instance, with the
        provider's reference, one journal line each with the right api,
        provider, amount and currency; the coins are credited."""
        self.start_gateway(ADAPTERS_YAML.read_text())
        cases = [
            # (what, request, instance, journal api, provider, region, currency)
            ("paypal US", paypal_request(), "paypal-main", "paypal", None, "US", "USD"),
            ("gcash PH", ewallet_request("gcash", "PH", "PHP"), "gcash-ph", "ewallet", "gcash",
             "PH", "PHP"),
            ("dana ID", ewallet_request("dana", "ID", "IDR"), "dana-id", "ewallet", "dana",
             "ID", "IDR"),
            ("paytm IN", ewallet_request("paytm", "IN", "INR"), "paytm-in", "ewallet", "paytm",
             "IN", "INR"),
            ("grabpay SG", ewallet_request("grabpay", "SG", "SGD"), "grabpay-sg-my", "ewallet",
             "grabpay", "SG", "SGD"),
            ("grabpay MY", ewallet_request("grabpay", "MY", "MYR"), "grabpay-sg-my", "ewallet",
             "grabpay", "MY", "MYR"),
            ("momo VN", ewallet_request("momo", "VN", "VND"), "momo-vn", "ewallet", "momo",
             "VN", "VND"),
            ("kakaopay KR", ewallet_request("kakaopay", "KR", "KRW"), "kakaopay-kr", "ewallet",
             "kakaopay", "KR", "KRW"),
            ("card US", card_request(new_key("card")), "card-primary", "card", None, "US", "USD"),
        ]
        self.assertTrue({"gcash-ph", "dana-id", "paytm-in", "momo-vn",
                         "kakaopay-kr"} <= REDIRECT_INSTANCES, REDIRECT_INSTANCES)
        for what, req, instance, api, provider, region, currency in cases:
            with self.subTest(what):
                resp = self.record(req)
                if instance in REDIRECT_INSTANCES:
                    # The buyer approves in the wallet first: nothing taken yet.
                    self.assert_status(resp, pb.RECHARGE_STATUS_REQUIRES_ACTION, what)
                    self.assertEqual(resp.coins_credited, 0)
                    self.assertEqual(resp.payment.adapter, instance)
                    self.assertEqual(resp.next_action.type, pb.NEXT_ACTION_TYPE_REDIRECT)
                    self.assertIn("/ewallet/approve/", resp.next_action.url)
                    self.assert_one_charge(self.stack.journal(ops=True), req.idempotency_key,
                                           api, price(region, currency), currency,
                                           status="PENDING_APPROVAL", provider=provider)
                    self.assertEqual([r for r in self.stack.journal()
                                      if r.get("idempotency_key") == req.idempotency_key], [])
                    continue
                self.assert_status(resp, APPROVED, what)
                self.assertFalse(resp.replayed)
                self.assertEqual(resp.coins_credited, COINS)
                self.assertEqual(resp.payment.adapter, instance)
                self.assertTrue(resp.payment.provider_reference, "no provider_reference")
                line = self.assert_one_charge(self.stack.journal(), req.idempotency_key, api,
                                              price(region, currency), currency,
                                              provider=provider)
                self.assertEqual(resp.payment.provider_reference, line["id"])
                if api == "paypal":
                    self.assertTrue(line["id"].startswith("CAP"), line)
                    self.assertEqual(line["order_id"], req.paypal.order_id)
                stored = self.get(resp.recharge_id)
                self.assert_status(stored, APPROVED, what)
                self.assertEqual(stored.payment.adapter, instance)
                self.assertEqual(stored.payment.provider_reference, line["id"])
                self.assertEqual(stored.payment_method,
                                 f"ewallet:{provider}" if provider else api)
                self.assertEqual((stored.amount.currency, stored.amount.minor_units),
                                 (currency, price(region, currency)))

    def test_02_declines_map_provider_codes_and_refusals_charge_nothing(self):
        """PayPal INSTRUMENT_DECLINED / ORDER_NOT_APPROVED and wallet
        INSUFFICIENT_BALANCE / ACCOUNT_BLOCKED come back DECLINED with the
        provider's code (journaled as failed, no coins), wallets paying
        directly. A wallet asked outside its regions or currencies (GCash for
        US/USD...) is INVALID_ARGUMENT naming ewallet.provider, with nothing
        stored or sent."""
        self.start_gateway(shipped_adapters_direct())
        declines = [
            ("paypal DECLINED", paypal_request("DECLINED"), "paypal-main", "paypal",
             "INSTRUMENT_DECLINED", None, "US", "USD"),
            ("paypal NOTAPPROVED", paypal_request("NOTAPPROVED"), "paypal-main", "paypal",
             "ORDER_NOT_APPROVED", None, "US", "USD"),
            ("gcash 0002", ewallet_request("gcash", "PH", "PHP", suffix="0002"), "gcash-ph",
             "ewallet", "INSUFFICIENT_BALANCE", "gcash", "PH", "PHP"),
            ("dana 0003", ewallet_request("dana", "ID", "IDR", suffix="0003"), "dana-id",
             "ewallet", "ACCOUNT_BLOCKED", "dana", "ID", "IDR"),
        ]
        for what, req, instance, api, code, provider, region, currency in declines:
            with self.subTest(what):
                resp = self.record(req)
                self.assert_status(resp, DECLINED, what)
                self.assertEqual(resp.payment.decline_code, code)
                self.assertEqual(resp.payment.adapter, instance)
                self.assertEqual(resp.coins_credited, 0)
                self.assert_one_charge(self.stack.journal(), req.idempotency_key, api,
                                       price(region, currency), currency, status="failed",
                                       decline_code=code, provider=provider)
                again = self.record(req)
                self.assertEqual((again.replayed, again.status, again.payment.decline_code),
                                 (True, DECLINED, code))
                self.assertEqual(len(self.stack.journal_for(req.idempotency_key)), 1)

        before = self.stack.sandbox_stats()["requests"]
        refused = [
            ("gcash US/USD", ewallet_request("gcash", "US", "USD")),
            ("gcash PH/USD", ewallet_request("gcash", "PH", "USD")),
            ("dana PH/PHP", ewallet_request("dana", "PH", "PHP")),
            ("unknown wallet", ewallet_request("nopay", "PH", "PHP")),
        ]
        for what, req in refused:
            with self.subTest(what):
                self.assert_invalid_argument(req, "ewallet.provider")
                self.assertEqual(self.stack.journal_for(req.idempotency_key), [])
                self.assertEqual(self.ledger_count("idempotency_keys", req.idempotency_key), 0)
                self.assertEqual(self.ledger_count("recharges", req.idempotency_key), 0)
        self.assertEqual(self.stack.sandbox_stats()["requests"], before,
                         "a refused recharge reached the provider")

    # ==================================================================
    # 2. Failover on definite failures
    # ==================================================================

    def test_03_failover_when_the_primary_card_instance_is_down(self):
        """card route [card-primary -> a closed port, card-backup -> sandbox]:
        APPROVED by card-backup, exactly one charge. A definite 503 (wallet
        0005 / PayPal UNAVAILABLE) on an instance whose fallback points at the
        same sandbox fails over too: both instances are asked (the sandbox
        answers 503 to that instrument wherever it comes from, storing nothing
        under the key, and scopes wallet keys per provider -- both instances
        are provider gcash here, so the same key namespace), nothing is
        charged, the recharge is FAILED naming both."""
        closed = free_port()  # bound and released: nothing listens there
        self.start_gateway(self.adapters_text(
            {"card-primary": self.card(closed), "card-backup": self.card(),
             "paypal-a": self.paypal(), "paypal-b": self.paypal(),
             "gcash-a": self.ewallet("gcash", ["PH"], ["PHP"]),
             "gcash-b": self.ewallet("gcash", ["PH"], ["PHP"])},
            [{"method": "card", "regions": ["*"], "currencies": ["*"],
              "instances": ["card-primary", "card-backup"]},
             {"method": "paypal", "instances": ["paypal-a", "paypal-b"]},
             {"method": "ewallet", "providers": ["gcash"], "instances": ["gcash-a", "gcash-b"]}]))

        with self.subTest("card primary down"):
            req = card_request(new_key("failover"))
            resp = self.record(req)
            line = self.assert_one_charge(self.stack.journal(), req.idempotency_key, "card", 99,
                                          "USD")
            self.assert_approved_once(resp, req.idempotency_key, "card-backup", line)
            self.assertEqual(resp.coins_credited, COINS)
            self.assertEqual(self.stack.sandbox_stats()["requests"]["card"], 1)
            self.assertIn('"event":"adapter_failover"', self.this_run_log())
            # A decline is an answer: no failover past the instance that gave it.
            declined = self.record(card_request(new_key("failover-decl"), number=CARD_DECLINE))
            self.assert_status(declined, DECLINED)
            self.assertEqual(declined.payment.adapter, "card-backup")

        with self.subTest("wallet 503 SYSTEM_BUSY"):
            self.stack.sandbox_reset_stats()
            req = ewallet_request("gcash", "PH", "PHP", suffix="0005")
            resp = self.record(req)
            self.assert_status(resp, FAILED)
            self.assertEqual(self.stack.sandbox_stats()["requests"]["ewallet"], 2,
                             "the fallback instance was not asked")
            self.assertEqual(resp.payment.adapter, "gcash-b")
            for name in ("gcash-a", "gcash-b", "SYSTEM_BUSY"):
                self.assertIn(name, resp.payment.message)
            self.assertEqual(self.stack.journal_for(req.idempotency_key), [])
            self.assertEqual(resp.coins_credited, 0)

        with self.subTest("paypal 503 SERVICE_UNAVAILABLE"):
            self.stack.sandbox_reset_stats()
            req = paypal_request("UNAVAILABLE")
            resp = self.record(req)
            self.assert_status(resp, FAILED)
            stats = self.stack.sandbox_stats()
            captures = stats["requests"]["paypal"] - stats["paypal_token_grants"]
            self.assertEqual(captures, 2, f"captures asked: {stats}")
            self.assertEqual(resp.payment.adapter, "paypal-b")
            for name in ("paypal-a", "paypal-b", "503"):
                self.assertIn(name, resp.payment.message)
            self.assertEqual(self.stack.journal_for(req.idempotency_key), [])

    def test_04_failover_on_a_definite_5xx_to_another_sandbox(self):
        """Each primary (card, PayPal, wallet) points at a second sandbox that
        fails every charge with a 500 saying "charged": false; the backups on
        the main sandbox approve. One charge, in the main journal only; the
        second sandbox was asked once per API and journaled nothing."""
        s2 = self.stack.start_extra_sandbox("sandbox-5xx")
        s2.config(error_rate=1.0)
        p = s2.port
        self.start_gateway(self.adapters_text(
            {"card-primary": self.card(p), "card-backup": self.card(),
             "paypal-a": self.paypal(p), "paypal-b": self.paypal(),
             "gcash-a": self.ewallet("gcash", ["PH"], ["PHP"], port=p),
             "gcash-b": self.ewallet("gcash", ["PH"], ["PHP"])},
            [{"method": "card", "regions": ["*"], "currencies": ["*"],
              "instances": ["card-primary", "card-backup"]},
             {"method": "paypal", "instances": ["paypal-a", "paypal-b"]},
             {"method": "ewallet", "providers": ["gcash"], "instances": ["gcash-a", "gcash-b"]}]))
        cases = [("card", card_request(new_key("5xx")), "card-backup", 99, "USD", None),
                 ("paypal", paypal_request(), "paypal-b", 99, "USD", None),
                 ("ewallet", ewallet_request("gcash", "PH", "PHP"), "gcash-b",
                  price("PH", "PHP"), "PHP", "gcash")]
        for api, req, backup, amount, currency, provider in cases:
            with self.subTest(api):
                resp = self.record(req)
                line = self.assert_one_charge(self.stack.journal(), req.idempotency_key, api,
                                              amount, currency, provider=provider)
                self.assert_approved_once(resp, req.idempotency_key, backup, line)
                self.assertEqual(s2.journal_for(req.idempotency_key), [])
        stats = s2.stats()
        self.assertEqual(stats["requests"]["card"], 1, stats)
        self.assertEqual(stats["requests"]["ewallet"], 1, stats)
        self.assertEqual(stats["requests"]["paypal"] - stats["paypal_token_grants"], 1, stats)
        self.assertEqual(s2.journal(), [])

    # ==================================================================
    # 3. Timeout -> PENDING -> reconciled through Lookup
    # ==================================================================

    def timeout_config(self) -> str:
        return self.adapters_text(
            {"card-primary": self.card(timeout="1s"),
             "paypal-main": self.paypal(timeout="1s"),
             "gcash-ph": self.ewallet("gcash", ["PH"], ["PHP"], timeout="1s")},
            [{"method": "card", "regions": ["*"], "currencies": ["*"],
              "instances": ["card-primary"]},
             {"method": "paypal", "instances": ["paypal-main"]},
             {"method": "ewallet", "providers": ["gcash"], "instances": ["gcash-ph"]}])

    def test_05_timeout_with_charge_is_pending_then_approved_once(self):
        """Instances time out after 1 s; the sandbox (timeout_mode charge)
        takes 2 s and then charges. Card, PayPal and GCash recharges are
        PENDING (no coins); the background reconciler turns them APPROVED
        matching the journal, crediting the coins once (one ledger row; the
        replay says 65 coins)."""
        self.start_gateway(self.timeout_config())
        self.stack.sandbox_config(latency_ms=2000, timeout_mode="charge")
        reqs = {
            "card": (card_request(new_key("to-card")), "card-primary", "card", 99, "USD", None),
            "paypal": (paypal_request(), "paypal-main", "paypal", 99, "USD", None),
            "ewallet": (ewallet_request("gcash", "PH", "PHP"), "gcash-ph", "ewallet",
                        price("PH", "PHP"), "PHP", "gcash"),
        }
        responses = dict(zip(reqs, self.record_all([r[0] for r in reqs.values()])))
        for what, resp in responses.items():
            with self.subTest(what):
                self.assert_status(resp, PENDING, what)
                self.assertEqual(resp.coins_credited, 0)
                self.assertEqual(resp.payment.adapter, reqs[what][1])
        # The provider finishes every charge after the adapters gave up.
        wait_until(lambda: all(self.stack.journal_for(r[0].idempotency_key)
                               for r in reqs.values()), 10, "the sandbox to take the charges")
        # Lookups are slowed too: let them through the 1 s timeout.
        self.stack.sandbox_config(latency_ms=0)

        journal = self.stack.journal()
        for what, (req, instance, api, amount, currency, provider) in reqs.items():
            with self.subTest(what):
                line = self.assert_one_charge(journal, req.idempotency_key, api, amount,
                                              currency, provider=provider)
                rec = self.wait_settled(responses[what].recharge_id)
                self.assert_status(rec, APPROVED, what)
                self.assertEqual(rec.payment.provider_reference, line["id"])
                self.assertEqual(rec.payment.adapter, instance)
                replay = self.record(req)
                self.assertEqual((replay.replayed, replay.status, replay.coins_credited,
                                  replay.recharge_id),
                                 (True, APPROVED, COINS, responses[what].recharge_id))
                self.assertEqual(self.ledger_count("recharges", req.idempotency_key), 1)
                listed = self.stub.ListRecharges(pb.ListRechargesRequest(user_id=req.user_id),
                                                 timeout=RPC_TIMEOUT_S).recharges
                self.assertEqual([r.recharge_id for r in listed], [responses[what].recharge_id])
        # Nothing charged twice by the lookups and replays.
        self.assertEqual(len(self.stack.journal()), len(journal))

    def test_05b_retry_of_a_pending_key_asks_the_provider(self):
        """Background reconciliation off (interval 1 h). A card and a PayPal
        recharge time out (PENDING); once the provider holds the charges, a
        retry of each key is answered APPROVED at once, replayed, 65 coins --
        the retry itself asked the provider -- and only once in the ledger."""
        self.start_gateway(self.timeout_config(), recovery_interval="1h")
        self.stack.sandbox_config(latency_ms=2000)
        reqs = [card_request(new_key("retry-card")), paypal_request()]
        firsts = self.record_all(reqs)
        for resp in firsts:
            self.assert_status(resp, PENDING)
        wait_until(lambda: all(self.stack.journal_for(r.idempotency_key) for r in reqs), 10,
                   "the sandbox to take the charges")
        self.stack.sandbox_config(latency_ms=0)
        for req, first in zip(reqs, firsts):
            with self.subTest(req.idempotency_key):
                self.assertEqual(self.ledger_status(req.idempotency_key), PENDING,
                                 "settled before the retry: the background reconciler ran")
                again = self.record(req)
                self.assertEqual((again.replayed, status_name(again.status),
                                  again.coins_credited, again.recharge_id),
                                 (True, "RECHARGE_STATUS_APPROVED", COINS, first.recharge_id),
                                 again)
                line = self.stack.journal_for(req.idempotency_key)
                self.assertEqual([r["status"] for r in line], ["succeeded"])
                self.assertEqual(again.payment.provider_reference, line[0]["id"])
                self.assertEqual(self.ledger_status(req.idempotency_key), APPROVED)
                self.assertEqual(self.ledger_count("recharges", req.idempotency_key), 1)
                replay = self.record(req)
                self.assertEqual((replay.replayed, replay.status, replay.coins_credited),
                                 (True, APPROVED, COINS))

    def test_06_timeout_with_drop_is_pending_then_failed(self):
        """timeout_mode drop: the sandbox sleeps 2 s and closes the connection
        without charging. PENDING first, FAILED once settle_after has passed
        with nothing at the provider; no journal line, no coins."""
        self.start_gateway(self.timeout_config())
        self.stack.sandbox_config(latency_ms=2000, timeout_mode="drop")
        reqs = {"card": card_request(new_key("drop-card")), "paypal": paypal_request(),
                "ewallet": ewallet_request("gcash", "PH", "PHP")}
        responses = dict(zip(reqs, self.record_all(list(reqs.values()))))
        for what, resp in responses.items():
            self.assert_status(resp, PENDING, what)
        # Lookups answer with the configured latency: let them through the 1 s timeout.
        self.stack.sandbox_config(latency_ms=0)
        for what, req in reqs.items():
            with self.subTest(what):
                rec = self.wait_settled(responses[what].recharge_id, timeout=SETTLE_AFTER_S + 12)
                self.assert_status(rec, FAILED, what)
                self.assertEqual(self.stack.journal_for(req.idempotency_key), [])
                replay = self.record(req)
                self.assertEqual((replay.replayed, replay.status, replay.coins_credited),
                                 (True, FAILED, 0))
        wait_until(lambda: self.stack.sandbox_log().count("dropped (timeout_mode=drop)") >= 3, 5,
                   "the sandbox to drop the three charges")
        for req in reqs.values():
            self.assertEqual(self.stack.journal_for(req.idempotency_key), [])

    # ==================================================================
    # 4. Circuit breaker
    # ==================================================================

    def test_07_circuit_opens_skips_the_instance_and_closes_after_a_healthy_probe(self):
        """card-primary on a port where nothing listens, breaker {window 4,
        min_calls 2, 50 %, open_for 2 s}, fallback card-backup. Two refused
        calls open it; a failed half-open probe opens it again; while open a
        second sandbox started on card-primary's port gets no request at all;
        after open_for the probe succeeds and card-primary serves again."""
        open_for = 2.0
        port = free_port()
        self.start_gateway(self.adapters_text(
            {"card-primary": self.card(port, circuit_breaker={
                "window": 4, "min_calls": 2, "failure_rate_percent": 50, "open_for": "2s"}),
             "card-backup": self.card()},
            [{"method": "card", "regions": ["*"], "currencies": ["*"],
              "instances": ["card-primary", "card-backup"]}]))

        def charge(tag):
            req = card_request(new_key(tag))
            resp = self.record(req)
            self.assert_status(resp, APPROVED, tag)
            return req, resp

        # Closed: two refused calls (both served by the backup) open it.
        for i in range(2):
            _, resp = charge(f"cb-closed{i}")
            self.assertEqual(resp.payment.adapter, "card-backup")
        t_opened = time.monotonic()  # the breaker opened before this instant
        self.assertEqual(self.this_run_log().count('"event":"adapter_failover"'), 2)

        # Half-open probe after open_for: still refused, so open again.
        wait_until(lambda: time.monotonic() > t_opened + open_for + 0.2, open_for + 1,
                   "open_for to pass")
        t_probe_sent = time.monotonic()  # the breaker opened again after this...
        _, resp = charge("cb-probe-fails")
        t_probe_done = time.monotonic()  # ...and before this
        self.assertEqual(resp.payment.adapter, "card-backup")
        self.assertEqual(self.this_run_log().count('"event":"adapter_failover"'), 3,
                         "the half-open probe was not sent to card-primary")

        # Open: card-primary's port now has a live sandbox, which must not be asked.
        s2 = self.stack.start_extra_sandbox("sandbox-cb", port)
        open_until = t_probe_sent + open_for  # no later than the breaker's own
        served_while_open = 0
        late_primary = 0
        for i in range(3):
            if time.monotonic() > open_until - 0.3:
                break
            _, resp = charge(f"cb-open{i}")
            if time.monotonic() >= open_until:
                # The breaker may have let this one probe: not evidence.
                late_primary = int(resp.payment.adapter == "card-primary")
                break
            self.assertEqual(resp.payment.adapter, "card-backup", "served past an open circuit")
            stats = s2.stats()
            self.assertEqual(stats["requests"]["card"], 0,
                             f"card-primary was called while its circuit was open: {stats}")
            served_while_open += 1
        self.assertGreaterEqual(served_while_open, 1,
                                "too slow: open_for passed before a call could check the "
                                "open circuit")

        # After open_for the probe reaches the live sandbox and closes the circuit.
        wait_until(lambda: time.monotonic() > t_probe_done + open_for + 0.2, open_for + 1,
                   "open_for to pass")
        for i in range(2):
            req, resp = charge(f"cb-closed-again{i}")
            self.assertEqual(resp.payment.adapter, "card-primary",
                             "the healthy probe did not close the circuit")
            line = self.assert_one_charge(s2.journal(), req.idempotency_key, "card", 99, "USD")
            self.assertEqual(resp.payment.provider_reference, line["id"])
            self.assertEqual(self.stack.journal_for(req.idempotency_key), [])
        self.assertEqual(s2.stats()["requests"]["card"], 2 + late_primary)

    # ==================================================================
    # 5. PayPal OAuth2 token: one fetch per expiry, shared by concurrent calls
    # ==================================================================

    def test_08_paypal_token_fetched_once_per_expiry(self):
        """Sandbox tokens live 4 s, the adapter renews with margin 0s. One
        recharge fetches a token; 20 concurrent ones reuse it; after expiry 20
        concurrent ones share exactly one new fetch. All APPROVED."""
        cfg = self.adapters_text(
            {"paypal-main": self.paypal(token_refresh_margin="0s"), "card-primary": self.card()},
            [{"method": "paypal", "instances": ["paypal-main"]},
             {"method": "card", "instances": ["card-primary"]}])
        self.stack.sandbox_config(paypal={"token_ttl_s": TOKEN_TTL_S})
        self.start_gateway(cfg)
        self.stack.sandbox_reset_stats()
        grants = lambda: self.stack.sandbox_stats()["paypal_token_grants"]  # noqa: E731
        self.assertEqual(grants(), 0, "token fetched before any PayPal call")

        t_first = time.monotonic()
        first = self.record(paypal_request())
        t_first_done = time.monotonic()
        self.assert_status(first, APPROVED)
        self.assertEqual(grants(), 1)

        def batch(tag):
            reqs = [paypal_request(key=new_key(f"{tag}{i}")) for i in range(20)]
            started = time.monotonic()
            resps = self.record_all(reqs)
            for req, resp in zip(reqs, resps):
                self.assert_status(resp, APPROVED, req.idempotency_key)
                self.assertEqual(len(self.stack.journal_for(req.idempotency_key)), 1)
            return started, time.monotonic()

        _, done = batch("tok-a")
        self.assertLess(done, t_first + TOKEN_TTL_S,
                        "too slow: the first batch outlived the token, cannot tell caching")
        self.assertEqual(grants(), 1, "concurrent calls with a valid token fetched another")

        # Past expiry (as the gateway sees it: from the first answer).
        wait_until(lambda: time.monotonic() > t_first_done + TOKEN_TTL_S + 0.3,
                   TOKEN_TTL_S + 2, "the token to expire")
        started, done = batch("tok-b")
        self.assertLess(done, started + TOKEN_TTL_S,
                        "too slow: the second batch outlived its token")
        self.assertEqual(grants(), 2, "an expired token must be renewed once for 20 callers")
        self.assertEqual(self.this_run_log().count('"event":"paypal_token_fetched"'), 2)

    # ==================================================================
    # 6. Bad e-wallet signature; no secret or token in the logs
    # ==================================================================

    def test_09_bad_signature_refused_and_no_secret_in_logs(self):
        """gcash-ph signs with a wrong secret: the sandbox refuses it
        (INVALID_SIGNATURE), the recharge is FAILED, nothing is charged. With
        every API used, the gateway's log holds no signing secret, PayPal
        client secret, card API key or PayPal access token (A21AA...)."""
        self.start_gateway(self.adapters_text(
            {"card-primary": self.card(), "paypal-main": self.paypal(),
             "gcash-ph": self.ewallet("gcash", ["PH"], ["PHP"],
                                      secret_file=str(self.wrong_secret_file)),
             "dana-id": self.ewallet("dana", ["ID"], ["IDR"])},
            [{"method": "card", "instances": ["card-primary"]},
             {"method": "paypal", "instances": ["paypal-main"]},
             {"method": "ewallet", "providers": ["gcash"], "instances": ["gcash-ph"]},
             {"method": "ewallet", "providers": ["dana"], "instances": ["dana-id"]}]))
        bad = ewallet_request("gcash", "PH", "PHP")
        resp = self.record(bad)
        self.assert_status(resp, FAILED)
        self.assertIn("INVALID_SIGNATURE", resp.payment.message)
        self.assertEqual(resp.payment.adapter, "gcash-ph")
        self.assertEqual(resp.coins_credited, 0)
        self.assertEqual(self.stack.journal_for(bad.idempotency_key), [])
        self.assertIn("INVALID_SIGNATURE", self.get(resp.recharge_id).payment.message)

        # Exercise every secret: a signed wallet call, a token, a card key.
        for req in (ewallet_request("dana", "ID", "IDR"), paypal_request(),
                    paypal_request("DECLINED"), card_request(new_key("logs"))):
            self.record(req)
        self.assertGreaterEqual(self.stack.sandbox_stats()["paypal_token_grants"], 1)

        stack = self.stack
        basic = base64.b64encode(
            f"{stack.paypal_client_id}:{stack.paypal_client_secret}".encode()).decode()
        secrets_ = {"e-wallet signing secret": stack.ewallet_secret,
                    "wrong e-wallet secret": self.wrong_ewallet_secret,
                    "PayPal client secret": stack.paypal_client_secret,
                    "PayPal Basic credentials": basic,
                    "card API key": stack.card_secret,
                    "fingerprint key": stack.fingerprint_key}
        gateway_log = stack.gateway_log()  # every gateway run of this module
        self.assertIn('"event":"paypal_token_fetched"', gateway_log)
        for what, value in secrets_.items():
            self.assertNotIn(value, gateway_log, f"{what} in the gateway log")
        self.assertNotIn(TOKEN_PREFIX, gateway_log, "a PayPal access token in the gateway log")
        token_re = re.compile(TOKEN_PREFIX + r"[A-Za-z0-9_-]{40,}")
        for log in [stack.tmp / "log" / "sandbox.log", *stack.tmp.glob("*/sandbox.log")]:
            text = log.read_text(errors="replace")
            for what, value in secrets_.items():
                self.assertNotIn(value, text, f"{what} in {log.name}")
            self.assertIsNone(token_re.search(text), f"a PayPal token in {log}")
        # Nor in what callers are told.
        for r in self.stub.ListRecharges(pb.ListRechargesRequest(user_id=bad.user_id),
                                         timeout=RPC_TIMEOUT_S).recharges:
            for value in secrets_.values():
                self.assertNotIn(value, str(r))

    # ==================================================================
    # 7. A provider through config alone (docs/adapters.md)
    # ==================================================================

    def test_10_toy_provider_through_config_alone(self):
        """The ToyPay example of docs/adapters.md, taken from the document and
        added to configs/adapters.yaml: nothing compiled, the gateway
        restarted, an ewallet {toypay, toy-0001} recharge in US/USD is APPROVED
        by toypay-us and journaled with provider toypay."""
        doc = ADAPTERS_MD.read_text()
        section = doc.split("## Example: a provider through config alone", 1)[1]
        snippet = yaml.safe_load(re.search(r"```yaml\n(.*?)```", section, re.S).group(1))
        self.assertEqual(snippet["instances"]["toypay-us"]["provider"], "toypay")
        config = yaml.safe_load(shipped_adapters_direct())
        config["instances"].update(snippet["instances"])
        config["routes"].extend(snippet["routes"])
        self.start_gateway("# configs/adapters.yaml + the docs/adapters.md ToyPay example\n" +
                           yaml.safe_dump(config, sort_keys=False))

        req = ewallet_request("toypay", "US", "USD", account_id="toy-0001")
        resp = self.record(req)
        self.assert_status(resp, APPROVED)
        self.assertEqual(resp.coins_credited, COINS)
        line = self.assert_one_charge(self.stack.journal(), req.idempotency_key, "ewallet",
                                      price("US", "USD"), "USD", provider="toypay")
        self.assert_approved_once(resp, req.idempotency_key, "toypay-us", line)
        self.assertEqual(self.get(resp.recharge_id).payment_method, "ewallet:toypay")
        # Outside its regions: refused like any other wallet.
        self.assert_invalid_argument(ewallet_request("toypay", "PH", "PHP"), "ewallet.provider")
        # The other instances of the shipped file still serve.
        self.assert_status(self.record(ewallet_request("gcash", "PH", "PHP")), APPROVED)

    # ==================================================================
    # 8. The outgoing call never outlives the caller's deadline
    # ==================================================================

    def assert_recorded_before(self, user: str, t_sent: float, limit_s: float) -> "pb.Recharge":
        """The user's one recharge shows up in ListRecharges within `limit_s`
        of `t_sent`, PENDING or FAILED (not APPROVED: the provider had not
        answered by then)."""
        def listed():
            rs = self.stub.ListRecharges(pb.ListRechargesRequest(user_id=user),
                                         timeout=RPC_TIMEOUT_S).recharges
            return rs[0] if rs else None
        rec = wait_until(listed, max(0.0, t_sent + limit_s - time.monotonic()),
                         f"the recharge to be recorded within {limit_s}s of the call "
                         "(the gateway waited past the caller's deadline)", interval=0.05)
        self.assertIn(status_name(rec.status),
                      ("RECHARGE_STATUS_PENDING", "RECHARGE_STATUS_FAILED"), rec)
        return rec

    def call_with_deadline(self, req, deadline_s: float = 1.5):
        """RecordRecharge with a short client deadline. The gateway keeps a
        margin to record the outcome, so it may answer (PENDING / FAILED)
        just inside the deadline instead of letting it expire. Returns
        (time sent, the response or None for DEADLINE_EXCEEDED, seconds taken)."""
        t_sent = time.monotonic()
        try:
            resp = self.record(req, timeout=deadline_s)
        except grpc.RpcError as e:
            self.assertEqual(e.code(), grpc.StatusCode.DEADLINE_EXCEEDED, e.details())
            resp = None
        took = time.monotonic() - t_sent
        sys.stderr.write(f"[{self._testMethodName}] {req.idempotency_key}: "
                         f"{'DEADLINE_EXCEEDED' if resp is None else status_name(resp.status)}"
                         f" after {took:.2f}s"
                         f"{'' if resp is None else ' (' + resp.payment.message + ')'}\n")
        if resp is not None:
            self.assertLessEqual(took, deadline_s + 0.2)
            self.assertIn(status_name(resp.status),
                          ("RECHARGE_STATUS_PENDING", "RECHARGE_STATUS_FAILED"), resp)
        return t_sent, resp, took

    def test_11_outgoing_call_ends_within_the_callers_deadline(self):
        """Card instance timeout 10 s, the sandbox takes 3 s, the client's
        deadline is 1.5 s: the gateway gives up on the provider in time (it
        keeps 100 ms to record, so it answers PENDING just inside the deadline;
        DEADLINE_EXCEEDED would do as well) -- the recharge is recorded PENDING
        well before the provider's 3 s -- then reconciled to APPROVED as the
        journal says. Same for a provider that never completes the TLS
        handshake (GB route to a black hole): recorded quickly, not after 10 s."""
        hole = BlackHole()
        self.black_holes.append(hole)
        self.start_gateway(self.adapters_text(
            {"card-primary": self.card(timeout="10s"),
             "card-blackhole": self.card(hole.port, timeout="10s")},
            [{"method": "card", "regions": ["GB"], "instances": ["card-blackhole"]},
             {"method": "card", "regions": ["*"], "instances": ["card-primary"]}]))

        with self.subTest("slow provider"):
            self.stack.sandbox_config(card={"latency_ms": 3000})
            req = card_request(new_key("deadline"))
            t_sent, _, _ = self.call_with_deadline(req)
            rec = self.assert_recorded_before(req.user_id, t_sent, 2.8)
            self.assertEqual(rec.idempotency_key, req.idempotency_key)
            # The request was sent: its outcome is unknown, not a failure.
            self.assert_status(rec, PENDING)
            self.stack.sandbox_config(card={"latency_ms": 0})
            line = wait_until(lambda: self.stack.journal_for(req.idempotency_key), 10,
                              "the provider to take the charge")[0]
            settled = self.wait_settled(rec.recharge_id, timeout=SETTLE_AFTER_S + 12)
            self.assert_status(settled, APPROVED)
            self.assertEqual(settled.payment.provider_reference, line["id"])
            replay = self.record(req)
            self.assertEqual((replay.replayed, replay.status, replay.coins_credited),
                             (True, APPROVED, COINS))
            self.assertEqual(len(self.stack.journal_for(req.idempotency_key)), 1)

        with self.subTest("TLS handshake never completes"):
            req = card_request(new_key("deadline-hole"), region="GB", currency="GBP",
                               minor_units=price("GB", "GBP"))
            t_sent, _, _ = self.call_with_deadline(req)
            self.assert_recorded_before(req.user_id, t_sent, 2.8)

    # ==================================================================
    # Found while testing: see the module's report
    # ==================================================================

    def test_12_pending_on_the_backup_is_reconciled_while_the_primary_is_down(self):
        """card route [card-primary -> closed port, card-backup -> sandbox with
        timeout 1 s], the sandbox slow (2 s, then charges): the primary is
        refused, the backup times out, the recharge is PENDING on card-backup.
        The provider holds the charge, so the reconciler (and a retry) must
        turn it APPROVED even though card-primary is still down."""
        closed = free_port()
        self.start_gateway(self.adapters_text(
            {"card-primary": self.card(closed), "card-backup": self.card(timeout="1s")},
            [{"method": "card", "instances": ["card-primary", "card-backup"]}]))
        self.stack.sandbox_config(card={"latency_ms": 2000})
        req = card_request(new_key("pending-backup"))
        first = self.record(req)
        self.assert_status(first, PENDING)
        self.assertEqual(first.payment.adapter, "card-backup")
        line = wait_until(lambda: self.stack.journal_for(req.idempotency_key), 10,
                          "the provider to take the charge")[0]
        self.stack.sandbox_config(card={"latency_ms": 0})
        try:
            rec = self.wait_settled(first.recharge_id, timeout=SETTLE_AFTER_S + 5)
        except AssertionError:
            again = self.record(req)
            self.fail(f"the provider holds charge {line['id']} under the key, yet the recharge "
                      f"is still {status_name(self.get(first.recharge_id).status)} after "
                      f"{SETTLE_AFTER_S + 5}s and a retry answers "
                      f"{status_name(again.status)}: the reconciler gives up at the first "
                      "instance of the route whose Lookup cannot be answered (card-primary, "
                      "down) instead of asking card-backup, which took the charge")
        self.assert_status(rec, APPROVED)
        self.assertEqual(rec.payment.provider_reference, line["id"])

    def test_13_paypal_token_fetch_respects_the_callers_deadline(self):
        """The PayPal endpoint never completes a TLS handshake; instance
        timeout 10 s, client deadline 1.5 s. The token fetch is an outgoing
        call like the capture: the recharge must be settled (FAILED: nothing
        was sent) within the caller's deadline, like a card call to the same
        black hole (test_11), not when the instance timeout expires."""
        hole = BlackHole()
        self.black_holes.append(hole)
        self.start_gateway(self.adapters_text(
            {"paypal-main": self.paypal(hole.port, timeout="10s"), "card-primary": self.card()},
            [{"method": "paypal", "instances": ["paypal-main"]},
             {"method": "card", "instances": ["card-primary"]}]))
        req = paypal_request()
        t_sent, _, _ = self.call_with_deadline(req)
        try:
            self.assert_recorded_before(req.user_id, t_sent, 2.8)
        except AssertionError:
            # How long did the gateway keep the call going? (bounded)
            wait_until(lambda: self.ledger_count("recharges", req.idempotency_key) == 1, 15,
                       "the recharge to be recorded at all", interval=0.05)
            took = time.monotonic() - t_sent
            self.fail(f"the caller's deadline was 1.5 s, but the gateway kept fetching the "
                      f"PayPal token and recorded the recharge only {took:.1f}s after the call "
                      f"({status_name(self.ledger_status(req.idempotency_key))}): the token "
                      "request is bounded by the instance timeout, not by the caller's deadline")


    def test_14_retry_lookup_respects_the_callers_deadline(self):
        """Background reconciliation off. Card timeout 10 s, the sandbox takes
        3 s for charges and lookups. A PENDING key is retried with a 1.5 s
        client deadline: the Lookup the retry makes is an outgoing call for
        that gRPC call, so it must be abandoned by the deadline -- the
        recharge cannot be settled by a lookup answer that arrives after it."""
        self.start_gateway(self.adapters_text(
            {"card-primary": self.card(timeout="10s")},
            [{"method": "card", "instances": ["card-primary"]}]), recovery_interval="1h")
        self.stack.sandbox_config(card={"latency_ms": 3000})
        req = card_request(new_key("retry-deadline"))
        _, first, _ = self.call_with_deadline(req)
        self.assertIsNotNone(first, "no answer within the deadline")
        self.assert_status(first, PENDING)
        wait_until(lambda: self.stack.journal_for(req.idempotency_key), 10,
                   "the provider to take the charge")
        lookups_before = self.stack.sandbox_log().count(
            f"GET /v1/charges 200 idempotency_key={req.idempotency_key}")
        t_retry, again, _ = self.call_with_deadline(req)
        if again is not None:
            self.assertTrue(again.replayed)
        # The lookup the retry sent ends at the sandbox ~3 s later. If the
        # gateway already hung up, the sandbox may log nothing for it (its
        # answer has nowhere to go): wait for the line, but only so long.
        try:
            wait_until(lambda: self.stack.sandbox_log().count(
                f"GET /v1/charges 200 idempotency_key={req.idempotency_key}") > lookups_before, 6,
                "the sandbox to answer the retry's lookup")
        except AssertionError:
            pass
        t_answered = time.monotonic() - t_retry
        # Did the gateway act on that late answer? (background reconciliation is off)
        try:
            wait_until(lambda: self.ledger_status(req.idempotency_key) != PENDING, 1.0,
                       "a change")
            settled_late = True
        except AssertionError:
            settled_late = False
        self.stack.sandbox_config(card={"latency_ms": 0})
        self.assertFalse(settled_late,
                         f"the retry's client deadline was 1.5 s, yet the gateway waited for the "
                         f"provider's lookup answer ({t_answered:.1f}s after the retry) and "
                         f"recorded {status_name(self.ledger_status(req.idempotency_key))} from "
                         "it: the retry's Lookup is bounded by a fixed 10 s (and the instance "
                         "timeout), not by the caller's deadline")


    def test_15_pending_is_not_declared_failed_before_settle_after(self):
        """reconciler.h: a PENDING recharge with nothing at the provider is
        declared FAILED only once it is older than settle_after (3 s), so a
        request still on its way cannot land after "no charge" was decided.
        The recharge is created just before a whole second, where rounding its
        age to whole seconds would show; the sandbox drops the charge (1.5 s),
        so FAILED is the right outcome -- but not before 3 s."""
        self.start_gateway(self.timeout_config())
        self.stack.sandbox_config(card={"latency_ms": 1500, "timeout_mode": "drop"})
        wait_until(lambda: 0.80 <= time.time() % 1 <= 0.90, 2, "a moment just before a second",
                   interval=0.005)
        req = card_request(new_key("settle"))
        first = self.record(req)
        self.assert_status(first, PENDING)
        self.stack.sandbox_config(card={"latency_ms": 0})
        created = self.get(first.recharge_id).created_at.ToMicroseconds() / 1e6

        def settled():
            r = self.get(first.recharge_id)
            return (r, time.time()) if r.status != PENDING else None
        rec, seen = wait_until(settled, SETTLE_AFTER_S + 10, "the recharge to be settled",
                               interval=0.05)
        self.assert_status(rec, FAILED)
        self.assertEqual(self.stack.journal_for(req.idempotency_key), [])
        self.assertGreaterEqual(
            seen - created, SETTLE_AFTER_S,
            f"declared FAILED {seen - created:.2f}s after it was created, settle_after is "
            f"{SETTLE_AFTER_S}s: the reconciler compares the age in whole seconds "
            "(TimestampToTimeT / to_time_t), up to 1 s early")


    def test_16_failover_when_the_primary_goes_down_after_serving(self):
        """The realistic form of "primary down": card-primary (a second
        sandbox) serves a recharge, so the gateway keeps an idle keep-alive
        connection to it, then goes down. The next recharge must still fail
        over to card-backup and be APPROVED once -- the dead pooled
        connection was closed by the provider before anything was written to
        it, and the new connection is refused: nothing can have reached it."""
        s2 = self.stack.start_extra_sandbox("sandbox-crash")
        self.start_gateway(self.adapters_text(
            {"card-primary": self.card(s2.port), "card-backup": self.card()},
            [{"method": "card", "instances": ["card-primary", "card-backup"]}]))
        warm = self.record(card_request(new_key("warm")))
        self.assert_status(warm, APPROVED)
        self.assertEqual(warm.payment.adapter, "card-primary")
        s2.stop()
        outcomes = []
        for i in range(2):
            req = card_request(new_key(f"after-crash{i}"))
            resp = self.record(req)
            outcomes.append(f"{status_name(resp.status)} by {resp.payment.adapter} "
                            f"({resp.payment.message})")
            with self.subTest(i=i):
                self.assert_status(resp, APPROVED, f"call {i} after the primary went down")
                self.assertEqual(resp.payment.adapter, "card-backup")
                self.assertEqual(len(self.stack.journal_for(req.idempotency_key)), 1)
        sys.stderr.write(f"[{self._testMethodName}] after the crash: {outcomes}\n")


if __name__ == "__main__":
    unittest.main()
