#!/usr/bin/python3
"""The fault suite (issue 13, acceptance 4; DESIGN §5): under a steady stream
of recharges from the load generator (tools/loadgen) over two gateway
replicas sharing a PostgreSQL ledger and a 3-master Redis Cluster (one
replica per master), parts of the system die:

  - replica B killed (kill -9) and started again, 10 times;
  - a Redis master stopped and started again (slot 0's); a Redis master
    paused (CLIENT PAUSE, slot 8192's); a Redis master failed over to its
    replica (slot 16383's: kill -9, the replica promoted by the cluster, the
    old master started again and back as a replica);
  - PostgreSQL restarted; PostgreSQL paused (SIGSTOP) past the call deadlines;
  - the PSP sandbox slower than the card timeout (the charge made, the
    answer lost), dropping connections, answering 500s.

Then the load stops, the reconcilers settle what is left, and a checker
reconciles the load generator's answers, the ledger, the sandbox journal and
the event feed, and prints: recharges sent, answers by status, ledger rows,
journal charges, doubles (a key charged twice), charged but not credited,
lost (an APPROVED answer missing from the ledger), left pending, events
missing from the feed, and per fault the time the service took to answer OK
again once the fault was over. doubles, lost, charged-not-credited, pending
and missing events must all be 0. For the Redis faults it also prints when
the fraud counters served again: replica A's degraded decisions (FraudAdmin
GetRuleStats, sampled every 100 ms all along) stop growing, and how many
there were; "n/a" when decisions were degraded before any Redis fault (the
counters unreachable all along). For the failover: the time from the kill to
the replica serving the slots with the cluster ok, and from the old master's
restart to it being in sync as a replica.

    /usr/bin/python3 -m unittest -v tests/faults/test_faults.py

Bounded: about 90 s here.
"""

from __future__ import annotations

import collections
import faulthandler
import json
import os
import signal
import subprocess
import sys
import threading
import time
import unittest
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "e2e"))

import grpc  # noqa: E402

from stack import REPO, Stack, charges_taken, pb, wait_until  # noqa: E402
from recharge.v1 import recharge_pb2_grpc as pb_grpc  # noqa: E402

LOADGEN_BIN = Path(os.environ.get("LOADGEN_BIN") or REPO / "build" / "tools" / "loadgen")
HOLD_S = 1.5          # how long each fault lasts
GAP_S = 2.0           # the load alone between two faults
LOAD_SLOTS = 8        # calls kept in flight by the load generator
STATUS_NAMES = {v: k.replace("RECHARGE_STATUS_", "") for k, v in pb.RechargeStatus.items()}
DEGRADED_SAMPLE_S = 0.1  # how often replica A's degraded decisions are read


def now_ms() -> int:
    return int(time.time() * 1000)


