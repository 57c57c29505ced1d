#!/usr/bin/python3
"""Rule backtests on the ./scripts/run.sh stack, as ops would run them
(docs/operations.md, "Changing fraud rules safely"):

  1. a few hundred recharges of mixed kinds: direct buyers (half of them
     buying twice), an honest reseller (each buyer their own card and
     device), a reseller ring (many cards from three shop addresses) that
     the default rules flag, and declined cards;
  2. `rechargectl rules backtest configs/fraud_rules.yaml`: the live rules
     over that traffic change no decision;
  3. a stricter copy (one added rule: review an account's second recharge
     within an hour): the allowed second recharges change, with examples;
  4. a copy with a counter the live rules never had (distinct devices per
     seller in 10 minutes) and a rule over it: what it would have done;
  5. a broken copy: `rules validate` and `rules backtest` exit 1 naming the
     line and column.

    /usr/bin/python3 examples/backtest_walkthrough.py [127.0.0.1:50051]

It records as dev-app (var/dev/app.token), runs ./scripts/rechargectl as
dev-ops, and exits 0 when every step answered as described.
"""
import json
import os
import secrets
import subprocess
import sys
import tempfile
import time
import uuid

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.environ.get("RECHARGE_PY_OUT", os.path.join(ROOT, "build", "python")))

import grpc  # noqa: E402
from recharge.v1 import recharge_pb2 as pb  # noqa: E402
from recharge.v1 import recharge_pb2_grpc as rpc  # noqa: E402

LIVE = os.path.join(ROOT, "configs", "fraud_rules.yaml")


def luhn(prefix: str) -> str:
    for d in "0123456789":
        total = 0
        for i, ch in enumerate(reversed(prefix + d)):
            v = int(ch) * (2 if i % 2 else 1)
            total += v - 9 if v > 9 else v
        if total % 10 == 0:
            return prefix + d
    raise AssertionError


def digits(n: int) -> str:
    return "".join(secrets.choice("0123456789") for _ in range(n))


def request(user: str, number: str, seller: str = "", ip: str = "", device: str = ""):
    return pb.RecordRechargeRequest(
        idempotency_key=f"bt-{uuid.uuid4().hex}", user_id=user, package_id="coins_65",
        amount=pb.Money(currency="USD", minor_units=99), region="US", seller_id=seller,
        card=pb.Card(number=number, exp_month=12, exp_year=time.gmtime().tm_year + 3, cvc="123"),
        client=pb.ClientContext(ip=ip or f"192.0.2.{secrets.randbelow(250) + 1}",
                                device_id=device or f"dev-{secrets.token_hex(6)}"))


def ctl(*args: str, json_out: bool = False) -> subprocess.CompletedProcess:
    argv = [os.path.join(ROOT, "scripts", "rechargectl")] + (["--json"] if json_out else []) + list(args)
    return subprocess.run(argv, cwd=ROOT, capture_output=True, text=True, timeout=600)


def candidate(version: str, counter: str = "", rule: str = "") -> str:
    text = open(LIVE).read()
    live_version = next(line for line in text.splitlines() if line.startswith("version:"))
    text = text.replace(live_version, f'version: "{version}"', 1)
    if counter:
        text = text.replace("\ncounters:\n", f"\ncounters:\n  {counter}\n", 1)
    if rule:
        text = text.rstrip("\n") + "\n" + rule
    path = os.path.join(tempfile.mkdtemp(prefix="backtest-"), f"{version}.yaml")
    with open(path, "w") as f:
        f.write(text)
    return path


