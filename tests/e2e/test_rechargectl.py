#!/usr/bin/python3
"""Issue 12: rechargectl, the ops CLI (tools/rechargectl), driven as a
subprocess against a real stack (Redis, the PSP sandbox, the gateway), as the
ops caller `e2e-ops` (its token in a file given with --token-file).

- `--help` works on every level; usage errors exit 2 naming what is wrong;
  a closed port exits 3; a refusal of the gateway (NOT_FOUND,
  FAILED_PRECONDITION, UNAUTHENTICATED) exits 1 with the code on stderr.
- Every subcommand answers with its table by default and, with --json, one
  JSON document whose fields are the proto's field names.
- `rules validate` and `rules backtest` of a broken file exit 1 naming line
  and column, the backtest without contacting the gateway.
- --tls-ca/--tls-cert/--tls-key reach a gateway serving mutual TLS; a
  plaintext client cannot (exit 3).
- `recharges watch` prints one line per event (with --json one JSON object
  per line), stops after --max events, and ends with exit 0 on Ctrl-C.

    /usr/bin/python3 -m unittest -v tests/e2e/test_rechargectl.py

Environment: those of stack.py, and RECHARGECTL_BIN (default
build/tools/rechargectl/rechargectl).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import tempfile
import unittest
from pathlib import Path

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from stack import REPO, Stack, card_request, free_port, new_user, pb  # noqa: E402

RECHARGECTL_BIN = Path(os.environ.get("RECHARGECTL_BIN")
                       or REPO / "build" / "tools" / "rechargectl" / "rechargectl")
RPC_TIMEOUT_S = 20
CTL_TIMEOUT_S = 60
REVIEW_SELLER = "seller-ctl-review"
FLAG_SELLER = "seller-ctl-flag"

RULES = f"""\
version: "ctl-1"
fail_mode: open
counters:
  user_recharges_1h: {{ count: true, per: user_id, window: 1h }}
rules:
  - id: review-listed-seller
    when: seller_id == "{REVIEW_SELLER}"
    action: review
    reason: seller on the e2e review list
  - id: flag-listed-seller
    when: seller_id == "{FLAG_SELLER}"
    action: flag_seller
    flag_ttl: 1h
    reason: seller on the e2e flag list
"""

# A rule file with an unknown name in a condition: line 6, column 37 (the
# token `no_such_counter`).
BROKEN_RULES = """\
version: "broken-1"
counters:
  user_recharges_1h: { count: true, per: user_id, window: 1h }
rules:
  - id: broken
    when: user_recharges_1h > 3 and no_such_counter > 1
    action: review
"""
BROKEN_POSITION = ":6:37:"

# Three mistakes in one file: validate names every one, in file order.
MANY_ERRORS_RULES = """\
version: "broken-2"
fail_mode: ajar
counters:
  user_recharges_1h: { count: true, per: user_id, window: 1h }
rules:
  - id: one
    when: user_recharges_1h > 3 and no_such_counter > 1
    action: review
  - id: two
    when: card_blocked
    action: blok