class FaultSuite(unittest.TestCase):
    def test_nothing_is_lost_or_doubled_while_parts_die(self):
        # Should anything hang, every thread's stack is printed before
        # ctest's 600 s timeout kills the run (which would print nothing).
        faulthandler.dump_traceback_later(540, exit=True)
        self.addCleanup(faulthandler.cancel_dump_traceback_later)
        if not LOADGEN_BIN.exists():
            self.fail(f"{LOADGEN_BIN} not built (target loadgen)")
        st = Stack("faults", ledger="postgres", redis="cluster", card_timeout="1s",
                   recovery_interval="500ms", settle_after="3s")
        st.fraud_rules_source = REPO / "configs" / "fraud_rules.yaml"
        st.start()
        self.addCleanup(st.stop)
        b = st.start_replica()
        answers_path = st.tmp / "answers.jsonl"
        faults: list[tuple[str, int, int, str]] = []  # name, start ms, end ms, replica ("" = any)
        redis_faults: set[str] = set()
        notes: dict[str, str] = {}

        # Replica A's degraded decisions (fraud counters unreachable), sampled
        # all along on a channel of its own: (wall ms, total).
        degraded: list[tuple[int, int]] = []
        sampling_done = threading.Event()
        admin_channel = st.new_channel()
        self.addCleanup(admin_channel.close)

        def sample_degraded():
            admin = pb_grpc.FraudAdminStub(admin_channel)
            while not sampling_done.is_set():
                try:
                    stats = admin.GetRuleStats(pb.GetRuleStatsRequest(), timeout=2)
                    degraded.append((now_ms(), stats.degraded_decisions))
                except grpc.RpcError:
                    pass
                sampling_done.wait(DEGRADED_SAMPLE_S)  # the sampling period

        sampler = threading.Thread(target=sample_degraded, daemon=True)
        sampler.start()
        self.addCleanup(sampling_done.set)

        def fault(name: str, start, stop, replica: str = "") -> None:
            print(f"  fault: {name}", file=sys.stderr, flush=True)
            t0 = now_ms()
            began = time.monotonic()
            start()
            # The fault lasts HOLD_S from its start under load (a stop that
            # takes a while, PostgreSQL's or a Redis master's, counts); not a
            # wait on a condition.
            time.sleep(max(0.0, HOLD_S - (time.monotonic() - began)))
            stop()
            faults.append((name, t0, now_ms(), replica))
            time.sleep(GAP_S)  # the load runs on between faults

        # The load: long enough for every fault; stopped below once they are done.
        load = subprocess.Popen(
            [str(LOADGEN_BIN), "--target", f"127.0.0.1:{st.gateway_port},127.0.0.1:{b.port}",
             "--concurrency", str(LOAD_SLOTS), "--channels", "2", "--warmup", "0",
             "--duration", "600", "--timeout", "4", "--error-pause-ms", "20",
             "--token", st.token, "--answers-out", str(answers_path)],
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        self.addCleanup(lambda: load.poll() is None and load.kill())
        time.sleep(1.0)  # some steady traffic before the first fault

        b_target = f"127.0.0.1:{b.port}"
        for i in range(10):
            fault(f"replica B kill -9 #{i + 1}", lambda: b.stop(signal.SIGKILL), b.start, b_target)
        redis_faults.update(("redis master stopped", "redis master CLIENT PAUSE",
                             "redis master failover"))
        fault("redis master stopped", lambda: st.stop_redis(slot=0), st.start_redis)
        fault("redis master CLIENT PAUSE",
              lambda: st.redis_command("CLIENT", "PAUSE", str(int(HOLD_S * 1000)),
                                       port=st.redis_master_for(slot=8192)),
              lambda: None)
        # kill -9 of a master: the fault lasts until the cluster has promoted
        # its replica; then the old master is started again and comes back as
        # a replica while the load runs on (that counts in the gap).
        failover = st.fail_over_redis_master(slot=16383)
        faults.append(("redis master failover", failover["killed_at"], failover["promoted_at"], ""))
        notes["redis master failover"] = (
            f"replica promoted {failover['promoted_s']} s after the kill, the old master"
            f" a replica in sync {failover['rejoined_s']} s after that")
        time.sleep(max(0.0, GAP_S - failover["rejoined_s"]))  # the load runs on between faults
        fault("postgres restarted", st.stop_postgres, st.start_postgres)
        fault("postgres SIGSTOP", lambda: st.signal_postgres(signal.SIGSTOP),
              lambda: st.signal_postgres(signal.SIGCONT))
        fault("sandbox slower than the card timeout", lambda: st.psp.config(latency_ms=1500),
              lambda: st.psp.config(latency_ms=0))
        fault("sandbox drops connections", lambda: st.psp.config(timeout_mode="drop", latency_ms=50),
              lambda: st.psp.config(timeout_mode="charge", latency_ms=0))
        fault("sandbox answers 500", lambda: st.psp.config(error_rate=1.0),
              lambda: st.psp.config(error_rate=0.0))
        time.sleep(1.0)
        sampling_done.set()
        sampler.join(timeout=10)

        # SIGTERM ends loadgen's run early; it still writes every answer.
        load.send_signal(signal.SIGTERM)
        out, _ = load.communicate(timeout=60)
        self.assertTrue(answers_path.exists(), out)
        answers = [json.loads(line) for line in answers_path.read_text().splitlines()]
        self.assertGreater(len(answers), 500, out)

        # The reconcilers settle what the faults left open.
        def settled():
            left = st.postgres_sql(
                "SELECT (SELECT count(*) FROM recharges WHERE status IN (6, 9))"
                " + (SELECT count(*) FROM idempotency_keys WHERE state = 'started')").strip()
            return left == "0" or None

        wait_until(settled, 60.0, "the reconcilers to settle every PENDING recharge and started key",
                   interval=0.5)
        report = self.check(st, answers)
        report["faults"] = self.recovery(answers, faults)
        for name, text in self.counters_back(degraded, faults, redis_faults).items():
            notes[name] = f"{text}; {notes[name]}" if name in notes else text
        report["notes"] = notes
        print(self.render(report), file=sys.stderr)
        self.assertEqual(report["doubles"], 0)
        self.assertEqual(report["lost"], 0)
        self.assertEqual(report["charged_not_credited"], 0)
        self.assertEqual(report["left_pending"], 0)
        self.assertEqual(report["events_missing"], 0)
        for name, back_s in report["faults"]:
            self.assertIsNotNone(back_s, f"no OK answer after '{name}'")

    # ------------------------------------------------------------- checker

    def check(self, st: Stack, answers: list[dict]) -> dict:
        keys = {a["key"] for a in answers}
        prefix = next(iter(keys)).rsplit("-", 1)[0]
        rows = {}
        for line in st.postgres_sql(
                f"SELECT idempotency_key, recharge_id, status FROM recharges"
                f" WHERE idempotency_key LIKE '{prefix}-%'").splitlines():
            key, rid, status = line.split("|")
            rows[key] = (rid, int(status))
        journal = charges_taken(st.journal())
        charges = collections.Counter(r["idempotency_key"] for r in journal
                                      if str(r.get("idempotency_key", "")).startswith(prefix + "-"))
        approved = pb.RECHARGE_STATUS_APPROVED
        answered_approved = {a["key"] for a in answers if a["code"] == 0 and a["status"] == approved}
        by_status = collections.Counter(
            STATUS_NAMES.get(a["status"], "?") if a["code"] == 0 else grpc.StatusCode(
                next(c for c in grpc.StatusCode if c.value[0] == a["code"])).name
            for a in answers)
        return {
            "sent": len(keys),
            "answers": dict(by_status),
            "ledger_rows": len(rows),
            "journal_charges": sum(charges.values()),
            "doubles": sum(1 for n in charges.values() if n > 1),
            # Money taken for a key whose recharge is not APPROVED in the ledger.
            "charged_not_credited": sum(1 for k in charges if rows.get(k, (None, -1))[1] != approved),
            "lost": sum(1 for k in answered_approved if rows.get(k, (None, -1))[1] != approved),
            "left_pending": sum(1 for _, s in rows.values()
                                if s in (pb.RECHARGE_STATUS_PENDING, pb.RECHARGE_STATUS_REQUIRES_ACTION)),
            "events_missing": self.events_missing(st, {rid for rid, _ in rows.values()}),
        }

    def events_missing(self, st: Stack, recharge_ids: set[str]) -> int:
        """Ledger recharges with no DECIDED event on the feed (read from the
        oldest retained event through replica A)."""
        seen: set[str] = set()
        call = st.stub().WatchRecharges(pb.WatchRechargesRequest(), timeout=30)
        try:
            for event in call:
                if event.type == pb.RECHARGE_EVENT_DECIDED:
                    seen.add(event.recharge.recharge_id)
                if recharge_ids <= seen:
                    break
        except grpc.RpcError as e:
            if e.code() != grpc.StatusCode.DEADLINE_EXCEEDED:
                raise
        finally:
            call.cancel()
        return len(recharge_ids - seen)

    @staticmethod
    def recovery(answers: list[dict], faults) -> list[tuple[str, float | None]]:
        """Per fault: seconds from its end to the first OK answer sent after
        it (to the replica it hit, if it hit one)."""
        out = []
        for name, _, end, target in faults:
            ok = [a["sent_at_ms"] for a in answers
                  if a["code"] == 0 and a["sent_at_ms"] >= end and (not target or a["target"] == target)]
            out.append((name, round((min(ok) - end) / 1000.0, 3) if ok else None))
        return out

    @staticmethod
    def counters_back(samples: list[tuple[int, int]], faults, redis_faults: set[str]) -> dict:
        """Per Redis fault: seconds from its end to the last sample (of
        replica A's degraded decisions) that grew, from the fault's start to
        the next fault's (0 if they stopped growing before it ended), and
        how many grew; "n/a" for all if they grew before the first Redis
        fault (counters unreachable whatever the faults)."""
        grew = [(t, n - prev) for (t, n), (_, prev) in zip(samples[1:], samples) if n > prev]
        first = min((start for name, start, _, _ in faults if name in redis_faults), default=None)
        if first is None:
            return {}
        if any(t < first for t, _ in grew):
            return {name: "counters: n/a (decisions degraded before any Redis fault)"
                    for name in redis_faults}
        out = {}
        ordered = sorted(faults, key=lambda f: f[1])
        for i, (name, start, end, _) in enumerate(ordered):
            if name not in redis_faults:
                continue
            until = ordered[i + 1][1] if i + 1 < len(ordered) else float("inf")
            inside = [(t, d) for t, d in grew if start <= t < until]
            back = max(0.0, (max(t for t, _ in inside) - end) / 1000.0) if inside else 0.0
            out[name] = (f"counters back {back:.1f} s after it ended"
                         f" ({sum(d for _, d in inside)} decisions degraded on A)")
        return out

    @staticmethod
    def render(r: dict) -> str:
        lines = ["", "fault suite:",
                 f"  recharges sent        {r['sent']}",
                 f"  answers               {r['answers']}",
                 f"  ledger rows           {r['ledger_rows']}",
                 f"  journal charges       {r['journal_charges']}",
                 f"  doubles               {r['doubles']}",
                 f"  charged, not credited {r['charged_not_credited']}",
                 f"  lost                  {r['lost']}",
                 f"  left pending          {r['left_pending']}",
                 f"  events missing        {r['events_missing']}",
                 "  serving again after the fault ended (s):"]
        for name, back in r["faults"]:
            note = r.get("notes", {}).get(name)
            lines.append(f"    {name:40s} {back if back is not None else 'never'}" +
                         (f"\n      {note}" if note else ""))
        return "\n".join(lines)


if __name__ == "__main__":
    unittest.main()
