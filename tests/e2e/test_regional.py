#!/usr/bin/python3
"""Issue 11: regional payment flows on a real stack (Redis, the PSP sandbox
over HTTPS sending signed webhooks, the gateway with its webhook port), checked
against the sandbox journal, the ledger and the event feed.

- A GCash recharge on a `flow: redirect` instance answers REQUIRES_ACTION
  with a REDIRECT to the wallet's approval page; a replay of its key returns
  the same action; pressing Approve on the page makes it APPROVED with its
  coins (one SETTLED event, one charge in the journal); Cancel makes another
  FAILED; one left alone past its action_expiry is cancelled by the
  reconciler and FAILED action_expired.
- A card challenged by 3-D Secure (region DE) answers REQUIRES_ACTION;
  passing the challenge captures it once (APPROVED); failing it is DECLINED
  authentication_failed; a frictionless card is APPROVED at once.
- Webhooks: a forged signature and a stale timestamp are 401 and change
  nothing; the same notification twice changes the recharge once (one
  event); a notification for an unknown recharge is acknowledged; while
  the gateway is down the sandbox retries with backoff and the recharge is
  settled once it is back.
- The fraud rules decide first: a blocked or reviewed wallet recharge never
  reaches the wallet; no card number reaches the gateway's log or ledger.

    /usr/bin/python3 -m unittest -v tests/e2e/test_regional.py
"""

from __future__ import annotations

import json
import os
import sys
import time
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from stack import (Stack, card_request, charges_taken, new_key, new_user, pb,  # noqa: E402
                   wait_until)

RPC_TIMEOUT_S = 20
SETTLE_TIMEOUT_S = 20
BLOCK_SELLER = "seller-blocked-regional"
REVIEW_SELLER = "seller-review-regional"

CARD_3DS_ALWAYS = "4000002760003184"   # challenged in every region
CARD_3DS_FAILS = "4000008400001629"    # challenged; the challenge always fails
CARD_FRICTIONLESS = "4000000000003055"  # 3-D Secure without a challenge
CARD_PLAIN = "4242424242424242"        # challenged in DE, GB and IN only

RULES = f"""\
version: "regional-1"
fail_mode: open
counters:
  user_recharges_1h: {{ count: true, per: user_id, window: 1h }}
  user_declines_1h: {{ count: true, per: user_id, window: 1h, on: decline }}
rules:
  - id: review-after-a-decline
    when: user_declines_1h >= 1
    action: review
    reason: the buyer was declined within the hour
  - id: block-listed-seller
    when: seller_id == "{BLOCK_SELLER}"
    action: block
    reason: seller on the e2e block list
  - id: review-listed-seller
    when: seller_id == "{REVIEW_SELLER}"
    action: review
    reason: seller on the e2e review list
"""


def gcash_request(suffix: str = "0001", seller: str = "") -> "pb.RecordRechargeRequest":
    """A GCash recharge (PH, coins_65 at PHP 55.00; the sandbox pays an
    account ending 0001)."""
    return pb.RecordRechargeRequest(
        idempotency_key=new_key("reg-ew"), user_id=new_user("reg"), package_id="coins_65",
        amount=pb.Money(currency="PHP", minor_units=5500), region="PH", seller_id=seller,
        ewallet=pb.EWallet(provider="gcash", account_id=f"acct-{new_key('a')[-8:]}-{suffix}"),
        client=pb.ClientContext(ip="198.51.100.21", device_id="dev-regional"))


def de_card(number: str = CARD_PLAIN) -> "pb.RecordRechargeRequest":
    return card_request(new_key("reg-card"), number=number, region="DE", currency="EUR",
                        minor_units=99)


def taken_under(st: Stack, key: str) -> list[dict]:
    return [r for r in charges_taken(st.journal(ops=True)) if r.get("idempotency_key") == key]


def regional_adapters(st: Stack, action_expiry: str) -> str:
    common = (f"    endpoint: https://127.0.0.1:{st.sandbox_port}\n"
              f"    ca_file: {st.certs / 'ca.pem'}\n"
              "    timeout: 5s\n")
    return (
        "# Written by tests/e2e/test_regional.py\n"
        "instances:\n"
        "  card-primary:\n"
        "    type: card\n" + common +
        f"    secret_file: {st.card_secret_file}\n" +
        st.notify_lines("card-primary", action_expiry) +
        "  gcash-ph:\n"
        "    type: ewallet\n"
        "    provider: gcash\n"
        "    regions: [PH]\n"
        "    currencies: [PHP]\n"
        "    flow: redirect\n" + common +
        f"    secret_file: {st.ewallet_secret_file}\n" +
        st.notify_lines("gcash-ph", action_expiry) +
        "routes:\n"
        "  - { method: card, instances: [card-primary] }\n"
        "  - { method: ewallet, providers: [gcash], instances: [gcash-ph] }\n")


