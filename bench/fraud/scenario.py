#!/usr/bin/python3
"""Labeled fraud scenario benchmark (issue 8).

Generates a seeded, randomised, LABELED mix of recharge traffic (honest
direct buyers, honest third-party resellers, an honest reseller having a bad
day, families sharing a device, fast reseller rings, spread-out fraud
operations over several seller ids, a ring that ages its accounts first, card
testers, card farms), sends it to a running gateway interleaved in time order,
reads the end state through FraudAdmin, and prints the measures of issue 8 per
actor and in total, with the goals and PASS/FAIL.

    ./scripts/run.sh &                                  # the stack, in another shell
    /usr/bin/python3 bench/fraud/scenario.py            # seed 1
    /usr/bin/python3 bench/fraud/scenario.py --seeds 1,2,3 --json-out /tmp/fraud.json
    /usr/bin/python3 bench/fraud/scenario.py --seed 7 --scale 0.25 --check

See bench/fraud/README.md for the actors, their parameters and the measures.
Exit status: 0, unless --check is given and a goal FAILs (1), or the gateway
cannot be reached / the tokens are refused (2).
"""
import argparse
import datetime
import json
import os
import random
import sys
import threading
import time
from collections import Counter, defaultdict

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.environ.get("RECHARGE_PY_OUT", os.path.join(ROOT, "build", "python")))

try:
    import grpc  # noqa: E402
    import yaml  # noqa: E402
    from recharge.v1 import recharge_pb2 as pb  # noqa: E402
    from recharge.v1 import recharge_pb2_grpc as rpc  # noqa: E402
except ImportError as e:  # pragma: no cover - environment problem
    sys.exit(f"scenario.py: {e}: needs Debian's python3-grpcio and python3-yaml, and the Python "
             f"stubs in build/python (./scripts/run.sh generates them)")

HOUR = 3600.0                       # the virtual timeline of one run, in virtual seconds
DECLINE_PANS = ("4000000000000002", "4000000000009995")   # the sandbox's only declining cards
RESERVED_PANS = set(DECLINE_PANS) | {"4242424242424242"}

GOALS = [
    # key, text, comparison, threshold, how the threshold is shown
    ("honest_resellers_flagged", "honest resellers flagged", "<=", 0, "<= 0"),
    ("honest_valid_stopped_share", "honest valid recharges stopped (review/block)", "<=", 0.001, "<= 0.1%"),
    ("fraud_sellers_flagged_within_15_share", "fraud seller ids flagged, each within 15 of its recharges",
     ">=", 0.95, ">= 95%"),
    ("fraud_not_approved_share", "all fraud recharges not approved", ">=", 0.80, ">= 80%"),
    ("card_testing_not_approved_share", "card-testing recharges not approved", ">=", 0.90, ">= 90%"),
    ("rpc_errors", "RPC errors (not OK)", "<=", 0, "= 0"),
]
FLAG_WITHIN = 15


# --------------------------------------------------------------------------------------------
# Labeled requests


class Req:
    """One labeled recharge of the scenario, and (after the run) its outcome."""
    __slots__ = ("t", "order", "actor", "instance", "stream", "label", "card_testing", "user_id",
                 "seller_id", "package_id", "price", "pan", "exp_month", "exp_year", "cvc", "ip",
                 "device_id", "expect_decline", "key", "seller_seq",
                 # outcome
                 "status", "decision", "hits", "seller_flagged", "degraded", "decline_code",
                 "error", "latency_ms", "_prev", "_done")

    def __init__(self, **kw):
        for name in self.__slots__:
            setattr(self, name, None)
        for k, v in kw.items():
            setattr(self, k, v)

    @property
    def honest(self):
        return self.label == "honest"

    def sent_ok(self):
        return self.error is None and self.status is not None

    def stopped(self):
        return self.status in ("BLOCKED", "PENDING_REVIEW")

    def deciding_rule(self):
        """The first enforcing hit whose action is the decision (the rule that stopped it)."""
        want = {"BLOCKED": "FRAUD_ACTION_BLOCK", "PENDING_REVIEW": "FRAUD_ACTION_REVIEW"}.get(self.status)
        for rule_id, action, shadow in self.hits or ():
            if not shadow and action == want:
                return rule_id
        return "(none reported)" if want else None


class Ids:
    """Run-unique identities: users, sellers, devices, IPs, PANs. Seeded by (seed, run id), so
    the same seed gives the same traffic shape with fresh ids on every run (a long-lived Redis
    keeps counters for 24 h and more)."""

    # (first address, number of addresses, weight): private-looking and documentation ranges.
    # Strings only: nothing is ever sent to them. All actors draw from the same ranges, so an
    # address says nothing about the label.
    RANGES = [((10, 0, 0, 0), 1 << 24, 6), ((100, 64, 0, 0), 1 << 22, 2), ((172, 16, 0, 0), 1 << 20, 2),
              ((198, 18, 0, 0), 1 << 17, 1)]
    # No small ranges: addresses recur across runs only by chance in these
    # 21+ million, so one run's card testers never share an address with the
    # honest buyers of the next run inside a rule's 10-minute window.

    def __init__(self, seed, run_id):
        self.prefix = f"s{seed}-{run_id}"
        self.rng = random.Random(f"ids:{seed}:{run_id}")
        self.used = set()
        self.n_keys = 0
        self.seller_numbers = list(range(1, 1000))
        self.rng.shuffle(self.seller_numbers)

    def _fresh(self, make):
        while True:
            v = make()
            if v not in self.used:
                self.used.add(v)
                return v

    def user(self):
        return self._fresh(lambda: f"u-{self.prefix}-{self.rng.getrandbits(40):010x}")

    def seller(self):
        return self._fresh(lambda: f"seller-{self.prefix}-{self.seller_numbers.pop():03d}")

    def device(self):
        def make():
            h = f"{self.rng.getrandbits(128):032x}"
            return f"{h[:8]}-{h[8:12]}-4{h[13:16]}-{h[16:20]}-{h[20:]}"
        return self._fresh(make)

    def ip(self):
        def make():
            base, size, _ = self.rng.choices(self.RANGES, weights=[r[2] for r in self.RANGES])[0]
            n = (base[0] << 24 | base[1] << 16 | base[2] << 8 | base[3]) + self.rng.randrange(size)
            if n & 0xFF in (0, 255):
                n = (n & ~0xFF) | self.rng.randrange(1, 255)
            return ".".join(str(n >> s & 0xFF) for s in (24, 16, 8, 0))
        return self._fresh(make)

    def ip_block(self, count):
        """`count` addresses of one /24 (a card farm's block)."""
        a, b, c = 10, self.rng.randrange(256), self.rng.randrange(256)
        hosts = self.rng.sample(range(2, 254), count)
        block = [f"{a}.{b}.{c}.{h}" for h in hosts]
        self.used.update(block)
        return block

    def pan(self, prefix=None, avoid=None):
        """A fresh Luhn-valid number: a 16-digit Visa or Mastercard the sandbox approves, or a
        19-digit one starting with `prefix` (--decline-prefix; 19 digits so that the declining
        range holds 10^8 numbers and runs on a long-lived Redis do not reuse each other's)."""
        def make():
            head = prefix or self.rng.choice(["4", "4", "4", "51", "52", "53", "54", "55"])
            length = 19 if prefix else 16
            body = head + "".join(str(self.rng.randrange(10)) for _ in range(length - 1 - len(head)))
            return body + luhn_digit(body)
        while True:
            p = self._fresh(make)
            if p not in RESERVED_PANS and not (avoid and p.startswith(avoid)):
                return p

    def key(self):
        self.n_keys += 1
        return f"fs-{self.prefix}-{self.n_keys:06d}"


