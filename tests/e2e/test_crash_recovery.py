#!/usr/bin/python3
"""Crash recovery (DESIGN.md section 5): the gateway is killed with SIGKILL
while recharges are in flight, restarted on the same ledger, and must end up
agreeing exactly with what the provider (the sandbox journal) holds: no
charge lost, none doubled, none credited without a charge.

    /usr/bin/python3 -m unittest -v tests/e2e/test_crash_recovery.py
"""

from __future__ import annotations

import collections
import os
import sys
import threading
import time
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import grpc  # noqa: E402

from stack import (CARD_APPROVE, CARD_DECLINE, Stack, card_request, new_key, new_user,  # noqa: E402
                   pb, status_name, wait_until)

APPROVED = pb.RECHARGE_STATUS_APPROVED
DECLINED = pb.RECHARGE_STATUS_DECLINED
PENDING = pb.RECHARGE_STATUS_PENDING
CLIENTS = 8
APPROVALS_BEFORE_KILL = 16
MIN_IN_FLIGHT_AT_KILL = 4


class CrashRecoveryTest(unittest.TestCase):
    stack: Stack

    @classmethod
    def setUpClass(cls):
        cls.stack = Stack("crash-recovery", card_timeout="1s", recovery_interval="200ms",
                          settle_after="2s").start()

    @classmethod
    def tearDownClass(cls):
        cls.stack.stop()

    def ledger_keys(self) -> dict[str, tuple[str, str]]:
        """idempotency key -> (state, recharge_id)"""
        return {k: (state, rid) for k, state, rid in self.stack.ledger_rows(
            "SELECT key, state, recharge_id FROM idempotency_keys")}

    def ledger_recharges(self) -> dict[str, tuple[str, int]]:
        """idempotency key -> (recharge_id, status)"""
        rows = self.stack.ledger_rows("SELECT idempotency_key, recharge_id, status FROM recharges")
        keys = [r[0] for r in rows]
        self.assertEqual(len(keys), len(set(keys)), "two recharges under one idempotency key")
        return {k: (rid, status) for k, rid, status in rows}

    def test_kill_9_mid_stream_then_restart_agrees_with_the_provider(self):
        stack = self.stack
        stack.sandbox_config(latency_ms=100)

        lock = threading.Lock()
        attempted: dict[str, pb.RecordRechargeRequest] = {}
        outcomes: dict[str, tuple] = {}   # key -> ("ok", response) | ("error", code, details)
        in_flight = [0]
        approved = [0]
        stop = threading.Event()

        def client(i):
            channel = stack.new_channel()
            stub = stack.stub(channel)
            user = new_user(f"crash{i}")
            n = 0
            try:
                while not stop.is_set():
                    n += 1
                    # Every third call (the second, the fifth...) is declined.
                    number = CARD_DECLINE if n % 3 == 2 else CARD_APPROVE
                    req = card_request(new_key(f"crash{i}"), user, number=number)
                    with lock:
                        attempted[req.idempotency_key] = req
                        in_flight[0] += 1
                    try:
                        outcome = ("ok", stub.RecordRecharge(req, timeout=10))
                    except grpc.RpcError as e:
                        outcome = ("error", e.code(), e.details())
                    with lock:
                        outcomes[req.idempotency_key] = outcome
                        in_flight[0] -= 1
                        if outcome[0] == "ok" and outcome[1].status == APPROVED:
                            approved[0] += 1
                    if outcome[0] == "error":
                        return  # the gateway is gone
            finally:
                channel.close()

        threads = [threading.Thread(target=client, args=(i,)) for i in range(CLIENTS)]
        for t in threads:
            t.start()
        try:
            def ready_to_kill():
                with lock:
                    return (approved[0] >= APPROVALS_BEFORE_KILL
                            and in_flight[0] >= MIN_IN_FLIGHT_AT_KILL)
            wait_until(ready_to_kill, 30, f"{APPROVALS_BEFORE_KILL} approvals with "
                       f"{MIN_IN_FLIGHT_AT_KILL} calls in flight", interval=0.005)
            rc = stack.kill_gateway()
            self.assertEqual(rc, -9)
        finally:
            stop.set()
            for t in threads:
                t.join(timeout=30)
        self.assertFalse(any(t.is_alive() for t in threads), "a client call hung")

        answered = {k: o[1] for k, o in outcomes.items() if o[0] == "ok"}
        unanswered = {k: o for k, o in outcomes.items() if o[0] == "error"}
        self.assertEqual(set(attempted), set(answered) | set(unanswered))
        self.assertGreaterEqual(len([r for r in answered.values() if r.status == APPROVED]),
                                APPROVALS_BEFORE_KILL)
        self.assertGreaterEqual(len(unanswered), 1, "no call was in flight at the kill")
        for key, (_, code, details) in unanswered.items():
            self.assertEqual(code, grpc.StatusCode.UNAVAILABLE, f"{key}: {details}")

        # Restart on the same ledger; recovery resolves the keys left `started`.
        stack.start_gateway()
        stub = stack.stub()

        def settled():
            started = stack.ledger_rows(
                "SELECT count(*) FROM idempotency_keys WHERE state = 'started'")[0][0]
            pending = stack.ledger_rows(
                "SELECT count(*) FROM recharges WHERE status = ?", (PENDING,))[0][0]
            return started == 0 and pending == 0
        wait_until(settled, 30, "recovery to resolve every started key and pending recharge",
                   interval=0.1)

        keys = self.ledger_keys()
        recharges = self.ledger_recharges()
        journal = stack.journal()

        # Each key was charged at most once, and only keys the gateway claimed.
        per_key = collections.Counter(r["idempotency_key"] for r in journal)
        self.assertEqual([k for k, n in per_key.items() if n > 1], [], "a key charged twice")
        self.assertTrue(set(per_key) <= set(keys), "a charge under a key the ledger never claimed")
        self.assertTrue(set(per_key) <= set(attempted))

        # Every claimed key is completed, with its recharge recorded.
        for key, (state, rid) in keys.items():
            self.assertEqual(state, "completed", key)
            self.assertIn(key, recharges, f"{key}: completed without a recharge")
            self.assertEqual(recharges[key][0], rid, key)

        # What the client saw is what the ledger holds.
        for key, resp in answered.items():
            self.assertIn(key, recharges, f"{key}: answered {status_name(resp.status)} "
                                          "but not in the ledger")
            self.assertEqual(recharges[key], (resp.recharge_id, resp.status), key)

        # The ledger agrees exactly with the provider.
        ledger_approved = {k for k, (_, s) in recharges.items() if s == APPROVED}
        journal_succeeded = {r["idempotency_key"] for r in journal if r["status"] == "succeeded"}
        self.assertEqual(ledger_approved, journal_succeeded)
        ledger_declined = {k for k, (_, s) in recharges.items() if s == DECLINED}
        journal_failed = {r["idempotency_key"] for r in journal if r["status"] == "failed"}
        self.assertEqual(ledger_declined, journal_failed)
        for key in ledger_approved | ledger_declined:
            rec = stub.GetRecharge(pb.GetRechargeRequest(recharge_id=recharges[key][0]),
                                   timeout=10)
            charge = [r for r in journal if r["idempotency_key"] == key][0]
            self.assertEqual(rec.payment.provider_reference, charge["id"], key)
        # A key with no charge at the provider was not credited.
        for key, (rid, status) in recharges.items():
            if key not in per_key:
                self.assertNotIn(status, (APPROVED, DECLINED), key)

        # The crash left work for recovery: a claimed key the client never heard about.
        recovered = [k for k in unanswered if k in keys]
        self.assertGreaterEqual(len(recovered), 1,
                                f"no in-flight call had claimed its key ({len(unanswered)} "
                                "unanswered); the kill did not exercise recovery")

        # Retrying an unanswered key returns the ledger's outcome and charges nothing.
        journal_lines = len(journal)
        for key in recovered:
            resp = stub.RecordRecharge(attempted[key], timeout=10)
            self.assertTrue(resp.replayed, key)
            self.assertEqual((resp.recharge_id, resp.status), recharges[key], key)
            if resp.status == APPROVED:
                self.assertEqual(resp.coins_credited, 65)
        self.assertEqual(len(stack.journal()), journal_lines, "a retry charged again")
        # A few answered keys replay the same way.
        for key in list(answered)[:5]:
            resp = stub.RecordRecharge(attempted[key], timeout=10)
            self.assertEqual((resp.replayed, resp.recharge_id, resp.status),
                             (True, answered[key].recharge_id, answered[key].status))
        self.assertEqual(len(stack.journal()), journal_lines, "a replay charged again")

        # A key the gateway never claimed was never charged; its retry is a first call.
        for key in [k for k in unanswered if k not in keys]:
            self.assertEqual(stack.journal_for(key), [])
            resp = stub.RecordRecharge(attempted[key], timeout=10)
            self.assertFalse(resp.replayed)
            self.assertEqual(len(stack.journal_for(key)), 1)

        # The restarted gateway still serves new recharges.
        fresh = stub.RecordRecharge(card_request(), timeout=10)
        self.assertEqual(fresh.status, APPROVED)
        statuses = collections.Counter(status_name(recharges[k][1]) for k in recovered)
        sys.stderr.write(f"\n[crash] attempted={len(attempted)} answered={len(answered)} "
                         f"unanswered={len(unanswered)} recovered={len(recovered)} "
                         f"recovered_statuses={dict(statuses)}\n")

    def test_provider_timeout_is_pending_then_reconciled(self):
        """The card instance times out after 1 s; a provider taking 1.5 s
        leaves the outcome unknown: the recharge must be PENDING (never
        FAILED: the provider does take the charge), then reconciled through
        Lookup to APPROVED, and the key then replays APPROVED. Once on a new
        connection (empty pool), once on a reused keep-alive connection."""
        stack = self.stack
        for pool in ("cold", "warm"):
            with self.subTest(pool=pool):
                stack.sandbox_config(latency_ms=0)
                stack.restart_gateway()  # empty connection pool
                stub = stack.stub()
                if pool == "warm":
                    warm = stub.RecordRecharge(card_request(), timeout=10)
                    self.assertEqual(warm.status, APPROVED)
                stack.sandbox_config(latency_ms=1500)
                try:
                    req = card_request(new_key(f"pending-{pool}"))
                    first = stub.RecordRecharge(req, timeout=10)
                    # The provider finishes the charge after the adapter gave up.
                    journal = wait_until(lambda: stack.journal_for(req.idempotency_key), 10,
                                         "the provider to take the charge")
                finally:
                    stack.sandbox_config(latency_ms=0)
                self.assertEqual([r["status"] for r in journal], ["succeeded"])
                self.assertNotEqual(
                    status_name(first.status), "RECHARGE_STATUS_FAILED",
                    f"the provider holds charge {journal[0]['id']} but the gateway recorded "
                    f"FAILED ({first.payment.message!r}): charged, never credited")
                self.assertEqual(first.status, PENDING, first)
                self.assertEqual(first.coins_credited, 0)

                def resolved():
                    rows = stack.ledger_rows("SELECT status FROM recharges WHERE recharge_id = ?",
                                             (first.recharge_id,))
                    return rows and rows[0][0] != PENDING
                wait_until(resolved, 20, "the PENDING recharge to be reconciled", interval=0.1)

                rec = stub.GetRecharge(pb.GetRechargeRequest(recharge_id=first.recharge_id),
                                       timeout=10)
                self.assertEqual(rec.status, APPROVED)
                self.assertEqual(rec.payment.provider_reference, journal[0]["id"])
                again = stub.RecordRecharge(req, timeout=10)
                self.assertEqual(
                    (again.replayed, again.recharge_id, again.status, again.coins_credited),
                    (True, first.recharge_id, APPROVED, 65))
                self.assertEqual(len(stack.journal_for(req.idempotency_key)), 1)

    def test_list_recharges_stays_newest_first_after_recovery(self):
        """A recharge cut off by a crash is recorded by recovery after the
        restart. ListRecharges promises newest first: a recharge the user
        made after it must still be listed before it."""
        stack = self.stack
        user = new_user("order")
        stack.sandbox_config(latency_ms=1000)
        try:
            older = card_request(new_key("older"), user)
            channel = stack.new_channel()
            call = stack.stub(channel).RecordRecharge.future(older, timeout=10)
            wait_until(lambda: stack.ledger_rows(
                "SELECT 1 FROM idempotency_keys WHERE key = ?", (older.idempotency_key,)),
                10, "the first recharge to claim its key", interval=0.005)
            claimed_at = time.time()
            stack.kill_gateway()
            with self.assertRaises(grpc.RpcError):
                call.result(timeout=10)
            channel.close()
        finally:
            stack.sandbox_config(latency_ms=0)
        stack.start_gateway()
        # created_at has whole seconds (see test_recharge_api's precision
        # test) from a coarse clock: start the second recharge well inside
        # the next second (recovery waits settle_after = 2 s before it
        # records the first one).
        wait_until(lambda: time.time() >= int(claimed_at) + 1.05, 2, "the next second")
        newer = card_request(new_key("newer"), user)
        self.assertEqual(stack.stub().RecordRecharge(newer, timeout=10).status, APPROVED)
        self.assertEqual(stack.ledger_rows("SELECT state FROM idempotency_keys WHERE key = ?",
                                           (older.idempotency_key,)), [("started",)],
                         "recovery ran before the newer recharge: the scenario did not happen")
        wait_until(lambda: stack.ledger_rows(
            "SELECT state FROM idempotency_keys WHERE key = ?",
            (older.idempotency_key,)) == [("completed",)], 20, "recovery of the first recharge",
            interval=0.1)

        listed = stack.stub().ListRecharges(pb.ListRechargesRequest(user_id=user),
                                            timeout=10).recharges
        by_key = {r.idempotency_key: r for r in listed}
        self.assertEqual(set(by_key), {older.idempotency_key, newer.idempotency_key})
        # Whether the provider got the cut-off charge depends on where the
        # kill landed; the ledger must agree with it either way.
        charged = [r["status"] for r in stack.journal_for(older.idempotency_key)]
        self.assertEqual(status_name(by_key[older.idempotency_key].status),
                         "RECHARGE_STATUS_APPROVED" if charged == ["succeeded"]
                         else "RECHARGE_STATUS_FAILED")
        self.assertLess(by_key[older.idempotency_key].created_at.ToNanoseconds(),
                        by_key[newer.idempotency_key].created_at.ToNanoseconds())
        self.assertEqual(
            [r.idempotency_key for r in listed], [newer.idempotency_key, older.idempotency_key],
            "not newest first: " + ", ".join(
                f"{r.idempotency_key} created {r.created_at.ToJsonString()}" for r in listed))


if __name__ == "__main__":
    unittest.main()
