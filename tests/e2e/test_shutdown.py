#!/usr/bin/python3
"""Graceful shutdown and start-up failures of the gateway binary
(gateway/main.cc): SIGTERM lets in-flight calls finish and exits 0; a bad
configuration stops start-up with an error naming the file, line and field.

    /usr/bin/python3 -m unittest -v tests/e2e/test_shutdown.py
"""

from __future__ import annotations

import os
import re
import signal
import socket
import sys
import time
import unittest
from pathlib import Path

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import grpc  # noqa: E402

from stack import (HEALTH_SERVING, PACKAGES_YAML, Stack, card_request, pb,  # noqa: E402
                   wait_until)

APPROVED = pb.RECHARGE_STATUS_APPROVED
GRACE_S = 5
PROVIDER_LATENCY_MS = 1500
CARD_TIMEOUT_S = 5


def claimed(stack: Stack, key: str) -> bool:
    return bool(stack.ledger_rows("SELECT 1 FROM idempotency_keys WHERE key = ?", (key,)))


class GracefulShutdownTest(unittest.TestCase):
    stack: Stack

    @classmethod
    def setUpClass(cls):
        cls.stack = Stack("shutdown", shutdown_grace=f"{GRACE_S}s",
                          card_timeout=f"{CARD_TIMEOUT_S}s", recovery_interval="200ms",
                          settle_after="2s").start()

    @classmethod
    def tearDownClass(cls):
        cls.stack.stop()

    def setUp(self):
        self.stack.sandbox_config(latency_ms=0)
        if self.stack.gateway is None or not self.stack.gateway.alive():
            self.stack.start_gateway()

    def new_call_fails(self, what: str, codes=(grpc.StatusCode.UNAVAILABLE,),
                       channel: grpc.Channel | None = None) -> grpc.StatusCode:
        """A new RecordRecharge fails with one of `codes`, and is neither
        stored nor charged."""
        req = card_request()
        own = channel is None
        channel = channel or self.stack.new_channel()
        try:
            with self.assertRaises(grpc.RpcError, msg=what) as cm:
                self.stack.stub(channel).RecordRecharge(req, timeout=5)
        finally:
            if own:
                channel.close()
        self.assertIn(cm.exception.code(), codes, f"{what}: {cm.exception.details()}")
        self.assertEqual(self.stack.journal_for(req.idempotency_key), [], what)
        self.assertFalse(claimed(self.stack, req.idempotency_key), what)
        return cm.exception.code()

    def listener_closed(self) -> bool:
        try:
            socket.create_connection(("127.0.0.1", self.stack.gateway_port), timeout=1).close()
            return False
        except ConnectionRefusedError:
            return True
        except ConnectionResetError:
            # Caught in the listen backlog as the listener closed: ask again,
            # the next attempt is refused.
            return False

    def test_sigterm_lets_the_in_flight_call_finish_then_exits_0(self):
        stack = self.stack
        stack.sandbox_config(latency_ms=PROVIDER_LATENCY_MS)
        req = card_request()
        call = stack.stub().RecordRecharge.future(req, timeout=30)
        wait_until(lambda: claimed(stack, req.idempotency_key), 10, "the call to claim its key")
        self.assertFalse(call.done(), "the call finished before the provider answered")

        # A second client with an open connection, made before the signal.
        connected = stack.new_channel()
        try:
            self.assertEqual(stack.health(channel=connected), HEALTH_SERVING)
            t0 = time.monotonic()
            stack.gateway.send(signal.SIGTERM)
            # While it drains, the gateway takes no new call: once its port
            # stops accepting connections (a call that races the signal
            # itself may still be taken, or CANCELLED by gRPC), a new
            # connection is refused, and a new call on a connection opened
            # before the signal fails too, without being stored or charged.
            wait_until(lambda: "shutting_down" in stack.gateway_log(), 5,
                       "the shutting_down log line")
            wait_until(self.listener_closed, 5, "the gRPC port to stop accepting connections")
            # gRPC Python may share one connection between channels to the
            # same target, so a "new" channel can ride a connection opened
            # before the signal, where gRPC itself may answer CANCELLED.
            self.new_call_fails("a new call while draining, on a new connection",
                                (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.CANCELLED))
            self.new_call_fails("a new call while draining, on an open connection",
                                (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.CANCELLED),
                                channel=connected)
        finally:
            connected.close()
        self.assertTrue(stack.gateway.alive(), "the gateway exited before the in-flight call ended")

        resp = call.result(timeout=30)
        finished = time.monotonic() - t0
        self.assertEqual(resp.status, APPROVED, resp)
        self.assertEqual(resp.coins_credited, 65)
        self.assertFalse(resp.replayed)

        rc = stack.gateway.wait(timeout=GRACE_S + 5)
        exited = time.monotonic() - t0
        self.assertEqual(rc, 0, stack.gateway_log())
        self.assertLess(exited, GRACE_S, f"exit {exited:.2f}s after SIGTERM, grace is {GRACE_S}s")
        self.assertGreaterEqual(exited, finished - 0.5)
        log = stack.gateway_log()
        self.assertIn('"event":"stopped"', log)

        self.new_call_fails("a new call after the exit")

        # The outcome was recorded before the exit, once.
        rows = stack.ledger_rows(
            "SELECT recharge_id, status FROM recharges WHERE idempotency_key = ?",
            (req.idempotency_key,))
        self.assertEqual(rows, [(resp.recharge_id, APPROVED)])
        self.assertEqual(stack.ledger_rows("SELECT state FROM idempotency_keys WHERE key = ?",
                                           (req.idempotency_key,)), [("completed",)])
        self.assertEqual(len(stack.journal_for(req.idempotency_key)), 1)

        stack.start_gateway()
        again = stack.stub().RecordRecharge(req, timeout=10)
        self.assertEqual((again.replayed, again.recharge_id, again.status),
                         (True, resp.recharge_id, APPROVED))
        self.assertEqual(len(stack.journal_for(req.idempotency_key)), 1)

    def test_call_outliving_the_grace_period_is_recorded_and_replayed(self):
        """A provider slower than the grace period: the caller is told to
        retry (UNAVAILABLE), the process still exits 0 within grace plus the
        adapter timeout, and the outcome is durable: the retry replays it."""
        stack = self.stack
        grace_s = 1
        stack.shutdown_grace = f"{grace_s}s"
        stack.write_configs()
        try:
            stack.restart_gateway()
            stack.sandbox_config(latency_ms=3000)
            req = card_request()
            call = stack.stub().RecordRecharge.future(req, timeout=30)
            wait_until(lambda: claimed(stack, req.idempotency_key), 10, "the call to claim its key")
            t0 = time.monotonic()
            stack.gateway.send(signal.SIGTERM)
            with self.assertRaises(grpc.RpcError) as cm:
                call.result(timeout=30)
            self.assertEqual(cm.exception.code(), grpc.StatusCode.UNAVAILABLE,
                             cm.exception.details())
            rc = stack.gateway.wait(timeout=grace_s + CARD_TIMEOUT_S + 5)
            exited = time.monotonic() - t0
            self.assertEqual(rc, 0, stack.gateway_log())
            self.assertLess(exited, grace_s + CARD_TIMEOUT_S + 1)
        finally:
            stack.shutdown_grace = f"{GRACE_S}s"
            stack.write_configs()
        stack.sandbox_config(latency_ms=0)
        stack.start_gateway()
        wait_until(lambda: stack.ledger_rows(
            "SELECT state FROM idempotency_keys WHERE key = ?",
            (req.idempotency_key,)) == [("completed",)], 15, "the key to be completed")
        again = stack.stub().RecordRecharge(req, timeout=10)
        journal = stack.journal_for(req.idempotency_key)
        self.assertEqual([r["status"] for r in journal], ["succeeded"])
        self.assertEqual((again.replayed, again.status, again.payment.provider_reference),
                         (True, APPROVED, journal[0]["id"]))