def luhn_digit(body):
    total = 0
    for i, ch in enumerate(reversed(body)):
        d = int(ch)
        if i % 2 == 0:
            d *= 2
            if d > 9:
                d -= 9
        total += d
    return str((10 - total % 10) % 10)


def luhn_valid(number):
    return luhn_digit(number[:-1]) == number[-1]


class Card:
    """An instrument as an actor holds it: the PAN, its expiry, and whether the sandbox declines it."""

    def __init__(self, ctx, decline=False):
        self.decline = decline
        if decline:
            self.pan = ctx.ids.pan(prefix=ctx.decline_prefix) if ctx.decline_prefix else ctx.rng.choice(DECLINE_PANS)
        else:
            self.pan = ctx.ids.pan(avoid=ctx.decline_prefix)
        self.exp_month = ctx.rng.randint(1, 12)
        self.exp_year = ctx.year + ctx.rng.randint(1, 5)
        self.cvc = f"{ctx.rng.randrange(1000):03d}"


class Ctx:
    """What actors generate from: the structure RNG (seed), the identity source (seed, run id),
    the catalogue's US/USD prices and the scale."""

    def __init__(self, seed, run_id, prices, scale, decline_prefix=None):
        self.seed = seed
        self.decline_prefix = decline_prefix
        self.rng = random.Random(f"scenario:{seed}")
        self.ids = Ids(seed, run_id)
        self.prices = prices
        self.scale = scale
        self.year = datetime.date.today().year
        self.order = 0

    def n(self, count):
        """An instance count times --scale (at least 1)."""
        return max(1, round(count * self.scale))

    def package(self, mix):
        names = list(MIXES[mix])
        return self.rng.choices(names, weights=[MIXES[mix][k] for k in names])[0]

    def req(self, actor, t, *, user, card, ip, device, mix, seller="", stream=None, label,
            card_testing=False):
        pkg = self.package(mix)
        self.order += 1
        return Req(t=max(0.0, min(HOUR, t)), order=self.order, actor=actor.name, instance=actor.instance,
                   stream=stream or actor.instance, label=label, card_testing=card_testing,
                   user_id=user, seller_id=seller, package_id=pkg, price=self.prices[pkg],
                   pan=card.pan, exp_month=card.exp_month, exp_year=card.exp_year, cvc=card.cvc,
                   ip=ip, device_id=device, expect_decline=card.decline, key=self.ids.key())


MIXES = {
    # what a buyer picks: package id -> weight
    "small": {"coins_65": 50, "coins_330": 35, "coins_660": 15},
    "direct": {"coins_65": 40, "coins_330": 30, "coins_660": 17, "coins_1321": 9, "coins_3303": 3,
               "coins_6607": 1},
    "mixed": {"coins_65": 20, "coins_330": 30, "coins_660": 25, "coins_1321": 15, "coins_3303": 7,
              "coins_6607": 3},
    "top": {"coins_1321": 10, "coins_3303": 50, "coins_6607": 40},
    "tester": {"coins_65": 85, "coins_330": 15},
}


# --------------------------------------------------------------------------------------------
# Actors. Each generates labeled requests with virtual times in [0, HOUR]; `sellers` maps the
# seller ids it uses to its label. Parameters are drawn from ctx.rng (the seed).


class Actor:
    name = "?"
    label = "honest"
    card_testing = False

    def __init__(self, ctx, index):
        self.ctx = ctx
        self.rng = ctx.rng
        self.instance = f"{self.name}#{index}"
        self.params = {}
        self.sellers = []
        self.requests = []

    def add(self, t, **kw):
        kw.setdefault("label", self.label)
        kw.setdefault("card_testing", self.card_testing)
        r = self.ctx.req(self, t, **kw)
        self.requests.append(r)
        return r


class HonestDirectBuyers(Actor):
    """Many independent buyers paying directly (no seller): own account, card, device and IP;
    mostly small packages; some buy again later; ~2% of cards declined (half retry with another
    card of theirs)."""
    name = "honest-direct"

    def __init__(self, ctx, index, buyers):
        super().__init__(ctx, index)
        decline = round(self.rng.uniform(0.015, 0.025), 4)
        self.params = {"buyers": buyers, "decline_share": decline, "repeat_share": 0.2}
        for b in range(buyers):
            user, device, ip = ctx.ids.user(), ctx.ids.device(), ctx.ids.ip()
            card = Card(ctx, decline=self.rng.random() < decline)
            stream = f"{self.instance}/{b}"
            t = self.rng.uniform(0, HOUR * 0.9)
            self.add(t, user=user, card=card, ip=ip, device=device, mix="direct", stream=stream)
            if card.decline and self.rng.random() < 0.5:
                card = Card(ctx)
                t += self.rng.uniform(20, 120)
                self.add(t, user=user, card=card, ip=ip, device=device, mix="direct", stream=stream)
            while not card.decline and self.rng.random() < self.params["repeat_share"]:
                t += self.rng.uniform(120, 1500)
                self.add(t, user=user, card=card, ip=ip, device=device, mix="small", stream=stream)