def start_regional_stack(name: str, action_expiry: str = "15m",
                         recovery_interval: str = "5s") -> Stack:
    st = Stack(name, ewallet=True, webhooks=True, metrics=True,
               recovery_interval=recovery_interval)
    st.fraud_rules_text = RULES
    try:
        st.start()
        st.adapters_text = regional_adapters(st, action_expiry)
        st.write_configs()
        st.stop_gateway()
        st.start_gateway()
    except BaseException:
        st.stop()
        raise
    return st


class RegionalFlowTest(unittest.TestCase):
    st: Stack

    @classmethod
    def setUpClass(cls):
        cls.st = start_regional_stack("regional")

    @classmethod
    def tearDownClass(cls):
        cls.st.stop()

    def record(self, req):
        return self.st.stub().RecordRecharge(req, timeout=RPC_TIMEOUT_S)

    def get(self, recharge_id: str):
        return self.st.stub().GetRecharge(pb.GetRechargeRequest(recharge_id=recharge_id),
                                          timeout=RPC_TIMEOUT_S)

    def wait_status(self, recharge_id: str, status, timeout: float = SETTLE_TIMEOUT_S):
        def settled():
            r = self.get(recharge_id)
            return r if r.status == status else None
        return wait_until(settled, timeout, f"{recharge_id} {pb.RechargeStatus.Name(status)}",
                          interval=0.05)

    def taken(self, key: str) -> list[dict]:
        """The journal's charges that took money under `key` (a hold or a
        redirect payment only once captured or approved)."""
        return taken_under(self.st, key)

    def events_of(self, recharge_id: str) -> list[int]:
        return [t for (t,) in self.st.ledger_rows(
            "SELECT type FROM recharge_events WHERE recharge_id = ? ORDER BY seq", (recharge_id,))]

    def assert_requires_action(self, resp, url_prefix: str):
        self.assertEqual(resp.status, pb.RECHARGE_STATUS_REQUIRES_ACTION, resp)
        self.assertEqual(resp.coins_credited, 0)
        self.assertEqual(resp.next_action.type, pb.NEXT_ACTION_TYPE_REDIRECT)
        self.assertTrue(resp.next_action.url.startswith(
            f"https://127.0.0.1:{self.st.sandbox_port}{url_prefix}"), resp.next_action.url)
        left = resp.next_action.expires_at.seconds - time.time()
        self.assertTrue(14 * 60 < left <= 15 * 60 + 5, f"expires in {left:.0f} s")

    # ------------------------------------------------------------ wallets

    def test_gcash_redirect_approved_on_the_wallet_page(self):
        req = gcash_request()
        first = self.record(req)
        self.assert_requires_action(first, "/ewallet/approve/")
        again = self.record(req)
        self.assertTrue(again.replayed)
        self.assertEqual(again.recharge_id, first.recharge_id)
        self.assertEqual(again.next_action, first.next_action)
        self.assertEqual(self.taken(req.idempotency_key), [])

        status, page = self.st.psp.press(first.next_action.url, "approve")
        self.assertEqual(status, 200, page)
        r = self.wait_status(first.recharge_id, pb.RECHARGE_STATUS_APPROVED)
        self.assertEqual(r.coins, 65)
        self.assertEqual(self.events_of(first.recharge_id),
                         [pb.RECHARGE_EVENT_DECIDED, pb.RECHARGE_EVENT_SETTLED])
        self.assertEqual(len(self.taken(req.idempotency_key)), 1)
        replay = self.record(req)
        self.assertEqual(replay.status, pb.RECHARGE_STATUS_APPROVED)
        self.assertEqual(replay.coins_credited, 65)

    def test_gcash_cancelled_on_the_wallet_page_fails(self):
        req = gcash_request()
        first = self.record(req)
        self.assert_requires_action(first, "/ewallet/approve/")
        status, page = self.st.psp.press(first.next_action.url, "cancel")
        self.assertEqual(status, 200, page)
        r = self.wait_status(first.recharge_id, pb.RECHARGE_STATUS_FAILED)
        self.assertEqual(r.payment.decline_code, "cancelled")
        self.assertEqual(self.taken(req.idempotency_key), [])
        self.assertEqual(self.events_of(first.recharge_id),
                         [pb.RECHARGE_EVENT_DECIDED, pb.RECHARGE_EVENT_SETTLED])

    def test_fraud_decides_before_the_buyer_is_sent_anywhere(self):
        blocked = self.record(gcash_request(seller=BLOCK_SELLER))
        self.assertEqual(blocked.status, pb.RECHARGE_STATUS_BLOCKED)
        self.assertFalse(blocked.HasField("next_action"))
        reviewed_req = gcash_request(seller=REVIEW_SELLER)
        reviewed = self.record(reviewed_req)
        self.assertEqual(reviewed.status, pb.RECHARGE_STATUS_PENDING_REVIEW)
        self.assertFalse(reviewed.HasField("next_action"))
        self.assertEqual(self.st.journal_for(reviewed_req.idempotency_key), [])

    # -------------------------------------------------------------- cards

    def test_a_challenged_card_is_captured_once_after_the_challenge(self):
        req = de_card()
        first = self.record(req)
        self.assert_requires_action(first, "/3ds/")
        self.assertEqual(self.taken(req.idempotency_key), [])
        again = self.record(req)
        self.assertEqual(again.next_action, first.next_action)
        status, page = self.st.psp.press(first.next_action.url, "approve")
        self.assertEqual(status, 200, page)
        r = self.wait_status(first.recharge_id, pb.RECHARGE_STATUS_APPROVED)
        self.assertEqual(r.coins, 65)
        # The challenge passed, then one capture under the recharge's key.
        self.assertEqual(self.st.payment_ops(req.idempotency_key), ["authenticate", "capture"])
        self.assertEqual(len(self.taken(req.idempotency_key)), 1)
        self.assertEqual(self.events_of(first.recharge_id),
                         [pb.RECHARGE_EVENT_DECIDED, pb.RECHARGE_EVENT_SETTLED])

    def test_a_failed_challenge_is_declined_and_nothing_is_taken(self):
        req = de_card(CARD_3DS_FAILS)
        first = self.record(req)
        self.assert_requires_action(first, "/3ds/")
        status, page = self.st.psp.press(first.next_action.url, "fail")
        self.assertEqual(status, 200, page)
        r = self.wait_status(first.recharge_id, pb.RECHARGE_STATUS_DECLINED)
        self.assertEqual(r.payment.decline_code, "authentication_failed")
        self.assertEqual(self.taken(req.idempotency_key), [])
        self.assertEqual(self.st.payment_ops(req.idempotency_key), ["authenticate"])
        # The late decline counts for the fraud rules like an immediate one:
        # the buyer's next recharge goes to review (the count is written in
        # the background: a recharge made before it lands is allowed).

        def reviewed():
            r = self.record(card_request(new_key("reg-after"), user=req.user_id))
            return r if r.fraud.decision == pb.FRAUD_ACTION_REVIEW else None
        r = wait_until(reviewed, SETTLE_TIMEOUT_S, "the decline counted", interval=0.1)
        self.assertIn("review-after-a-decline", [h.rule_id for h in r.fraud.hits])

    def test_a_frictionless_card_is_approved_at_once(self):
        resp = self.record(de_card(CARD_FRICTIONLESS))
        self.assertEqual(resp.status, pb.RECHARGE_STATUS_APPROVED)
        self.assertEqual(resp.coins_credited, 65)
        self.assertFalse(resp.HasField("next_action"))
        # A US card is not challenged; the always-challenge card is.
        self.assertEqual(self.record(card_request(new_key("reg-us"))).status,
                         pb.RECHARGE_STATUS_APPROVED)
        self.assertEqual(self.record(card_request(new_key("reg-us3ds"), number=CARD_3DS_ALWAYS))
                         .status, pb.RECHARGE_STATUS_REQUIRES_ACTION)

    def test_a_reviewed_card_is_held_after_its_challenge_not_captured(self):
        req = de_card()
        req.seller_id = REVIEW_SELLER
        first = self.record(req)
        self.assert_requires_action(first, "/3ds/")
        self.st.psp.press(first.next_action.url, "approve")
        r = self.wait_status(first.recharge_id, pb.RECHARGE_STATUS_PENDING_REVIEW)
        self.assertTrue(r.HasField("hold_expires_at"))
        self.assertEqual(self.st.payment_ops(req.idempotency_key), ["authenticate"])
        self.assertEqual(self.taken(req.idempotency_key), [])
        self.assertEqual(self.events_of(first.recharge_id),
                         [pb.RECHARGE_EVENT_DECIDED, pb.RECHARGE_EVENT_ACTION_COMPLETED])

    # ----------------------------------------------------------- webhooks

    def delivery_for(self, recharge_id: str, key: str) -> dict:
        def found():
            for w in self.st.psp.webhooks():
                body = json.loads(w["body"])
                obj = body.get("payment") or body.get("data", {}).get("object", {})
                if obj.get("merchant_ref") == recharge_id or obj.get("idempotency_key") == key:
                    if w["delivered"]:
                        return w
            return None
        return wait_until(found, SETTLE_TIMEOUT_S, f"the delivered webhook of {recharge_id}")

    def webhook_counts(self) -> dict[tuple[str, str], float]:
        """recharge_webhooks_total by (instance, result), from /metrics."""
        from prometheus_client.parser import text_string_to_metric_families
        status, _, text = self.st.scrape()
        self.assertEqual(status, 200)
        return {(s.labels["instance"], s.labels["result"]): s.value
                for family in text_string_to_metric_families(text)
                for s in family.samples if s.name == "recharge_webhooks_total"}

    def test_forged_stale_and_repeated_notifications_change_nothing(self):
        before = self.webhook_counts()
        req = gcash_request()
        first = self.record(req)
        self.st.psp.press(first.next_action.url, "approve")
        self.wait_status(first.recharge_id, pb.RECHARGE_STATUS_APPROVED)
        delivered = self.delivery_for(first.recharge_id, req.idempotency_key)
        body = delivered["body"].encode()

        forged = self.st.sign_webhook(body, secret="whsec_not_the_secret")
        status, answer = self.st.webhook_request("gcash-ph", body, {"Sandbox-Signature": forged})
        self.assertEqual(status, 401, answer)
        stale = self.st.sign_webhook(body, timestamp=int(time.time()) - 3600)
        status, answer = self.st.webhook_request("gcash-ph", body, {"Sandbox-Signature": stale})
        self.assertEqual(status, 401, answer)
        self.assertIn("timestamp", answer["error"])
        status, answer = self.st.webhook_request("gcash-ph", body)  # no signature
        self.assertEqual(status, 401, answer)
        altered = body.replace(b"SUCCESS", b"FAILED")
        status, _ = self.st.webhook_request(
            "gcash-ph", altered, {"Sandbox-Signature": self.st.sign_webhook(body)})
        self.assertEqual(status, 401)

        # The same notification again, validly signed: acknowledged, no change.
        for _ in range(2):
            status, answer = self.st.webhook_request(
                "gcash-ph", body, {"Sandbox-Signature": self.st.sign_webhook(body)})
            self.assertEqual((status, answer), (200, {"result": "duplicate"}))
        self.assertEqual(self.events_of(first.recharge_id),
                         [pb.RECHARGE_EVENT_DECIDED, pb.RECHARGE_EVENT_SETTLED])
        self.assertEqual(self.get(first.recharge_id).status, pb.RECHARGE_STATUS_APPROVED)

        # Another event about an unknown recharge: acknowledged and logged.
        unknown = json.loads(body)
        unknown["event_id"] = "EV-unknown-" + new_key("x")
        unknown["payment"]["merchant_ref"] = "rch_000000000000000000000000"
        raw = json.dumps(unknown).encode()
        status, answer = self.st.webhook_request(
            "gcash-ph", raw, {"Sandbox-Signature": self.st.sign_webhook(raw)})
        self.assertEqual(status, 200, answer)
        self.assertEqual(answer["result"], "ignored")
        # A route for no instance, and a GET: refused.
        self.assertEqual(self.st.webhook_request("no-such-instance", body)[0], 404)
        self.assertEqual(self.st.webhook_request("gcash-ph", b"", method="GET")[0], 405)

        # Each answer is counted under its result; an unknown route as "unknown".
        after = self.webhook_counts()
        moved = {k: after[k] - before.get(k, 0) for k in after if after[k] != before.get(k, 0)}
        self.assertEqual(moved.get(("gcash-ph", "unauthenticated")), 4, moved)
        self.assertGreaterEqual(moved.get(("gcash-ph", "applied"), 0), 1, moved)
        self.assertGreaterEqual(moved.get(("gcash-ph", "duplicate"), 0), 2, moved)
        self.assertGreaterEqual(moved.get(("gcash-ph", "ignored"), 0), 1, moved)
        self.assertEqual(moved.get(("gcash-ph", "refused")), 1, moved)  # the GET
        self.assertEqual(moved.get(("unknown", "refused")), 1, moved)

    def test_notifications_missed_while_the_gateway_is_down_are_retried(self):
        req = gcash_request()
        first = self.record(req)
        self.st.stop_gateway()
        try:
            status, page = self.st.psp.press(first.next_action.url, "approve")
            self.assertEqual(status, 200, page)

            def failed_once():
                for w in self.st.psp.webhooks():
                    payment = json.loads(w["body"]).get("payment", {})
                    if payment.get("merchant_ref") == first.recharge_id:
                        return w if w["attempts"] >= 2 and not w["delivered"] else None
                return None
            wait_until(failed_once, SETTLE_TIMEOUT_S, "two refused deliveries")
        finally:
            self.st.start_gateway()
        r = self.wait_status(first.recharge_id, pb.RECHARGE_STATUS_APPROVED, timeout=60)
        self.assertEqual(r.coins, 65)
        delivered = self.delivery_for(first.recharge_id, req.idempotency_key)
        self.assertGreaterEqual(delivered["attempts"], 3)
        self.assertEqual(self.events_of(first.recharge_id),
                         [pb.RECHARGE_EVENT_DECIDED, pb.RECHARGE_EVENT_SETTLED])
        self.assertIn('"webhook_applied"', self.st.gateway.log())

    def test_no_card_number_reaches_the_log_or_the_ledger(self):
        req = de_card(CARD_3DS_ALWAYS)
        first = self.record(req)
        self.st.psp.press(first.next_action.url, "approve")
        self.wait_status(first.recharge_id, pb.RECHARGE_STATUS_APPROVED)
        self.assertNotIn(CARD_3DS_ALWAYS, self.st.gateway.log())
        self.assertNotIn(CARD_3DS_ALWAYS.encode(), self.st.ledger_bytes())


