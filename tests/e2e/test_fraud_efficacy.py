#!/usr/bin/python3
"""Issue 8 on the real stack, with the shipped rules (configs/fraud_rules.yaml):
an honest reseller is told apart from reseller rings, an operation spread
over several seller ids is caught, and card testing is blocked — the
behaviour, not the benchmark's figures (bench/fraud/ measures those).

    /usr/bin/python3 -m unittest -v tests/e2e/test_fraud_efficacy.py

Every scenario runs on a stack of its own (a fresh Redis), so no counter of
one scenario reaches another. The last test runs the seeded scenario
benchmark at a quarter of its size against the stack and checks what each
kind of actor got.
"""

from __future__ import annotations

import json
import os
import random
import subprocess
import sys
import unittest
import uuid

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from stack import (PY_OUT, PYTHON, REPO, Stack, card_request, luhn_complete, pb, pb_grpc,  # noqa: E402
                   status_name)

RPC_TIMEOUT_S = 20
RULES_FILE = REPO / "configs" / "fraud_rules.yaml"
APPROVED = pb.RECHARGE_STATUS_APPROVED
DECLINED = pb.RECHARGE_STATUS_DECLINED
BLOCKED = pb.RECHARGE_STATUS_BLOCKED
HELD = (pb.RECHARGE_STATUS_PENDING_REVIEW, pb.RECHARGE_STATUS_BLOCKED)
TOP_TIER = ("coins_6607", 9999)


class Ids:
    """Fresh, distinct ids, cards, devices and addresses for one test."""

    def __init__(self, seed: int):
        self.rng = random.Random(seed)
        self.run = uuid.uuid4().hex[:8]
        self.n = 0

    def _next(self) -> int:
        self.n += 1
        return self.n

    def user(self) -> str:
        return f"eff-{self.run}-u{self._next()}"

    def seller(self) -> str:
        return f"eff-{self.run}-s{self._next()}"

    def device(self) -> str:
        return f"eff-{self.run}-d{self._next()}"

    def ip(self) -> str:
        n = self._next()
        return f"10.{self.rng.randrange(256)}.{n // 250}.{n % 250 + 1}"

    def card(self) -> str:
        """A card the sandbox approves."""
        return luhn_complete("5" + "".join(str(self.rng.randrange(10)) for _ in range(14)))

    def declining_card(self) -> str:
        """A card the sandbox declines (its 4000000000... range)."""
        return luhn_complete("4000000000" + "".join(str(self.rng.randrange(10)) for _ in range(8)))


def recharge(ids: Ids, *, user: str, card: str, ip: str, device: str, seller: str = "",
             package: tuple[str, int] = ("coins_65", 99)) -> "pb.RecordRechargeRequest":
    req = card_request(user=user, number=card, package_id=package[0], minor_units=package[1])
    req.client.CopyFrom(pb.ClientContext(ip=ip, device_id=device, user_agent="e2e-efficacy/1.0"))
    req.seller_id = seller
    return req


def describe(resp) -> str:
    hits = ", ".join(f"{h.rule_id}{'(shadow)' if h.shadow else ''}" for h in resp.fraud.hits)
    return f"{status_name(resp.status)} hits=[{hits}] seller_flagged={resp.fraud.seller_flagged}"