class HonestReseller(Actor):
    """A third-party seller whose buyers each have their own account, card, device and IP;
    mixed packages; a few declines (declined buyers often retry with another own card); some
    buyers buy twice."""
    name = "honest-reseller"
    decline_range = (0.02, 0.05)
    retry_share = 0.5

    def __init__(self, ctx, index):
        super().__init__(ctx, index)
        seller = ctx.ids.seller()
        self.sellers = [seller]
        buyers = self.rng.randint(40, 60)
        decline = round(self.rng.uniform(*self.decline_range), 3)
        start = self.rng.uniform(0, HOUR * 0.1)
        span = self.rng.uniform(HOUR * 0.6, HOUR * 0.9)
        self.params = {"seller_id": seller, "buyers": buyers, "decline_share": decline,
                       "retry_after_decline": self.retry_share, "repeat_share": 0.1,
                       "active_minutes": round(span / 60)}
        for _ in range(buyers):
            user, device, ip = ctx.ids.user(), ctx.ids.device(), ctx.ids.ip()
            card = Card(ctx, decline=self.rng.random() < decline)
            t = start + self.rng.uniform(0, span)
            self.add(t, user=user, card=card, ip=ip, device=device, mix="mixed", seller=seller)
            if card.decline and self.rng.random() < self.retry_share:
                card = Card(ctx)
                t += self.rng.uniform(30, 180)
                self.add(t, user=user, card=card, ip=ip, device=device, mix="mixed", seller=seller)
            if not card.decline and self.rng.random() < 0.1:
                self.add(t + self.rng.uniform(300, 1500), user=user, card=card, ip=ip, device=device,
                         mix="mixed", seller=seller)


class BadDayReseller(HonestReseller):
    """An honest reseller having a bad day: ~25% of its buyers' cards are declined."""
    name = "honest-reseller-bad-day"
    decline_range = (0.22, 0.28)
    retry_share = 0.6


class Family(Actor):
    """A family: 3-4 accounts on one device and one home IP, direct purchases; each account its
    own card, or (sometimes) two accounts sharing one card."""
    name = "family"

    def __init__(self, ctx, index):
        super().__init__(ctx, index)
        device, ip = ctx.ids.device(), ctx.ids.ip()
        accounts = self.rng.randint(3, 4)
        share = self.rng.random() < 0.4
        cards = [Card(ctx, decline=self.rng.random() < 0.02) for _ in range(accounts)]
        if share:
            cards[1] = cards[0]
        self.params = {"accounts": accounts, "two_accounts_share_a_card": share}
        for a in range(accounts):
            user = ctx.ids.user()
            t = self.rng.uniform(0, HOUR * 0.5)
            for _ in range(self.rng.randint(1, 3)):
                self.add(t, user=user, card=cards[a], ip=ip, device=device, mix="small")
                t += self.rng.uniform(300, 1500)


class RingBase(Actor):
    label = "fraud"

    def card_pool(self, size, decline_share):
        declined = round(size * decline_share)
        return [Card(self.ctx, decline=i < declined) for i in range(size)]

    def attempt(self, t, user, pool, ip, device, mix, seller, retries, gap=(5, 40), stream=None):
        """One account's purchase: a card from the pool; after a decline, another card (up to
        `retries` times). Returns the time after the last attempt and the card that went through."""
        tried = set()
        for _ in range(retries + 1):
            card = self.rng.choice([c for c in pool if id(c) not in tried] or pool)
            tried.add(id(card))
            self.add(t, user=user, card=card, ip=ip, device=device, mix=mix, seller=seller, stream=stream)
            t += self.rng.uniform(*gap)
            if not card.decline:
                return t, card
        return t, None


class FastRing(RingBase):
    """A fast reseller ring: one seller id, ~60 new accounts funded from a pool of ~20 stolen
    cards (a share of them declined by the provider), from 3 IPs and a few devices, top-tier
    bundles, within 10-20 minutes."""
    name = "fast-ring"

    def __init__(self, ctx, index):
        super().__init__(ctx, index)
        seller = ctx.ids.seller()
        self.sellers = [seller]
        accounts = self.rng.randint(55, 65)
        pool = self.card_pool(self.rng.randint(16, 24), self.rng.uniform(0.3, 0.5))
        ips = [ctx.ids.ip() for _ in range(3)]
        devices = [ctx.ids.device() for _ in range(self.rng.randint(2, 4))]
        start = self.rng.uniform(0, HOUR * 0.6)
        span = self.rng.uniform(600, 1200)
        self.params = {"seller_id": seller, "accounts": accounts, "cards": len(pool),
                       "declined_cards": sum(c.decline for c in pool), "ips": len(ips),
                       "devices": len(devices), "minutes": round(span / 60), "retries_after_decline": 2}
        for a in range(accounts):
            user = ctx.ids.user()
            t = start + span * a / accounts
            t, card = self.attempt(t, user, pool, self.rng.choice(ips), self.rng.choice(devices), "top",
                                   seller, retries=2)
            if card and self.rng.random() < 0.15:
                self.add(t + self.rng.uniform(30, 300), user=user, card=card, ip=self.rng.choice(ips),
                         device=self.rng.choice(devices), mix="top", seller=seller)


class SpreadOperation(RingBase):
    """One fraud operation spread over several seller ids (default 4 x 12 accounts), sharing one
    pool of cards, devices and IPs across them; each seller id stays under the volume rules;
    spread over the whole hour."""
    name = "spread-op"

    def __init__(self, ctx, index, sellers=4, accounts=12):
        super().__init__(ctx, index)
        self.sellers = [ctx.ids.seller() for _ in range(sellers)]
        pool = self.card_pool(self.rng.randint(12, 18), self.rng.uniform(0.2, 0.4))
        ips = [ctx.ids.ip() for _ in range(self.rng.randint(4, 6))]
        devices = [ctx.ids.device() for _ in range(self.rng.randint(4, 6))]
        self.params = {"seller_ids": self.sellers, "accounts_per_seller": accounts, "cards": len(pool),
                       "declined_cards": sum(c.decline for c in pool), "ips": len(ips),
                       "devices": len(devices), "retry_after_decline": 0.7}
        for seller in self.sellers:
            for _ in range(accounts):
                user = ctx.ids.user()
                t = self.rng.uniform(0, HOUR * 0.95)
                self.attempt(t, user, pool, self.rng.choice(ips), self.rng.choice(devices), "top", seller,
                             retries=1 if self.rng.random() < 0.7 else 0)


