#!/usr/bin/python3
"""Issue 10: the recharge lifecycle and its event feed (WatchRecharges), on a
real stack (Redis, the PSP sandbox over HTTPS with its card, PayPal and
e-wallet APIs, the gateway on SQLite), checked against the sandbox journal.

- A card recharge sent to review is an authorisation hold, not a charge:
  approving captures it exactly once (a second approval is
  FAILED_PRECONDITION), rejecting voids it, and a hold left past
  review.hold_expiry is voided by the reconciler (DECLINED review_expired).
- RefundRecharge refunds an approved card, PayPal and e-wallet recharge
  once each (REFUNDED; the same key answers the same, replayed); a
  recharge that is not APPROVED is FAILED_PRECONDITION.
- A watcher started with from_now sees a DECIDED event for each new
  recharge, then REVIEW_RESOLVED, SETTLED, REFUNDED and CHARGED_BACK as they
  happen, each with the coins to credit or take back.
- A watcher resuming from a cursor gets exactly the later events, in order,
  with no gap and no duplicate, also across a kill -9 of the gateway between
  the events; the ledger's outbox is the reference.
- Bad cursors are refused naming after_cursor; a watcher needs credentials;
  a gateway shutting down ends its watchers with UNAVAILABLE.

    /usr/bin/python3 -m unittest -v tests/e2e/test_lifecycle.py
"""

from __future__ import annotations

import os
import queue
import sys
import threading
import time
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import grpc  # noqa: E402

from stack import (CARD_DECLINE, Stack, card_request, new_key, new_user, pb,  # noqa: E402
                   pb_grpc, wait_until)

RPC_TIMEOUT_S = 20
EVENT_TIMEOUT_S = 10  # generous for the sanitizer build; the figure seen is printed
REVIEW_SELLER = "seller-review-me"

RULES = f"""\
version: "lifecycle-1"
fail_mode: open
counters:
  user_recharges_1h: {{ count: true, per: user_id, window: 1h }}
rules:
  - id: review-listed-seller
    when: seller_id == "{REVIEW_SELLER}"
    action: review
    reason: seller on the e2e review list
"""

DECIDED = pb.RECHARGE_EVENT_DECIDED
SETTLED = pb.RECHARGE_EVENT_SETTLED
REVIEW_RESOLVED = pb.RECHARGE_EVENT_REVIEW_RESOLVED
CHARGED_BACK = pb.RECHARGE_EVENT_CHARGED_BACK
REFUNDED = pb.RECHARGE_EVENT_REFUNDED


def paypal_request(seller: str = "") -> "pb.RecordRechargeRequest":
    return pb.RecordRechargeRequest(
        idempotency_key=new_key("life-pp"), user_id=new_user("life"), package_id="coins_65",
        amount=pb.Money(currency="USD", minor_units=99), region="US",
        paypal=pb.PayPal(order_id="ORDER-" + new_key("o"), payer_id="PAYER1"),
        seller_id=seller, client=pb.ClientContext(ip="198.51.100.7", device_id="dev-life"))


def gcash_request(suffix: str = "0001") -> "pb.RecordRechargeRequest":
    """A GCash recharge (PH, coins_65 at PHP 55.00; the sandbox answers by
    the account's last four characters: 0001 pays)."""
    return pb.RecordRechargeRequest(
        idempotency_key=new_key("life-ew"), user_id=new_user("life"), package_id="coins_65",
        amount=pb.Money(currency="PHP", minor_units=5500), region="PH",
        ewallet=pb.EWallet(provider="gcash", account_id=f"acct-{new_key('a')[-8:]}-{suffix}"),
        client=pb.ClientContext(ip="198.51.100.8", device_id="dev-life-ew"))


def lifecycle_adapters(st: Stack) -> str:
    """The generated adapters.yaml (cards) plus PayPal and GCash instances."""
    common = (f"    endpoint: https://127.0.0.1:{st.sandbox_port}\n"
              f"    ca_file: {st.certs / 'ca.pem'}\n"
              "    timeout: 5s\n")
    return st.default_adapters_text().replace("routes:\n", (
        "  paypal-main:\n"
        "    type: paypal\n" + common +
        f"    credentials_file: {st.paypal_credentials_file}\n"
        "  gcash-ph:\n"
        "    type: ewallet\n"
        "    provider: gcash\n"
        "    regions: [PH]\n"
        "    currencies: [PHP]\n" + common +
        f"    secret_file: {st.ewallet_secret_file}\n"
        "routes:\n"
        "  - method: paypal\n"
        "    instances: [paypal-main]\n"
        "  - method: ewallet\n"
        "    providers: [gcash]\n"
        "    instances: [gcash-ph]\n"))


