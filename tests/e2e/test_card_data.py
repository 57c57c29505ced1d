#!/usr/bin/python3
"""Card data never leaves the request (issue 7, acceptance 5; DESIGN.md §8):
a few hundred recharges of every kind go through the real stack with debug
logging on, then every log, the SQLite ledger, every Redis key and value, the
gateway's own output and every answer the clients got are scanned for the
card numbers and CVCs used, and for any Luhn-valid 13-19 digit run. Zero hits.

    /usr/bin/python3 -m unittest -v tests/e2e/test_card_data.py

CardDataTest.test_no_card_data_anywhere drives one stack (Redis, the PSP
sandbox with its PayPal and e-wallet APIs, two extra sandboxes -- one slow,
one failing -- and the gateway at log_level debug) through:

  1. ~300 RecordRecharge calls from 8 threads: approved cards (about 130
     distinct Luhn-valid PANs of 13, 15, 16 and 19 digits), the sandbox's
     decline and insufficient-funds cards, blocked ones (a deny-listed seller,
     one card shared by six accounts), held for review (a review-listed
     seller, a seller that a flag_seller rule flags), invalid ones with real
     PANs in them (bad Luhn, expired, wrong amount, CVC of the wrong length,
     20 digits, spaces, unknown region, bad key), PayPal and GCash approved,
     declined and failing (the sandbox's 503 instruments), and card routes that
     fail: a closed port (FAILED), a provider that answers 500 (FAILED), a
     provider slower than the instance's timeout (PENDING, reconciled later;
     FAILED too if a busy machine misses even the TLS connection's timeout),
     and a closed primary with a healthy backup (failover, APPROVED);
  2. replays of stored keys (every status) and a key reused for another card
     (ALREADY_EXISTS);
  3. FraudAdmin: ListReviews, ResolveReview (reject a card review with a
     note, approve a PayPal one, approve a card one -- its hold is captured
     -- and approve it again: FAILED_PRECONDITION),
     ClearSellerFlag, ReportChargeback on an approved card (then
     that card and that device come back BLOCKED by the block lists),
     GetSellerRisk, ListFlaggedSellers, GetRuleStats, ListAuditEvents; and
     GetRecharge / ListRecharges, whose answers are scanned too;
  4. the PENDING recharges reconciled (the slow provider made fast again);
  5. the gateway stopped cleanly (SIGTERM, exit 0: the ledger's WAL is
     complete), Redis kept up, and the scan (see Scanner).

Every outcome is asserted to have happened (count > 0), otherwise a clean
scan would prove nothing; every source is asserted to hold what it should
(the debug lines, the masks in the ledger, the fingerprints in Redis keys).
ScannerSelfTest shows that the scanner reports a PAN, an unknown Luhn-valid
number and a CVC planted in a JSON log line, and that its exclusions are as
narrow as documented. Every wait is a bounded poll.
"""

from __future__ import annotations

import collections
import concurrent.futures
import dataclasses
import datetime
import os
import re
import secrets
import string
import sys
import time
import unittest
from pathlib import Path

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import grpc  # noqa: E402
import yaml  # noqa: E402  (python3-yaml, Debian)

from stack import (CARD_APPROVE, CARD_DECLINE, CARD_NSF, PACKAGES_YAML, Stack,  # noqa: E402
                   free_port, luhn_complete, pb, status_name, wait_until)
from card_scan import Hit, Scanner, luhn_valid  # noqa: E402
from recharge.v1 import recharge_pb2_grpc as pb_grpc  # noqa: E402

APPROVED = pb.RECHARGE_STATUS_APPROVED
DECLINED = pb.RECHARGE_STATUS_DECLINED
BLOCKED = pb.RECHARGE_STATUS_BLOCKED
PENDING_REVIEW = pb.RECHARGE_STATUS_PENDING_REVIEW
FAILED = pb.RECHARGE_STATUS_FAILED
PENDING = pb.RECHARGE_STATUS_PENDING

RPC_TIMEOUT_S = 20
THREADS = 8
# Distinctive 4-digit CVCs (card validation accepts 3 or 4 digits): none is a
# year, an HTTP status or a port the stack can get (ephemeral ports have 5
# digits), and no PAN of the test ends in one (the mask shows the last four),
# so a standalone hit in a log is a leak.
CVCS = ("7391", "8264", "5817", "9046")
# CVCs of the wrong length, sent in INVALID_ARGUMENT requests: scanned too.
BAD_CVCS = ("73915", "82640")
SELLER_BLOCKED = "seller-blocked"
SELLER_REVIEW = "seller-review"
SELLER_FLAG = "seller-flag"
SELLER_HONEST = "seller-honest"
PAYER_ID = "PAYERCARDDATA"