class AgingRing(RingBase):
    """A ring that ages its accounts: each account first makes one small direct purchase from
    its own-looking address (a proxy), and much later buys top-tier bundles through the ring's
    seller id from the ring's few addresses and devices. Same stolen card pool throughout."""
    name = "aging-ring"

    def __init__(self, ctx, index):
        super().__init__(ctx, index)
        seller = ctx.ids.seller()
        self.sellers = [seller]
        accounts = self.rng.randint(25, 35)
        pool = self.card_pool(self.rng.randint(10, 14), self.rng.uniform(0.2, 0.3))
        ips = [ctx.ids.ip() for _ in range(3)]
        devices = [ctx.ids.device() for _ in range(self.rng.randint(3, 5))]
        self.params = {"seller_id": seller, "accounts": accounts, "cards": len(pool),
                       "declined_cards": sum(c.decline for c in pool), "ips": len(ips), "devices": len(devices),
                       "aging_phase_minutes": "0-25", "seller_phase_minutes": "35-60"}
        users = [ctx.ids.user() for _ in range(accounts)]
        aged = {}
        for user in users:   # phase 1: one small direct purchase each, own-looking IP
            t = self.rng.uniform(0, HOUR * 0.42)
            t, card = self.attempt(t, user, pool, ctx.ids.ip(), self.rng.choice(devices), "small", "",
                                   retries=1, stream=self.instance)
            aged[user] = card
        for r in self.requests:
            r.actor = self.name + "/aging"
        span = HOUR * 0.4
        for a, user in enumerate(users):   # phase 2: top-tier through the seller
            t = HOUR * 0.58 + span * a / accounts
            card = aged[user]
            if card is not None:
                self.add(t, user=user, card=card, ip=self.rng.choice(ips), device=self.rng.choice(devices),
                         mix="top", seller=seller)
                t += self.rng.uniform(5, 30)
                if self.rng.random() < 0.4:
                    self.attempt(t, user, pool, self.rng.choice(ips), self.rng.choice(devices), "top", seller,
                                 retries=1)
            else:
                self.attempt(t, user, pool, self.rng.choice(ips), self.rng.choice(devices), "top", seller,
                             retries=1)
        for r in self.requests:
            if r.actor == self.name:
                r.actor = self.name + "/seller"


class CardTester(Actor):
    """One account, one device, one IP trying many cards quickly: most declined (the sandbox's
    declining cards), a few distinct cards that go through; small packages; direct."""
    name = "card-tester"
    label = "fraud"
    card_testing = True

    def __init__(self, ctx, index):
        super().__init__(ctx, index)
        user, device, ip = ctx.ids.user(), ctx.ids.device(), ctx.ids.ip()
        tries = self.rng.randint(20, 40)
        good = self.rng.uniform(0.1, 0.25)
        t = self.rng.uniform(0, HOUR * 0.9)
        gap = (self.rng.uniform(2, 5), self.rng.uniform(8, 15))
        self.params = {"tries": tries, "approving_share": round(good, 2),
                       "seconds_between_tries": [round(g, 1) for g in gap]}
        for _ in range(tries):
            card = Card(ctx, decline=self.rng.random() >= good)
            self.add(t, user=user, card=card, ip=ip, device=device, mix="tester")
            t += self.rng.uniform(*gap)


class CardFarm(Actor):
    """A card farm: many fresh accounts each trying one card, from one device (sometimes two)
    and a handful of addresses of one /24; most cards declined; small packages; direct."""
    name = "card-farm"
    label = "fraud"
    card_testing = True

    def __init__(self, ctx, index):
        super().__init__(ctx, index)
        accounts = self.rng.randint(30, 50)
        good = self.rng.uniform(0.1, 0.2)
        devices = [ctx.ids.device() for _ in range(self.rng.randint(1, 2))]
        ips = ctx.ids.ip_block(self.rng.randint(4, 8))
        t = self.rng.uniform(0, HOUR * 0.85)
        self.params = {"accounts": accounts, "approving_share": round(good, 2), "devices": len(devices),
                       "ips_in_one_24": len(ips)}
        for _ in range(accounts):
            card = Card(ctx, decline=self.rng.random() >= good)
            self.add(t, user=ctx.ids.user(), card=card, ip=self.rng.choice(ips), device=self.rng.choice(devices),
                     mix="tester")
            t += self.rng.uniform(2, 8)


def build_scenario(seed, run_id, prices, scale, decline_prefix=None):
    """All actors of one run, and their requests in global (virtual) time order."""
    ctx = Ctx(seed, run_id, prices, scale, decline_prefix)
    actors = [HonestDirectBuyers(ctx, 1, buyers=ctx.n(300))]
    actors += [HonestReseller(ctx, i + 1) for i in range(ctx.n(4))]
    actors += [BadDayReseller(ctx, i + 1) for i in range(ctx.n(1))]
    actors += [Family(ctx, i + 1) for i in range(ctx.n(3))]
    actors += [FastRing(ctx, i + 1) for i in range(ctx.n(4))]
    actors += [SpreadOperation(ctx, i + 1) for i in range(ctx.n(2))]
    actors += [AgingRing(ctx, i + 1) for i in range(ctx.n(1))]
    actors += [CardTester(ctx, i + 1) for i in range(ctx.n(3))]
    actors += [CardFarm(ctx, i + 1) for i in range(ctx.n(2))]
    reqs = sorted((r for a in actors for r in a.requests), key=lambda r: (r.t, r.order))
    seq = Counter()
    for r in reqs:
        assert luhn_valid(r.pan) and r.price is not None
        if r.seller_id:
            seq[r.seller_id] += 1
            r.seller_seq = seq[r.seller_id]
    return actors, reqs


# --------------------------------------------------------------------------------------------
# Sending