def start_lifecycle_stack(st: Stack) -> None:
    """Starts `st` with the review rules and every payment method routed."""
    st.fraud_rules_text = RULES
    try:
        st.start()
        st.adapters_text = lifecycle_adapters(st)
        st.write_configs()
        st.stop_gateway()
        st.start_gateway()
    except BaseException:
        st.stop()
        raise


class Watcher:
    """One WatchRecharges stream read by a thread into a queue. Construction
    returns once the gateway has fixed the stream's starting point (it sends
    the initial metadata then)."""

    def __init__(self, stub, **request):
        self.call = stub.WatchRecharges(pb.WatchRechargesRequest(**request))
        self.events: queue.Queue = queue.Queue()
        self.error: grpc.RpcError | None = None
        self.call.initial_metadata()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self):
        try:
            for event in self.call:
                self.events.put((time.monotonic(), event))
        except grpc.RpcError as e:
            self.error = e
        self.events.put(None)

    def next_for(self, recharge_ids: set[str], timeout: float = EVENT_TIMEOUT_S):
        """The next event about one of `recharge_ids` (others are skipped),
        with the time it arrived."""
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise AssertionError(f"no event for {sorted(recharge_ids)} within {timeout}s")
            try:
                item = self.events.get(timeout=left)
            except queue.Empty:
                continue
            if item is None:
                raise AssertionError(f"the stream ended: {self.error}")
            arrived, event = item
            if event.recharge.recharge_id in recharge_ids:
                return arrived, event

    def ended(self, timeout: float = EVENT_TIMEOUT_S) -> grpc.RpcError | None:
        """Waits for the stream to end; its error (None if it ended OK)."""
        self.thread.join(timeout)
        if self.thread.is_alive():
            raise AssertionError(f"the stream did not end within {timeout}s")
        return self.error

    def cancel(self):
        self.call.cancel()
        self.thread.join(5)