RULES = f"""\
# Written by tests/e2e/test_card_data.py: one rule per outcome it needs.
version: "e2e-card-data.1"
fail_mode: open
# Never demote a block rule: this test blocks a large share on purpose.
blast_radius: {{ max_block_share: 1, window: 10m, min_requests: 50 }}
counters:
  card_users_24h:       {{ distinct: user_id, per: card_fingerprint, window: 24h }}
  instrument_users_24h: {{ distinct: user_id, per: instrument_fingerprint, window: 24h }}
  seller_cards_1h:      {{ distinct: card_fingerprint, per: seller_id, window: 1h }}
  seller_payers_1h:     {{ distinct: instrument_fingerprint, per: seller_id, window: 1h }}
  user_recharges_1h:    {{ count: true, per: user_id, window: 1h }}
  user_spend_usd_24h:   {{ sum: amount_usd, per: user_id, window: 24h }}
  device_users_24h:     {{ distinct: user_id, per: device_id, window: 24h }}
  ip_users_1h:          {{ distinct: user_id, per: ip, window: 1h }}
  seller_declines_1h:   {{ count: true, per: seller_id, window: 1h, on: decline }}
  seller_chargebacks_30d:
    {{ count: true, per: seller_id, window: 30d, on: chargeback, buckets: 30 }}
rules:
  - id: deny-listed-seller
    when: seller_id == "{SELLER_BLOCKED}"
    action: block
    reason: seller on the e2e deny list
  - id: review-listed-seller
    when: seller_id == "{SELLER_REVIEW}"
    action: review
    reason: seller on the e2e review list
  - id: reseller-many-cards
    when: seller_id == "{SELLER_FLAG}" and seller_cards_1h > 2
    action: flag_seller
    flag_ttl: 1h
    reason: third-party seller paying with many cards
  - id: flagged-seller
    when: seller_flagged
    action: review
    reason: seller is flagged
  - id: shared-card
    when: card_users_24h > 3
    action: block
    reason: one card paying for many accounts
  - id: card-blocked
    when: card_blocked
    action: block
    reason: card block-listed after a chargeback
  - id: device-blocked
    when: device_blocked
    action: block
    reason: device block-listed after a chargeback
  - id: seller-chargebacks
    when: seller_id != "" and seller_chargebacks_30d >= 3
    action: flag_seller
    flag_ttl: 1h
    reason: seller with repeated chargebacks
  - id: big-spender
    when: user_spend_usd_24h > 500
    action: review
    mode: shadow
    reason: shadow rule, reported only
  - id: tag-wallets
    when: payment_method == "ewallet"
    action: allow
    reason: tag wallet traffic
"""


def load_prices() -> dict:
    with open(PACKAGES_YAML, encoding="utf-8") as f:
        return yaml.safe_load(f)["regions"]


PRICES = load_prices()


def price(region: str, currency: str, package: str = "coins_65") -> int:
    return PRICES[region][currency][package]


def letters(n: int = 12) -> str:
    """Random lowercase letters. Every identifier this test makes (keys,
    users, devices, order ids) is letters only, so that none can ever look
    like a card number or a CVC to the scanner."""
    return "".join(secrets.choice(string.ascii_lowercase) for _ in range(n))


def ident(prefix: str) -> str:
    return f"cd-{prefix}-{letters()}"


def blank_redis_pid(data: bytes, pid: int) -> bytes:
    """Redis starts every log line with its pid ("10992:M 02 Dec ...") and
    says "pid=10992" once: a 4-digit pid could equal a CVC. Only those
    occurrences of the server's own pid are blanked (same length, so the
    offsets of anything else are kept)."""
    p = str(pid).encode()
    blank = b"#" * len(p)
    data = re.sub(rb"(?m)^" + p + rb"(?=:[CMSX] )", blank, data)
    return data.replace(b"pid=" + p + b",", b"pid=" + blank + b",")


# ---------------------------------------------------------------------------
# The traffic
# ---------------------------------------------------------------------------

_used_pans: set[str] = set()
_SPECIAL = {CARD_APPROVE, CARD_DECLINE, CARD_NSF}


def new_pan(length: int = 16) -> str:
    """A fresh Luhn-valid PAN of `length` digits, starting 4, 5, 3 or 6 (for
    15 digits 34/37, Amex-like), never handed out twice. Its last four digits
    are never one of the CVCs: the mask ("424242******4242") shows them,
    legitimately, and they would read as a standalone CVC."""
    while True:
        if length == 15:
            head = secrets.choice(("34", "37"))
        else:
            head = secrets.choice("4563")
        body = "".join(secrets.choice(string.digits) for _ in range(length - 1 - len(head)))
        pan = luhn_complete(head + body)
        if pan not in _SPECIAL and pan not in _used_pans and pan[-4:] not in CVCS:
            _used_pans.add(pan)
            return pan


def bad_luhn(pan: str) -> str:
    """`pan` with its check digit changed: fails the Luhn check."""
    return pan[:-1] + str((int(pan[-1]) + 1) % 10)


_ip_count = iter(range(1, 1 << 20))


def new_ip() -> str:
    n = next(_ip_count)
    return f"198.18.{n // 250}.{n % 250 + 1}"


@dataclasses.dataclass
class Job:
    label: str                  # the outcome it is meant to produce
    request: "pb.RecordRechargeRequest"
    expect: object = None       # a RechargeStatus, a grpc.StatusCode, or None (any)


@dataclasses.dataclass
class Result:
    job: Job
    response: object = None     # RecordRechargeResponse
    code: object = None         # grpc.StatusCode of an error
    details: str = ""


