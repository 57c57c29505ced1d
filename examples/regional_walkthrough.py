#!/usr/bin/python3
"""Regional payment flows on the ./scripts/run.sh stack, as an app server and
a buyer see them (docs/adapters.md, "Providers that answer later"):

  1. a GCash recharge (flow: redirect) answers REQUIRES_ACTION with the
     wallet's approval page; replaying its key gives the same action; the
     buyer presses Approve: the wallet's signed webhook reaches the gateway
     and the recharge is APPROVED with its coins (a SETTLED event on the
     feed, one payment in the sandbox journal); another is cancelled on the
     page: FAILED cancelled;
  2. a card in region DE is challenged by 3-D Secure (REQUIRES_ACTION);
     passing the challenge captures it once: APPROVED; a card whose
     challenge fails: DECLINED authentication_failed; a frictionless card is
     APPROVED at once;
  3. the webhook port refuses a forged signature and a stale timestamp
     (401), and answers a resent notification "duplicate" with no change.
With --expire, a last GCash recharge is left alone until the reconciler
cancels it (FAILED action_expired): start the stack with a short expiry,
    ACTION_EXPIRY=20s ./scripts/run.sh

    /usr/bin/python3 examples/regional_walkthrough.py [--expire] [127.0.0.1:50051]

It calls as dev-app (var/dev/app.token), plaintext, acts as the buyer on the
sandbox's pages (https://127.0.0.1:8443, trusting var/certs/ca.pem), signs
its own test notifications with var/secrets/webhook_secret, and exits 0
when every step answered as described.
"""
import hashlib
import hmac
import html
import http.client
import json
import os
import re
import ssl
import sys
import threading
import time
import urllib.parse
import uuid

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.environ.get("RECHARGE_PY_OUT", os.path.join(ROOT, "build", "python")))

import grpc  # noqa: E402
from recharge.v1 import recharge_pb2 as pb  # noqa: E402
from recharge.v1 import recharge_pb2_grpc as rpc  # noqa: E402

VAR = os.path.join(ROOT, "var")
STATUS = pb.RechargeStatus.Name
EVENT = pb.RechargeEventType.Name
SANDBOX_PORT = int(os.environ.get("SANDBOX_PORT", "8443"))
WEBHOOK_PORT = int(os.environ.get("WEBHOOK_PORT", "8444"))
SANDBOX_CA = ssl.create_default_context(cafile=os.path.join(VAR, "certs", "ca.pem"))
GATEWAY_CA = ssl.create_default_context(cafile=os.path.join(VAR, "dev", "ca.pem"))


def read(path: str) -> str:
    with open(path) as f:
        return f.read().strip()


def gcash():
    return pb.RecordRechargeRequest(
        idempotency_key=f"walk-{uuid.uuid4().hex}", user_id=f"user-{uuid.uuid4().hex[:10]}",
        package_id="coins_65", amount=pb.Money(currency="PHP", minor_units=5500), region="PH",
        ewallet=pb.EWallet(provider="gcash", account_id=f"acct-{uuid.uuid4().hex[:8]}-0001"),
        client=pb.ClientContext(ip="198.51.100.91", device_id=f"dev-{uuid.uuid4().hex[:10]}"))


def de_card(number: str):
    return pb.RecordRechargeRequest(
        idempotency_key=f"walk-{uuid.uuid4().hex}", user_id=f"user-{uuid.uuid4().hex[:10]}",
        package_id="coins_65", amount=pb.Money(currency="EUR", minor_units=99), region="DE",
        card=pb.Card(number=number, exp_month=12, exp_year=time.gmtime().tm_year + 3, cvc="123"),
        client=pb.ClientContext(ip="198.51.100.92", device_id=f"dev-{uuid.uuid4().hex[:10]}"))


def https(port: int, ctx, method: str, path: str, body: bytes | None = None,
          headers: dict | None = None) -> tuple[int, str]:
    c = http.client.HTTPSConnection("127.0.0.1", port, context=ctx, timeout=10)
    try:
        c.request(method, path, body=body, headers=headers or {})
        r = c.getresponse()
        return r.status, r.read().decode()
    finally:
        c.close()


def press(url: str, button: str) -> int:
    """What the buyer does in a browser: open the page, press the button."""
    parts = urllib.parse.urlsplit(url)
    status, page = https(parts.port, SANDBOX_CA, "GET", f"{parts.path}?{parts.query}")
    for action, inner in re.findall(r'<form method="post" action="([^"]+)">(.*?)</form>', page, re.S):
        if f'id="{button}"' in inner:
            fields = {k: html.unescape(v) for k, v in
                      re.findall(r'<input type="hidden" name="([^"]+)" value="([^"]*)"', inner)}
            return https(parts.port, SANDBOX_CA, "POST", html.unescape(action),
                         urllib.parse.urlencode(fields).encode(),
                         {"Content-Type": "application/x-www-form-urlencoded"})[0]
    raise SystemExit(f"no {button} button on {url} (HTTP {status})")


