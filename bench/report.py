#!/usr/bin/python3
"""Prints the table of one bench/run.sh run, checks the targets of
bench/README.md and the books, and writes everything to OUT.json.

    report.py OUT JOURNAL APPROVED_IN_LEDGER PENDING_IN_LEDGER "PHASES" INFLIGHT_LATENCY_MS

OUT is the results prefix: OUT.<phase>.{json,cpu,mem} from bench/run.sh,
OUT.rules.json (Google Benchmark) and OUT.ledger.json (ledger_bench).
Exit status 0 when the books balance, 3 when they do not.
"""

import json
import os
import sys

out, journal_path, approved_ledger, pending_ledger, phases, inflight_latency_ms = sys.argv[1:7]
phases = phases.split()
inflight_latency_s = float(inflight_latency_ms) / 1000.0

LABELS = {
    "echo": "bare gRPC echo",
    "echo_redis": "echo + one EVALSHA",
    "recharge": "RecordRecharge",
    "replay": "RecordRecharge, replay",
    "inflight": "RecordRecharge, in flight",
}


def load_phase(phase):
    run = json.load(open(f"{out}.{phase}.json"))
    fields = dict(kv.split("=") for kv in open(f"{out}.{phase}.cpu").read().split())
    wall = float(fields.pop("wall"))
    redis_commands = int(fields.pop("redis_commands"))
    redis_evalsha = int(fields.pop("redis_evalsha"))
    cores = {k: float(v) / wall for k, v in fields.items()}
    mem = [tuple(int(x) for x in line.split()) for line in open(f"{out}.{phase}.mem")
           if len(line.split()) == 2]
    calls = run["measured"]["calls"]
    server_and_redis = cores.get("server", 0.0) + cores.get("redis", 0.0)
    return {
        "label": LABELS[phase],
        "concurrency": run["concurrency"],
        "calls_per_s": run["throughput"],
        "good_per_s": run["good_throughput"],
        "latency_ms": run["latency_ms"],
        "errors": run["measured"]["errors"],
        "not_good": calls - run["measured"]["good"],
        "grpc_status": run["measured"]["grpc_status"],
        "recharge_status": run["measured"].get("recharge_status", {}),
        "fraud_degraded": run["measured"].get("degraded", 0),
        "cpu_cores": cores,
        "loadgen_cpu_cores": run["loadgen_cpu_cores"],
        # CPU of the server and Redis per completed call, in microseconds.
        "cpu_us_per_call": (server_and_redis * wall / calls * 1e6) if calls else None,
        # Per call completed in the sampled window (wall seconds of it).
        "redis_commands_per_call": (redis_commands / (calls / run["duration_s"] * wall))
                                   if calls else None,
        "redis_evalsha_per_call": (redis_evalsha / (calls / run["duration_s"] * wall))
                                  if calls else None,
        "gateway_rss_peak_mib": max((m[0] for m in mem), default=0) / 1024.0,
        "gateway_threads_peak": max((m[1] for m in mem), default=0),
        "total": run["total"],
        "primed_approved": run.get("primed_approved", 0),
    }


rows = {p: load_phase(p) for p in phases}
model = next((l.split(":", 1)[1].strip() for l in open("/proc/cpuinfo")
              if l.startswith("model name")), "?")
print(f"machine: {os.cpu_count()} CPUs, {model}; load average before the run: "
      f"{os.environ.get('BENCH_LOAD_BEFORE', '?')}")
first = json.load(open(f"{out}.{phases[0]}.json"))
print(f"settings: warm-up {first['warmup_s']:g} s, measured {first['duration_s']:g} s per phase, "
      f"plaintext gRPC on 127.0.0.1; mix {first['mix']}")
print()
print(f"{'':28}{'in flight':>10}{'good/s':>9}{'p50 ms':>9}{'p99 ms':>9}{'max ms':>9}"
      f"{'not ok':>8}{'µs/call*':>10}{'RSS MiB':>9}{'threads':>8}")