class EventFeedTest(unittest.TestCase):
    stack: Stack

    @classmethod
    def setUpClass(cls):
        cls.stack = Stack("lifecycle", paypal=True, ewallet=True)
        start_lifecycle_stack(cls.stack)

    @classmethod
    def tearDownClass(cls):
        cls.stack.stop()

    def stub(self):
        return self.stack.stub()

    def admin(self):
        return pb_grpc.FraudAdminStub(self.stack.channel())

    def expect(self, watcher: Watcher, recharge_id: str, etype: int, status: int, delta: int,
               since: float) -> "pb.RechargeEvent":
        arrived, event = watcher.next_for({recharge_id})
        self.assertEqual(event.type, etype, event)
        self.assertEqual(event.recharge.status, status, event)
        self.assertEqual(event.coins_delta, delta, event)
        self.assertTrue(event.cursor, event)
        self.assertGreater(event.at.seconds, 0)
        self.latencies.append(arrived - since)
        return event

    def test_a_watcher_from_now_sees_every_change_as_it_happens(self):
        self.latencies: list[float] = []
        w = Watcher(self.stub(), from_now=True)
        try:
            card = card_request()
            t = time.monotonic()
            r_card = self.stub().RecordRecharge(card, timeout=RPC_TIMEOUT_S)
            self.assertEqual(r_card.status, pb.RECHARGE_STATUS_APPROVED)
            e1 = self.expect(w, r_card.recharge_id, DECIDED, pb.RECHARGE_STATUS_APPROVED, 65, t)
            self.assertEqual(e1.recharge.user_id, card.user_id)

            held = paypal_request(seller=REVIEW_SELLER)
            t = time.monotonic()
            r_held = self.stub().RecordRecharge(held, timeout=RPC_TIMEOUT_S)
            self.assertEqual(r_held.status, pb.RECHARGE_STATUS_PENDING_REVIEW)
            self.expect(w, r_held.recharge_id, DECIDED, pb.RECHARGE_STATUS_PENDING_REVIEW, 0, t)

            # Approving a PayPal review: claimed (PENDING), then charged.
            t = time.monotonic()
            approved = self.admin().ResolveReview(pb.ResolveReviewRequest(
                recharge_id=r_held.recharge_id, approve=True, note="e2e lifecycle"),
                timeout=RPC_TIMEOUT_S)
            self.assertEqual(approved.status, pb.RECHARGE_STATUS_APPROVED)
            self.expect(w, r_held.recharge_id, REVIEW_RESOLVED, pb.RECHARGE_STATUS_PENDING, 0, t)
            self.expect(w, r_held.recharge_id, SETTLED, pb.RECHARGE_STATUS_APPROVED, 65, t)

            # A card in review: a hold, captured on approval.
            held_card = card_request(seller_id=REVIEW_SELLER)
            t = time.monotonic()
            r_hc = self.stub().RecordRecharge(held_card, timeout=RPC_TIMEOUT_S)
            self.assertEqual(r_hc.status, pb.RECHARGE_STATUS_PENDING_REVIEW)
            self.expect(w, r_hc.recharge_id, DECIDED, pb.RECHARGE_STATUS_PENDING_REVIEW, 0, t)
            t = time.monotonic()
            self.admin().ResolveReview(pb.ResolveReviewRequest(
                recharge_id=r_hc.recharge_id, approve=True), timeout=RPC_TIMEOUT_S)
            self.expect(w, r_hc.recharge_id, REVIEW_RESOLVED, pb.RECHARGE_STATUS_PENDING, 0, t)
            self.expect(w, r_hc.recharge_id, SETTLED, pb.RECHARGE_STATUS_APPROVED, 65, t)

            # A refund takes the coins back.
            t = time.monotonic()
            self.stub().RefundRecharge(pb.RefundRechargeRequest(
                recharge_id=r_hc.recharge_id, idempotency_key=new_key("rf"),
                reason="buyer asked"), timeout=RPC_TIMEOUT_S)
            self.expect(w, r_hc.recharge_id, REFUNDED, pb.RECHARGE_STATUS_REFUNDED, -65, t)

            t = time.monotonic()
            self.admin().ReportChargeback(pb.ReportChargebackRequest(
                recharge_id=r_card.recharge_id, reason="fraudulent"), timeout=RPC_TIMEOUT_S)
            self.expect(w, r_card.recharge_id, CHARGED_BACK, pb.RECHARGE_STATUS_CHARGED_BACK, -65, t)
            # Reported again: counted once, no second event.
            self.admin().ReportChargeback(pb.ReportChargebackRequest(
                recharge_id=r_card.recharge_id, reason="again"), timeout=RPC_TIMEOUT_S)
            marker = self.stub().RecordRecharge(card_request(), timeout=RPC_TIMEOUT_S)
            _, nxt = w.next_for({r_card.recharge_id, marker.recharge_id})
            self.assertEqual(nxt.recharge.recharge_id, marker.recharge_id,
                             "a repeated chargeback report emitted a second event")
        finally:
            w.cancel()
        sys.stderr.write(f"  event latency after the call returned: max "
                         f"{max(self.latencies) * 1000:.0f} ms over {len(self.latencies)} events\n")

    # ----------------------------------------------------- card holds

    def test_card_review_is_a_hold_captured_once_on_approval(self):
        req = card_request(seller_id=REVIEW_SELLER)
        held = self.stub().RecordRecharge(req, timeout=RPC_TIMEOUT_S)
        self.assertEqual(held.status, pb.RECHARGE_STATUS_PENDING_REVIEW, held)
        self.assertEqual(held.coins_credited, 0)
        holds = self.stack.holds_for(req.idempotency_key)
        self.assertEqual([h["id"] for h in holds], [held.payment.provider_reference])
        self.assertEqual(self.stack.payment_ops(req.idempotency_key), [], "captured in review")
        self.assertEqual(self.stack.journal_for(req.idempotency_key), [], "money taken in review")
        stored = self.stub().GetRecharge(pb.GetRechargeRequest(recharge_id=held.recharge_id),
                                         timeout=RPC_TIMEOUT_S)
        self.assertTrue(stored.HasField("hold_expires_at"))
        # The default review.hold_expiry: 7 days after creation.
        self.assertEqual(stored.hold_expires_at.seconds - stored.created_at.seconds, 7 * 86400)

        approved = self.admin().ResolveReview(pb.ResolveReviewRequest(
            recharge_id=held.recharge_id, approve=True, note="e2e: buyer verified"),
            timeout=RPC_TIMEOUT_S)
        self.assertEqual(approved.status, pb.RECHARGE_STATUS_APPROVED, approved)
        self.assertEqual(approved.coins, 65)
        self.assertEqual(approved.payment.provider_reference, held.payment.provider_reference)
        self.assertEqual(self.stack.payment_ops(req.idempotency_key), ["capture"])
        self.assertEqual(len(self.stack.journal_for(req.idempotency_key)), 1)
        replay = self.stub().RecordRecharge(req, timeout=RPC_TIMEOUT_S)
        self.assertTrue(replay.replayed)
        self.assertEqual(replay.status, pb.RECHARGE_STATUS_APPROVED)
        self.assertEqual(replay.coins_credited, 65)
        for approve in (True, False):
            with self.assertRaises(grpc.RpcError) as cm:
                self.admin().ResolveReview(pb.ResolveReviewRequest(
                    recharge_id=held.recharge_id, approve=approve), timeout=RPC_TIMEOUT_S)
            self.assertEqual(cm.exception.code(), grpc.StatusCode.FAILED_PRECONDITION)
        self.assertEqual(self.stack.payment_ops(req.idempotency_key), ["capture"],
                         "a second resolution reached the provider")

    def test_card_review_rejected_voids_its_hold(self):
        req = card_request(seller_id=REVIEW_SELLER)
        held = self.stub().RecordRecharge(req, timeout=RPC_TIMEOUT_S)
        self.assertEqual(held.status, pb.RECHARGE_STATUS_PENDING_REVIEW, held)
        rejected = self.admin().ResolveReview(pb.ResolveReviewRequest(
            recharge_id=held.recharge_id, approve=False, note="e2e: stolen card"),
            timeout=RPC_TIMEOUT_S)
        self.assertEqual(rejected.status, pb.RECHARGE_STATUS_DECLINED, rejected)
        self.assertEqual(rejected.payment.decline_code, "review_rejected")
        self.assertEqual(self.stack.payment_ops(req.idempotency_key), ["void"])
        self.assertEqual(self.stack.journal_for(req.idempotency_key), [])
        with self.assertRaises(grpc.RpcError) as cm:
            self.admin().ResolveReview(pb.ResolveReviewRequest(
                recharge_id=held.recharge_id, approve=True), timeout=RPC_TIMEOUT_S)
        self.assertEqual(cm.exception.code(), grpc.StatusCode.FAILED_PRECONDITION)
        self.assertEqual(self.stack.payment_ops(req.idempotency_key), ["void"])

    def test_declined_authorisation_is_an_ordinary_decline(self):
        req = card_request(seller_id=REVIEW_SELLER, number=CARD_DECLINE)
        resp = self.stub().RecordRecharge(req, timeout=RPC_TIMEOUT_S)
        self.assertEqual(resp.status, pb.RECHARGE_STATUS_DECLINED, resp)
        self.assertEqual(resp.fraud.decision, pb.FRAUD_ACTION_REVIEW)
        self.assertTrue(resp.payment.decline_code)
        queue = self.admin().ListReviews(pb.ListReviewsRequest(page_size=100),
                                         timeout=RPC_TIMEOUT_S)
        self.assertNotIn(resp.recharge_id, {r.recharge_id for r in queue.recharges})

    # ----------------------------------------------------- refunds

    def refund(self, recharge_id: str, key: str, reason: str = "e2e refund"):
        return self.stub().RefundRecharge(pb.RefundRechargeRequest(
            recharge_id=recharge_id, idempotency_key=key, reason=reason), timeout=RPC_TIMEOUT_S)

    def refund_error(self, code, recharge_id: str, key: str, reason: str = "e2e refund") -> str:
        with self.assertRaises(grpc.RpcError) as cm:
            self.refund(recharge_id, key, reason)
        self.assertEqual(cm.exception.code(), code, cm.exception.details())
        return cm.exception.details()

    def test_refunds_of_card_paypal_and_ewallet_each_once(self):
        for what, req, adapter in (("card", card_request(), "card-primary"),
                                   ("paypal", paypal_request(), "paypal-main"),
                                   ("ewallet", gcash_request(), "gcash-ph")):
            with self.subTest(method=what):
                paid = self.stub().RecordRecharge(req, timeout=RPC_TIMEOUT_S)
                self.assertEqual(paid.status, pb.RECHARGE_STATUS_APPROVED, paid)
                key = new_key("rf")
                refunded = self.refund(paid.recharge_id, key, reason=f"e2e: {what} duplicate")
                self.assertEqual(refunded.status, pb.RECHARGE_STATUS_REFUNDED, refunded)
                self.assertFalse(refunded.replayed)
                self.assertEqual(refunded.payment.adapter, adapter)
                self.assertTrue(refunded.refund.provider_reference, refunded)
                self.assertEqual(refunded.refund.reason, f"e2e: {what} duplicate")
                self.assertEqual(refunded.refund.refunded_by, "e2e")
                self.assertEqual(self.stack.payment_ops(req.idempotency_key), ["refund"])
                refund_line = [r for r in self.stack.journal(ops=True) if r.get("op") == "refund"
                               and r.get("id") == refunded.refund.provider_reference]
                self.assertEqual(len(refund_line), 1, refunded.refund)
                # The same key: the same answer, replayed, nothing more refunded.
                again = self.refund(paid.recharge_id, key, reason=f"e2e: {what} duplicate")
                self.assertTrue(again.replayed)
                again.replayed = False
                self.assertEqual(again, refunded)
                # Another key: refunded already.
                self.assertIn("refunded", self.refund_error(
                    grpc.StatusCode.FAILED_PRECONDITION, paid.recharge_id, new_key("rf")))
                # The key for another request.
                self.refund_error(grpc.StatusCode.ALREADY_EXISTS, paid.recharge_id, key,
                                  reason="another reason")
                self.assertEqual(self.stack.payment_ops(req.idempotency_key), ["refund"])
                stored = self.stub().GetRecharge(pb.GetRechargeRequest(
                    recharge_id=paid.recharge_id), timeout=RPC_TIMEOUT_S)
                self.assertEqual(stored.status, pb.RECHARGE_STATUS_REFUNDED)
                self.assertEqual(stored.refund, refunded.refund)

    def test_refund_of_anything_but_approved_is_refused(self):
        declined = self.stub().RecordRecharge(card_request(number=CARD_DECLINE),
                                              timeout=RPC_TIMEOUT_S)
        self.assertEqual(declined.status, pb.RECHARGE_STATUS_DECLINED)
        details = self.refund_error(grpc.StatusCode.FAILED_PRECONDITION, declined.recharge_id,
                                    new_key("rf"))
        self.assertIn("RECHARGE_STATUS_DECLINED", details)
        held = self.stub().RecordRecharge(card_request(seller_id=REVIEW_SELLER),
                                          timeout=RPC_TIMEOUT_S)
        self.refund_error(grpc.StatusCode.FAILED_PRECONDITION, held.recharge_id, new_key("rf"))
        self.refund_error(grpc.StatusCode.NOT_FOUND, "rch_" + "0" * 24, new_key("rf"))
        self.assertIn("idempotency_key", self.refund_error(
            grpc.StatusCode.INVALID_ARGUMENT, declined.recharge_id, "short"))
        self.assertIn("recharge_id", self.refund_error(
            grpc.StatusCode.INVALID_ARGUMENT, "", new_key("rf")))
        self.assertIn("reason", self.refund_error(
            grpc.StatusCode.INVALID_ARGUMENT, declined.recharge_id, new_key("rf"), "x" * 256))
        self.assertEqual([r for r in self.stack.journal(ops=True) if r.get("op") == "refund"
                          and r.get("charge") == declined.payment.provider_reference], [])
        # A card number in the reason is never kept.
        paid = self.stub().RecordRecharge(card_request(), timeout=RPC_TIMEOUT_S)
        refunded = self.refund(paid.recharge_id, new_key("rf"),
                               reason="card 4242424242424242 reported")
        self.assertNotIn("4242424242424242", refunded.refund.reason)
        self.assertIn("[card number removed]", refunded.refund.reason)

    def outbox_after(self, seq: int) -> list[tuple[int, str, int]]:
        return self.stack.ledger_rows(
            "SELECT seq, recharge_id, type FROM recharge_events WHERE seq > ? ORDER BY seq", (seq,))

    def test_resuming_from_a_cursor_gives_exactly_the_later_events_across_kill_9(self):
        first = self.stub().RecordRecharge(card_request(), timeout=RPC_TIMEOUT_S)
        w = Watcher(self.stub())  # from the oldest retained event
        try:
            _, seen = w.next_for({first.recharge_id})
        finally:
            w.cancel()
        cursor = seen.cursor
        seq = int(cursor.split(".")[-1])

        second = self.stub().RecordRecharge(card_request(), timeout=RPC_TIMEOUT_S)
        self.stack.kill_gateway()  # between two events, no chance to finish anything
        self.stack.start_gateway()
        third = self.stub().RecordRecharge(card_request(), timeout=RPC_TIMEOUT_S)

        reference = self.outbox_after(seq)
        ours = [r for r in reference if r[1] in (second.recharge_id, third.recharge_id)]
        self.assertEqual([r[1] for r in ours], [second.recharge_id, third.recharge_id])

        resumed = Watcher(self.stub(), after_cursor=cursor)
        try:
            got = []
            for _ in reference:
                _, event = resumed.next_for({r[1] for r in reference})
                got.append((int(event.cursor.split(".")[-1]), event.recharge.recharge_id,
                            event.type))
        finally:
            resumed.cancel()
        # Exactly the outbox after the cursor: same events, same order, none
        # missing, none twice, none from before the cursor.
        self.assertEqual(got, [(s, rid, t) for s, rid, t in reference])
        self.assertNotIn(first.recharge_id, [g[1] for g in got])

    def test_bad_cursors_and_callers_are_refused(self):
        def refused(code, **request):
            call = self.stub().WatchRecharges(pb.WatchRechargesRequest(**request),
                                              timeout=RPC_TIMEOUT_S)
            with self.assertRaises(grpc.RpcError) as cm:
                next(iter(call))
            self.assertEqual(cm.exception.code(), code, cm.exception.details())
            return cm.exception.details()

        self.assertIn("after_cursor", refused(grpc.StatusCode.INVALID_ARGUMENT, after_cursor="nope"))
        self.assertIn("after_cursor", refused(grpc.StatusCode.INVALID_ARGUMENT,
                                              after_cursor="ev1.1", from_now=True))
        self.assertIn("after_cursor", refused(grpc.StatusCode.OUT_OF_RANGE,
                                              after_cursor="ev1.999999999"))
        anonymous = pb_grpc.RechargeGatewayStub(self.stack.raw_channel(token=None))
        call = anonymous.WatchRecharges(pb.WatchRechargesRequest(from_now=True),
                                        timeout=RPC_TIMEOUT_S)
        with self.assertRaises(grpc.RpcError) as cm:
            next(iter(call))
        self.assertEqual(cm.exception.code(), grpc.StatusCode.UNAUTHENTICATED)

    def test_z_shutdown_ends_watchers_with_unavailable(self):
        w = Watcher(self.stub(), from_now=True)
        self.stack.stop_gateway()
        error = w.ended()
        self.assertIsNotNone(error, "the stream ended OK; the watcher cannot tell it must resume")
        self.assertEqual(error.code(), grpc.StatusCode.UNAVAILABLE, error.details())
        self.stack.start_gateway()


