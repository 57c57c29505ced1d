#!/usr/bin/python3
"""Issue 12, acceptances 3 and 4: the gateway's Prometheus port and its log
lines on a real stack.

- GET /metrics answers the text format, and Debian's python3-prometheus-client
  parser reads every family of it;
- its counters and histograms move as recharges flow: RPCs by code, recharges
  by status and method, the fraud round trip, the adapter call, the ledger
  commit, rule evaluations and hits (shadow labelled), circuit breaker state,
  build info;
- no label value carries a card number, a user id or a seller id;
- every line the gateway logs (at debug level) is one JSON object, each
  recharge has exactly one `recharge` decision line with its user, seller,
  method, region, status, rules hit, adapter and time, and no line holds a
  card number.

    /usr/bin/python3 -m unittest -v tests/e2e/test_metrics.py
"""

from __future__ import annotations

import json
import os
import re
import sys
import time
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import grpc  # noqa: E402
from prometheus_client.parser import text_string_to_metric_families  # noqa: E402

from card_scan import Scanner  # noqa: E402
from stack import REPO, CARD_DECLINE, Stack, card_request, new_key, new_user, pb  # noqa: E402

RPC_TIMEOUT_S = 20
SELLER = "seller-metrics-" + new_key("s")[-8:]

RULES = f"""\
version: "metrics-1"
fail_mode: open
counters:
  user_recharges_1h: {{ count: true, per: user_id, window: 1h }}
rules:
  - id: review-listed-seller
    when: seller_id == "{SELLER}"
    action: review
    reason: seller on the e2e review list
  - id: shadow-every-second-recharge
    when: user_recharges_1h >= 2
    action: block
    mode: shadow
    reason: watching repeat buyers
"""


def samples(text: str) -> dict[tuple[str, tuple], float]:
    """Every sample of a scrape, by (name, sorted labels)."""
    out = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def total(smp: dict, name: str, **labels) -> float:
    """The sum of `name` over the samples whose labels include `labels`."""
    return sum(v for (n, ls), v in smp.items()
               if n == name and all(dict(ls).get(k) == val for k, val in labels.items()))


class MetricsTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.st = Stack("metrics", metrics=True)
        cls.st.fraud_rules_text = RULES
        cls.st.log_level = "debug"
        cls.st.start()

    @classmethod
    def tearDownClass(cls):
        cls.st.stop()

    def scrape(self) -> dict:
        status, content_type, text = self.st.scrape()
        self.assertEqual(status, 200)
        self.assertTrue(content_type.startswith("text/plain; version=0.0.4"), content_type)
        self.last_text = text
        return samples(text)

    def test_counters_and_histograms_move_as_recharges_flow(self):
        before = self.scrape()
        stub = self.st.stub()
        user = new_user("metrics")
        numbers = ["4242424242424242", CARD_DECLINE]
        approved = stub.RecordRecharge(card_request(new_key("m"), user=user), timeout=RPC_TIMEOUT_S)
        self.assertEqual(approved.status, pb.RECHARGE_STATUS_APPROVED)
        declined = stub.RecordRecharge(card_request(new_key("m"), user=user, number=CARD_DECLINE),
                                       timeout=RPC_TIMEOUT_S)
        self.assertEqual(declined.status, pb.RECHARGE_STATUS_DECLINED)
        reviewed = stub.RecordRecharge(card_request(new_key("m"), seller_id=SELLER),
                                       timeout=RPC_TIMEOUT_S)
        self.assertEqual(reviewed.status, pb.RECHARGE_STATUS_PENDING_REVIEW)
        with self.assertRaises(grpc.RpcError) as cm:
            stub.RecordRecharge(card_request(new_key("m"), minor_units=1), timeout=RPC_TIMEOUT_S)
        self.assertEqual(cm.exception.code(), grpc.StatusCode.INVALID_ARGUMENT)
        stub.GetRecharge(pb.GetRechargeRequest(recharge_id=approved.recharge_id),
                         timeout=RPC_TIMEOUT_S)

        after = self.scrape()

        def moved(name, **labels):
            return total(after, name, **labels) - total(before, name, **labels)

        self.assertEqual(moved("recharge_rpc_requests_total", rpc="RecordRecharge", code="OK"), 3)
        self.assertEqual(moved("recharge_rpc_requests_total", rpc="RecordRecharge",
                               code="INVALID_ARGUMENT"), 1)
        self.assertEqual(moved("recharge_rpc_requests_total", rpc="GetRecharge", code="OK"), 1)
        self.assertEqual(moved("recharge_rpc_duration_seconds_count", rpc="RecordRecharge"), 4)
        self.assertGreater(moved("recharge_rpc_duration_seconds_sum", rpc="RecordRecharge"), 0)
        self.assertEqual(moved("recharge_recharges_total", status="APPROVED", method="card",
                               adapter="card-primary", region="US"), 1)
        self.assertEqual(moved("recharge_recharges_total", status="DECLINED", method="card"), 1)
        self.assertEqual(moved("recharge_recharges_total", status="PENDING_REVIEW", method="card"), 1)
        self.assertEqual(moved("recharge_fraud_round_trip_seconds_count"), 3)
        # The approval, the decline and the review's authorisation hold.
        self.assertEqual(moved("recharge_adapter_call_seconds_count", adapter="card-primary"), 3)
        self.assertEqual(moved("recharge_adapter_call_seconds_count", adapter="card-primary",
                               result="declined"), 1)
        self.assertGreaterEqual(moved("recharge_ledger_commit_seconds_count"), 3)
        self.assertEqual(moved("recharge_rule_evaluations_total", rule="review-listed-seller"), 3)
        self.assertEqual(moved("recharge_rule_hits_total", rule="review-listed-seller",
                               shadow="false"), 1)
        # The user's second recharge matched the shadow rule, labelled so.
        self.assertEqual(moved("recharge_rule_hits_total", rule="shadow-every-second-recharge",
                               shadow="true"), 1)
        self.assertEqual(total(after, "recharge_adapter_circuit_open", adapter="card-primary"), 0)
        self.assertEqual(total(after, "recharge_build_info"), 1)
        self.assertEqual(total(after, "recharge_fraud_degraded_total"), 0)
        # A histogram's buckets are cumulative and end with +Inf = count.
        self.assertEqual(total(after, "recharge_rpc_duration_seconds_bucket", rpc="RecordRecharge",
                               le="+Inf"),
                         total(after, "recharge_rpc_duration_seconds_count", rpc="RecordRecharge"))

        # No label value is a card number, a user id or a seller id.
        values = {v for (_, ls) in after for (k, v) in ls if k != "version"}  # version: a commit
        for secret in numbers + [user, SELLER, approved.recharge_id]:
            self.assertNotIn(secret, values)
            self.assertNotIn(secret, self.last_text)
        for v in values:
            self.assertIsNone(re.search(r"\d{12,19}", v), v)

    def test_log_lines_are_json_with_one_decision_line_per_recharge(self):
        stub = self.st.stub()
        made = {}
        numbers = ("4242424242424242", CARD_DECLINE, "4000000000009995")
        t0 = time.time()
        for number in numbers:
            req = card_request(new_key("log"), number=number, seller_id=SELLER)
            made[stub.RecordRecharge(req, timeout=RPC_TIMEOUT_S).recharge_id] = req
        # A replay is not a new decision: no second line.
        stub.RecordRecharge(req, timeout=RPC_TIMEOUT_S)
        lines = self.st.gateway.log().splitlines()
        self.assertGreater(len(lines), 10)
        decisions = {}
        for line in lines:
            try:
                obj = json.loads(line)
            except ValueError:
                self.fail(f"not a JSON line: {line!r}")
            self.assertIsInstance(obj, dict, line)
            self.assertIn(obj.get("level"), ("debug", "info", "warn", "error"), line)
            if obj.get("event") == "recharge" and obj.get("recharge_id") in made:
                decisions.setdefault(obj["recharge_id"], []).append(obj)
        self.assertEqual(sorted(decisions), sorted(made))
        for recharge_id, objs in decisions.items():
            self.assertEqual(len(objs), 1, objs)
            d, req = objs[0], made[recharge_id]
            self.assertEqual((d["user_id"], d["seller_id"], d["method"], d["region"]),
                             (req.user_id, SELLER, "card", "US"))
            self.assertEqual(d["fraud_decision"], "REVIEW")
            self.assertIn("review-listed-seller", d["rules_hit"])
            self.assertEqual(d["adapter"], "card-primary")
            self.assertGreaterEqual(float(d["ms"]), 0)
        # The card numbers sent, and any other Luhn-valid 13-19 digit run that
        # is not one of the system's random ids, a digest or a timestamp of
        # these days (the card-data scanner of test_card_data).
        scanner = Scanner(numbers, [], t0, time.time())
        hits = scanner.scan("gateway log", self.st.gateway.log().encode(), text=True)
        self.assertEqual([], [str(h) for h in hits])

    def test_dashboard_and_alerts_name_only_metrics_the_gateway_exports(self):
        """docs/dashboards: every recharge_* series an expression uses is one
        the gateway serves (a renamed metric would leave a panel or an alert
        silently empty)."""
        import yaml  # python3-yaml
        stub = self.st.stub()
        stub.RecordRecharge(card_request(new_key("dash")), timeout=RPC_TIMEOUT_S)
        served = {name for (name, _) in self.scrape()}
        # Families declared but without a sample yet (no webhook here).
        for name, kind in re.findall(r"^# TYPE (\S+) (\S+)$", self.last_text, re.M):
            served.add(name)
            if kind == "histogram":
                served.update({name + "_bucket", name + "_sum", name + "_count"})
        docs = REPO / "docs" / "dashboards"
        dashboard = json.loads((docs / "recharge-gateway.json").read_text())
        exprs = [t["expr"] for p in dashboard["panels"] for t in p["targets"]]
        alerts = yaml.safe_load((docs / "alerts.yaml").read_text())
        exprs += [r["expr"] for g in alerts["groups"] for r in g["rules"]]
        self.assertGreater(len(exprs), 10)
        used = {m for e in exprs for m in re.findall(r"\brecharge_[a-z0-9_]+", e)}
        self.assertFalse(used - served, f"not exported: {sorted(used - served)}")

    def test_only_get_metrics_is_served(self):
        status, _, _ = self.st.scrape("/other")
        self.assertEqual(status, 404)


if __name__ == "__main__":
    unittest.main()