for p, r in rows.items():
    lat = r["latency_ms"]
    gw = p in ("recharge", "replay", "inflight")
    cpu = f"{r['cpu_us_per_call']:>10.0f}" if r["cpu_us_per_call"] else f"{'-':>10}"
    rss = f"{r['gateway_rss_peak_mib']:>9.0f}" if gw else f"{'-':>9}"
    thr = f"{r['gateway_threads_peak']:>8}" if gw else f"{'-':>8}"
    print(f"{r['label']:28}{r['concurrency']:>10}{r['good_per_s']:>9.0f}{lat['p50']:>9.2f}"
          f"{lat['p99']:>9.2f}{lat['max']:>9.1f}{r['not_good']:>8}{cpu}{rss}{thr}")
print("not ok: a non-OK gRPC status, or a recharge not APPROVED, unverified, degraded or not (a) replay as expected")
print("* CPU of the server and Redis per completed call (gateway rows: gateway + Redis; "
      "the sandbox and loadgen not included)")
print()
print("CPU used while measured (cores; 1.00 = one core busy):")
print(f"{'':28}{'loadgen':>9}{'server':>9}{'sandbox':>9}{'redis':>9}{'others':>9}{'machine':>9}")
for p, r in rows.items():
    c = r["cpu_cores"]
    ours = r["loadgen_cpu_cores"] + sum(v for k, v in c.items() if k != "machine")
    others = max(0.0, c["machine"] - ours)
    cell = lambda k: f"{c[k]:>9.2f}" if k in c else f"{'-':>9}"
    print(f"{r['label']:28}{r['loadgen_cpu_cores']:>9.2f}{cell('server')}{cell('sandbox')}"
          f"{cell('redis')}{others:>9.2f}{c['machine']:>9.2f}")
for p in ("recharge", "inflight"):
    if p in rows:
        print(f"  {rows[p]['label']}: gRPC {rows[p]['grpc_status']}, recharge {rows[p]['recharge_status']}, "
              f"fraud decisions degraded (counters too slow; fail mode applied, not good) "
              f"{rows[p]['fraud_degraded']}")
print()

# Micro-benchmarks.
micro = {}
try:
    rb = json.load(open(f"{out}.rules.json"))
    for b in rb["benchmarks"]:
        if b.get("aggregate_name") == "median":
            micro[b["run_name"]] = b["cpu_time"]  # ns
except (OSError, ValueError, KeyError):
    pass
try:
    micro["ledger"] = json.load(open(f"{out}.ledger.json"))
except (OSError, ValueError):
    micro["ledger"] = None

# Targets (bench/README.md).
targets = []


def target(name, ok, text):
    targets.append({"target": name, "met": bool(ok) if ok is not None else None, "detail": text})


def have(*ps):
    return all(p in rows for p in ps)


if have("recharge", "echo_redis"):
    r, e = rows["recharge"], rows["echo_redis"]
    ratio = r["good_per_s"] / e["good_per_s"] if e["good_per_s"] else 0
    target("1a full path >= 0.35 x echo+EVALSHA", ratio >= 0.35,
           f"{r['good_per_s']:.0f}/s = {ratio:.2f} x {e['good_per_s']:.0f}/s")
    cr = (r["cpu_us_per_call"] or 0) / (e["cpu_us_per_call"] or 1)
    target("1b CPU per call <= 3 x echo+EVALSHA", cr <= 3,
           f"{r['cpu_us_per_call'] or 0:.0f} µs = {cr:.1f} x {e['cpu_us_per_call'] or 0:.0f} µs")
    target("1c p99 <= 25 ms", r["latency_ms"]["p99"] <= 25, f"p99 {r['latency_ms']['p99']:.1f} ms")
if have("replay", "echo"):
    r, e = rows["replay"], rows["echo"]
    ratio = r["good_per_s"] / e["good_per_s"] if e["good_per_s"] else 0
    target("2 replay >= 0.6 x bare echo", ratio >= 0.6,
           f"{r['good_per_s']:.0f}/s = {ratio:.2f} x {e['good_per_s']:.0f}/s")
