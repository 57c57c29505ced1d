#!/usr/bin/python3
"""A recharge's later life on the ./scripts/run.sh stack, step by step, with
the event feed printed as it happens (docs/lifecycle.md):

  1. a reseller tops up other people's accounts with many cards through one
     seller id until the fraud rules flag the seller;
  2. the seller's next card recharge is held for review: an authorisation
     hold at the card provider, no capture; ops approve it (the hold is
     captured: APPROVED, coins credited) and approve again
     (FAILED_PRECONDITION); another held card is rejected (the hold voided:
     DECLINED review_rejected);
  3. an approved card, PayPal and GrabPay recharge are refunded (REFUNDED; the
     same refund key again gives the same answer, replayed); a DECLINED
     recharge cannot be refunded (FAILED_PRECONDITION);
  4. a chargeback on an approved recharge (CHARGED_BACK).
With --expire, a last held card is left alone until the reconciler voids it
(DECLINED review_expired): start the stack with a short hold expiry for that,
    REVIEW_HOLD_EXPIRY=15s ./scripts/run.sh

    /usr/bin/python3 examples/lifecycle_walkthrough.py [--expire] [127.0.0.1:50051]

It calls as dev-app (var/dev/app.token) and dev-ops (var/dev/ops.token),
plaintext, and exits 0 when every step answered as described. The sandbox
journal (var/sandbox/journal.jsonl) shows the hold, capture, void and
refund lines; the script prints the recharge ids to look for.
"""
import os
import secrets
import sys
import threading
import time
import uuid

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.environ.get("RECHARGE_PY_OUT", os.path.join(ROOT, "build", "python")))

import grpc  # noqa: E402
from recharge.v1 import recharge_pb2 as pb  # noqa: E402
from recharge.v1 import recharge_pb2_grpc as rpc  # noqa: E402

DEV = os.path.join(ROOT, "var", "dev")
SELLER = f"shop-{uuid.uuid4().hex[:8]}"
STATUS = pb.RechargeStatus.Name
EVENT = pb.RechargeEventType.Name


def token(name: str) -> list:
    with open(os.path.join(DEV, name)) as f:
        return [("authorization", "Bearer " + f.read().strip())]


def luhn(prefix: str) -> str:
    for d in "0123456789":
        total = 0
        for i, ch in enumerate(reversed(prefix + d)):
            v = int(ch) * (2 if i % 2 else 1)
            total += v - 9 if v > 9 else v
        if total % 10 == 0:
            return prefix + d
    raise AssertionError


def card(number: str | None = None, seller: str = "", ip: str | None = None):
    """A US coins_65 card recharge with its own user, card and device."""
    return pb.RecordRechargeRequest(
        idempotency_key=f"walk-{uuid.uuid4().hex}", user_id=f"user-{uuid.uuid4().hex[:10]}",
        package_id="coins_65", amount=pb.Money(currency="USD", minor_units=99), region="US",
        card=pb.Card(number=number or luhn("4" + "".join(secrets.choice("0123456789")
                                                         for _ in range(14))),
                     exp_month=12, exp_year=time.gmtime().tm_year + 3, cvc="123"),
        seller_id=seller,
        client=pb.ClientContext(ip=ip or f"198.51.100.{secrets.randbelow(250) + 1}",
                                device_id=f"dev-{uuid.uuid4().hex[:10]}"))


def paypal():
    return pb.RecordRechargeRequest(
        idempotency_key=f"walk-{uuid.uuid4().hex}", user_id=f"user-{uuid.uuid4().hex[:10]}",
        package_id="coins_65", amount=pb.Money(currency="USD", minor_units=99), region="US",
        paypal=pb.PayPal(order_id=f"ORDER-{uuid.uuid4().hex[:16].upper()}", payer_id="PAYERWALK1"),
        client=pb.ClientContext(ip="198.51.100.77", device_id=f"dev-{uuid.uuid4().hex[:10]}"))


def grabpay():
    """A GrabPay recharge (SG, SGD 1.38): a wallet the shipped config debits
    directly (GCash and the others ask the buyer first: regional_walkthrough.py)."""
    return pb.RecordRechargeRequest(
        idempotency_key=f"walk-{uuid.uuid4().hex}", user_id=f"user-{uuid.uuid4().hex[:10]}",
        package_id="coins_65", amount=pb.Money(currency="SGD", minor_units=138), region="SG",
        ewallet=pb.EWallet(provider="grabpay", account_id=f"acct-{uuid.uuid4().hex[:8]}-0001"),
        client=pb.ClientContext(ip="198.51.100.78", device_id=f"dev-{uuid.uuid4().hex[:10]}"))