class Gateway:
    def __init__(self, target, app_token, ops_token, timeout):
        self.target = target
        self.channel = grpc.insecure_channel(target)
        self.app = rpc.RechargeGatewayStub(self.channel)
        self.admin = rpc.FraudAdminStub(self.channel)
        self.app_auth = [("authorization", f"Bearer {app_token}")]
        self.ops_auth = [("authorization", f"Bearer {ops_token}")]
        self.timeout = timeout

    def check(self):
        try:
            grpc.channel_ready_future(self.channel).result(timeout=5)
        except grpc.FutureTimeoutError:
            fatal(f"cannot connect to the gateway at {self.target}: start the stack first with "
                  f"./scripts/run.sh (plaintext, 127.0.0.1:50051), or pass --target")
        # Both roles, with calls that change nothing: an empty RecordRecharge is INVALID_ARGUMENT
        # (nothing stored, counted or charged) once the caller is known to hold the app role.
        try:
            self.app.RecordRecharge(pb.RecordRechargeRequest(), timeout=5, metadata=self.app_auth)
        except grpc.RpcError as e:
            if e.code() != grpc.StatusCode.INVALID_ARGUMENT:
                fatal(f"the gateway at {self.target} refused the app token: {e.code().name}: {e.details()} "
                      f"(--app-token-file; a TLS gateway is not supported)")
        try:
            self.admin.GetRuleStats(pb.GetRuleStatsRequest(), timeout=5, metadata=self.ops_auth)
        except grpc.RpcError as e:
            fatal(f"the gateway at {self.target} refused the ops token: {e.code().name}: {e.details()} "
                  f"(--ops-token-file)")

    def admin_call(self, method, request):
        for attempt in range(20):    # the ops caller is rate limited (50/s, burst 100)
            try:
                return getattr(self.admin, method)(request, timeout=self.timeout, metadata=self.ops_auth)
            except grpc.RpcError as e:
                if e.code() != grpc.StatusCode.RESOURCE_EXHAUSTED or attempt == 19:
                    raise
                time.sleep(0.1 * (attempt + 1))

    def record(self, r):
        request = pb.RecordRechargeRequest(
            idempotency_key=r.key, user_id=r.user_id, package_id=r.package_id, region="US",
            amount=pb.Money(currency="USD", minor_units=r.price), seller_id=r.seller_id,
            card=pb.Card(number=r.pan, exp_month=r.exp_month, exp_year=r.exp_year, cvc=r.cvc),
            client=pb.ClientContext(ip=r.ip, device_id=r.device_id))
        t0 = time.monotonic()
        try:
            resp = self.app.RecordRecharge(request, timeout=self.timeout, metadata=self.app_auth)
        except grpc.RpcError as e:
            r.error = f"{e.code().name}: {e.details()}"
            return
        finally:
            r.latency_ms = (time.monotonic() - t0) * 1000
        r.status = pb.RechargeStatus.Name(resp.status).replace("RECHARGE_STATUS_", "")
        r.decision = pb.FraudAction.Name(resp.fraud.decision)
        r.hits = [(h.rule_id, pb.FraudAction.Name(h.action), h.shadow) for h in resp.fraud.hits]
        r.seller_flagged = resp.fraud.seller_flagged
        r.degraded = resp.fraud.degraded
        r.decline_code = resp.payment.decline_code


def send_all(gw, reqs, concurrency, pace):
    """Sends in global time order with `concurrency` threads; a request waits for the previous
    request of its stream (per-actor order is kept). `pace` > 0 spreads the virtual hour over
    that many wall seconds; 0 sends as fast as possible."""
    last = {}
    for r in reqs:
        r._prev = last.get(r.stream)
        r._done = threading.Event()
        last[r.stream] = r._done
    lock = threading.Lock()
    state = {"next": 0}
    start = time.monotonic()

    def worker():
        while True:
            with lock:
                i = state["next"]
                if i >= len(reqs):
                    return
                state["next"] = i + 1
            r = reqs[i]
            try:
                if r._prev is not None:
                    r._prev.wait()
                if pace > 0:
                    delay = start + r.t / HOUR * pace - time.monotonic()
                    if delay > 0:
                        time.sleep(delay)
                gw.record(r)
            except Exception as e:  # noqa: BLE001 - record, never hang the stream
                r.error = r.error or f"client: {e!r}"
            finally:
                r._done.set()

    threads = [threading.Thread(target=worker, daemon=True) for _ in range(max(1, concurrency))]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    for r in reqs:
        r._prev = r._done = None
    return time.monotonic() - start


# --------------------------------------------------------------------------------------------
# Measures


def share(num, den):
    return num / den if den else None


def pct(x, digits=1):
    return "-" if x is None else f"{100 * x:.{digits}f}%"


def load_rules(path):
    """The ids of the file's flag_seller rules and of its shadow-mode rules."""
    try:
        with open(path) as f:
            doc = yaml.safe_load(f) or {}
    except OSError as e:
        print(f"scenario.py: warning: cannot read {path} ({e}); first flags are taken from "
              f"fraud.seller_flagged only", file=sys.stderr)
        return set(), set()
    rules = doc.get("rules") or []
    return ({r.get("id") for r in rules if r.get("action") == "flag_seller"},
            {r.get("id") for r in rules if r.get("mode") == "shadow"})


def demoted(stats, shadow_in_file):
    """Rules the gateway runs as shadow that the file enforces: demoted by the blast-radius guard."""
    return sorted(r.rule_id for r in stats.rules if r.shadow and r.rule_id not in shadow_in_file)


def first_flag(reqs, flag_rules):
    """1-based index, among the seller's own recharges, of the first one that came back with the
    seller flagged (or stopped naming an enforcing flag_seller rule), and the flag rule it names."""
    for r in reqs:
        if not r.sent_ok():
            continue
        named = [rid for rid, _, sh in r.hits if not sh and rid in flag_rules]
        if r.seller_flagged or (r.stopped() and named):
            return r.seller_seq, (named[0] if named else None)
    return None, None