class ActionExpiryTest(unittest.TestCase):
    """An action left alone past action_expiry: the reconciler asks the
    provider, cancels the payment and FAILS the recharge action_expired."""

    @classmethod
    def setUpClass(cls):
        cls.st = start_regional_stack("regional-expiry", action_expiry="2s",
                                      recovery_interval="500ms")

    @classmethod
    def tearDownClass(cls):
        cls.st.stop()

    def test_wallet_and_card_actions_expire(self):
        stub = self.st.stub()
        wallet_req = gcash_request()
        card_req = de_card()
        wallet = stub.RecordRecharge(wallet_req, timeout=RPC_TIMEOUT_S)
        card = stub.RecordRecharge(card_req, timeout=RPC_TIMEOUT_S)
        self.assertEqual(wallet.status, pb.RECHARGE_STATUS_REQUIRES_ACTION)
        self.assertEqual(card.status, pb.RECHARGE_STATUS_REQUIRES_ACTION)
        for resp in (wallet, card):
            def expired():
                r = stub.GetRecharge(pb.GetRechargeRequest(recharge_id=resp.recharge_id),
                                     timeout=RPC_TIMEOUT_S)
                return r if r.status == pb.RECHARGE_STATUS_FAILED else None
            r = wait_until(expired, SETTLE_TIMEOUT_S, f"{resp.recharge_id} expired")
            self.assertEqual(r.payment.decline_code, "action_expired")
        self.assertEqual(self.st.payment_ops(wallet_req.idempotency_key), ["cancel"])
        self.assertEqual(self.st.payment_ops(card_req.idempotency_key), ["void"])
        for req in (wallet_req, card_req):
            self.assertEqual(taken_under(self.st, req.idempotency_key), [])
        # The wallet's page no longer offers the approval.
        with self.assertRaises(AssertionError):
            self.st.psp.press(wallet.next_action.url, "approve")

if __name__ == "__main__":
    unittest.main()