class EfficacyTest(unittest.TestCase):
    def setUp(self):
        self.stack = Stack("efficacy-" + self._testMethodName[5:25].replace("_", "-"))
        self.stack.fraud_rules_source = RULES_FILE
        self.stack.start()
        self.addCleanup(self.stack.stop)
        self.gw = self.stack.stub()
        self.admin = pb_grpc.FraudAdminStub(self.stack.channel())

    def record(self, req):
        return self.gw.RecordRecharge(req, timeout=RPC_TIMEOUT_S)

    def flagged_sellers(self) -> set[str]:
        resp = self.admin.ListFlaggedSellers(pb.ListFlaggedSellersRequest(), timeout=RPC_TIMEOUT_S)
        return {s.seller_id for s in resp.sellers}

    def test_an_honest_reseller_serving_60_buyers_is_never_flagged(self):
        """60 buyers in a row through one seller, each with an own account,
        card, device and address, a few of them declined (each then pays
        with another own card): every valid recharge APPROVED, the seller
        never flagged, no enforcing rule ever hit."""
        ids = Ids(8001)
        seller = ids.seller()
        declined_buyers = {7, 23, 41}
        for n in range(60):
            user, ip, device = ids.user(), ids.ip(), ids.device()
            if n in declined_buyers:
                first = self.record(recharge(ids, user=user, card=ids.declining_card(), ip=ip,
                                             device=device, seller=seller))
                self.assertEqual(first.status, DECLINED, describe(first))
            resp = self.record(recharge(ids, user=user, card=ids.card(), ip=ip, device=device,
                                        seller=seller))
            with self.subTest(buyer=n + 1):
                self.assertEqual(resp.status, APPROVED, describe(resp))
                self.assertFalse(resp.fraud.seller_flagged, describe(resp))
                self.assertEqual([h.rule_id for h in resp.fraud.hits if not h.shadow], [])
        self.assertNotIn(seller, self.flagged_sellers())
        risk = self.admin.GetSellerRisk(pb.GetSellerRiskRequest(seller_id=seller),
                                        timeout=RPC_TIMEOUT_S)
        self.assertFalse(risk.flagged)
        self.assertGreaterEqual(risk.counters["seller_users_1h"], 58)
        self.assertEqual(risk.counters["seller_shared_card_recharges_1h"], 0)

    def test_a_ring_of_60_accounts_on_20_cards_from_3_addresses_is_flagged_within_15(self):
        """A ring: 60 new accounts, 20 stolen cards, 3 addresses, 3 devices,
        top-tier bundles: the seller is flagged at one of its first 15
        recharges, and once flagged nothing more of it is approved."""
        ids = Ids(8002)
        seller = ids.seller()
        cards = [ids.card() for _ in range(20)]
        ips = [ids.ip() for _ in range(3)]
        devices = [ids.device() for _ in range(3)]
        resps = []
        for n in range(60):
            resps.append(self.record(recharge(ids, user=ids.user(), card=ids.rng.choice(cards),
                                              ip=ips[n % 3], device=devices[n % 3], seller=seller,
                                              package=TOP_TIER)))
        first = next((i for i, r in enumerate(resps) if r.fraud.seller_flagged), None)
        self.assertIsNotNone(first, [describe(r) for r in resps])
        self.assertLess(first, 15, f"flagged at recharge {first + 1}: {describe(resps[first])}")
        self.assertIn(resps[first].status, HELD)
        for i, r in enumerate(resps[first:], first + 1):
            with self.subTest(recharge=i):
                self.assertNotEqual(r.status, APPROVED, describe(r))
        self.assertIn(seller, self.flagged_sellers())

    def test_an_operation_over_4_seller_ids_sharing_cards_and_devices_gets_all_4_flagged(self):
        """One operation behind 4 seller ids, 12 accounts each, every seller
        id small (12 accounts, each from its own address) but all paying
        from one pool of 8 cards and 4 devices: all 4 ids are flagged."""
        ids = Ids(8003)
        sellers = [ids.seller() for _ in range(4)]
        cards = [ids.card() for _ in range(8)]
        devices = [ids.device() for _ in range(4)]
        resps = {s: [] for s in sellers}
        for n in range(48):
            seller = sellers[n % 4]  # interleaved, as an operation runs its shops
            resps[seller].append(self.record(recharge(
                ids, user=ids.user(), card=cards[ids.rng.randrange(8)], ip=ids.ip(),
                device=devices[ids.rng.randrange(4)], seller=seller)))
        flagged = self.flagged_sellers()
        for s in sellers:
            with self.subTest(seller=s):
                self.assertIn(s, flagged, [describe(r) for r in resps[s]])
                self.assertTrue(any(r.fraud.seller_flagged for r in resps[s]))
                risk = self.admin.GetSellerRisk(pb.GetSellerRiskRequest(seller_id=s),
                                                timeout=RPC_TIMEOUT_S)
                self.assertTrue(risk.flagged)
                # The signals show why: cards or devices other sellers used
                # too, and the other ids of the operation are its linked sellers.
                self.assertGreater(risk.counters["seller_cross_card_recharges_1h"] +
                                   risk.counters["seller_cross_device_recharges_1h"], 0)
                self.assertEqual({l.seller_id for l in risk.linked}, set(sellers) - {s})

    def test_a_seller_linked_by_shared_cards_is_flagged_with_the_instrument_named(self):
        """Seller A sells twice, with cards c1 and c2; then seller B's buyers
        pay with c1 and c2: B is flagged (seller-linked), and so is A, with a
        reason naming B and the shared card; GetSellerRisk shows each as the
        other's linked seller, by card_fingerprint, 2 instruments."""
        ids = Ids(8005)
        a, b = ids.seller(), ids.seller()
        c1, c2 = ids.card(), ids.card()
        for card in (c1, c2):
            r = self.record(recharge(ids, user=ids.user(), card=card, ip=ids.ip(),
                                     device=ids.device(), seller=a))
            self.assertEqual(r.status, APPROVED, describe(r))
            self.assertFalse(r.fraud.seller_flagged)
        self.assertNotIn(a, self.flagged_sellers())
        resps = [self.record(recharge(ids, user=ids.user(), card=card, ip=ids.ip(),
                                      device=ids.device(), seller=b)) for card in (c1, c2)]
        self.assertTrue(resps[1].fraud.seller_flagged, describe(resps[1]))
        self.assertIn("seller-linked", {h.rule_id for h in resps[1].fraud.hits if not h.shadow})
        flags = {s.seller_id: s for s in self.admin.ListFlaggedSellers(
            pb.ListFlaggedSellersRequest(), timeout=RPC_TIMEOUT_S).sellers}
        self.assertIn(b, flags)
        self.assertIn(a, flags)
        self.assertEqual(flags[a].rule_id, "seller-linked")
        self.assertIn(f"linked to seller {b} by a shared card", flags[a].reason)
        for me, other in ((a, b), (b, a)):
            risk = self.admin.GetSellerRisk(pb.GetSellerRiskRequest(seller_id=me),
                                            timeout=RPC_TIMEOUT_S)
            linked = {l.seller_id: l for l in risk.linked}
            self.assertEqual(set(linked), {other}, risk)
            self.assertEqual(list(linked[other].by), ["card_fingerprint"])
            self.assertEqual(linked[other].shared_instruments, 2)
        # A's next buyer is held: A is flagged now.
        nxt = self.record(recharge(ids, user=ids.user(), card=ids.card(), ip=ids.ip(),
                                   device=ids.device(), seller=a))
        self.assertEqual(nxt.status, pb.RECHARGE_STATUS_PENDING_REVIEW, describe(nxt))

    def test_a_card_tester_is_blocked_within_5_tries_and_a_mistype_is_not(self):
        """One account on one device and address trying a new card every
        time (most declined): BLOCKED by the 5th try at the latest, and
        every later try too. A buyer whose first card is declined and who
        pays with a second one is APPROVED."""
        ids = Ids(8004)
        user, ip, device = ids.user(), ids.ip(), ids.device()
        resps = []
        for n in range(10):
            card = ids.card() if n in (2, 6) else ids.declining_card()
            resps.append(self.record(recharge(ids, user=user, card=card, ip=ip, device=device)))
        first_blocked = next((i for i, r in enumerate(resps) if r.status == BLOCKED), None)
        self.assertIsNotNone(first_blocked, [describe(r) for r in resps])
        self.assertLess(first_blocked, 5, [describe(r) for r in resps])
        for r in resps[first_blocked:]:
            self.assertEqual(r.status, BLOCKED, describe(r))
        hit = {h.rule_id for h in resps[first_blocked].fraud.hits if not h.shadow}
        self.assertTrue(hit & {"card-testing-account", "card-testing-device",
                               "card-testing-address"}, describe(resps[first_blocked]))

        buyer, bip, bdevice = ids.user(), ids.ip(), ids.device()
        first = self.record(recharge(ids, user=buyer, card=ids.declining_card(), ip=bip,
                                     device=bdevice))
        self.assertEqual(first.status, DECLINED, describe(first))
        second = self.record(recharge(ids, user=buyer, card=ids.card(), ip=bip, device=bdevice))
        self.assertEqual(second.status, APPROVED, describe(second))

    def test_the_seeded_scenario_tells_each_actor_apart(self):
        """bench/fraud/scenario.py, seed 7, a quarter of its size, against
        this stack: no honest reseller flagged and no honest valid recharge
        stopped; every ring and every id of the spread-out operations
        flagged; card testers' and farms' tries mostly not approved."""
        token_file = self.stack.tmp / "e2e.token"
        token_file.write_text(self.stack.token + "\n")
        out = self.stack.tmp / "scenario.json"
        proc = subprocess.run(
            [PYTHON, str(REPO / "bench" / "fraud" / "scenario.py"),
             "--target", f"127.0.0.1:{self.stack.gateway_port}",
             "--app-token-file", str(token_file), "--ops-token-file", str(token_file),
             "--seed", "7", "--scale", "0.25", "--concurrency", "4", "--json-out", str(out)],
            capture_output=True, text=True, timeout=300, cwd=str(REPO),
            env=dict(os.environ, RECHARGE_PY_OUT=str(PY_OUT)))
        self.assertEqual(proc.returncode, 0, proc.stdout[-3000:] + proc.stderr[-3000:])
        run = json.loads(out.read_text())["runs"][0]
        m, actors = run["measures"], run["per_actor"]
        report = proc.stdout[-4000:]
        self.assertEqual(m["rpc_errors"], 0, report)
        self.assertGreater(m["honest_valid"], 50, report)
        self.assertEqual(m["honest_valid_stopped"], 0, report)
        self.assertGreaterEqual(m["honest_resellers"], 1, report)
        self.assertEqual(m["honest_resellers_flagged"], 0, report)
        for actor in ("fast-ring", "spread-op"):
            a = actors[actor]
            self.assertGreater(a["sellers"], 0, report)
            self.assertEqual(a["sellers_flagged"], a["sellers"], f"{actor}: {report}")
        self.assertGreaterEqual(m["card_testing_not_approved_share"], 0.8, report)
        self.assertGreaterEqual(m["fraud_not_approved_share"], 0.7, report)


if __name__ == "__main__":
    unittest.main()