class HoldExpiryTest(unittest.TestCase):
    """A hold whose review is not resolved within review.hold_expiry (1 s
    here) is voided by the reconciler: DECLINED review_expired, one void in
    the journal, a REVIEW_RESOLVED event."""
    stack: Stack

    @classmethod
    def setUpClass(cls):
        cls.stack = Stack("lifecycle-expiry", paypal=True, ewallet=True,
                          recovery_interval="200ms")
        cls.stack.review_hold_expiry = "1s"
        start_lifecycle_stack(cls.stack)

    @classmethod
    def tearDownClass(cls):
        cls.stack.stop()

    def test_expired_hold_is_voided_by_the_reconciler(self):
        stub = self.stack.stub()
        w = Watcher(stub, from_now=True)
        try:
            req = card_request(seller_id=REVIEW_SELLER)
            held = stub.RecordRecharge(req, timeout=RPC_TIMEOUT_S)
            self.assertEqual(held.status, pb.RECHARGE_STATUS_PENDING_REVIEW, held)
            _, decided = w.next_for({held.recharge_id})
            self.assertEqual(decided.type, DECIDED)
            self.assertEqual(decided.recharge.hold_expires_at.ToMicroseconds() -
                             decided.recharge.created_at.ToMicroseconds(), 1_000_000)
            _, expired = w.next_for({held.recharge_id})
        finally:
            w.cancel()
        self.assertEqual(expired.type, REVIEW_RESOLVED, expired)
        self.assertEqual(expired.recharge.status, pb.RECHARGE_STATUS_DECLINED)
        self.assertEqual(expired.recharge.payment.decline_code, "review_expired")
        self.assertEqual(expired.coins_delta, 0)
        self.assertEqual(self.stack.payment_ops(req.idempotency_key), ["void"])
        self.assertEqual(self.stack.journal_for(req.idempotency_key), [])
        # Too late to approve: nothing is captured.
        with self.assertRaises(grpc.RpcError) as cm:
            pb_grpc.FraudAdminStub(self.stack.channel()).ResolveReview(
                pb.ResolveReviewRequest(recharge_id=held.recharge_id, approve=True),
                timeout=RPC_TIMEOUT_S)
        self.assertEqual(cm.exception.code(), grpc.StatusCode.FAILED_PRECONDITION)
        self.assertEqual(self.stack.payment_ops(req.idempotency_key), ["void"])