class Traffic:
    """Builds the requests; remembers every PAN and CVC sent."""

    def __init__(self):
        self.pans: set[str] = set()
        self.cvcs: set[str] = set()
        self._cvc_i = 0

    def cvc(self) -> str:
        self._cvc_i += 1
        return CVCS[self._cvc_i % len(CVCS)]

    def card(self, pan: str | None = None, *, cvc: str | None = None, user: str | None = None,
             seller: str = "", region: str = "US", currency: str = "USD",
             minor_units: int | None = None, exp_year: int | None = None, exp_month: int = 11,
             device: str | None = None, key: str | None = None,
             package: str = "coins_65") -> "pb.RecordRechargeRequest":
        pan = new_pan() if pan is None else pan
        cvc = self.cvc() if cvc is None else cvc
        self.pans.add(pan)
        self.cvcs.add(cvc)
        year = datetime.datetime.now(datetime.timezone.utc).year
        return pb.RecordRechargeRequest(
            idempotency_key=key or ident("key"), user_id=user or ident("user"),
            package_id=package,
            amount=pb.Money(currency=currency,
                            minor_units=price(region, currency, package)
                            if minor_units is None else minor_units),
            region=region, seller_id=seller,
            card=pb.Card(number=pan, exp_month=exp_month,
                         exp_year=year + 3 if exp_year is None else exp_year, cvc=cvc,
                         holder_name="Card Data Tester"),
            client=pb.ClientContext(ip=new_ip(), device_id=device or ident("dev"),
                                    user_agent="e2e-card-data/1.0"),
            metadata={"order_ref": ident("order")})

    @staticmethod
    def paypal(suffix: str = "", seller: str = "") -> "pb.RecordRechargeRequest":
        return pb.RecordRechargeRequest(
            idempotency_key=ident("key"), user_id=ident("user"), package_id="coins_65",
            amount=pb.Money(currency="USD", minor_units=price("US", "USD")), region="US",
            seller_id=seller,
            paypal=pb.PayPal(order_id=f"ORD{letters(14).upper()}{suffix}", payer_id=PAYER_ID),
            client=pb.ClientContext(ip=new_ip(), device_id=ident("dev"),
                                    user_agent="e2e-card-data/1.0"))

    @staticmethod
    def gcash(suffix: str = "0001", seller: str = "") -> "pb.RecordRechargeRequest":
        return pb.RecordRechargeRequest(
            idempotency_key=ident("key"), user_id=ident("user"), package_id="coins_65",
            amount=pb.Money(currency="PHP", minor_units=price("PH", "PHP")), region="PH",
            seller_id=seller,
            ewallet=pb.EWallet(provider="gcash", account_id=f"acct-{letters(8)}-{suffix}"),
            client=pb.ClientContext(ip=new_ip(), device_id=ident("dev"),
                                    user_agent="e2e-card-data/1.0"))

    def phase1(self) -> list[Job]:
        jobs: list[Job] = []
        add = jobs.append
        inv = grpc.StatusCode.INVALID_ARGUMENT
        # Approved cards: many distinct PANs, several lengths; some through a
        # seller that is never flagged.
        for i in range(120):
            length = (16, 16, 16, 16, 13, 15, 19)[i % 7]
            add(Job("approved card", self.card(new_pan(length),
                                               seller=SELLER_HONEST if i % 5 == 0 else ""),
                    APPROVED))
        for _ in range(3):  # three accounts: the shared-card rule blocks a 4th
            add(Job("approved card (4242...)", self.card(CARD_APPROVE), APPROVED))
        # Declines: each decline card used by 3 accounts at most, so the
        # shared-card rule (> 3 accounts) leaves them to the provider.
        for card, n in ((CARD_DECLINE, 12), (CARD_NSF, 12)):
            users = [ident("user") for _ in range(3)]
            for i in range(n):
                add(Job("declined card", self.card(card, user=users[i % 3]), DECLINED))
        # Blocked by the deny-listed seller.
        for _ in range(15):
            add(Job("blocked seller", self.card(seller=SELLER_BLOCKED), BLOCKED))
        # One card across six accounts: the 4th, 5th and 6th are blocked.
        shared = new_pan()
        for _ in range(6):
            add(Job("shared card", self.card(shared), None))
        # Held for review: a review-listed seller (card and PayPal).
        for _ in range(10):
            add(Job("review seller (card)", self.card(seller=SELLER_REVIEW), PENDING_REVIEW))
        for _ in range(4):
            add(Job("review seller (paypal)", self.paypal(seller=SELLER_REVIEW), PENDING_REVIEW))
        # A reseller paying with many cards: flagged at its 3rd card.
        for _ in range(8):
            add(Job("flagged seller", self.card(seller=SELLER_FLAG), None))
        # Invalid requests, each with a real-looking PAN and a CVC in it.
        year = datetime.datetime.now(datetime.timezone.utc).year
        for _ in range(5):
            pan = new_pan()
            self.pans.add(bad_luhn(pan))
            add(Job("invalid: bad Luhn", self.card(bad_luhn(pan)), inv))
            add(Job("invalid: expired", self.card(exp_year=year - 1), inv))
            add(Job("invalid: exp_month", self.card(exp_month=13), inv))
            add(Job("invalid: wrong amount", self.card(minor_units=100), inv))
            add(Job("invalid: CVC length", self.card(cvc=BAD_CVCS[0]), inv))
            add(Job("invalid: CVC length", self.card(cvc=BAD_CVCS[1]), inv))
            add(Job("invalid: unknown region", self.card(region="ZZ", currency="USD",
                                                         minor_units=99), inv))
            add(Job("invalid: bad key", self.card(key="bad key!"), inv))
        for _ in range(2):
            long_pan = luhn_complete("4" + "".join(secrets.choice(string.digits)
                                                   for _ in range(18)))
            add(Job("invalid: 20 digits", self.card(long_pan), inv))
            spaced = " ".join(new_pan()[i:i + 4] for i in range(0, 16, 4))
            add(Job("invalid: spaces", self.card(spaced), inv))
            dashed = "-".join(new_pan()[i:i + 4] for i in range(0, 16, 4))
            add(Job("invalid: dashes", self.card(dashed), inv))
        # PayPal and GCash: approved, declined, failing (the sandbox's 503).
        for _ in range(12):
            add(Job("paypal approved", self.paypal(), APPROVED))
            add(Job("gcash approved", self.gcash(), APPROVED))
        for _ in range(4):
            add(Job("paypal declined", self.paypal("DECLINED"), DECLINED))
            add(Job("gcash declined", self.gcash("0002"), DECLINED))
            add(Job("paypal failing", self.paypal("UNAVAILABLE"), FAILED))
            add(Job("gcash failing", self.gcash("0005"), FAILED))
        # Failing card adapters (see adapters_text): a closed port (JP), a
        # provider answering 500 (DE), a provider slower than the timeout
        # (GB: PENDING), a closed primary with a healthy backup (BR).
        for _ in range(8):
            add(Job("card: provider down", self.card(region="JP", currency="JPY"), FAILED))
            add(Job("card: provider 500", self.card(region="DE", currency="EUR"), FAILED))
            add(Job("card: failover", self.card(region="BR", currency="BRL"), APPROVED))
        # PENDING, unless a busy machine makes even the TLS connection miss
        # the timeout (a definite failure: FAILED); at least one must be
        # PENDING (asserted with the outcome counts).
        for _ in range(5):
            add(Job("card: provider timeout", self.card(region="GB", currency="GBP"), None))
        secrets.SystemRandom().shuffle(jobs)
        return jobs