if have("inflight"):
    r = rows["inflight"]
    cap = r["concurrency"] / inflight_latency_s if inflight_latency_s > 0 else float("inf")
    if "recharge" in rows:
        cap = min(cap, rows["recharge"]["good_per_s"])
    target("3a in flight >= 0.9 x min(N / latency, target 1)", r["good_per_s"] >= 0.9 * cap,
           f"{r['good_per_s']:.0f}/s vs 0.9 x {cap:.0f}/s")
    target("3b no errors", r["not_good"] == 0, f"{r['not_good']} calls not good, gRPC {r['grpc_status']}")
    target("3c p99 <= 1 s", r["latency_ms"]["p99"] <= 1000, f"p99 {r['latency_ms']['p99']:.0f} ms")
    target("3d gateway RSS <= 512 MiB", r["gateway_rss_peak_mib"] <= 512,
           f"peak {r['gateway_rss_peak_mib']:.0f} MiB, {r['gateway_threads_peak']} threads")
if have("recharge"):
    r = rows["recharge"]
    ev, rc = r["redis_evalsha_per_call"], r["redis_commands_per_call"]
    # At most one: a command whose deadline passed before it could be sent is
    # dropped by the client (that decision is degraded, with no round trip).
    target("4a one Redis round trip per decision", ev is not None and ev <= 1.05,
           f"{ev:.2f} EVALSHA per RecordRecharge ({rc:.1f} Redis commands counting those the "
           "script runs)" if ev is not None else "?")
rules_ns = micro.get("BM_EvaluateDefaultRules_Ordinary")
if rules_ns is not None:
    target("4b default rules <= 2 µs", rules_ns <= 2000, f"{rules_ns:.0f} ns per evaluation")
ledger = micro.get("ledger")
if ledger:
    rate = ledger.get("recharges_per_s", 0)
    target("5 SQLite ledger >= 15,000 durable recharges/s", rate >= 15000,
           f"{rate:.0f}/s ({ledger.get('commits_per_s', 0):.0f} commits/s)")

print("targets:")
for t in targets:
    mark = "met   " if t["met"] else "MISSED"
    print(f"  {mark} {t['target']}: {t['detail']}")
print()

# The books: every approved recharge loadgen saw (new, not replayed) is one
# succeeded charge in the sandbox journal and one approved row in the ledger.
# Charge lines only: capture / void / refund lines carry "op" (sandbox/README.md),
# and a card authorisation hold (captured false) took money only once captured.
lines = [json.loads(l) for l in open(journal_path) if l.strip()]
# So did an e-wallet redirect payment (PENDING_APPROVAL) only once approved.
completed_later = {j.get("id") for j in lines if j.get("op") == "capture" or
                   (j.get("op") == "approve" and j.get("status") == "SUCCESS")}
journal = [j for j in lines if "op" not in j
           and ((j.get("captured") is not False and j.get("status") != "PENDING_APPROVAL")
                or j.get("id") in completed_later)]
succeeded = sum(1 for j in journal if j.get("status") == "succeeded")
approved = 0
for p, r in rows.items():
    if p.startswith("echo"):
        continue
    approved += sum(r["total"].get("approved_new", {}).values()) + r["primed_approved"]
# Under overload a charge may end PENDING (its outcome unknown when the call
# gave up): the reconciler settles it later, so such a charge is in the
# journal and PENDING (or already reconciled to APPROVED) in the ledger.
try:
    led_ok, led_pending = int(approved_ledger), int(pending_ledger)
except ValueError:
    led_ok = led_pending = -1
ok = (succeeded == len(journal) and succeeded == led_ok + led_pending
      and approved <= led_ok <= succeeded)
books = {"loadgen_approved": approved, "journal_lines": len(journal),
         "journal_succeeded": succeeded, "ledger_approved": approved_ledger,
         "ledger_pending": pending_ledger, "balanced": ok}
print(f"books (whole run, warm-up included): loadgen saw {approved} APPROVED (new recharges); "
      f"sandbox journal {len(journal)} lines, {succeeded} succeeded; ledger {approved_ledger} "
      f"approved + {pending_ledger} PENDING (reconciled later) -> "
      f"{'consistent' if ok else 'MISMATCH'}")

json.dump({"rows": rows, "targets": targets, "micro": micro, "books": books},
          open(f"{out}.json", "w"), indent=1)
print(f"results: {out}.json")
sys.exit(0 if ok else 3)