class Feed:
    """WatchRecharges from now, printed and kept by recharge id."""

    def __init__(self, gateway, auth):
        self.call = gateway.WatchRecharges(pb.WatchRechargesRequest(from_now=True), metadata=auth)
        self.call.initial_metadata()  # the starting point is fixed
        self.seen: dict[str, list[str]] = {}
        self.cv = threading.Condition()
        threading.Thread(target=self._run, daemon=True).start()

    def _run(self):
        try:
            for e in self.call:
                r = e.recharge
                print(f"    event {EVENT(e.type):31} {r.recharge_id} {STATUS(r.status):30} "
                      f"coins {e.coins_delta:+d}")
                with self.cv:
                    self.seen.setdefault(r.recharge_id, []).append(EVENT(e.type))
                    self.cv.notify_all()
        except grpc.RpcError:
            pass

    def wait(self, recharge_id: str, events: list[str], timeout: float = 10) -> bool:
        with self.cv:
            return self.cv.wait_for(lambda: self.seen.get(recharge_id, []) == events, timeout)


def error_code(fn, request, auth) -> str:
    try:
        fn(request, timeout=10, metadata=auth)
    except grpc.RpcError as e:
        return f"{e.code().name}: {e.details()}"
    return "OK"


def main() -> int:
    args = sys.argv[1:]
    expire = "--expire" in args
    args = [a for a in args if a != "--expire"]
    target = args[0] if args else "127.0.0.1:50051"
    app, ops = token("app.token"), token("ops.token")
    checks: list[tuple[str, bool]] = []

    def check(what: str, ok: bool):
        checks.append((what, ok))
        print(f"  [{'ok' if ok else 'FAILED'}] {what}")

    with grpc.insecure_channel(target) as channel:
        gw = rpc.RechargeGatewayStub(channel)
        admin = rpc.FraudAdminStub(channel)
        feed = Feed(gw, app)

        print(f"1. a reseller ({SELLER}) tops up many accounts with many cards from 3 shop addresses")
        shops = [f"203.0.113.{secrets.randbelow(250) + 1}" for _ in range(3)]
        for i in range(40):
            r = gw.RecordRecharge(card(seller=SELLER, ip=shops[i % 3]), timeout=10, metadata=app)
            if r.fraud.seller_flagged:
                print(f"   flagged after {i + 1} recharges ({STATUS(r.status)})")
                break
        check("the seller is flagged", r.fraud.seller_flagged)

        print("2. the flagged seller's next card recharges are held for review")
        held = gw.RecordRecharge(card(seller=SELLER, ip=shops[0]), timeout=10, metadata=app)
        stored = gw.GetRecharge(pb.GetRechargeRequest(recharge_id=held.recharge_id),
                                timeout=10, metadata=app)
        print(f"   {held.recharge_id} {STATUS(held.status)}, hold {held.payment.provider_reference}"
              f" expires {stored.hold_expires_at.ToJsonString()}")
        check("PENDING_REVIEW on an authorisation hold",
              held.status == pb.RECHARGE_STATUS_PENDING_REVIEW and
              held.payment.provider_reference.startswith("ch_"))
        approved = admin.ResolveReview(pb.ResolveReviewRequest(
            recharge_id=held.recharge_id, approve=True, note="buyer confirmed by phone"),
            timeout=10, metadata=ops)
        print(f"   approve -> {STATUS(approved.status)}, coins {approved.coins}")
        check("approve captures: APPROVED", approved.status == pb.RECHARGE_STATUS_APPROVED)
        again = error_code(admin.ResolveReview, pb.ResolveReviewRequest(
            recharge_id=held.recharge_id, approve=True), ops)
        print(f"   approve again -> {again}")
        check("a second approve is FAILED_PRECONDITION", again.startswith("FAILED_PRECONDITION"))
        check("events DECIDED, REVIEW_RESOLVED, SETTLED",
              feed.wait(held.recharge_id, ["RECHARGE_EVENT_DECIDED", "RECHARGE_EVENT_REVIEW_RESOLVED",
                                           "RECHARGE_EVENT_SETTLED"]))
        held2 = gw.RecordRecharge(card(seller=SELLER, ip=shops[1]), timeout=10, metadata=app)
        rejected = admin.ResolveReview(pb.ResolveReviewRequest(
            recharge_id=held2.recharge_id, approve=False, note="stolen cards"),
            timeout=10, metadata=ops)
        print(f"   {held2.recharge_id} reject -> {STATUS(rejected.status)} "
              f"{rejected.payment.decline_code} (hold {held2.payment.provider_reference} voided)")
        check("reject voids: DECLINED review_rejected",
              rejected.status == pb.RECHARGE_STATUS_DECLINED and
              rejected.payment.decline_code == "review_rejected")

        print("3. refunds of an approved card, PayPal and GrabPay recharge")
        for what, req in (("card", card()), ("paypal", paypal()), ("grabpay", grabpay())):
            paid = gw.RecordRecharge(req, timeout=10, metadata=app)
            key = f"refund-{uuid.uuid4().hex}"
            refund = pb.RefundRechargeRequest(recharge_id=paid.recharge_id, idempotency_key=key,
                                              reason="buyer asked")
            first = gw.RefundRecharge(refund, timeout=10, metadata=app)
            second = gw.RefundRecharge(refund, timeout=10, metadata=app)
            print(f"   {what:6} {paid.recharge_id} {STATUS(paid.status)} -> {STATUS(first.status)}"
                  f" ({first.refund.provider_reference}); same key again: replayed="
                  f"{second.replayed} {second.refund.provider_reference}")
            check(f"{what}: REFUNDED, the same key answers the same",
                  first.status == pb.RECHARGE_STATUS_REFUNDED and second.replayed and
                  second.refund == first.refund)
            check(f"{what}: events DECIDED, REFUNDED",
                  feed.wait(paid.recharge_id, ["RECHARGE_EVENT_DECIDED", "RECHARGE_EVENT_REFUNDED"]))
        declined = gw.RecordRecharge(card(number="4000000000000002"), timeout=10, metadata=app)
        refused = error_code(gw.RefundRecharge, pb.RefundRechargeRequest(
            recharge_id=declined.recharge_id, idempotency_key=f"refund-{uuid.uuid4().hex}"), app)
        print(f"   {STATUS(declined.status)} {declined.recharge_id} refund -> {refused}")
        check("a DECLINED recharge: FAILED_PRECONDITION", refused.startswith("FAILED_PRECONDITION"))

        print("4. a chargeback")
        victim = gw.RecordRecharge(card(), timeout=10, metadata=app)
        admin.ReportChargeback(pb.ReportChargebackRequest(
            recharge_id=victim.recharge_id, reason="fraudulent"), timeout=10, metadata=ops)
        check("events DECIDED, CHARGED_BACK",
              feed.wait(victim.recharge_id, ["RECHARGE_EVENT_DECIDED", "RECHARGE_EVENT_CHARGED_BACK"]))

        if expire:
            print("5. a held card left alone until its hold expires (REVIEW_HOLD_EXPIRY)")
            left = gw.RecordRecharge(card(seller=SELLER, ip=shops[2]), timeout=10, metadata=app)
            stored = gw.GetRecharge(pb.GetRechargeRequest(recharge_id=left.recharge_id),
                                    timeout=10, metadata=app)
            wait_s = stored.hold_expires_at.seconds - time.time() + 30
            print(f"   {left.recharge_id} {STATUS(left.status)}, hold expires "
                  f"{stored.hold_expires_at.ToJsonString()}; waiting up to {wait_s:.0f} s")
            check("voided by the reconciler: REVIEW_RESOLVED",
                  feed.wait(left.recharge_id, ["RECHARGE_EVENT_DECIDED",
                                               "RECHARGE_EVENT_REVIEW_RESOLVED"], timeout=wait_s))
            after = gw.GetRecharge(pb.GetRechargeRequest(recharge_id=left.recharge_id),
                                   timeout=10, metadata=app)
            print(f"   -> {STATUS(after.status)} {after.payment.decline_code}")
            check("DECLINED review_expired", after.payment.decline_code == "review_expired")
        feed.call.cancel()

    failed = [w for w, ok in checks if not ok]
    print(f"{len(checks) - len(failed)}/{len(checks)} checks passed")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