class AmbiguousAnswersTest(unittest.TestCase):
    """A capture or refund whose answer is lost is settled by the
    reconciler, once: card instances time out after 1 s, the reconciler runs
    every 200 ms and gives up on a missing operation after 3 s."""
    stack: Stack

    @classmethod
    def setUpClass(cls):
        cls.stack = Stack("lifecycle-ambiguous", paypal=True, ewallet=True, card_timeout="1s",
                          recovery_interval="200ms", settle_after="3s")
        start_lifecycle_stack(cls.stack)

    @classmethod
    def tearDownClass(cls):
        cls.stack.stop()

    def tearDown(self):
        self.stack.sandbox_config(card={"latency_ms": 0, "timeout_mode": "charge"})

    def get(self, recharge_id: str) -> "pb.Recharge":
        return self.stack.stub().GetRecharge(pb.GetRechargeRequest(recharge_id=recharge_id),
                                             timeout=RPC_TIMEOUT_S)

    def test_lost_capture_is_captured_again_by_the_reconciler(self):
        req = card_request(seller_id=REVIEW_SELLER)
        held = self.stack.stub().RecordRecharge(req, timeout=RPC_TIMEOUT_S)
        self.assertEqual(held.status, pb.RECHARGE_STATUS_PENDING_REVIEW, held)
        # The capture's connection is closed before anything is done.
        self.stack.sandbox_config(card={"latency_ms": 0, "timeout_mode": "drop"})
        answer = pb_grpc.FraudAdminStub(self.stack.channel()).ResolveReview(
            pb.ResolveReviewRequest(recharge_id=held.recharge_id, approve=True),
            timeout=RPC_TIMEOUT_S)
        self.assertEqual(answer.status, pb.RECHARGE_STATUS_PENDING, answer)
        self.assertEqual(self.stack.payment_ops(req.idempotency_key), [])
        self.stack.sandbox_config(card={"latency_ms": 0, "timeout_mode": "charge"})
        settled = wait_until(lambda: (lambda r: r if r.status != pb.RECHARGE_STATUS_PENDING
                                      else None)(self.get(held.recharge_id)),
                             EVENT_TIMEOUT_S, "the reconciler to capture")
        self.assertEqual(settled.status, pb.RECHARGE_STATUS_APPROVED, settled)
        self.assertEqual(self.stack.payment_ops(req.idempotency_key), ["capture"])

    def test_lost_authorisation_is_voided_and_failed(self):
        """A hold made after the instance gave up (PENDING) is found by the
        reconciler, voided, and the recharge FAILED (authorisation_lost):
        one SETTLED event, nothing taken."""
        self.stack.sandbox_config(card={"latency_ms": 1500, "timeout_mode": "charge"})
        req = card_request(seller_id=REVIEW_SELLER)
        pending = self.stack.stub().RecordRecharge(req, timeout=RPC_TIMEOUT_S)
        self.assertEqual(pending.status, pb.RECHARGE_STATUS_PENDING, pending)
        self.stack.sandbox_config(card={"latency_ms": 0, "timeout_mode": "charge"})
        settled = wait_until(lambda: (lambda r: r if r.status != pb.RECHARGE_STATUS_PENDING
                                      else None)(self.get(pending.recharge_id)),
                             EVENT_TIMEOUT_S, "the reconciler to settle the hold")
        self.assertEqual(settled.status, pb.RECHARGE_STATUS_FAILED, settled)
        self.assertEqual(settled.payment.decline_code, "authorisation_lost")
        self.assertEqual(len(self.stack.holds_for(req.idempotency_key)), 1)
        self.assertEqual(self.stack.payment_ops(req.idempotency_key), ["void"])
        self.assertEqual(self.stack.journal_for(req.idempotency_key), [])
        types = [t for (t,) in self.stack.ledger_rows(
            "SELECT type FROM recharge_events WHERE recharge_id = ? ORDER BY seq",
            (pending.recharge_id,))]
        self.assertEqual(types, [DECIDED, SETTLED])

    def test_refund_answered_late_is_recorded_by_the_reconciler(self):
        card = card_request()
        paid = self.stack.stub().RecordRecharge(card, timeout=RPC_TIMEOUT_S)
        self.assertEqual(paid.status, pb.RECHARGE_STATUS_APPROVED, paid)
        # The refund is made after the instance gave up waiting (1.5 s > 1 s).
        self.stack.sandbox_config(card={"latency_ms": 1500, "timeout_mode": "charge"})
        key = new_key("rf")
        request = pb.RefundRechargeRequest(recharge_id=paid.recharge_id, idempotency_key=key,
                                           reason="late")
        with self.assertRaises(grpc.RpcError) as cm:
            self.stack.stub().RefundRecharge(request, timeout=RPC_TIMEOUT_S)
        self.assertEqual(cm.exception.code(), grpc.StatusCode.UNAVAILABLE, cm.exception.details())
        self.assertIn("not known yet", cm.exception.details())
        self.stack.sandbox_config(card={"latency_ms": 0, "timeout_mode": "charge"})
        refunded = wait_until(lambda: (lambda r: r if r.status == pb.RECHARGE_STATUS_REFUNDED
                                       else None)(self.get(paid.recharge_id)),
                              EVENT_TIMEOUT_S, "the reconciler to record the refund")
        self.assertTrue(refunded.refund.provider_reference)
        self.assertEqual(self.stack.payment_ops(card.idempotency_key), ["refund"])
        again = self.stack.stub().RefundRecharge(request, timeout=RPC_TIMEOUT_S)
        self.assertTrue(again.replayed)
        self.assertEqual(again.status, pb.RECHARGE_STATUS_REFUNDED)
        self.assertEqual(again.refund, refunded.refund)

    def test_refund_never_made_is_released_then_retried(self):
        card = card_request()
        paid = self.stack.stub().RecordRecharge(card, timeout=RPC_TIMEOUT_S)
        self.stack.sandbox_config(card={"latency_ms": 0, "timeout_mode": "drop"})
        key = new_key("rf")
        request = pb.RefundRechargeRequest(recharge_id=paid.recharge_id, idempotency_key=key)
        with self.assertRaises(grpc.RpcError) as cm:
            self.stack.stub().RefundRecharge(request, timeout=RPC_TIMEOUT_S)
        self.assertEqual(cm.exception.code(), grpc.StatusCode.UNAVAILABLE, cm.exception.details())
        self.stack.sandbox_config(card={"latency_ms": 0, "timeout_mode": "charge"})
        # The reconciler finds no refund under the key and releases the claim.
        wait_until(lambda: not self.stack.ledger_rows(
            "SELECT 1 FROM refunds WHERE idempotency_key = ?", (key,)),
            EVENT_TIMEOUT_S, "the reconciler to release the refund claim")
        self.assertEqual(self.get(paid.recharge_id).status, pb.RECHARGE_STATUS_APPROVED)
        self.assertEqual(self.stack.payment_ops(card.idempotency_key), [])
        refunded = self.stack.stub().RefundRecharge(request, timeout=RPC_TIMEOUT_S)
        self.assertEqual(refunded.status, pb.RECHARGE_STATUS_REFUNDED)
        self.assertFalse(refunded.replayed)
        self.assertEqual(self.stack.payment_ops(card.idempotency_key), ["refund"])


if __name__ == "__main__":
    unittest.main()