class BrokenConfigTest(unittest.TestCase):
    """The gateway refuses to start on a bad configuration, and says where."""
    stack: Stack

    @classmethod
    def setUpClass(cls):
        cls.stack = Stack("broken-config").start()
        cls.stack.stop_gateway()  # only its files and the sandbox are needed

    @classmethod
    def tearDownClass(cls):
        cls.stack.stop()

    def assert_fails_naming(self, config: Path, named_file: Path, line: int, field: str):
        t0 = time.monotonic()
        result = self.stack.run_gateway_once(config)
        stderr = result.stderr.decode(errors="replace")
        self.assertGreater(result.returncode, 0, f"exit {result.returncode}: {stderr}")
        self.assertLess(time.monotonic() - t0, 10, "start-up failure took too long")
        m = re.search(re.escape(str(named_file)) + r":(\d+):(\d+): (\S+): ", stderr)
        self.assertIsNotNone(m, f"no FILE:LINE:COL: FIELD: in {stderr!r}")
        self.assertEqual((int(m.group(1)), m.group(3)), (line, field), stderr)
        self.assertNotIn('"event":"serving"', result.stderr.decode(errors="replace"))
        return stderr

    @staticmethod
    def line_of(text: str, needle: str) -> int:
        for i, line in enumerate(text.splitlines(), 1):
            if needle in line:
                return i
        raise AssertionError(f"{needle!r} not in the text")

    def write(self, name: str, text: str) -> Path:
        p = self.stack.tmp / name
        p.write_text(text)
        return p

    def test_empty_ledger_path(self):
        for style, value, needle in (("flow", '{path: ""}', "ledger:"),
                                     ("block", '\n  backend: sqlite\n  path: ""', 'path: ""')):
            with self.subTest(style=style):
                text = self.stack.gateway_yaml_text(ledger=value)
                config = self.write(f"gateway-ledger-{style}.yaml", text)
                self.assert_fails_naming(config, config, self.line_of(text, needle), "ledger.path")

    def test_bad_gateway_options(self):
        cases = [
            ("shutdown_grace", {"shutdown_grace": "10"}, "shutdown_grace:"),
            ("io_threads", {"io_threads": "-1"}, "io_threads:"),
            ("recovery.interval", {"recovery": "\n  interval: 0s\n  settle_after: 2s"},
             "interval:"),
        ]
        for field, override, needle in cases:
            with self.subTest(field=field):
                text = self.stack.gateway_yaml_text(**override)
                config = self.write(f"gateway-{field}.yaml", text)
                self.assert_fails_naming(config, config, self.line_of(text, needle), field)

    def test_bad_package_price(self):
        original = PACKAGES_YAML.read_text()
        us_line = "    USD: { coins_65: 99, coins_330: 499,"
        self.assertIn(us_line, original)
        cases = [
            ("negative", us_line.replace("coins_65: 99", "coins_65: -99"), "coins_65"),
            ("not a number", us_line.replace("coins_330: 499", "coins_330: 4.99"), "coins_330"),
        ]
        for name, bad_line, package in cases:
            with self.subTest(price=name):
                text = original.replace(us_line, bad_line, 1)
                packages = self.write(f"packages-{package}.yaml", text)
                config = self.write(f"gateway-packages-{package}.yaml",
                                    self.stack.gateway_yaml_text(catalogue=str(packages)))
                self.assert_fails_naming(config, packages, self.line_of(text, bad_line),
                                         f"regions.US.USD.{package}")

    def test_a_good_config_still_starts(self):
        """The control case: the same files, unbroken, serve."""
        self.stack.start_gateway()
        try:
            self.assertEqual(self.stack.stub().ListPackages(
                pb.ListPackagesRequest(region="US"), timeout=10).packages[0].price.currency, "USD")
        finally:
            self.assertEqual(self.stack.stop_gateway(), 0)


if __name__ == "__main__":
    unittest.main()