def measure(actors, reqs, gw, flag_rules, stats_before, shadow_in_file):
    """Per-actor rows, per-seller rows, the overall measures and the goals of one run."""
    flagged_list = {s.seller_id: s for s in gw.admin_call("ListFlaggedSellers", pb.ListFlaggedSellersRequest()).sellers}
    stats_after = gw.admin_call("GetRuleStats", pb.GetRuleStatsRequest())

    by_seller = defaultdict(list)
    for r in reqs:
        if r.seller_id:
            by_seller[r.seller_id].append(r)
    sellers = {}
    for a in actors:
        for sid in a.sellers:
            risk = gw.admin_call("GetSellerRisk", pb.GetSellerRiskRequest(seller_id=sid))
            rs = by_seller[sid]
            end = risk.flagged or sid in flagged_list
            flag = flagged_list.get(sid) or (risk.flag if risk.flagged else None)
            ff, ff_rule = first_flag(rs, flag_rules)
            sellers[sid] = {
                "actor": a.instance, "label": a.label, "recharges": len(rs),
                "approved": sum(r.status == "APPROVED" for r in rs),
                "flagged_at_end": bool(end), "flag_rule": flag.rule_id if flag else None,
                "any_response_flagged": any(r.seller_flagged for r in rs),
                "first_flagged_at": ff, "first_flag_rule": ff_rule,
                "flagged": bool(end or ff is not None or any(r.seller_flagged for r in rs)),
                "counters": dict(sorted(risk.counters.items())),
            }

    def row(rs, actor_sellers):
        ok = [r for r in rs if r.sent_ok()]
        st = Counter(r.status for r in ok)
        valid = [r for r in ok if r.honest and not r.expect_decline]
        stopped = [r for r in valid if r.stopped()]
        fraud = [r for r in ok if not r.honest]
        ss = [sellers[s] for s in actor_sellers]
        return {
            "recharges": len(rs), "rpc_errors": len(rs) - len(ok),
            "status": dict(st),
            "honest_valid": len(valid), "honest_valid_stopped": len(stopped),
            "honest_valid_stopped_share": share(len(stopped), len(valid)),
            "fraud": len(fraud), "fraud_not_approved": sum(r.status != "APPROVED" for r in fraud),
            "fraud_not_approved_share": share(sum(r.status != "APPROVED" for r in fraud), len(fraud)),
            "sellers": len(ss), "sellers_flagged": sum(s["flagged"] for s in ss),
            "sellers_flagged_within_15": sum(s["first_flagged_at"] is not None
                                             and s["first_flagged_at"] <= FLAG_WITHIN for s in ss),
            "first_flagged_at": [s["first_flagged_at"] for s in ss],
            "stopped_by_rule": dict(Counter(r.deciding_rule() for r in ok if r.stopped()).most_common()),
            "honest_valid_stopped_by_rule": dict(Counter(r.deciding_rule() for r in stopped).most_common()),
            "shadow_hits": dict(Counter(rid for r in ok for rid, _, sh in r.hits if sh).most_common()),
            "expected_decline_not_declined_by_provider": sum(r.expect_decline and r.status == "APPROVED" for r in ok),
            "expected_approve_declined": sum(not r.expect_decline and r.status == "DECLINED" for r in ok),
            "degraded": sum(bool(r.degraded) for r in ok),
        }

    actor_names = []
    for r in reqs:
        if r.actor not in actor_names:
            actor_names.append(r.actor)
    order = ["honest-direct", "honest-reseller", "honest-reseller-bad-day", "family", "fast-ring",
             "spread-op", "aging-ring/aging", "aging-ring/seller", "card-tester", "card-farm"]
    actor_names.sort(key=lambda n: order.index(n) if n in order else len(order))
    per_actor = {}
    for name in actor_names:
        rs = [r for r in reqs if r.actor == name]
        kind = name.split("/")[0]
        sids = [] if name == "aging-ring/aging" else [s for a in actors if a.name == kind for s in a.sellers]
        per_actor[name] = row(rs, sids)
        per_actor[name]["label"] = rs[0].label
        per_actor[name]["card_testing"] = rs[0].card_testing

    total = row(reqs, list(sellers))
    honest_resellers = [s for s in sellers.values() if s["label"] == "honest"]
    fraud_sellers = [s for s in sellers.values() if s["label"] == "fraud"]
    ct = [r for r in reqs if r.card_testing and r.sent_ok()]
    m = {
        "recharges": len(reqs),
        "rpc_errors": total["rpc_errors"],
        "honest_resellers": len(honest_resellers),
        "honest_resellers_flagged": sum(s["flagged"] for s in honest_resellers),
        "honest_valid": total["honest_valid"],
        "honest_valid_stopped": total["honest_valid_stopped"],
        "honest_valid_stopped_share": total["honest_valid_stopped_share"],
        "fraud_sellers": len(fraud_sellers),
        "fraud_sellers_flagged": sum(s["flagged"] for s in fraud_sellers),
        "fraud_sellers_flagged_within_15": sum(s["first_flagged_at"] is not None
                                               and s["first_flagged_at"] <= FLAG_WITHIN for s in fraud_sellers),
        "fraud_sellers_flagged_within_15_share": share(
            sum(s["first_flagged_at"] is not None and s["first_flagged_at"] <= FLAG_WITHIN for s in fraud_sellers),
            len(fraud_sellers)),
        "fraud": total["fraud"], "fraud_not_approved": total["fraud_not_approved"],
        "fraud_not_approved_share": total["fraud_not_approved_share"],
        "card_testing": len(ct), "card_testing_not_approved": sum(r.status != "APPROVED" for r in ct),
        "card_testing_not_approved_share": share(sum(r.status != "APPROVED" for r in ct), len(ct)),
        "rules_version": stats_after.rules_version,
        "demoted_rules": stats_after.demoted_rules,
        "demoted_before_run": demoted(stats_before, shadow_in_file),
        "demoted_after_run": demoted(stats_after, shadow_in_file),
        "degraded_decisions_during_run": stats_after.degraded_decisions - stats_before.degraded_decisions,
    }
    return per_actor, sellers, m


def judge(m):
    out = []
    for key, text, op, limit, shown in GOALS:
        v = m.get(key)
        ok = v is not None and (v <= limit if op == "<=" else v >= limit)
        out.append({"measure": key, "text": text, "value": v, "goal": shown, "pass": bool(ok)})
    return out


def figure(key, m):
    if key == "honest_resellers_flagged":
        return f"{m['honest_resellers_flagged']} of {m['honest_resellers']}"
    if key == "honest_valid_stopped_share":
        return f"{pct(m['honest_valid_stopped_share'], 2)} ({m['honest_valid_stopped']} of {m['honest_valid']})"
    if key == "fraud_sellers_flagged_within_15_share":
        return (f"{m['fraud_sellers_flagged_within_15']} of {m['fraud_sellers']} "
                f"({m['fraud_sellers_flagged']} flagged at all)")
    if key == "fraud_not_approved_share":
        return f"{pct(m['fraud_not_approved_share'])} ({m['fraud_not_approved']} of {m['fraud']})"
    if key == "card_testing_not_approved_share":
        return f"{pct(m['card_testing_not_approved_share'])} ({m['card_testing_not_approved']} of {m['card_testing']})"
    return str(m.get(key))


def print_goals(m, goals, title):
    print(f"  {title}")
    print(f"    {'measure':58} {'value':34} {'goal':9} result")
    for g in goals:
        print(f"    {g['text']:58} {figure(g['measure'], m):34} {g['goal']:9} {'PASS' if g['pass'] else 'FAIL'}")