def journal_ops(key: str) -> list[str]:
    """The sandbox journal's lines for the payment made under `key`: its
    charge line ("charge"), then its operations (authenticate, approve,
    capture, ...)."""
    lines = [json.loads(x) for x in open(os.path.join(VAR, "sandbox", "journal.jsonl")) if x.strip()]
    ids = {r.get("id") for r in lines if "op" not in r and r.get("idempotency_key") == key}
    return [("charge" if "op" not in r else r["op"]) for r in lines
            if r.get("id") in ids and ("op" in r or r.get("idempotency_key") == key)]


def sign(body: bytes, secret: str, t: int | None = None) -> str:
    t = int(time.time()) if t is None else t
    return f"t={t},v1=" + hmac.new(secret.encode(), f"{t}.".encode() + body, hashlib.sha256).hexdigest()


class Feed:
    """WatchRecharges from now, printed and kept by recharge id."""

    def __init__(self, gateway, auth):
        self.call = gateway.WatchRecharges(pb.WatchRechargesRequest(from_now=True), metadata=auth)
        self.call.initial_metadata()
        self.seen: dict[str, list[str]] = {}
        self.cv = threading.Condition()
        threading.Thread(target=self._run, daemon=True).start()

    def _run(self):
        try:
            for e in self.call:
                r = e.recharge
                print(f"    event {EVENT(e.type):24} {r.recharge_id} {STATUS(r.status):31} "
                      f"coins {e.coins_delta:+d}")
                with self.cv:
                    self.seen.setdefault(r.recharge_id, []).append(EVENT(e.type))
                    self.cv.notify_all()
        except grpc.RpcError:
            pass

    def wait(self, recharge_id: str, events: list[str], timeout: float = 15) -> bool:
        with self.cv:
            return self.cv.wait_for(lambda: self.seen.get(recharge_id, []) == events, timeout)


