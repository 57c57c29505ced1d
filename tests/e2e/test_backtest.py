#!/usr/bin/python3
"""Issue 12: FraudAdmin.BacktestRules on a real stack running the default
rules (configs/fraud_rules.yaml) after a few hundred recharges of mixed
kinds: direct buyers (some buying twice), an honest reseller (each buyer
their own card and device), a reseller ring that gets flagged (many cards
from a few shop addresses), and declined cards.

- Replaying the live rules over the traffic they decided alone changes zero
  decisions, every decision comparable.
- A stricter copy (one added rule: review an account's second recharge
  within an hour) changes exactly the allowed second recharges, with
  examples naming the rule.
- A copy with a new counter the live rules never had (distinct devices per
  seller in 10 minutes) is judged on what that counter would have said.
- A broken candidate is INVALID_ARGUMENT naming file, line and column, and
  the live rules are untouched.

    /usr/bin/python3 -m unittest -v tests/e2e/test_backtest.py
"""

from __future__ import annotations

import json
import os
import secrets
import sys
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import grpc  # noqa: E402

from stack import (REPO, Stack, card_request, luhn_complete, new_key, new_user, pb,  # noqa: E402
                   pb_grpc)

RPC_TIMEOUT_S = 60
LIVE_RULES = REPO / "configs" / "fraud_rules.yaml"
ALLOW, REVIEW = pb.FRAUD_ACTION_ALLOW, pb.FRAUD_ACTION_REVIEW


def approving_card() -> str:
    return luhn_complete("4242" + "".join(secrets.choice("0123456789") for _ in range(11)))


def declining_card() -> str:
    return luhn_complete("4000000000" + "".join(secrets.choice("0123456789") for _ in range(5)))


def recharge(user: str, card: str, seller: str = "", ip: str = "", device: str = ""):
    req = card_request(new_key("bt"), user=user, number=card, seller_id=seller)
    req.client.ip = ip or f"198.51.100.{secrets.randbelow(250) + 1}"
    req.client.device_id = device or f"dev-{secrets.token_hex(6)}"
    return req


def candidate(version: str, counter: str = "", rule: str = "") -> str:
    """The live file with another version, a counter added under `counters:`
    and a rule added at the end of `rules:` (the file's last section). Text,
    not a YAML round trip: PyYAML reads a key `on` as true."""
    text = LIVE_RULES.read_text()
    text = text.replace('version: "2026-12-02.1"', f'version: "{version}"', 1)
    assert f'version: "{version}"' in text, "the live file's version line moved"
    if counter:
        text = text.replace("\ncounters:\n", f"\ncounters:\n  {counter}\n", 1)
    if rule:
        text = text.rstrip("\n") + "\n" + rule
    return text


class BacktestTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.st = Stack("backtest")
        cls.st.fraud_rules_source = LIVE_RULES
        cls.st.start()
        stub = cls.st.stub()
        cls.responses = []

        def send(req):
            resp = stub.RecordRecharge(req, timeout=RPC_TIMEOUT_S)
            cls.responses.append((req, resp))
            return resp

        # Direct buyers, 50 of them buying twice within the hour.
        cls.second_allowed = 0
        for i in range(100):
            user, card, device = new_user("direct"), approving_card(), f"dev-{secrets.token_hex(6)}"
            send(recharge(user, card, device=device))
            if i < 50:
                if send(recharge(user, card, device=device)).fraud.decision == ALLOW:
                    cls.second_allowed += 1
        # An honest reseller: each buyer pays with their own card and device.
        cls.honest = "shop-honest-" + secrets.token_hex(4)
        for _ in range(30):
            send(recharge(new_user("buyer"), approving_card(), seller=cls.honest))
        # A ring: many accounts topped up with many cards from 3 shop addresses.
        cls.ring = "shop-ring-" + secrets.token_hex(4)
        shops = [f"203.0.113.{secrets.randbelow(250) + 1}" for _ in range(3)]
        cls.ring_flagged = False
        for i in range(60):
            resp = send(recharge(new_user("mule"), approving_card(), seller=cls.ring,
                                 ip=shops[i % 3], device=f"dev-ring-{i % 4}"))
            cls.ring_flagged |= resp.fraud.seller_flagged
        # Declines.
        for _ in range(20):
            send(recharge(new_user("declined"), declining_card()))
        cls.admin = pb_grpc.FraudAdminStub(cls.st.channel())  # the e2e caller has app and ops

    @classmethod
    def tearDownClass(cls):
        cls.st.stop()

    def backtest(self, text: str, examples: int = 3, name: str = "candidate.yaml"):
        return self.admin.BacktestRules(
            pb.BacktestRulesRequest(rules_yaml=text, file_name=name, examples_per_change=examples),
            timeout=RPC_TIMEOUT_S)

    def test_traffic_was_mixed(self):
        self.assertEqual(len(self.responses), 260)
        self.assertTrue(self.ring_flagged, "the ring was never flagged")
        statuses = {resp.status for _, resp in self.responses}
        self.assertIn(pb.RECHARGE_STATUS_DECLINED, statuses)
        self.assertIn(pb.RECHARGE_STATUS_PENDING_REVIEW, statuses)

    def test_the_live_rules_change_nothing(self):
        report = self.backtest(LIVE_RULES.read_text(), name="fraud_rules.yaml")
        n = len(self.responses)
        self.assertEqual(report.live_version, report.candidate_version)
        self.assertEqual(report.replayed, n)
        self.assertEqual(report.comparable, n, report.not_comparable)
        self.assertEqual(report.changed, 0, report.changes)
        self.assertEqual(len(report.changes), 0)

    def test_a_stricter_rule_changes_the_allowed_second_recharges(self):
        report = self.backtest(candidate("candidate-stricter", rule=(
            "  - id: second-recharge-within-hour\n"
            "    when: user_recharges_1h >= 2\n"
            "    action: review\n"
            "    reason: an account's second recharge within the hour\n")), examples=4)
        self.assertGreater(self.second_allowed, 0)
        self.assertEqual(report.changed, self.second_allowed)
        self.assertEqual([(c.__getattribute__("from"), c.to, c.count) for c in report.changes],
                         [(ALLOW, REVIEW, self.second_allowed)])
        rule = next(r for r in report.rules if r.rule_id == "second-recharge-within-hour")
        self.assertEqual(rule.hits, 50)  # every second recharge matched it
        self.assertEqual(len(rule.changes), 1)
        self.assertEqual(rule.changes[0].count, self.second_allowed)
        self.assertEqual(len(rule.changes[0].examples), min(4, self.second_allowed))
        example = rule.changes[0].examples[0]
        self.assertEqual((example.old_decision, example.new_decision), (ALLOW, REVIEW))
        self.assertIn("second-recharge-within-hour", example.rules_hit)
        self.assertEqual(json.loads(example.counters_json)["user_recharges_1h"], 2)
        self.assertTrue(example.recharge_id.startswith("rch_"))
        # The live rules are untouched.
        stats = self.admin.GetRuleStats(pb.GetRuleStatsRequest(), timeout=RPC_TIMEOUT_S)
        self.assertNotIn("second-recharge-within-hour", [r.rule_id for r in stats.rules])

    def test_a_counter_that_did_not_exist_live_is_judged_on_its_replayed_values(self):
        report = self.backtest(candidate(
            "candidate-devices",
            counter="seller_devices_10m: { distinct: device_id, per: seller_id, window: 10m, buckets: 10 }",
            rule=("  - id: many-devices-per-seller\n"
                  "    when: seller_id != \"\" and seller_devices_10m >= 5\n"
                  "    action: review\n"
                  "    reason: a seller's buyers on many devices\n")), examples=2)
        rule = next(r for r in report.rules if r.rule_id == "many-devices-per-seller")
        # The honest reseller's buyers each on their own device: from the
        # 5th recharge on it would have been reviewed (26 of 30).
        self.assertGreaterEqual(rule.hits, 26)
        change = next(c for c in rule.changes if c.to == REVIEW)
        self.assertGreaterEqual(change.count, 20)
        for ex in change.examples:
            self.assertGreaterEqual(json.loads(ex.counters_json)["seller_devices_10m"], 5)

    def test_a_broken_candidate_is_refused_naming_line_and_column(self):
        broken = LIVE_RULES.read_text().replace("when: seller_flagged",
                                                "when: seller_flagged and", 1)
        with self.assertRaises(grpc.RpcError) as cm:
            self.backtest(broken, name="broken.yaml")
        self.assertEqual(cm.exception.code(), grpc.StatusCode.INVALID_ARGUMENT)
        self.assertRegex(cm.exception.details(), r"broken\.yaml:\d+:\d+: ")

    def test_only_ops_may_backtest(self):
        channel = self.st.raw_channel(token=self.st.app_token)
        try:
            with self.assertRaises(grpc.RpcError) as cm:
                pb_grpc.FraudAdminStub(channel).BacktestRules(
                    pb.BacktestRulesRequest(rules_yaml=LIVE_RULES.read_text()), timeout=10)
            self.assertEqual(cm.exception.code(), grpc.StatusCode.PERMISSION_DENIED)
        finally:
            channel.close()


if __name__ == "__main__":
    unittest.main()
