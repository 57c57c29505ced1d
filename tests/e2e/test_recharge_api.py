#!/usr/bin/python3
"""Acceptance of the core API (DESIGN.md sections 4 and 5) through a Python
grpcio client against the real stack: the gateway binary, the PSP sandbox
over HTTPS, Redis, and the SQLite ledger.

    /usr/bin/python3 -m unittest -v tests/e2e/test_recharge_api.py
"""

from __future__ import annotations

import datetime
import os
import sys
import threading
import time
import unittest
import uuid

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import grpc  # noqa: E402

from stack import (CARD_APPROVE, CARD_DECLINE, CARD_NSF, HEALTH_SERVING,  # noqa: E402
                   PACKAGES_YAML, Stack, card_request, luhn_complete, new_key, new_user, pb,
                   wait_until)

APPROVED = pb.RECHARGE_STATUS_APPROVED
DECLINED = pb.RECHARGE_STATUS_DECLINED
RPC_TIMEOUT_S = 20


def load_catalogue() -> dict:
    """configs/packages.yaml, the single source of truth for prices."""
    import yaml  # python3-yaml (Debian)
    with open(PACKAGES_YAML, encoding="utf-8") as f:
        return yaml.safe_load(f)


class RechargeApiTest(unittest.TestCase):
    stack: Stack

    @classmethod
    def setUpClass(cls):
        cls.stack = Stack("recharge-api").start()
        cls.stub = cls.stack.stub()

    @classmethod
    def tearDownClass(cls):
        cls.stack.stop()

    # ------------------------------------------------------------- helpers

    def record(self, req, **kw):
        return self.stub.RecordRecharge(req, timeout=RPC_TIMEOUT_S, **kw)

    def assert_rpc_error(self, code, fn, *args, **kwargs) -> grpc.RpcError:
        with self.assertRaises(grpc.RpcError) as cm:
            fn(*args, timeout=RPC_TIMEOUT_S, **kwargs)
        err = cm.exception
        self.assertEqual(err.code(), code, f"details: {err.details()!r}")
        return err

    def keys_stored(self, key: str) -> int:
        return self.stack.ledger_rows("SELECT count(*) FROM idempotency_keys WHERE key = ?",
                                      (key,))[0][0]

    def recharges_of(self, user: str) -> list[tuple]:
        return self.stack.ledger_rows(
            "SELECT recharge_id, idempotency_key, status FROM recharges WHERE user_id = ?"
            " ORDER BY created_at, seq", (user,))

    def assert_no_pan(self, blob, pans, where):
        if isinstance(blob, str):
            blob = blob.encode("utf-8", "replace")
        for pan in pans:
            self.assertNotIn(pan.encode(), blob, f"full card number {pan} found in {where}")

    # -------------------------------------------------------------- catalogue

    def test_list_packages_us_prices(self):
        resp = self.stub.ListPackages(pb.ListPackagesRequest(region="US"), timeout=RPC_TIMEOUT_S)
        by_id = {p.package_id: p for p in resp.packages}
        self.assertEqual(by_id["coins_65"].coins, 65)
        self.assertEqual((by_id["coins_65"].price.currency, by_id["coins_65"].price.minor_units),
                         ("USD", 99))
        self.assertEqual(by_id["coins_6607"].coins, 6607)
        self.assertEqual((by_id["coins_6607"].price.currency,
                          by_id["coins_6607"].price.minor_units), ("USD", 9999))
        self.assertEqual(set(by_id), {"coins_65", "coins_330", "coins_660", "coins_1321",
                                      "coins_3303", "coins_6607"})
        self.assertEqual({p.price.currency for p in resp.packages}, {"USD"})
        self.assertEqual(len(resp.packages), 6)

    def test_list_packages_every_region_matches_catalogue_file(self):
        cat = load_catalogue()
        coins = {p["id"]: p["coins"] for p in cat["packages"]}
        self.assertGreater(len(cat["regions"]), 3)
        for region, offers in cat["regions"].items():
            with self.subTest(region=region):
                resp = self.stub.ListPackages(pb.ListPackagesRequest(region=region),
                                              timeout=RPC_TIMEOUT_S)
                got = sorted((p.package_id, p.coins, p.price.currency, p.price.minor_units)
                             for p in resp.packages)
                want = sorted((pid, coins[pid], currency, price)
                              for currency, prices in offers.items()
                              for pid, price in prices.items())
                self.assertEqual(got, want)
        # Spot checks of regional currencies, including one without minor units.
        ph = self.stub.ListPackages(pb.ListPackagesRequest(region="PH"), timeout=RPC_TIMEOUT_S)
        ph_65 = {p.price.currency: p.price.minor_units for p in ph.packages
                 if p.package_id == "coins_65"}
        self.assertEqual(ph_65, {"PHP": 5500, "USD": 99})
        jp = self.stub.ListPackages(pb.ListPackagesRequest(region="JP"), timeout=RPC_TIMEOUT_S)
        jp_65 = [(p.price.currency, p.price.minor_units) for p in jp.packages
                 if p.package_id == "coins_65"]
        self.assertEqual(jp_65, [("JPY", 160)])  # 160 yen: JPY has no minor units

    def test_list_packages_unknown_or_malformed_region(self):
        for region in ("ZZ", "us", "USA", "", "U1"):
            with self.subTest(region=region):
                err = self.assert_rpc_error(grpc.StatusCode.INVALID_ARGUMENT,
                                            self.stub.ListPackages,
                                            pb.ListPackagesRequest(region=region))
                self.assertTrue(err.details().startswith("region:"), err.details())

    # ----------------------------------------------------------- card charge

    def test_card_recharge_approved_and_card_number_never_leaks(self):
        unique_pan = luhn_complete("4" + str(uuid.uuid4().int)[:14])  # 16 digits
        pans = (CARD_APPROVE, unique_pan)
        results = []
        for pan in pans:
            key, user = new_key(), new_user()
            t0 = time.time()
            resp = self.record(card_request(key, user, number=pan))
            self.assertEqual(resp.status, APPROVED, resp)
            self.assertEqual(resp.coins_credited, 65)
            self.assertEqual(resp.payment.adapter, "card-primary")
            self.assertTrue(resp.payment.provider_reference.startswith("ch_"), resp.payment)
            self.assertFalse(resp.replayed)
            self.assertTrue(resp.recharge_id.startswith("rch_"), resp.recharge_id)

            # The provider took exactly one charge, for the price, under the key.
            lines = self.stack.journal_for(key)
            self.assertEqual(len(lines), 1, lines)
            self.assertEqual((lines[0]["status"], lines[0]["amount"], lines[0]["currency"],
                              lines[0]["id"], lines[0]["last4"]),
                             ("succeeded", 99, "USD", resp.payment.provider_reference, pan[-4:]))

            rec = self.stub.GetRecharge(pb.GetRechargeRequest(recharge_id=resp.recharge_id),
                                        timeout=RPC_TIMEOUT_S)
            self.assertEqual(rec.recharge_id, resp.recharge_id)
            self.assertEqual(rec.idempotency_key, key)
            self.assertEqual(rec.user_id, user)
            self.assertEqual((rec.package_id, rec.coins), ("coins_65", 65))
            self.assertEqual((rec.amount.currency, rec.amount.minor_units), ("USD", 99))
            self.assertEqual(rec.region, "US")
            self.assertEqual(rec.payment_method, "card")
            self.assertEqual(rec.card_masked, pan[:6] + "******" + pan[-4:])
            self.assertEqual(rec.status, APPROVED)
            self.assertEqual(rec.payment.adapter, "card-primary")
            self.assertEqual(rec.payment.provider_reference, resp.payment.provider_reference)
            created = rec.created_at.seconds + rec.created_at.nanos / 1e9
            self.assertLess(abs(created - t0), 60, rec.created_at)
            self.assert_no_pan(rec.SerializeToString(), pans, "the serialized Recharge")
            self.assert_no_pan(str(rec), pans, "the Recharge text")
            self.assert_no_pan(resp.SerializeToString(), pans, "the serialized response")

            rows = self.recharges_of(user)
            self.assertEqual(rows, [(resp.recharge_id, key, APPROVED)])
            state = self.stack.ledger_rows(
                "SELECT state, recharge_id FROM idempotency_keys WHERE key = ?", (key,))
            self.assertEqual(state, [("completed", resp.recharge_id)])
            results.append(resp)

        self.assertNotEqual(results[0].recharge_id, results[1].recharge_id)
        self.assert_no_pan(self.stack.ledger_bytes(), pans, "the ledger files")
        self.assert_no_pan(self.stack.journal_path.read_bytes(), pans, "the sandbox journal")
        self.assert_no_pan(self.stack.gateway_log(), pans, "the gateway's stderr log")
        self.assert_no_pan(self.stack.sandbox_log(), pans, "the sandbox log")

    def test_replay_returns_stored_result_and_other_request_is_already_exists(self):
        key, user = new_key(), new_user()
        first = self.record(card_request(key, user))
        self.assertEqual(first.status, APPROVED, first)
        self.assertFalse(first.replayed)

        again = self.record(card_request(key, user))
        self.assertTrue(again.replayed)
        self.assertEqual(again.recharge_id, first.recharge_id)
        self.assertEqual(again.status, APPROVED)
        self.assertEqual(again.coins_credited, 65)
        self.assertEqual(again.payment.provider_reference, first.payment.provider_reference)

        other = card_request(key, user, package_id="coins_330", minor_units=499)
        err = self.assert_rpc_error(grpc.StatusCode.ALREADY_EXISTS, self.stub.RecordRecharge, other)
        self.assertTrue(err.details().startswith("idempotency_key"), err.details())
        # Another card under the same key is another request too.
        err = self.assert_rpc_error(grpc.StatusCode.ALREADY_EXISTS, self.stub.RecordRecharge,
                                    card_request(key, user, number="5555555555554444"))

        self.assertEqual(len(self.stack.journal_for(key)), 1)
        self.assertEqual(len(self.recharges_of(user)), 1)

    def test_concurrent_identical_calls_charge_once(self):
        key, user = new_key(), new_user()
        req = card_request(key, user)
        n = 40
        self.stack.sandbox_config(latency_ms=200)  # keep the first call in flight
        try:
            barrier = threading.Barrier(n)
            results: list = [None] * n

            def worker(i):
                try:
                    barrier.wait(timeout=30)
                    results[i] = self.stub.RecordRecharge(req, timeout=RPC_TIMEOUT_S)
                except grpc.RpcError as e:
                    results[i] = e
                except Exception as e:  # surfaced by the assertions below
                    results[i] = e

            threads = [threading.Thread(target=worker, args=(i,)) for i in range(n)]
            for t in threads:
                t.start()
            for t in threads:
                t.join(timeout=60)
            self.assertFalse(any(t.is_alive() for t in threads), "a client call hung")
        finally:
            self.stack.sandbox_config(latency_ms=0)

        ok = [r for r in results if isinstance(r, pb.RecordRechargeResponse)]
        errors = [r for r in results if not isinstance(r, pb.RecordRechargeResponse)]
        for e in errors:
            self.assertIsInstance(e, grpc.RpcError, e)
            self.assertEqual(e.code(), grpc.StatusCode.ABORTED, e.details())
        self.assertGreaterEqual(len(ok), 1)
        self.assertEqual({r.recharge_id for r in ok}, {ok[0].recharge_id})
        self.assertEqual({r.status for r in ok}, {APPROVED})
        self.assertEqual(len([r for r in ok if not r.replayed]), 1,
                         "exactly one call must have done the work")

        listed = self.stub.ListRecharges(pb.ListRechargesRequest(user_id=user),
                                         timeout=RPC_TIMEOUT_S)
        self.assertEqual([r.recharge_id for r in listed.recharges], [ok[0].recharge_id])
        self.assertEqual(self.recharges_of(user), [(ok[0].recharge_id, key, APPROVED)])
        self.assertEqual(self.keys_stored(key), 1)
        self.assertEqual(len(self.stack.journal_for(key)), 1)
        final = self.record(req)
        self.assertEqual((final.recharge_id, final.replayed), (ok[0].recharge_id, True))

    def test_declines_are_ok_results_and_replay(self):
        for pan, code in ((CARD_DECLINE, "card_declined"), (CARD_NSF, "insufficient_funds")):
            with self.subTest(code=code):
                key, user = new_key(), new_user()
                resp = self.record(card_request(key, user, number=pan))
                self.assertEqual(resp.status, DECLINED, resp)
                self.assertEqual(resp.payment.decline_code, code)
                self.assertEqual(resp.coins_credited, 0)
                self.assertEqual(resp.payment.adapter, "card-primary")
                self.assertFalse(resp.replayed)
                rec = self.stub.GetRecharge(pb.GetRechargeRequest(recharge_id=resp.recharge_id),
                                            timeout=RPC_TIMEOUT_S)
                self.assertEqual((rec.status, rec.payment.decline_code), (DECLINED, code))
                lines = self.stack.journal_for(key)
                self.assertEqual([(r["status"], r["decline_code"]) for r in lines],
                                 [("failed", code)])

                again = self.record(card_request(key, user, number=pan))
                self.assertTrue(again.replayed)
                self.assertEqual((again.recharge_id, again.status, again.payment.decline_code),
                                 (resp.recharge_id, DECLINED, code))
                self.assertEqual(len(self.stack.journal_for(key)), 1)
                self.assertEqual(len(self.recharges_of(user)), 1)

    # ------------------------------------------------------------ validation

    def test_bad_fields_are_invalid_argument_store_nothing_and_retry_works(self):
        this_year = datetime.datetime.now(datetime.timezone.utc).year
        eleven = luhn_complete("4242424242")          # 11 digits, Luhn-valid
        twenty = luhn_complete("4242424242424242424")  # 20 digits, Luhn-valid
        self.assertEqual((len(eleven), len(twenty)), (11, 20))

        def set_card(**kw):
            def mutate(req):
                for k, v in kw.items():
                    setattr(req.card, k, v)
            return mutate

        def set_amount(currency=None, minor_units=None):
            def mutate(req):
                if currency is not None:
                    req.amount.currency = currency
                if minor_units is not None:
                    req.amount.minor_units = minor_units
            return mutate

        def set_field(name, value):
            return lambda req: setattr(req, name, value)

        def use_paypal(**kw):
            return lambda req: req.paypal.CopyFrom(pb.PayPal(**kw))

        def use_ewallet(**kw):
            return lambda req: req.ewallet.CopyFrom(pb.EWallet(**kw))

        def set_ip(ip):
            return lambda req: setattr(req.client, "ip", ip)

        # (case, accepted field paths, mutation of a valid request)
        cases = [
            ("user_id missing", ("user_id",), set_field("user_id", "")),
            ("package unknown", ("package_id",), set_field("package_id", "coins_999")),
            ("package missing", ("package_id",), set_field("package_id", "")),
            ("region lowercase", ("region",), set_field("region", "us")),
            ("region three letters", ("region",), set_field("region", "USA")),
            ("region missing", ("region",), set_field("region", "")),
            ("region unknown", ("region",), set_field("region", "ZZ")),
            ("amount missing", ("amount",), lambda req: req.ClearField("amount")),
            ("currency not offered", ("amount.currency",), set_amount("PHP", 5500)),
            ("currency missing", ("amount.currency",), set_amount("", 99)),
            ("price too low", ("amount.minor_units",), set_amount(minor_units=98)),
            ("price too high", ("amount.minor_units",), set_amount(minor_units=100)),
            ("price zero", ("amount.minor_units",), set_amount(minor_units=0)),
            ("price negative", ("amount.minor_units",), set_amount(minor_units=-99)),
            ("price in cents for JPY", ("amount.minor_units",),
             lambda req: (setattr(req, "region", "JP"),
                          req.amount.CopyFrom(pb.Money(currency="JPY", minor_units=16000)))),
            ("no payment method", ("payment_method",), lambda req: req.ClearField("card")),
            ("card number 11 digits", ("card.number",), set_card(number=eleven)),
            ("card number 20 digits", ("card.number",), set_card(number=twenty)),
            ("card number with spaces", ("card.number",), set_card(number="4242 4242 4242 4242")),
            ("card number with dashes", ("card.number",), set_card(number="4242-4242-4242-4242")),
            ("card number with a letter", ("card.number",), set_card(number="424242424242424a")),
            ("card number missing", ("card.number",), set_card(number="")),
            ("card number Luhn-invalid", ("card.number",), set_card(number="4242424242424241")),
            ("exp_month 13", ("card.exp_month",), set_card(exp_month=13)),
            ("exp_month 0", ("card.exp_month",), set_card(exp_month=0)),
            ("card expired last year", ("card.exp_year", "card.exp_month"),
             set_card(exp_year=this_year - 1)),
            ("cvc 2 digits", ("card.cvc",), set_card(cvc="12")),
            ("cvc 5 digits", ("card.cvc",), set_card(cvc="12345")),
            ("cvc letters", ("card.cvc",), set_card(cvc="abc")),
            ("cvc missing", ("card.cvc",), set_card(cvc="")),
            ("paypal order_id missing", ("paypal.order_id",), use_paypal(payer_id="PAYER123")),
            ("ewallet provider missing", ("ewallet.provider",), use_ewallet(account_id="acct123")),
            ("ewallet account_id missing", ("ewallet.account_id",), use_ewallet(provider="gcash")),
            ("client.ip not an address", ("client.ip",), set_ip("not-an-ip")),
            ("client.ip octet out of range", ("client.ip",), set_ip("999.1.1.1")),
            ("client.ip truncated", ("client.ip",), set_ip("10.0.0")),
        ]
        bad_numbers = [CARD_APPROVE, eleven, twenty, "4242424242424241"]
        for name, fields, mutate in cases:
            with self.subTest(case=name):
                key, user = new_key(), new_user()
                req = card_request(key, user)
                mutate(req)
                err = self.assert_rpc_error(grpc.StatusCode.INVALID_ARGUMENT,
                                            self.stub.RecordRecharge, req)
                details = err.details() or ""
                self.assertTrue(any(details.startswith(f + ":") for f in fields),
                                f"{details!r} does not name {fields}")
                self.assert_no_pan(details, bad_numbers, "the error message")
                self.assertEqual(self.keys_stored(key), 0, "a bad request stored its key")
                self.assertEqual(self.recharges_of(user), [], "a bad request stored a recharge")
                self.assertEqual(self.stack.journal_for(key), [], "a bad request was charged")
                # The corrected request under the same key goes through.
                fixed = self.record(card_request(key, user))
                self.assertEqual(fixed.status, APPROVED, fixed)
                self.assertFalse(fixed.replayed)
                self.assertEqual(len(self.stack.journal_for(key)), 1)

        bad_keys = [
            ("7 characters", "k" + uuid.uuid4().hex[:6]),
            ("129 characters", ("k" + uuid.uuid4().hex * 5)[:129]),
            ("a space", "e2e key " + uuid.uuid4().hex),
            ("a slash", "e2e/" + uuid.uuid4().hex),
            ("non-ASCII", "e2e-ключ-" + uuid.uuid4().hex),
            ("empty", ""),
        ]
        self.assertEqual((len(bad_keys[0][1]), len(bad_keys[1][1])), (7, 129))
        for name, key in bad_keys:
            with self.subTest(idempotency_key=name):
                user = new_user()
                err = self.assert_rpc_error(grpc.StatusCode.INVALID_ARGUMENT,
                                            self.stub.RecordRecharge, card_request(key, user))
                self.assertTrue((err.details() or "").startswith("idempotency_key:"),
                                err.details())
                self.assertEqual(self.keys_stored(key), 0)
                self.assertEqual(self.recharges_of(user), [])
                self.assertEqual(self.stack.journal_for(key), [])
                fixed = self.record(card_request(new_key(), user))
                self.assertEqual(fixed.status, APPROVED, fixed)
        # Boundaries that are valid: 8 and 128 characters.
        for n in (8, 128):
            with self.subTest(valid_key_length=n):
                key = ("k" + uuid.uuid4().hex * 5)[:n]
                resp = self.record(card_request(key))
                self.assertEqual(resp.status, APPROVED)
                self.assertEqual(self.keys_stored(key), 1)

        self.assert_no_pan(self.stack.gateway_log(), bad_numbers, "the gateway's stderr log")

    # -------------------------------------------------------------- reading

    def test_get_recharge_unknown_is_not_found(self):
        for rid in ("rch_000000000000000000000000", "rch_" + uuid.uuid4().hex[:24]):
            with self.subTest(recharge_id=rid):
                self.assert_rpc_error(grpc.StatusCode.NOT_FOUND, self.stub.GetRecharge,
                                      pb.GetRechargeRequest(recharge_id=rid))
        self.assert_rpc_error(grpc.StatusCode.INVALID_ARGUMENT, self.stub.GetRecharge,
                              pb.GetRechargeRequest(recharge_id=""))

    def test_list_recharges_newest_first_in_pages(self):
        user, other = new_user(), new_user()
        ids = [self.record(card_request(new_key(), user)).recharge_id for _ in range(5)]
        self.record(card_request(new_key(), other))
        newest_first = list(reversed(ids))

        pages, token = [], ""
        for _ in range(10):  # bounded: 3 pages expected
            page = self.stub.ListRecharges(
                pb.ListRechargesRequest(user_id=user, page_size=2, page_token=token),
                timeout=RPC_TIMEOUT_S)
            pages.append(page)
            token = page.next_page_token
            if not token:
                break
        self.assertEqual([len(p.recharges) for p in pages], [2, 2, 1])
        self.assertEqual([bool(p.next_page_token) for p in pages], [True, True, False])
        self.assertEqual([r.recharge_id for p in pages for r in p.recharges], newest_first)
        self.assertEqual({r.user_id for p in pages for r in p.recharges}, {user})

        everything = self.stub.ListRecharges(pb.ListRechargesRequest(user_id=user),
                                             timeout=RPC_TIMEOUT_S)
        self.assertEqual([r.recharge_id for r in everything.recharges], newest_first)
        self.assertEqual(everything.next_page_token, "")

        err = self.assert_rpc_error(
            grpc.StatusCode.INVALID_ARGUMENT, self.stub.ListRecharges,
            pb.ListRechargesRequest(user_id=other, page_size=2,
                                    page_token=pages[0].next_page_token))
        self.assertTrue(err.details().startswith("page_token"), err.details())
        err = self.assert_rpc_error(
            grpc.StatusCode.INVALID_ARGUMENT, self.stub.ListRecharges,
            pb.ListRechargesRequest(user_id=user, page_token="not-a-token"))
        self.assertTrue(err.details().startswith("page_token"), err.details())
        err = self.assert_rpc_error(
            grpc.StatusCode.INVALID_ARGUMENT, self.stub.ListRecharges,
            pb.ListRechargesRequest(user_id=user, page_size=-1))
        self.assertTrue(err.details().startswith("page_size"), err.details())

    def test_created_at_has_sub_second_precision(self):
        """created_at is a google.protobuf.Timestamp and the ledger keeps
        microseconds: recharges made a few hundred ms apart must not share
        one whole-second timestamp."""
        user = new_user()
        stamps = []
        for _ in range(4):
            before = time.time()
            resp = self.record(card_request(new_key(), user))
            after = time.time()
            rec = self.stub.GetRecharge(pb.GetRechargeRequest(recharge_id=resp.recharge_id),
                                        timeout=RPC_TIMEOUT_S)
            created = rec.created_at.seconds + rec.created_at.nanos / 1e9
            self.assertLessEqual(int(before), created)
            self.assertLessEqual(created, after + 1)
            stamps.append(rec.created_at)
            wait_until(lambda: time.time() >= after + 0.3, 1, "300 ms to pass")
        self.assertTrue(any(t.nanos != 0 for t in stamps),
                        "every created_at is a whole second: "
                        + ", ".join(t.ToJsonString() for t in stamps))
        micros = [row[0] for row in self.stack.ledger_rows(
            "SELECT created_at FROM recharges WHERE user_id = ? ORDER BY seq", (user,))]
        self.assertEqual(len(micros), 4)
        self.assertEqual(len(set(micros)), 4, f"ledger created_at (unix µs): {micros}")

    def test_list_recharges_page_size_is_capped_at_100(self):
        user = new_user("bulk")
        n = 103
        errors = []
        lock = threading.Lock()
        keys = iter([new_key() for _ in range(n)])

        def worker():
            while True:
                with lock:
                    key = next(keys, None)
                if key is None:
                    return
                try:
                    r = self.stub.RecordRecharge(card_request(key, user), timeout=RPC_TIMEOUT_S)
                    if r.status != APPROVED:
                        errors.append(r)
                except grpc.RpcError as e:
                    errors.append(e)

        threads = [threading.Thread(target=worker) for _ in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=120)
        self.assertEqual(errors, [])
        self.assertEqual(len(self.recharges_of(user)), n)

        first = self.stub.ListRecharges(pb.ListRechargesRequest(user_id=user, page_size=1000),
                                        timeout=RPC_TIMEOUT_S)
        self.assertEqual(len(first.recharges), 100)
        self.assertNotEqual(first.next_page_token, "")
        rest = self.stub.ListRecharges(
            pb.ListRechargesRequest(user_id=user, page_size=1000,
                                    page_token=first.next_page_token), timeout=RPC_TIMEOUT_S)
        self.assertEqual(len(rest.recharges), n - 100)
        self.assertEqual(rest.next_page_token, "")
        listed = [r.recharge_id for r in first.recharges] + [r.recharge_id for r in rest.recharges]
        in_ledger = [row[0] for row in reversed(self.recharges_of(user))]
        self.assertEqual(listed, in_ledger)

    # --------------------------------------------------------- discoverability

    def test_health_serving_and_reflection_lists_services(self):
        self.assertEqual(self.stack.health(), HEALTH_SERVING)
        services = self.stack.reflection_list_services()
        for name in (b"recharge.v1.RechargeGateway", b"recharge.v1.FraudAdmin",
                     b"grpc.health.v1.Health"):
            self.assertIn(name, services)


if __name__ == "__main__":
    unittest.main()
