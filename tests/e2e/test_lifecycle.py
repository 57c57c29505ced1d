#!/usr/bin/python3
"""Issue 10: the event feed (WatchRecharges) and the recharge lifecycle, on a
real stack (Redis, the PSP sandbox over HTTPS, the gateway on SQLite).

- A watcher started with from_now sees a DECIDED event for each new
  recharge, then REVIEW_RESOLVED, SETTLED and CHARGED_BACK as they happen,
  each with the coins to credit or take back.
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

from stack import Stack, card_request, new_key, new_user, pb, pb_grpc  # noqa: E402

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


def paypal_request(seller: str = "") -> "pb.RecordRechargeRequest":
    return pb.RecordRechargeRequest(
        idempotency_key=new_key("life-pp"), user_id=new_user("life"), package_id="coins_65",
        amount=pb.Money(currency="USD", minor_units=99), region="US",
        paypal=pb.PayPal(order_id="ORDER-" + new_key("o"), payer_id="PAYER1"),
        seller_id=seller, client=pb.ClientContext(ip="198.51.100.7", device_id="dev-life"))


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
        cls.stack = Stack("lifecycle", paypal=True)
        cls.stack.fraud_rules_text = RULES
        try:
            st = cls.stack.start()
            # The generated adapters.yaml routes cards only: add PayPal.
            st.adapters_text = st.default_adapters_text().replace("routes:\n", (
                "  paypal-main:\n"
                "    type: paypal\n"
                f"    endpoint: https://127.0.0.1:{st.sandbox_port}\n"
                f"    ca_file: {st.certs / 'ca.pem'}\n"
                f"    credentials_file: {st.paypal_credentials_file}\n"
                "    timeout: 5s\n"
                "routes:\n"
                "  - method: paypal\n"
                "    instances: [paypal-main]\n"))
            st.write_configs()
            st.stop_gateway()
            st.start_gateway()
        except BaseException:
            cls.stack.stop()
            raise

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


if __name__ == "__main__":
    unittest.main()