def ff_text(xs):
    if not xs:
        return ""
    return ",".join("-" if x is None else str(x) for x in xs)


def print_run(run):
    m = run["measures"]
    print(f"\n=== seed {run['seed']} (run {run['run_id']}): {m['recharges']} recharges in "
          f"{run['send_seconds']:.1f} s ({m['recharges'] / max(run['send_seconds'], 1e-9):.0f}/s), "
          f"rules {m['rules_version']}, demoted to shadow: before {m['demoted_before_run'] or 'none'}, "
          f"after {m['demoted_after_run'] or 'none'}, "
          f"degraded decisions {m['degraded_decisions_during_run']}")
    hdr = (f"  {'actor':24} {'label':6} {'n':>5} {'err':>3} {'appr':>5} {'decl':>5} {'block':>5} {'review':>6} "
           f"{'other':>5} | {'valid':>5} {'stopped':>10} | {'not-appr':>13} | {'sellers flagged':>15}  first flag at")
    print(hdr)
    for name, a in run["per_actor"].items():
        st = a["status"]
        other = a["recharges"] - a["rpc_errors"] - sum(st.get(k, 0) for k in ("APPROVED", "DECLINED", "BLOCKED",
                                                                                 "PENDING_REVIEW"))
        honest = a["label"] == "honest"
        stopped = f"{a['honest_valid_stopped']} {pct(a['honest_valid_stopped_share'])}" if honest else ""
        notappr = "" if honest else f"{a['fraud_not_approved']} {pct(a['fraud_not_approved_share'], 0)}"
        sf = f"{a['sellers_flagged']} of {a['sellers']}" if a["sellers"] else ""
        print(f"  {name:24} {a['label']:6} {a['recharges']:5} {a['rpc_errors']:3} {st.get('APPROVED', 0):5} "
              f"{st.get('DECLINED', 0):5} {st.get('BLOCKED', 0):5} {st.get('PENDING_REVIEW', 0):6} {other:5} | "
              f"{a['honest_valid'] if honest else '':>5} {stopped:>10} | {notappr:>13} | {sf:>15}  "
              f"{ff_text(a['first_flagged_at'])}")
    print("  stopped by rule (first enforcing rule with the deciding action):")
    for name, a in run["per_actor"].items():
        if a["stopped_by_rule"]:
            extra = ""
            if a["label"] == "honest" and a["honest_valid_stopped_by_rule"]:
                extra = "   valid ones: " + ", ".join(f"{k} {v}" for k, v in a["honest_valid_stopped_by_rule"].items())
            print(f"    {name:24} " + ", ".join(f"{k} {v}" for k, v in a["stopped_by_rule"].items()) + extra)
    sh = Counter()
    for a in run["per_actor"].values():
        sh.update(a["shadow_hits"])
    if sh:
        print("  shadow hits (all actors): " + ", ".join(f"{k} {v}" for k, v in sh.most_common()))
    print("  sellers:")
    for sid, s in run["sellers"].items():
        how = (f"flagged by {s['flag_rule']}" if s["flag_rule"] else ("flagged" if s["flagged"] else "not flagged"))
        at = (f", first at its recharge {s['first_flagged_at']} ({s['first_flag_rule'] or 'seller_flagged'})"
              if s["first_flagged_at"] else "")
        print(f"    {sid:28} {s['actor']:28} {s['label']:6} {s['recharges']:3} recharges, {s['approved']:3} approved, "
              f"{how}{at}")
    mism = sum(a["expected_decline_not_declined_by_provider"] + a["expected_approve_declined"]
               for a in run["per_actor"].values())
    if mism:
        print(f"  warning: {mism} recharges' provider outcome differs from the label's card "
              f"(the sandbox's test cards are not what this script assumes?)")
    print_goals(m, run["goals"], f"seed {run['seed']} against the goals:")


def aggregate(runs):
    keys = ["recharges", "rpc_errors", "honest_resellers", "honest_resellers_flagged", "honest_valid",
            "honest_valid_stopped", "fraud_sellers", "fraud_sellers_flagged", "fraud_sellers_flagged_within_15",
            "fraud", "fraud_not_approved", "card_testing", "card_testing_not_approved"]
    m = {k: sum(r["measures"][k] for r in runs) for k in keys}
    m["honest_valid_stopped_share"] = share(m["honest_valid_stopped"], m["honest_valid"])
    m["fraud_sellers_flagged_within_15_share"] = share(m["fraud_sellers_flagged_within_15"], m["fraud_sellers"])
    m["fraud_not_approved_share"] = share(m["fraud_not_approved"], m["fraud"])
    m["card_testing_not_approved_share"] = share(m["card_testing_not_approved"], m["card_testing"])
    return m


# --------------------------------------------------------------------------------------------


def fatal(message):
    print(f"scenario.py: {message}", file=sys.stderr)
    sys.exit(2)


def read_token(path):
    try:
        with open(path) as f:
            return f.read().strip()
    except OSError as e:
        fatal(f"cannot read token {path}: {e} (./scripts/run.sh makes var/dev/*.token)")