"""
MANY_ERRORS = [(2, 12, "fail_mode"), (7, 37, "no_such_counter"), (11, 13, "blok")]

COMMANDS = {
    "rules": ["validate", "backtest", "reload", "stats"],
    "sellers": ["flagged", "risk", "clear"],
    "reviews": ["list", "approve", "reject"],
    "recharges": ["get", "list", "refund", "watch"],
    "audit": ["list"],
}


class RechargectlTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        if not RECHARGECTL_BIN.exists():
            raise unittest.SkipTest(f"{RECHARGECTL_BIN} not built (target rechargectl)")
        cls.stack = Stack("rechargectl")
        cls.stack.fraud_rules_text = RULES
        cls.stack.start()
        try:
            cls.files = Path(tempfile.mkdtemp(prefix="ctl-", dir=cls.stack.tmp))
            cls.token_file = cls.files / "ops.token"
            cls.token_file.write_text(cls.stack.ops_token + "\n")
            cls.broken_file = cls.files / "broken.yaml"
            cls.broken_file.write_text(BROKEN_RULES)
            cls.many_errors_file = cls.files / "many-errors.yaml"
            cls.many_errors_file.write_text(MANY_ERRORS_RULES)
            cls.valid_file = cls.files / "candidate.yaml"
            cls.valid_file.write_text(RULES)
            cls.user = new_user("ctl")
            cls.approved = [cls.record(card_request(user=cls.user)) for _ in range(3)]
            cls.held = [cls.record(card_request(seller_id=REVIEW_SELLER)) for _ in range(2)]
            cls.flagged = cls.record(card_request(seller_id=FLAG_SELLER))
            cls.to_refund = [cls.record(card_request()) for _ in range(2)]
            cls.to_charge_back = [cls.record(card_request()) for _ in range(2)]
        except BaseException:
            cls.stack.stop()
            raise

    @classmethod
    def tearDownClass(cls):
        cls.stack.stop()

    @classmethod
    def record(cls, request) -> str:
        answer = cls.stack.stub().RecordRecharge(request, timeout=RPC_TIMEOUT_S)
        expected = (pb.RECHARGE_STATUS_PENDING_REVIEW if request.seller_id
                    else pb.RECHARGE_STATUS_APPROVED)
        assert answer.status == expected, answer
        return answer.recharge_id

    # ------------------------------------------------------------ helpers

    def ctl(self, *args: str, json_output: bool = False, addr: str | None = None,
            token: bool = True, cwd: Path = REPO, expect: int | None = 0,
            timeout: float = CTL_TIMEOUT_S) -> subprocess.CompletedProcess:
        """Runs rechargectl against the stack; checks the exit code unless
        `expect` is None."""
        argv = [str(RECHARGECTL_BIN), "--addr", addr or f"127.0.0.1:{self.stack.gateway_port}",
                "--timeout", "5s"]
        argv += ["--token-file", str(self.token_file)] if token else ["--token-file="]
        if json_output:
            argv.append("--json")
        argv += list(args)
        done = subprocess.run(argv, cwd=cwd, capture_output=True, text=True, timeout=timeout)
        if expect is not None:
            self.assertEqual(done.returncode, expect,
                             f"{' '.join(args)}: exit {done.returncode}\nstdout:\n{done.stdout}\n"
                             f"stderr:\n{done.stderr}")
        return done

    def ctl_json(self, *args: str):
        done = self.ctl(*args, json_output=True)
        return json.loads(done.stdout)

    # -------------------------------------------------- help, usage, exits

    def test_help_on_every_level(self):
        top = self.ctl("--help")
        for group, commands in COMMANDS.items():
            self.assertIn(group, top.stdout)
            self.assertIn(group, self.ctl(group, "--help").stdout)
            for command in commands:
                done = self.ctl(group, command, "--help")
                self.assertIn(f"Usage: rechargectl {group} {command}", done.stdout)
        self.assertIn("Usage: rechargectl chargeback ID --reason R",
                      self.ctl("chargeback", "--help").stdout)
        self.assertIn("--from-now", self.ctl("recharges", "watch", "--help").stdout)
        self.assertIn("Exit codes", top.stdout)

    def test_usage_errors_exit_2_naming_the_problem(self):
        cases = [
            ((), "missing command"),
            (("bogus",), "unknown command 'bogus'"),
            (("rules", "bogus"), "unknown command 'rules bogus'"),
            (("rules",), "missing command after 'rules'"),
            (("rules", "validate"), "missing argument"),
            (("recharges", "get", "rch_x", "--bogus"), "unknown flag '--bogus'"),
            (("recharges", "get", "rch_x", "extra"), "unexpected argument 'extra'"),
            (("recharges", "list"), "--user"),
            (("sellers", "clear", "seller-x"), "--note"),
            (("chargeback", "rch_x"), "--reason"),
            (("recharges", "refund", "rch_x"), "--reason"),
            (("audit", "list", "--limit", "zero"), "--limit"),
            (("rules", "stats", "--timeout", "soon"), "--timeout"),
            (("rules", "backtest", "x.yaml", "--since", "1h", "--from", "2026-01-01T00:00:00Z"),
             "--since"),
        ]
        for args, message in cases:
            with self.subTest(args=args):
                done = self.ctl(*args, expect=2)
                self.assertIn(message, done.stderr)
                self.assertEqual(done.stdout, "")

    def test_closed_port_exits_3(self):
        done = self.ctl("rules", "stats", addr=f"127.0.0.1:{free_port()}", expect=3)
        self.assertIn("cannot reach the gateway", done.stderr)

    def test_refusals_exit_1_with_the_code(self):
        done = self.ctl("recharges", "get", "rch_doesnotexist", expect=1)
        self.assertIn("NOT_FOUND", done.stderr)
        self.assertEqual(done.stdout, "")
        # No token: no default token file in this directory.
        done = self.ctl("rules", "stats", token=False, cwd=self.files, expect=1)
        self.assertIn("UNAUTHENTICATED", done.stderr)

    # ------------------------------------------------------------- rules

    def test_rules_validate(self):
        done = self.ctl("rules", "validate", str(REPO / "configs" / "fraud_rules.yaml"))
        self.assertIn("valid", done.stdout)
        answer = self.ctl_json("rules", "validate", str(self.valid_file))
        self.assertEqual(answer["valid"], True)
        self.assertEqual(answer["version"], "ctl-1")
        self.assertEqual(answer["rules"], 2)

        done = self.ctl("rules", "validate", str(self.broken_file), expect=1)
        self.assertIn(str(self.broken_file) + BROKEN_POSITION, done.stderr)
        self.assertIn("no_such_counter", done.stderr)
        done = self.ctl("rules", "validate", str(self.broken_file), json_output=True, expect=1)
        answer = json.loads(done.stdout)
        self.assertEqual(answer["valid"], False)
        self.assertEqual((answer["errors"][0]["line"], answer["errors"][0]["column"]), (6, 37))
        self.assertEqual(len(answer["errors"]), 1, answer)

        # Every error of the file, each with its line and column.
        path = str(self.many_errors_file)
        done = self.ctl("rules", "validate", path, expect=1)
        lines = done.stderr.splitlines()
        self.assertEqual(len(lines), len(MANY_ERRORS) + 1, done.stderr)
        for line, (row, col, what) in zip(lines, MANY_ERRORS):
            self.assertTrue(line.startswith(f"{path}:{row}:{col}: "), line)
            self.assertIn(what, line)
        self.assertEqual(lines[-1], f"{path}: invalid rule file (3 errors)")
        answer = json.loads(self.ctl("rules", "validate", path, json_output=True, expect=1).stdout)
        self.assertEqual([(e["line"], e["column"]) for e in answer["errors"]],
                         [(row, col) for row, col, _ in MANY_ERRORS])

    def test_rules_backtest(self):
        # A broken file is refused offline: the gateway is not even needed.
        done = self.ctl("rules", "backtest", str(self.broken_file),
                        addr=f"127.0.0.1:{free_port()}", expect=1)
        self.assertIn(str(self.broken_file) + BROKEN_POSITION, done.stderr)
        self.assertNotIn("cannot reach", done.stderr)

        # The live file over the traffic it decided alone: nothing changes.
        done = self.ctl("rules", "backtest", str(self.valid_file), "--since", "1h",
                        "--examples", "2")
        self.assertIn("replayed", done.stdout)
        self.assertIn("changed", done.stdout)
        answer = self.ctl_json("rules", "backtest", str(self.valid_file))
        self.assertGreater(int(answer["replayed"]), 0)
        self.assertEqual(int(answer["comparable"]), int(answer["replayed"]))
        self.assertEqual(int(answer["changed"]), 0, answer)

    def test_rules_reload_and_stats(self):
        done = self.ctl("rules", "reload")
        self.assertIn("ctl-1", done.stdout)
        self.assertEqual(self.ctl_json("rules", "reload")["rules_version"], "ctl-1")

        done = self.ctl("rules", "stats")
        self.assertIn("review-listed-seller", done.stdout)
        self.assertIn("EVALUATED", done.stdout)
        answer = self.ctl_json("rules", "stats")
        self.assertEqual(answer["rules_version"], "ctl-1")
        hits = {r["rule_id"]: int(r["hits"]) for r in answer["rules"]}
        self.assertGreaterEqual(hits["review-listed-seller"], 2)
        self.assertGreaterEqual(hits["flag-listed-seller"], 1)

    # ----------------------------------------------------------- sellers

    def test_sellers_flagged_risk_clear(self):
        done = self.ctl("sellers", "flagged")
        self.assertIn(FLAG_SELLER, done.stdout)
        self.assertIn("flag-listed-seller", done.stdout)
        answer = self.ctl_json("sellers", "flagged")
        self.assertIn(FLAG_SELLER, [s["seller_id"] for s in answer["sellers"]])

        done = self.ctl("sellers", "risk", FLAG_SELLER)
        self.assertRegex(done.stdout, r"flagged:\s+yes")
        answer = self.ctl_json("sellers", "risk", FLAG_SELLER)
        self.assertEqual(answer["seller_id"], FLAG_SELLER)
        self.assertTrue(answer["flagged"])
        self.assertEqual(answer["flag"]["rule_id"], "flag-listed-seller")

        answer = self.ctl_json("sellers", "clear", FLAG_SELLER, "--note", "e2e: cleared by ctl")
        self.assertTrue(answer["was_flagged"])
        done = self.ctl("sellers", "clear", FLAG_SELLER, "--note", "again")
        self.assertIn("was not flagged", done.stdout)
        self.assertFalse(self.ctl_json("sellers", "risk", FLAG_SELLER)["flagged"])
        self.assertNotIn(FLAG_SELLER, self.ctl("sellers", "flagged").stdout)

    # ----------------------------------------------------------- reviews

    def test_reviews_list_approve_reject(self):
        done = self.ctl("reviews", "list")
        for recharge_id in self.held:
            self.assertIn(recharge_id, done.stdout)
        self.assertIn("PENDING_REVIEW", done.stdout)
        listed = [r["recharge_id"] for r in self.ctl_json("reviews", "list")["recharges"]]
        self.assertTrue(set(self.held) <= set(listed), listed)

        done = self.ctl("reviews", "approve", self.held[0], "--note", "e2e: looks fine")
        self.assertIn("review approved", done.stdout)
        self.assertRegex(done.stdout, r"status:\s+APPROVED")
        answer = self.ctl_json("reviews", "reject", self.held[1], "--note", "e2e: reseller")
        self.assertEqual(answer["recharge_id"], self.held[1])
        self.assertEqual(answer["status"], "RECHARGE_STATUS_DECLINED")
        self.assertEqual(answer["review_note"], "e2e: reseller")

        done = self.ctl("reviews", "approve", self.held[1], expect=1)
        self.assertIn("FAILED_PRECONDITION", done.stderr)
        listed = [r["recharge_id"] for r in self.ctl_json("reviews", "list")["recharges"]]
        self.assertFalse(set(self.held) & set(listed), listed)

    # --------------------------------------------------------- recharges

    def test_recharges_get_and_list(self):
        recharge_id = self.approved[0]
        done = self.ctl("recharges", "get", recharge_id)
        self.assertIn(recharge_id, done.stdout)
        self.assertRegex(done.stdout, r"status:\s+APPROVED")
        self.assertIn(self.user, done.stdout)
        answer = self.ctl_json("recharges", "get", recharge_id)
        self.assertEqual(answer["recharge_id"], recharge_id)
        self.assertEqual(answer["status"], "RECHARGE_STATUS_APPROVED")
        self.assertEqual(answer["user_id"], self.user)
        self.assertNotIn("4242424242424242", json.dumps(answer))

        done = self.ctl("recharges", "list", "--user", self.user)
        for rid in self.approved:
            self.assertIn(rid, done.stdout)
        answer = self.ctl_json("recharges", "list", "--user", self.user)
        self.assertEqual(sorted(r["recharge_id"] for r in answer["recharges"]),
                         sorted(self.approved))
        answer = self.ctl_json("recharges", "list", "--user", self.user, "--limit", "2")
        self.assertEqual(len(answer["recharges"]), 2)
        self.assertTrue(answer["next_page_token"])
        done = self.ctl("recharges", "list", "--user", new_user("nobody"))
        self.assertIn("no recharges", done.stdout)

    def test_recharges_refund(self):
        done = self.ctl("recharges", "refund", self.to_refund[0], "--reason", "buyer asked")
        self.assertRegex(done.stdout, r"idempotency key:\s+ctl-[0-9a-f]{32}")
        self.assertRegex(done.stdout, r"status:\s+REFUNDED")

        key = "e2e-ctl-refund-" + self.to_refund[1][-8:]
        answer = self.ctl_json("recharges", "refund", self.to_refund[1], "--reason", "dup",
                               "--key", key)
        self.assertEqual(answer["idempotency_key"], key)
        self.assertEqual(answer["recharge"]["status"], "RECHARGE_STATUS_REFUNDED")
        self.assertFalse(answer["recharge"]["replayed"])
        again = self.ctl_json("recharges", "refund", self.to_refund[1], "--reason", "dup",
                              "--key", key)
        self.assertTrue(again["recharge"]["replayed"])

        # Not APPROVED (already refunded, with a new key): refused.
        done = self.ctl("recharges", "refund", self.to_refund[0], "--reason", "twice", expect=1)
        self.assertIn("FAILED_PRECONDITION", done.stderr)

    def test_recharges_watch(self):
        done = self.ctl("recharges", "watch", "--max", "3")
        lines = done.stdout.splitlines()
        self.assertEqual(len(lines), 4, done.stdout)  # the header and 3 events
        self.assertIn("CURSOR", lines[0])
        self.assertIn("DECIDED", lines[1])
        first_cursor = lines[1].split()[0]

        done = self.ctl("recharges", "watch", "--max", "2", json_output=True)
        events = [json.loads(line) for line in done.stdout.splitlines()]
        self.assertEqual(len(events), 2)
        self.assertEqual(events[0]["cursor"], first_cursor)
        self.assertEqual(events[0]["type"], "RECHARGE_EVENT_DECIDED")
        answer = self.ctl("recharges", "watch", "--after", first_cursor, "--max", "1",
                          json_output=True)
        self.assertEqual(json.loads(answer.stdout)["cursor"], events[1]["cursor"])

        # --from-now: only what happens next; Ctrl-C ends it with exit 0.
        argv = [str(RECHARGECTL_BIN), "--addr", f"127.0.0.1:{self.stack.gateway_port}",
                "--token-file", str(self.token_file), "recharges", "watch", "--from-now"]
        with subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                              text=True) as watcher:
            try:
                self.assertIn("CURSOR", watcher.stdout.readline())
                # The header comes once the gateway has fixed the starting point.
                new_id = self.record(card_request())
                line = watcher.stdout.readline()
                self.assertIn(new_id, line)
                self.assertIn("DECIDED", line)
                self.assertIn("+65", line)
                watcher.send_signal(signal.SIGINT)
                self.assertEqual(watcher.wait(timeout=10), 0, watcher.stderr.read())
            finally:
                if watcher.poll() is None:
                    watcher.kill()

    # ----------------------------------------------- chargeback and audit

    def test_chargeback(self):
        done = self.ctl("chargeback", self.to_charge_back[0], "--reason", "fraudulent")
        self.assertRegex(done.stdout, r"chargeback recorded:\s+" + self.to_charge_back[0])
        answer = self.ctl_json("chargeback", self.to_charge_back[1], "--reason", "fraudulent")
        self.assertIn("seller_flagged", answer)
        self.assertIsInstance(answer["blocked"], list)
        self.assertEqual(self.ctl_json("recharges", "get", self.to_charge_back[1])["status"],
                         "RECHARGE_STATUS_CHARGED_BACK")
        done = self.ctl("chargeback", "rch_doesnotexist", "--reason", "x", expect=1)
        self.assertIn("NOT_FOUND", done.stderr)

    def test_audit_list(self):
        self.ctl("rules", "reload")
        done = self.ctl("audit", "list")
        self.assertIn("ReloadRules", done.stdout)
        self.assertIn("e2e-ops", done.stdout)
        answer = self.ctl_json("audit", "list", "--limit", "1")
        self.assertEqual(len(answer["events"]), 1)
        self.assertEqual(answer["events"][0]["rpc"], "ReloadRules")
        self.assertEqual(answer["events"][0]["outcome"], "OK")


class RechargectlMtlsTest(unittest.TestCase):
    """--tls-ca/--tls-cert/--tls-key against a gateway serving mutual TLS."""

    @classmethod
    def setUpClass(cls):
        if not RECHARGECTL_BIN.exists():
            raise unittest.SkipTest(f"{RECHARGECTL_BIN} not built (target rechargectl)")
        cls.stack = Stack("rechargectl-mtls")
        cls.stack.transport = "mtls"
        cls.stack.start()

    @classmethod
    def tearDownClass(cls):
        cls.stack.stop()

    def run_ctl(self, *args: str) -> subprocess.CompletedProcess:
        token_file = self.stack.tmp / "ops.token"
        token_file.write_text(self.stack.ops_token)
        argv = [str(RECHARGECTL_BIN), "--addr", f"127.0.0.1:{self.stack.gateway_port}",
                "--timeout", "3s", "--token-file", str(token_file), *args]
        return subprocess.run(argv, cwd=REPO, capture_output=True, text=True,
                              timeout=CTL_TIMEOUT_S)

    def test_mutual_tls_with_the_ops_certificate(self):
        certs = self.stack.certs
        done = self.run_ctl("--tls-ca", str(certs / "ca.pem"),
                            "--tls-cert", str(certs / "ops-client.pem"),
                            "--tls-key", str(certs / "ops-client.key"), "--json",
                            "recharges", "list", "--user", new_user("tls"))
        self.assertEqual(done.returncode, 0, done.stderr)
        self.assertEqual(json.loads(done.stdout)["recharges"], [])

    def test_plaintext_to_a_tls_port_cannot_connect(self):
        done = self.run_ctl("rules", "stats")
        self.assertEqual(done.returncode, 3, done.stderr)

    def test_a_certificate_without_its_key_is_a_usage_error(self):
        done = self.run_ctl("--tls-ca", str(self.stack.certs / "ca.pem"),
                            "--tls-cert", str(self.stack.certs / "ops-client.pem"),
                            "rules", "stats")
        self.assertEqual(done.returncode, 2, done.stderr)
        self.assertIn("--tls-key", done.stderr)


if __name__ == "__main__":
    unittest.main()