# ---------------------------------------------------------------------------
# The tests
# ---------------------------------------------------------------------------

class ScannerSelfTest(unittest.TestCase):
    """The scanner can fail: planted card data is reported, and what it
    excludes is only what it says it excludes."""

    def setUp(self):
        self.pan = luhn_complete("4" + "".join(secrets.choice(string.digits) for _ in range(14)))
        self.other = luhn_complete("5" + "".join(secrets.choice(string.digits) for _ in range(14)))
        now = time.time()
        self.scanner = Scanner([self.pan], CVCS + BAD_CVCS, now - 60, now)

    def kinds(self, data: bytes, text: bool = True) -> collections.Counter:
        return collections.Counter(h.kind for h in self.scanner.scan("synthetic", data, text))

    def test_planted_card_data_is_reported(self):
        line = (b'{"ts":"2026-12-02T06:33:12.326Z","level":"debug","event":"provider_call",'
                b'"body":"card[number]=' + self.pan.encode() + b'&card[cvc]=7391"}\n')
        hits = self.scanner.scan("synthetic log", line, text=True)
        kinds = collections.Counter(h.kind for h in hits)
        self.assertEqual(kinds["PAN"], 1, hits)
        self.assertEqual(kinds["CVC"], 1, hits)
        self.assertIn("synthetic log @", str(hits[0]))
        self.assertIn(self.pan, str(hits[0]))
        # A PAN the test never sent, as a JSON value: the Luhn heuristic.
        self.assertEqual(self.kinds(b'{"pan":"' + self.other.encode() + b'"}')["Luhn-valid run"],
                         1)
        # A CVC as a JSON value in a binary source (a ledger page).
        self.assertEqual(self.kinds(b'\x00\x01{"cvc":"9046"}\x07', text=False)["CVC (JSON value)"],
                         1)
        # The bad-length CVCs too.
        self.assertEqual(self.kinds(b"cvc=73915 ")["CVC"], 1)
        # Inside a Redis blob of parts: named by the part.
        hits = self.scanner.scan_parts("redis", [("key a", b"x"), ("key b", self.pan.encode())],
                                       text=True)
        self.assertEqual([h.source for h in hits], ["redis key b"])

    def test_exclusions_are_narrow(self):
        digest_with_run = ("ab" + self.other + "c" * 46).encode()       # 64 hex characters
        self.assertEqual(len(digest_with_run), 64)
        self.assertEqual(sum(self.kinds(b'"card_fingerprint":"' + digest_with_run + b'"').values()),
                         0)
        # The same digits glued to a short hex string, or delimited by
        # non-hex characters inside a long one, are still reported.
        self.assertEqual(self.kinds(b'"' + b"ab" + self.other.encode() + b'"')["Luhn-valid run"],
                         1)
        long_token = ("ab" + "c" * 20 + "-" + self.other + "-" + "d" * 20).encode()
        self.assertEqual(self.kinds(long_token)["Luhn-valid run"], 1)
        # Timestamps of these days (when Luhn-valid) are not card numbers...
        now_ms = int(time.time() * 1000)
        ts = next(str(now_ms + d) for d in range(20) if luhn_valid(str(now_ms + d)))
        self.assertEqual(self.kinds(b'"flagged_at":"' + ts.encode() + b'"')["Luhn-valid run"], 0)
        # ... but one from 1990 (in microseconds) is.
        old = next(str(631152000000000 + d) for d in range(20)
                   if luhn_valid(str(631152000000000 + d)))
        self.assertEqual(self.kinds(b'"x":"' + old.encode() + b'"')["Luhn-valid run"], 1)
        # The system's random ids are not card numbers; the same digits after
        # another prefix are.
        digits = next(str(1234567890123 + d) for d in range(20)
                      if luhn_valid(str(1234567890123 + d)))
        rid = ("rch_" + digits + "abcdeffedca").encode()
        self.assertEqual(len(rid), 28)
        self.assertEqual(self.kinds(rid)["Luhn-valid run"], 0)
        self.assertEqual(self.kinds(b"ref_" + digits.encode() + b"abcdeffedca")["Luhn-valid run"],
                         1)
        # A CVC inside a longer number or word is not standalone.
        self.assertEqual(self.kinds(b"id=a7391 n=73910 port=57391")["CVC"], 0)
        # Only Redis's own pid is blanked in its log, not the same digits elsewhere.
        log = (b"7391:C 02 Dec 2026 06:39:32.523 # Redis version=7.0.15, pid=7391, just started\n"
               b"7391:M 02 Dec 2026 06:39:32.526 # leaked 7391\n")
        self.assertEqual(self.kinds(log)["CVC"], 4)
        hits = self.scanner.scan("redis.log", blank_redis_pid(log, 7391), text=True)
        self.assertEqual([h.offset for h in hits], [len(log) - 5], hits)


