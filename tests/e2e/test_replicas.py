#!/usr/bin/python3
"""Two gateway replicas on one PostgreSQL ledger and one 3-master Redis
Cluster (issue 13, acceptance 2; DESIGN §5):

  - one idempotency key sent 50 times at once, spread over both replicas:
    one charge at the sandbox, one ledger row, every answer the same
    recharge (or ABORTED "in flight", retried until it is);
  - a seller flagged through replica A is seen by replica B;
  - a rule reload through A takes effect on B (RulesSync);
  - a watcher on B sees the events committed through A.

    /usr/bin/python3 -m unittest -v tests/e2e/test_replicas.py

The stack (tests/e2e/stack.py, ledger="postgres", redis="cluster") starts
its own PostgreSQL cluster (scripts/dev-postgres.sh), Redis Cluster (six
nodes, scripts/dev-redis-cluster.sh), sandbox and both gateways on free
loopback ports. Every wait is a bounded poll.
"""

from __future__ import annotations

import concurrent.futures
import os
import sys
import threading
import time
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import grpc  # noqa: E402

from stack import (Stack, card_request, charges_taken, new_key, new_user, pb,  # noqa: E402
                   wait_until)
from recharge.v1 import recharge_pb2_grpc as pb_grpc  # noqa: E402

RPC_TIMEOUT_S = 20
FLAG_SELLER = "seller_replica_flag"


def rules(version: str, extra: str = "") -> str:
    return f"""\
version: "{version}"
fail_mode: open
counters:
  user_recharges_1h: {{ count: true, per: user_id, window: 1h }}
rules:
  - id: flag-listed-seller
    when: seller_id == "{FLAG_SELLER}"
    action: flag_seller
    flag_ttl: 1h
    reason: seller on the e2e flag list
{extra}"""


class ReplicasTest(unittest.TestCase):
    st: Stack

    @classmethod
    def setUpClass(cls):
        cls.st = Stack("replicas", ledger="postgres", redis="cluster")
        cls.st.fraud_rules_text = rules("replicas-1")
        cls.st.start()
        try:
            cls.b = cls.st.start_replica()
        except BaseException:
            cls.st.stop()
            raise
        cls.a_stub = cls.st.stub()
        cls.b_stub = cls.b.stub()

    @classmethod
    def tearDownClass(cls):
        cls.st.stop()

    def test_one_key_sent_to_both_replicas_at_once_is_charged_once(self):
        req = card_request(new_key("both"))
        stubs = [self.a_stub, self.b_stub]
        start = threading.Barrier(50)

        def call(i: int):
            start.wait()
            # ABORTED: the key is in flight on the other call; a client retries.
            for _ in range(200):
                try:
                    return ("OK", stubs[i % 2].RecordRecharge(req, timeout=RPC_TIMEOUT_S))
                except grpc.RpcError as e:
                    if e.code() != grpc.StatusCode.ABORTED:
                        return (e.code().name, None)
                    time.sleep(0.05)  # a client's retry pause, not a wait on a condition
            return ("ABORTED", None)

        with concurrent.futures.ThreadPoolExecutor(max_workers=50) as pool:
            results = list(pool.map(call, range(50)))
        codes = {code for code, _ in results}
        self.assertEqual(codes, {"OK"}, results)
        answers = [a for _, a in results]
        self.assertEqual({a.recharge_id for a in answers}, {answers[0].recharge_id})
        self.assertEqual({a.status for a in answers}, {pb.RECHARGE_STATUS_APPROVED})
        self.assertEqual(sum(1 for a in answers if not a.replayed), 1,
                         "exactly one call made the recharge; the rest are replays")
        self.assertEqual(len([r for r in charges_taken(self.st.journal())
                              if r.get("idempotency_key") == req.idempotency_key]), 1)
        rows = self.st.postgres_sql(
            f"SELECT count(*) FROM recharges WHERE idempotency_key = '{req.idempotency_key}'")
        self.assertEqual(rows.strip(), "1")
        # Both replicas answer it from the one ledger.
        for stub in stubs:
            got = stub.GetRecharge(pb.GetRechargeRequest(recharge_id=answers[0].recharge_id),
                                   timeout=RPC_TIMEOUT_S)
            self.assertEqual(got.status, pb.RECHARGE_STATUS_APPROVED)

    def test_a_seller_flagged_through_a_is_seen_by_b(self):
        answer = self.a_stub.RecordRecharge(card_request(new_key("flag"), seller_id=FLAG_SELLER),
                                            timeout=RPC_TIMEOUT_S)
        self.assertEqual(answer.status, pb.RECHARGE_STATUS_PENDING_REVIEW)
        flagged = self.b.admin().ListFlaggedSellers(pb.ListFlaggedSellersRequest(),
                                                   timeout=RPC_TIMEOUT_S)
        self.assertIn(FLAG_SELLER, [f.seller_id for f in flagged.sellers])
        risk = self.b.admin().GetSellerRisk(pb.GetSellerRiskRequest(seller_id=FLAG_SELLER),
                                           timeout=RPC_TIMEOUT_S)
        self.assertTrue(risk.flagged)
        self.assertEqual(risk.flag.rule_id, "flag-listed-seller")

    def test_a_rule_reload_through_a_takes_effect_on_b(self):
        blocked_user = new_user("blocked")
        self.st.write_fraud_rules(rules("replicas-2", f"""\
  - id: block-one-user
    when: user_id == "{blocked_user}"
    action: block
    reason: blocked by the reload
"""))
        a_admin = pb_grpc.FraudAdminStub(self.st.channel())
        reloaded = a_admin.ReloadRules(pb.ReloadRulesRequest(), timeout=RPC_TIMEOUT_S)
        self.assertEqual(reloaded.rules_version, "replicas-2")

        def b_version():
            stats = self.b.admin().GetRuleStats(pb.GetRuleStatsRequest(), timeout=RPC_TIMEOUT_S)
            return stats.rules_version == "replicas-2" or None

        wait_until(b_version, 15.0, "replica B to load rules replicas-2")
        answer = self.b_stub.RecordRecharge(card_request(new_key("reload"), user=blocked_user),
                                            timeout=RPC_TIMEOUT_S)
        self.assertEqual(answer.status, pb.RECHARGE_STATUS_BLOCKED)
        self.assertIn("replica-sync", self.b.log())

    def test_a_watcher_on_b_sees_events_committed_through_a(self):
        call = self.b_stub.WatchRecharges(pb.WatchRechargesRequest(from_now=True), timeout=30)
        seen: list = []
        done = threading.Event()

        def read():
            try:
                for event in call:
                    seen.append(event)
                    if done.is_set():
                        return
            except grpc.RpcError:
                pass

        reader = threading.Thread(target=read, daemon=True)
        reader.start()
        # The stream is open once B answers its first message; commit through
        # A until B's watcher has seen one of ours (from_now may start after
        # the first).
        made = set()
        try:
            def seen_ours():
                answer = self.a_stub.RecordRecharge(card_request(new_key("watch")),
                                                    timeout=RPC_TIMEOUT_S)
                made.add(answer.recharge_id)
                return any(e.recharge.recharge_id in made for e in seen) or None

            wait_until(seen_ours, 20.0, "B's watcher to see a recharge committed through A",
                       interval=0.2)
        finally:
            done.set()
            call.cancel()
        ours = [e for e in seen if e.recharge.recharge_id in made]
        self.assertEqual(ours[0].type, pb.RECHARGE_EVENT_DECIDED)
        self.assertEqual(ours[0].coins_delta, ours[0].recharge.coins)


if __name__ == "__main__":
    unittest.main()