def main() -> int:
    args = sys.argv[1:]
    expire = "--expire" in args
    args = [a for a in args if a != "--expire"]
    target = args[0] if args else "127.0.0.1:50051"
    app = [("authorization", "Bearer " + read(os.path.join(VAR, "dev", "app.token")))]
    checks: list[tuple[str, bool]] = []

    def check(what: str, ok: bool):
        checks.append((what, ok))
        print(f"  [{'ok' if ok else 'FAILED'}] {what}")

    decided_settled = ["RECHARGE_EVENT_DECIDED", "RECHARGE_EVENT_SETTLED"]
    with grpc.insecure_channel(target) as channel:
        gw = rpc.RechargeGatewayStub(channel)
        feed = Feed(gw, app)

        def get(recharge_id: str):
            return gw.GetRecharge(pb.GetRechargeRequest(recharge_id=recharge_id), timeout=10,
                                  metadata=app)

        print("1. GCash (flow: redirect): the buyer approves in the wallet")
        req = gcash()
        first = gw.RecordRecharge(req, timeout=10, metadata=app)
        print(f"   {first.recharge_id} {STATUS(first.status)}: "
              f"{pb.NextActionType.Name(first.next_action.type)} {first.next_action.url} "
              f"until {first.next_action.expires_at.ToJsonString()}")
        check("REQUIRES_ACTION with a redirect to the wallet's page",
              first.status == pb.RECHARGE_STATUS_REQUIRES_ACTION and
              first.next_action.type == pb.NEXT_ACTION_TYPE_REDIRECT and
              "/ewallet/approve/" in first.next_action.url)
        again = gw.RecordRecharge(req, timeout=10, metadata=app)
        check("a replay of the key returns the same action",
              again.replayed and again.next_action == first.next_action)
        print(f"   the buyer presses Approve: HTTP {press(first.next_action.url, 'approve')}")
        check("SETTLED on the feed", feed.wait(first.recharge_id, decided_settled))
        done = get(first.recharge_id)
        print(f"   -> {STATUS(done.status)}, coins {done.coins}; journal {journal_ops(req.idempotency_key)}")
        check("APPROVED with its coins", done.status == pb.RECHARGE_STATUS_APPROVED and done.coins == 65)
        check("one payment, approved once, in the journal",
              journal_ops(req.idempotency_key) == ["charge", "approve"])
        approved_key, approved_id = req.idempotency_key, first.recharge_id

        cancelled = gw.RecordRecharge(gcash(), timeout=10, metadata=app)
        print(f"   {cancelled.recharge_id}: the buyer presses Cancel: "
              f"HTTP {press(cancelled.next_action.url, 'cancel')}")
        feed.wait(cancelled.recharge_id, decided_settled)
        c = get(cancelled.recharge_id)
        print(f"   -> {STATUS(c.status)} {c.payment.decline_code}")
        check("FAILED cancelled", c.status == pb.RECHARGE_STATUS_FAILED and
              c.payment.decline_code == "cancelled")

        print("2. cards in DE: 3-D Secure")
        req = de_card("4242424242424242")
        challenged = gw.RecordRecharge(req, timeout=10, metadata=app)
        print(f"   {challenged.recharge_id} {STATUS(challenged.status)}: {challenged.next_action.url}")
        check("REQUIRES_ACTION with the challenge page",
              challenged.status == pb.RECHARGE_STATUS_REQUIRES_ACTION and
              "/3ds/" in challenged.next_action.url)
        print(f"   the buyer passes the challenge: HTTP {press(challenged.next_action.url, 'approve')}")
        feed.wait(challenged.recharge_id, decided_settled)
        c = get(challenged.recharge_id)
        print(f"   -> {STATUS(c.status)}, coins {c.coins}; journal {journal_ops(req.idempotency_key)}")
        check("APPROVED, captured once",
              c.status == pb.RECHARGE_STATUS_APPROVED and
              journal_ops(req.idempotency_key) == ["charge", "authenticate", "capture"])
        failing = gw.RecordRecharge(de_card("4000008400001629"), timeout=10, metadata=app)
        print(f"   {failing.recharge_id}: the challenge fails: HTTP {press(failing.next_action.url, 'fail')}")
        feed.wait(failing.recharge_id, decided_settled)
        c = get(failing.recharge_id)
        print(f"   -> {STATUS(c.status)} {c.payment.decline_code}")
        check("DECLINED authentication_failed", c.status == pb.RECHARGE_STATUS_DECLINED and
              c.payment.decline_code == "authentication_failed")
        frictionless = gw.RecordRecharge(de_card("4000000000003055"), timeout=10, metadata=app)
        print(f"   frictionless card -> {STATUS(frictionless.status)}")
        check("a frictionless card is APPROVED at once",
              frictionless.status == pb.RECHARGE_STATUS_APPROVED)

        print(f"3. the webhook port (https://127.0.0.1:{WEBHOOK_PORT}/webhooks/gcash-ph)")
        secret = read(os.path.join(VAR, "secrets", "webhook_secret"))
        status, body = https(SANDBOX_PORT, SANDBOX_CA, "GET", "/_sandbox/webhooks")
        sent = [w for w in json.loads(body)["webhooks"]
                if json.loads(w["body"]).get("payment", {}).get("merchant_ref") == approved_id]
        raw = sent[0]["body"].encode()
        forged = https(WEBHOOK_PORT, GATEWAY_CA, "POST", "/webhooks/gcash-ph", raw,
                       {"Sandbox-Signature": sign(raw, "not-the-secret")})
        stale = https(WEBHOOK_PORT, GATEWAY_CA, "POST", "/webhooks/gcash-ph", raw,
                      {"Sandbox-Signature": sign(raw, secret, int(time.time()) - 3600)})
        resent = https(WEBHOOK_PORT, GATEWAY_CA, "POST", "/webhooks/gcash-ph", raw,
                       {"Sandbox-Signature": sign(raw, secret)})
        print(f"   forged -> {forged[0]} {forged[1]}\n   stale -> {stale[0]} {stale[1]}\n"
              f"   the same notification again -> {resent[0]} {resent[1]}")
        check("forged and stale signatures are 401", forged[0] == 401 and stale[0] == 401)
        check("a resent notification changes nothing",
              resent == (200, '{"result":"duplicate"}') and
              feed.seen.get(approved_id) == decided_settled and
              journal_ops(approved_key) == ["charge", "approve"])

        if expire:
            left = gw.RecordRecharge(gcash(), timeout=10, metadata=app)
            wait_s = max(0, left.next_action.expires_at.seconds - time.time()) + 30
            print(f"4. {left.recharge_id} left alone until {left.next_action.expires_at.ToJsonString()}")
            feed.wait(left.recharge_id, decided_settled, timeout=wait_s)
            c = get(left.recharge_id)
            print(f"   -> {STATUS(c.status)} {c.payment.decline_code}")
            check("FAILED action_expired", c.status == pb.RECHARGE_STATUS_FAILED and
                  c.payment.decline_code == "action_expired")
        feed.call.cancel()

    failed = [w for w, ok in checks if not ok]
    print(f"{len(checks) - len(failed)}/{len(checks)} checks passed")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