class CardDataTest(unittest.TestCase):
    stack: Stack

    @classmethod
    def setUpClass(cls):
        cls.t0 = time.time()
        cls.stack = Stack("card-data", paypal=True, ewallet=True, recovery_interval="500ms")
        cls.stack.log_level = "debug"
        cls.stack.fraud_rules_text = RULES
        try:
            cls.stack.start()
            # Two more "providers": one slower than its instance's timeout
            # (the charge is taken after the gateway gave up: PENDING, then
            # reconciled), one that answers 500 (nothing charged: FAILED).
            cls.slow = cls.stack.start_extra_sandbox("slowpsp")
            cls.slow.config(card={"latency_ms": 2500, "timeout_mode": "charge"})
            cls.failing = cls.stack.start_extra_sandbox("failpsp")
            cls.failing.config(card={"error_rate": 1.0})
            cls.stack.adapters_text = cls.adapters_text()
            cls.stack.write_configs()
            cls.stack.close_channel()
            cls.stack.stop_gateway()
            cls.stack.start_gateway()
        except BaseException:
            cls.stack.stop()
            raise

    @classmethod
    def tearDownClass(cls):
        cls.stack.stop()

    @classmethod
    def adapters_text(cls) -> str:
        s = cls.stack
        closed = free_port()  # bound and released: nothing listens there

        def card(port: int, **extra) -> dict:
            return {"type": "card", "endpoint": f"https://127.0.0.1:{port}",
                    "ca_file": str(s.certs / "ca.pem"), "secret_file": str(s.card_secret_file),
                    "timeout": "5s", **extra}

        # The PayPal and GCash instances take the sandbox's 503 instruments
        # among their approvals: their breakers must not open (in shuffled
        # order the first five calls could be mostly 503s).
        common = {"endpoint": f"https://127.0.0.1:{s.sandbox_port}",
                  "ca_file": str(s.certs / "ca.pem"), "timeout": "5s",
                  "circuit_breaker": {"window": 20, "min_calls": 20,
                                      "failure_rate_percent": 100, "open_for": "1s"}}
        instances = {
            "card-primary": card(s.sandbox_port, pool_size=64),
            "card-closed": card(closed, timeout="2s"),
            # Never opens its breaker: every GB recharge reaches the slow provider.
            "card-slow": card(cls.slow.port, timeout="1s",
                              circuit_breaker={"window": 20, "min_calls": 20,
                                               "failure_rate_percent": 100, "open_for": "1s"}),
            "card-500": card(cls.failing.port),
            "paypal-main": {"type": "paypal", **common,
                            "credentials_file": str(s.paypal_credentials_file)},
            "gcash-ph": {"type": "ewallet", "provider": "gcash", "regions": ["PH"],
                         "currencies": ["PHP"], **common,
                         "secret_file": str(s.ewallet_secret_file)},
        }
        routes = [
            {"method": "card", "regions": ["JP"], "instances": ["card-closed"]},
            {"method": "card", "regions": ["DE"], "instances": ["card-500"]},
            {"method": "card", "regions": ["GB"], "instances": ["card-slow"]},
            {"method": "card", "regions": ["BR"], "instances": ["card-closed", "card-primary"]},
            {"method": "card", "regions": ["*"], "currencies": ["*"],
             "instances": ["card-primary"]},
            {"method": "paypal", "instances": ["paypal-main"]},
            {"method": "ewallet", "providers": ["gcash"], "instances": ["gcash-ph"]},
        ]
        return "# Written by tests/e2e/test_card_data.py\n" + yaml.safe_dump(
            {"instances": instances, "routes": routes}, sort_keys=False)

    # ---------------------------------------------------------------- helpers

    def setUp(self):
        self.t_start = time.monotonic()
        self.answers: list[tuple[str, bytes]] = []   # every answer the clients got
        self.errors: list[tuple[str, bytes]] = []    # every error message

    def tearDown(self):
        sys.stderr.write(f"[{self._testMethodName}] {time.monotonic() - self.t_start:.1f}s\n")

    def phase(self, name: str):
        sys.stderr.write(f"  [{time.monotonic() - self.t_start:5.1f}s] {name}\n")

    def keep(self, what: str, message) -> None:
        self.answers.append((what, message.SerializeToString()))

    def record(self, job: Job) -> Result:
        try:
            resp = self.stack.stub().RecordRecharge(job.request, timeout=RPC_TIMEOUT_S)
        except grpc.RpcError as e:
            self.errors.append((job.label, (e.details() or "").encode()))
            return Result(job, code=e.code(), details=e.details() or "")
        self.keep(job.label, resp)
        return Result(job, response=resp)

    def run_all(self, jobs: list[Job]) -> list[Result]:
        with concurrent.futures.ThreadPoolExecutor(THREADS) as pool:
            return list(pool.map(self.record, jobs))

    def check_expected(self, results: list[Result]) -> None:
        wrong = []
        for r in results:
            exp = r.job.expect
            if exp is None:
                continue
            if isinstance(exp, grpc.StatusCode):
                if r.code != exp:
                    wrong.append(f"{r.job.label}: expected {exp}, got "
                                 f"{r.code or status_name(r.response.status)} {r.details!r}")
            elif r.code is not None:
                wrong.append(f"{r.job.label}: expected {status_name(exp)}, got {r.code} "
                             f"{r.details!r}")
            elif r.response.status != exp:
                wrong.append(f"{r.job.label}: expected {status_name(exp)}, got "
                             f"{status_name(r.response.status)} (payment {r.response.payment})")
        self.assertEqual(wrong, [], "\n".join(wrong[:20]))

    def expect_error(self, code, what: str, fn, request) -> None:
        with self.assertRaises(grpc.RpcError, msg=what) as cm:
            fn(request, timeout=RPC_TIMEOUT_S)
        self.errors.append((what, (cm.exception.details() or "").encode()))
        self.assertEqual(cm.exception.code(), code, f"{what}: {cm.exception.details()!r}")

    def admin(self) -> "pb_grpc.FraudAdminStub":
        return pb_grpc.FraudAdminStub(self.stack.channel())

    def get(self, recharge_id: str):
        rec = self.stack.stub().GetRecharge(pb.GetRechargeRequest(recharge_id=recharge_id),
                                            timeout=RPC_TIMEOUT_S)
        self.keep("GetRecharge", rec)
        return rec

    # ------------------------------------------------------------------ test

    def test_no_card_data_anywhere(self):
        stack = self.stack
        traffic = Traffic()
        outcomes: collections.Counter = collections.Counter()

        def count(results: list[Result]) -> None:
            for r in results:
                if r.code is not None:
                    outcomes[r.code.name] += 1
                else:
                    outcomes[status_name(r.response.status)] += 1
                    if r.response.replayed:
                        outcomes["replayed"] += 1

        # 1. The bulk of the traffic, concurrently.
        jobs = traffic.phase1()
        self.phase(f"phase 1: {len(jobs)} recharges on {THREADS} threads")
        results = self.run_all(jobs)
        self.check_expected(results)
        count(results)
        by_label = collections.defaultdict(list)
        for r in results:
            by_label[r.job.label].append(r)
        shared = collections.Counter(status_name(r.response.status)
                                     for r in by_label["shared card"])
        # (distinct counts are exact.)
        self.assertGreaterEqual(shared["RECHARGE_STATUS_APPROVED"], 3, shared)
        self.assertGreaterEqual(shared["RECHARGE_STATUS_BLOCKED"], 2, shared)
        flagged = collections.Counter(status_name(r.response.status)
                                      for r in by_label["flagged seller"])
        self.assertGreaterEqual(flagged["RECHARGE_STATUS_PENDING_REVIEW"], 5, flagged)
        for r in by_label["card: failover"]:
            self.assertEqual(r.response.payment.adapter, "card-primary")
        timeouts = collections.Counter(status_name(r.response.status)
                                       for r in by_label["card: provider timeout"])
        self.assertGreater(timeouts["RECHARGE_STATUS_PENDING"], 0, timeouts)
        self.assertLessEqual(set(timeouts), {"RECHARGE_STATUS_PENDING", "RECHARGE_STATUS_FAILED"},
                             timeouts)
        # The slow provider is fast again: the reconciler can settle PENDING.
        self.slow.config(card={"latency_ms": 0})

        # 2. Replays (every stored status) and a key reused for another card.
        self.phase("phase 2: replays")
        replayable = [r for r in results if r.code is None and r.response.status != PENDING]
        picks, per_status = [], collections.Counter()
        for r in replayable:
            if per_status[r.response.status] < 5:
                per_status[r.response.status] += 1
                picks.append(r)
        replays = self.run_all([Job("replay", r.job.request, r.response.status) for r in picks])
        self.check_expected(replays)
        self.assertTrue(all(r.response.replayed for r in replays), "a replay was not replayed")
        count(replays)
        conflicts = []
        for r in [r for r in results if r.job.label == "approved card"][:5]:
            req = pb.RecordRechargeRequest()
            req.CopyFrom(r.job.request)
            req.card.number = new_pan()
            traffic.pans.add(req.card.number)
            conflicts.append(Job("key reused", req, grpc.StatusCode.ALREADY_EXISTS))
        conflicts = self.run_all(conflicts)
        self.check_expected(conflicts)
        count(conflicts)

        # 3. FraudAdmin.
        self.phase("phase 3: FraudAdmin")
        admin = self.admin()
        reviews, token = [], ""
        for _ in range(100):
            page = admin.ListReviews(pb.ListReviewsRequest(page_size=10, page_token=token),
                                     timeout=RPC_TIMEOUT_S)
            self.keep("ListReviews", page)
            reviews.extend(page.recharges)
            token = page.next_page_token
            if not token:
                break
        held = [r for r in results if r.code is None and r.response.status == PENDING_REVIEW]
        self.assertEqual({r.recharge_id for r in reviews},
                         {r.response.recharge_id for r in held}, "the review queue")
        card_review = next(r for r in held if r.job.request.HasField("card"))
        paypal_review = next(r for r in held if r.job.request.HasField("paypal"))
        rejected = admin.ResolveReview(pb.ResolveReviewRequest(
            recharge_id=card_review.response.recharge_id, approve=False,
            note="e2e card-data: rejected, buyer pays again"), timeout=RPC_TIMEOUT_S)
        self.keep("ResolveReview", rejected)
        approved = admin.ResolveReview(pb.ResolveReviewRequest(
            recharge_id=paypal_review.response.recharge_id, approve=True,
            note="e2e card-data: approved"), timeout=RPC_TIMEOUT_S)
        self.keep("ResolveReview", approved)
        self.assertEqual(status_name(approved.status), status_name(APPROVED))
        # A card review is a hold: approving captures it (no card data
        # needed); approving again is an error message, scanned like the others.
        other_card_review = [r for r in held if r.job.request.HasField("card")][1]
        captured = admin.ResolveReview(pb.ResolveReviewRequest(
            recharge_id=other_card_review.response.recharge_id, approve=True,
            note="e2e card-data: approve a card review"), timeout=RPC_TIMEOUT_S)
        self.keep("ResolveReview", captured)
        self.assertEqual(status_name(captured.status), status_name(APPROVED))
        self.expect_error(grpc.StatusCode.FAILED_PRECONDITION, "ResolveReview approve again (card)",
                          admin.ResolveReview, pb.ResolveReviewRequest(
                              recharge_id=other_card_review.response.recharge_id, approve=True,
                              note="e2e card-data: approve a card review again"))
        self.expect_error(grpc.StatusCode.NOT_FOUND, "GetRecharge unknown",
                          stack.stub().GetRecharge,
                          pb.GetRechargeRequest(recharge_id="rch_" + "f" * 24))
        self.keep("ClearSellerFlag", admin.ClearSellerFlag(pb.ClearSellerFlagRequest(
            seller_id=SELLER_HONEST, note="e2e card-data: not flagged"), timeout=RPC_TIMEOUT_S))
        victim = next(r for r in by_label["approved card"] if not r.job.request.seller_id)
        cb = admin.ReportChargeback(pb.ReportChargebackRequest(
            recharge_id=victim.response.recharge_id, reason="fraudulent"), timeout=RPC_TIMEOUT_S)
        self.keep("ReportChargeback", cb)
        self.assertIn("card_fingerprint", list(cb.blocked))
        # The charged-back card (new account, new device) and the charged-back
        # device (new card) are blocked by the block lists.
        again = self.run_all([
            Job("block-listed card", traffic.card(victim.job.request.card.number), BLOCKED),
            Job("block-listed device",
                traffic.card(device=victim.job.request.client.device_id), BLOCKED)])
        self.check_expected(again)
        count(again)
        risk = admin.GetSellerRisk(pb.GetSellerRiskRequest(seller_id=SELLER_FLAG),
                                   timeout=RPC_TIMEOUT_S)
        self.keep("GetSellerRisk", risk)
        self.assertTrue(risk.flagged, risk)
        flagged_list = admin.ListFlaggedSellers(pb.ListFlaggedSellersRequest(),
                                                timeout=RPC_TIMEOUT_S)
        self.keep("ListFlaggedSellers", flagged_list)
        self.assertIn(SELLER_FLAG, [f.seller_id for f in flagged_list.sellers])
        self.keep("GetRuleStats", admin.GetRuleStats(pb.GetRuleStatsRequest(),
                                                     timeout=RPC_TIMEOUT_S))
        self.keep("ListAuditEvents", admin.ListAuditEvents(
            pb.ListAuditEventsRequest(page_size=50), timeout=RPC_TIMEOUT_S))
        # The stored recharges as clients read them (masks, not numbers).
        sample = [r for r in results if r.code is None][::6]
        for r in sample:
            rec = self.get(r.response.recharge_id)
            if rec.card_masked:
                pan = r.job.request.card.number
                self.assertEqual(rec.card_masked,
                                 pan[:6] + "*" * (len(pan) - 10) + pan[-4:])
        for r in sample[:10]:
            self.keep("ListRecharges", stack.stub().ListRecharges(
                pb.ListRechargesRequest(user_id=r.job.request.user_id), timeout=RPC_TIMEOUT_S))

        # 4. The PENDING ones are reconciled through the provider's lookup.
        self.phase("phase 4: reconcile PENDING")
        pending = [r.response.recharge_id for r in results
                   if r.code is None and r.response.status == PENDING]
        wait_until(lambda: all(self.get(i).status != PENDING for i in pending), 20,
                   "the PENDING recharges to be reconciled", interval=0.2)

        # 5. Every kind of outcome happened, else a clean scan proves nothing.
        total = sum(outcomes[k] for k in outcomes if k != "replayed")
        sys.stderr.write(f"  RecordRecharge calls: {total}; outcomes: {dict(outcomes)}\n")
        for kind in ("RECHARGE_STATUS_APPROVED", "RECHARGE_STATUS_DECLINED",
                     "RECHARGE_STATUS_BLOCKED", "RECHARGE_STATUS_PENDING_REVIEW",
                     "RECHARGE_STATUS_FAILED", "RECHARGE_STATUS_PENDING", "INVALID_ARGUMENT",
                     "ALREADY_EXISTS", "replayed"):
            self.assertGreater(outcomes[kind], 0, f"no {kind} in {dict(outcomes)}")
        self.assertGreaterEqual(total, 250)

        # 6. Stop the gateway cleanly (the ledger's WAL complete); Redis stays up.
        self.phase("phase 5: stop the gateway")
        stack.close_channel()
        rc = stack.stop_gateway()
        self.assertEqual(rc, 0, f"gateway exit status {rc}:\n{stack.gateway_log()[-3000:]}")
        t1 = time.time()

        # 7. The scan.
        self.phase("phase 6: scan")
        scanner = Scanner(traffic.pans, traffic.cvcs | set(BAD_CVCS), self.t0, t1)
        self.assertEqual(set(traffic.cvcs), set(CVCS) | set(BAD_CVCS))
        # The scanner, as configured for this run, reports planted data.
        some_pan = sorted(traffic.pans)[0]
        planted = scanner.scan("planted", b'{"event":"x","number":"' + some_pan.encode() +
                               b'","cvc":"' + CVCS[0].encode() + b'"}\n', text=True)
        self.assertEqual(sorted(h.kind for h in planted), ["CVC", "PAN"], planted)
        scanner.bytes_scanned = 0

        hits: list[Hit] = []
        sizes: dict[str, int] = {}
        # Every log: the gateway's stdout+stderr and the rest of log/, except
        # the sandbox's own log (and its journal, under sandbox/): the sandbox
        # plays the card provider, which legitimately receives the PAN and CVC
        # (so do the extra sandboxes, whose files live under their own dirs).
        log_dir = stack.tmp / "log"
        sandbox_dirs = {stack.tmp / "sandbox", self.slow.dir, self.failing.dir}
        skip_files = {log_dir / "sandbox.log"}
        ledger_files = {Path(str(stack.ledger_path) + s) for s in ("", "-wal", "-shm", "-journal")}
        gateway_log = stack.gateway_log_path.read_bytes()
        for path in sorted(log_dir.iterdir()):
            if path.is_file() and path not in skip_files:
                data = path.read_bytes()
                if path.name == "redis.log":
                    data = blank_redis_pid(data, stack.redis.pid)
                sizes[f"log/{path.name}"] = len(data)
                hits += scanner.scan(f"log/{path.name}", data, text=True)
        # Any other file in the stack's directory (the gateway's working
        # directory: a stray dump or second log would land here), except
        # the ledger (below), certificates, secrets and the providers' files.
        for path in sorted(stack.tmp.rglob("*")):
            if (not path.is_file() or path.parent == log_dir or path in ledger_files or
                    any(d in path.parents for d in sandbox_dirs) or
                    path.parts[len(stack.tmp.parts)] in ("certs", "secrets")):
                continue
            rel = str(path.relative_to(stack.tmp))
            data = path.read_bytes()
            sizes[rel] = len(data)
            hits += scanner.scan(rel, data, text=True)
        # The SQLite ledger: database, WAL, shared memory.
        ledger = stack.ledger_bytes()
        sizes["ledger"] = len(ledger)
        hits += scanner.scan("ledger", ledger, text=False)
        # Every Redis key (its name) and value (DUMP: strings, hashes, sets,
        # sorted sets and HyperLogLogs alike).
        keys, cursor = [], "0"
        for _ in range(100000):
            cursor, batch = stack.redis_command("SCAN", cursor, "COUNT", "1000")
            keys.extend(batch)
            cursor = cursor.decode() if isinstance(cursor, bytes) else str(cursor)
            if cursor == "0":
                break
        keys = sorted(set(keys))
        dumps = []
        for k in keys:
            value = stack.redis_command("DUMP", k)
            if value is not None:  # expired between SCAN and DUMP
                dumps.append((f"value of {k!r}", value))
        sizes["redis keys"] = sum(len(k) for k in keys)
        sizes["redis values"] = sum(len(v) for _, v in dumps)
        hits += scanner.scan_parts("redis", [(f"key {k!r}", k) for k in keys], text=True)
        hits += scanner.scan_parts("redis", dumps, text=False)
        # What the clients got: every answer (serialized) and error message.
        hits += scanner.scan_parts("gRPC answer", self.answers, text=False)
        hits += scanner.scan_parts("gRPC error", self.errors, text=True)
        sizes["gRPC answers"] = sum(len(a) for _, a in self.answers)
        sizes["gRPC errors"] = sum(len(e) for _, e in self.errors)
        sys.stderr.write(f"  scanned {scanner.bytes_scanned} bytes: {sizes}; {len(keys)} Redis "
                         f"keys; {len(traffic.pans)} PANs, {len(traffic.cvcs)} CVCs; excluded "
                         f"runs: {dict(scanner.excluded)}\n")

        # The sources hold what they should (else the scan looked at nothing).
        log_text = gateway_log.decode(errors="replace")
        for event in ("recharge_begin", "recharge_decided", "recharge_invalid", "provider_call",
                      "adapter_failover", "admin_action"):
            self.assertIn(f'"event":"{event}"', log_text, f"no {event} line in the gateway log")
        masked = victim.job.request.card.number
        masked = (masked[:6] + "*" * (len(masked) - 10) + masked[-4:]).encode()
        self.assertIn(masked, ledger, "the ledger does not hold the card mask")
        self.assertIn(masked, gateway_log, "the debug lines do not hold the card mask")
        self.assertIn(victim.response.recharge_id.encode(), ledger)
        self.assertGreater(len(keys), 100, "too few Redis keys")
        self.assertTrue(any(re.search(rb"[0-9a-f]{64}", k) for k in keys),
                        "no card fingerprint in the Redis keys")

        report = "\n".join(str(h) for h in hits[:200])
        self.assertEqual(len(hits), 0, f"{len(hits)} card-data hits"
                         f"{' (the first 200)' if len(hits) > 200 else ''}:\n{report}")
        self.phase("done")


if __name__ == "__main__":
    unittest.main()