def main() -> int:
    target = sys.argv[1] if len(sys.argv) > 1 else "127.0.0.1:50051"
    with open(os.path.join(ROOT, "var", "dev", "app.token")) as f:
        app = [("authorization", "Bearer " + f.read().strip())]
    checks: list[tuple[str, bool]] = []

    def check(what: str, ok: bool):
        checks.append((what, ok))
        print(f"  [{'ok' if ok else 'FAILED'}] {what}")

    started = time.time()
    with grpc.insecure_channel(target) as channel:
        gw = rpc.RechargeGatewayStub(channel)
        sent = []

        def send(req):
            resp = gw.RecordRecharge(req, timeout=30, metadata=app)
            sent.append(resp)
            return resp

        print("1. traffic")
        second_allowed = 0
        for i in range(120):
            user, card, device = f"user-{uuid.uuid4().hex[:10]}", luhn("4242" + digits(11)), \
                f"dev-{secrets.token_hex(6)}"
            send(request(user, card, device=device))
            if i % 2 == 0 and send(request(user, card, device=device)).fraud.decision == \
                    pb.FRAUD_ACTION_ALLOW:
                second_allowed += 1
        honest = f"shop-honest-{secrets.token_hex(4)}"
        for _ in range(40):
            send(request(f"buyer-{uuid.uuid4().hex[:10]}", luhn("4242" + digits(11)), seller=honest))
        ring = f"shop-ring-{secrets.token_hex(4)}"
        shops = [f"203.0.113.{secrets.randbelow(250) + 1}" for _ in range(3)]
        flagged = False
        for i in range(60):
            resp = send(request(f"mule-{uuid.uuid4().hex[:10]}", luhn("4242" + digits(11)),
                                seller=ring, ip=shops[i % 3], device=f"dev-ring-{ring}-{i % 4}"))
            flagged |= resp.fraud.seller_flagged
        for _ in range(20):
            send(request(f"user-{uuid.uuid4().hex[:10]}", luhn("4000000000" + digits(5))))
        by_status: dict[str, int] = {}
        for r in sent:
            by_status[pb.RechargeStatus.Name(r.status)] = by_status.get(pb.RechargeStatus.Name(r.status), 0) + 1
        print(f"   {len(sent)} recharges: {by_status}; ring {ring} flagged: {flagged}")
        check("a few hundred recharges, the ring flagged", len(sent) >= 300 and flagged)

    since = f"{int(time.time() - started) + 5}s"
    print(f"2. rechargectl rules backtest configs/fraud_rules.yaml --since {since}")
    done = ctl("rules", "backtest", LIVE, "--since", since)
    print("   " + done.stdout.replace("\n", "\n   ").rstrip())
    live = json.loads(ctl("rules", "backtest", LIVE, "--since", since, json_out=True).stdout)
    check("the live rules change 0 decisions, all comparable",
          done.returncode == 0 and int(live["changed"]) == 0 and
          int(live["comparable"]) == int(live["replayed"]) >= len(sent))

    print("3. a stricter copy: review an account's second recharge within an hour")
    stricter = candidate("stricter", rule=("  - id: second-recharge-within-hour\n"
                                           "    when: user_recharges_1h >= 2\n"
                                           "    action: review\n"
                                           "    reason: an account's second recharge within the hour\n"))
    done = ctl("rules", "backtest", stricter, "--since", since, "--examples", "2")
    print("   " + done.stdout.replace("\n", "\n   ").rstrip())
    report = json.loads(ctl("rules", "backtest", stricter, "--since", since, json_out=True).stdout)
    check(f"the {second_allowed} allowed second recharges change allow -> review, with examples",
          int(report["changed"]) == second_allowed and
          any(r["rule_id"] == "second-recharge-within-hour" and r["changes"] and
              r["changes"][0]["examples"] for r in report["rules"]))

    print("4. a new counter: distinct devices per seller in 10 minutes")
    devices = candidate(
        "devices",
        counter="seller_devices_10m: { distinct: device_id, per: seller_id, window: 10m, buckets: 10 }",
        rule=("  - id: many-devices-per-seller\n"
              "    when: seller_id != \"\" and seller_devices_10m >= 5\n"
              "    action: review\n"
              "    reason: a seller's buyers on many devices\n"))
    done = ctl("rules", "backtest", devices, "--since", since, "--examples", "1")
    print("   " + done.stdout.replace("\n", "\n   ").rstrip())
    report = json.loads(ctl("rules", "backtest", devices, "--since", since, json_out=True).stdout)
    rule = next(r for r in report["rules"] if r["rule_id"] == "many-devices-per-seller")
    check("it reports what the new rule would have done (hits and changes)",
          int(rule["hits"]) >= 36 and int(report["changed"]) > 0)

    print("5. a broken copy")
    broken = candidate("broken")
    with open(broken) as f:
        text = f.read().replace("when: seller_flagged", "when: seller_flagged and", 1)
    with open(broken, "w") as f:
        f.write(text)
    v, b = ctl("rules", "validate", broken), ctl("rules", "backtest", broken)
    print(f"   validate -> exit {v.returncode}: {v.stderr.strip()}")
    print(f"   backtest -> exit {b.returncode}: {b.stderr.strip()}")
    check("validate and backtest exit 1 naming line and column",
          v.returncode == 1 and b.returncode == 1 and f"{broken}:" in v.stderr and f"{broken}:" in b.stderr)

    failed = [w for w, ok in checks if not ok]
    print(f"{len(checks) - len(failed)}/{len(checks)} checks passed")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