def load_prices(path):
    with open(path) as f:
        doc = yaml.safe_load(f)
    prices = {k: int(v) for k, v in doc["regions"]["US"]["USD"].items()}
    for mix in MIXES.values():
        missing = set(mix) - set(prices)
        if missing:
            raise SystemExit(f"scenario.py: {path}: no US/USD price for {sorted(missing)}")
    return prices


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--target", default="127.0.0.1:50051", help="gateway address, plaintext (default %(default)s)")
    p.add_argument("--app-token-file", default=os.path.join(ROOT, "var/dev/app.token"))
    p.add_argument("--ops-token-file", default=os.path.join(ROOT, "var/dev/ops.token"))
    p.add_argument("--seed", type=int, default=1, help="the seed (default %(default)s)")
    p.add_argument("--seeds", help="several seeds, e.g. 1,2,3 (each run with fresh ids); overrides --seed")
    p.add_argument("--scale", type=float, default=1.0, help="multiplies the number of actors (default 1)")
    p.add_argument("--concurrency", type=int, default=8, help="sending threads (default %(default)s)")
    p.add_argument("--pace", type=float, default=0.0,
                   help="spread the virtual hour over this many wall seconds (default 0: as fast as possible)")
    p.add_argument("--timeout", type=float, default=10.0, help="per-call deadline, seconds")
    p.add_argument("--rules", default=os.path.join(ROOT, "configs/fraud_rules.yaml"),
                   help="the rule file the gateway runs (to know its flag_seller rules)")
    p.add_argument("--packages", default=os.path.join(ROOT, "configs/packages.yaml"))
    p.add_argument("--decline-prefix", default="4000000000",
                   help="every declining card is a distinct Luhn-valid PAN with this prefix (the sandbox "
                        "declines any number starting 4000000000); empty: use only 4000000000000002 and "
                        "4000000000009995 (then all declined cards of all actors share those two)")
    p.add_argument("--reload-rules", action="store_true",
                   help="FraudAdmin.ReloadRules before each seed (re-reads the rule file; clears blast-radius "
                        "demotions left by earlier runs, so seeds are comparable; audit-logged)")
    p.add_argument("--run-id", help="fixed run id (default: random; ids are unique per run)")
    p.add_argument("--json-out", help="write every figure as JSON to this file")
    p.add_argument("--requests-out", help="write every request and its outcome as JSON lines (no card numbers)")
    p.add_argument("--dry-run", action="store_true", help="generate and describe the mix, send nothing")
    p.add_argument("--check", action="store_true", help="exit 1 if any goal FAILs (any seed or the aggregate)")
    args = p.parse_args(argv)

    seeds = [int(s) for s in args.seeds.split(",") if s.strip()] if args.seeds else [args.seed]
    prices = load_prices(args.packages)
    flag_rules, shadow_in_file = load_rules(args.rules)
    gw = None
    if not args.dry_run:
        gw = Gateway(args.target, read_token(args.app_token_file), read_token(args.ops_token_file), args.timeout)
        gw.check()

    runs, req_log = [], []
    for i, seed in enumerate(seeds):
        run_id = args.run_id if args.run_id and len(seeds) == 1 else (
            f"{args.run_id}{i}" if args.run_id else f"{int(time.time()) % 100000:05d}{os.urandom(2).hex()}")
        actors, reqs = build_scenario(seed, run_id, prices, args.scale, args.decline_prefix)
        print(f"seed {seed}, run {run_id}: {len(reqs)} recharges from {len(actors)} actors", flush=True)
        params = [{"actor": a.instance, "label": a.label, "requests": len(a.requests), **a.params} for a in actors]
        if args.dry_run:
            for q in params:
                print("  " + json.dumps(q))
            continue
        if args.reload_rules:
            v = gw.admin_call("ReloadRules", pb.ReloadRulesRequest()).rules_version
            print(f"  rules reloaded: {v}")
        stats_before = gw.admin_call("GetRuleStats", pb.GetRuleStatsRequest())
        if demoted(stats_before, shadow_in_file):
            print(f"  note: rules demoted to shadow before this run (blast-radius guard, earlier traffic): "
                  f"{', '.join(demoted(stats_before, shadow_in_file))} (--reload-rules starts them afresh)")
        elapsed = send_all(gw, reqs, args.concurrency, args.pace)
        per_actor, sellers, m = measure(actors, reqs, gw, flag_rules, stats_before, shadow_in_file)
        lat = sorted(r.latency_ms for r in reqs if r.latency_ms is not None)
        run = {"seed": seed, "run_id": run_id, "target": args.target, "scale": args.scale,
               "concurrency": args.concurrency, "pace": args.pace, "send_seconds": round(elapsed, 2),
               "latency_ms": {"p50": round(lat[len(lat) // 2], 2), "p99": round(lat[int(len(lat) * 0.99)], 2)}
               if lat else {}, "measures": m, "goals": judge(m), "per_actor": per_actor, "sellers": sellers,
               "actors": params,
               "errors": dict(Counter(r.error.split(":")[0] for r in reqs if r.error).most_common())}
        runs.append(run)
        print_run(run)
        if run["errors"]:
            print(f"  RPC errors: {run['errors']}; first: "
                  f"{next(r.error for r in reqs if r.error)}")
        if args.requests_out:
            for r in reqs:
                req_log.append({"seed": seed, "run_id": run_id, "t": round(r.t, 1), "actor": r.actor,
                                "instance": r.instance, "label": r.label, "card_testing": r.card_testing,
                                "user_id": r.user_id, "seller_id": r.seller_id, "seller_seq": r.seller_seq,
                                "package_id": r.package_id, "card": f"{r.pan[:6]}******{r.pan[-4:]}",
                                "expect_decline": r.expect_decline, "ip": r.ip, "device_id": r.device_id,
                                "status": r.status, "decision": r.decision, "hits": r.hits,
                                "seller_flagged": r.seller_flagged, "decline_code": r.decline_code,
                                "error": r.error})
    if args.dry_run:
        return 0

    result = {"runs": runs}
    failed = any(not g["pass"] for r in runs for g in r["goals"])
    if len(runs) > 1:
        agg = aggregate(runs)
        goals = judge(agg)
        failed = failed or any(not g["pass"] for g in goals)
        result["aggregate"] = {"seeds": seeds, "measures": agg, "goals": goals}
        print(f"\n=== all {len(runs)} seeds ({','.join(map(str, seeds))})")
        print(f"    {'seed':>6}  {'honest resellers flagged':>24} {'honest stopped':>15} "
              f"{'fraud ids <=15':>15} {'fraud not appr':>15} {'card-testing':>13} {'errors':>6}")
        for r in runs:
            m = r["measures"]
            print(f"    {r['seed']:>6}  {m['honest_resellers_flagged']:>17} of {m['honest_resellers']:<4} "
                  f"{pct(m['honest_valid_stopped_share'], 2):>15} "
                  f"{m['fraud_sellers_flagged_within_15']:>8} of {m['fraud_sellers']:<3} "
                  f"{pct(m['fraud_not_approved_share']):>15} {pct(m['card_testing_not_approved_share']):>13} "
                  f"{m['rpc_errors']:>6}")
        print_goals(agg, goals, "aggregate (pooled over the seeds) against the goals:")
    if args.json_out:
        with open(args.json_out, "w") as f:
            json.dump(result, f, indent=1, sort_keys=False)
            f.write("\n")
    if args.requests_out:
        with open(args.requests_out, "w") as f:
            for x in req_log:
                f.write(json.dumps(x) + "\n")
    if args.check and failed:
        print("\nscenario.py: --check: at least one goal FAILs", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
