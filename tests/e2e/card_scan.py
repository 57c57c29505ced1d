"""Looks for card data in bytes: the scanner of the card-data tests (issue 7,
acceptance 5), shared by every e2e test that says no card number reaches a
log, a store or an answer (test_card_data, test_metrics). See Scanner."""

from __future__ import annotations

import bisect
import collections
import dataclasses
import re

def luhn_valid(digits: bytes | str) -> bool:
    total = 0
    for i, ch in enumerate(reversed(digits if isinstance(digits, str) else digits.decode())):
        v = ord(ch) - 48
        if i % 2 == 1:
            v = v * 2 - 9 if v * 2 > 9 else v * 2
        total += v
    return total % 10 == 0


_DIGIT_RUN = re.compile(rb"(?<![0-9])[0-9]{13,19}(?![0-9])")
_HEX = frozenset(b"0123456789abcdefABCDEF")
_HEX_LETTERS = frozenset(b"abcdef")
# The random identifiers the system itself makes, exactly as they are made:
# recharge ids (gateway: "rch_" + 12 random bytes in lowercase hex), the card
# API's charge ids ("ch_" + 24 hex), the e-wallet API's references ("EW-" + 24
# uppercase hex) and PayPal's capture ids ("CAP" + 17 uppercase hex). They are
# shorter than a digest, yet about one in a thousand holds a Luhn-valid run
# of 13+ digits by chance: with some 500 of them per run the Luhn heuristic
# would fail a clean gateway every other run.
_RANDOM_ID = re.compile(rb"rch_[0-9a-f]{24}|ch_[0-9a-f]{24}|EW-[0-9A-F]{24}|CAP[0-9A-F]{17}")
HEX_DIGEST_MIN = 32


@dataclasses.dataclass
class Hit:
    source: str
    offset: int
    kind: str
    what: str
    context: bytes

    def __str__(self) -> str:
        return f"{self.source} @{self.offset}: {self.kind} {self.what}: ...{self.context!r}..."


class Scanner:
    """Looks for card data in bytes.

    (a) every PAN the test sent (as sent, spaces and all), as an exact
        substring anywhere: the strongest check, it has no false positives;
    (b) any run of 13-19 ASCII digits bounded by non-digits that passes the
        Luhn check, i.e. a card number the test did not know about (a PAN
        reformatted, re-encoded, or from elsewhere), except two narrow cases
        that are not card numbers (and except the system's random ids, above):
        - the run sits inside a hexadecimal token of at least 32 characters
          and touches one of its [a-f] letters: it is part of a hash digest
          (the HMAC card fingerprint, 64 hex characters, is in Redis keys, the
          decision log and the debug lines by design; a 32-hex uuid in an
          idempotency key). A PAN delimited by anything but hex letters is
          still found, and a PAN glued to a short hex string too;
        - the run is a Unix timestamp in s, ms, us or ns within the test's
          own time window +- 1 day (flag and expiry times, scores): a
          timestamp of these days, not a card number;
    (c) every CVC used, as a standalone digit run (bounded by characters that
        are not letters or digits) in the text sources (log files, Redis key
        names, error messages), and as a JSON string value ("7391") anywhere.
    """

    def __init__(self, pans, cvcs, t_lo: float, t_hi: float, slack_s: float = 86400):
        self.pans = sorted({p.encode() if isinstance(p, str) else p for p in pans})
        self.cvcs = sorted({c.encode() if isinstance(c, str) else c for c in cvcs})
        self.ts_lo = int(t_lo - slack_s)
        self.ts_hi = int(t_hi + slack_s)
        # No CVCs: card numbers only (an empty alternation would match anywhere).
        self._cvc_standalone = re.compile(
            rb"(?<![0-9A-Za-z])(?:" + b"|".join(re.escape(c) for c in self.cvcs) +
            rb")(?![0-9A-Za-z])") if self.cvcs else None
        self._cvc_json = [b'"' + c + b'"' for c in self.cvcs]
        self.bytes_scanned = 0
        self.excluded = collections.Counter()

    # -- exclusions -------------------------------------------------------

    def _in_hex_digest(self, data: bytes, s: int, e: int) -> bool:
        before = data[s - 1] if s > 0 else None
        after = data[e] if e < len(data) else None
        if before not in _HEX_LETTERS and after not in _HEX_LETTERS:
            return False
        lo, hi = s, e
        while lo > 0 and data[lo - 1] in _HEX:
            lo -= 1
        while hi < len(data) and data[hi] in _HEX:
            hi += 1
        return hi - lo >= HEX_DIGEST_MIN

    def _in_random_id(self, data: bytes, s: int, e: int) -> bool:
        window_start = max(0, s - 32)
        for m in _RANDOM_ID.finditer(data, window_start, min(len(data), e + 32)):
            if m.start() <= s and e <= m.end():
                return True
        return False

    def _is_timestamp(self, run: bytes) -> bool:
        v = int(run)
        return any(self.ts_lo * scale <= v <= self.ts_hi * scale
                   for scale in (1, 1_000, 1_000_000, 1_000_000_000))

    # -- the scan ---------------------------------------------------------

    @staticmethod
    def _context(data: bytes, s: int, e: int) -> bytes:
        return data[max(0, s - 40):e + 40]

    def scan(self, source: str, data: bytes, text: bool, names=None) -> list[Hit]:
        """The hits in `data`. `text`: a text source (standalone CVCs are
        looked for too). `names`: (offsets, labels) naming the part of a
        concatenated blob each offset belongs to (see scan_parts)."""
        self.bytes_scanned += len(data)
        hits: list[Hit] = []

        def where(offset: int) -> str:
            if names is None:
                return source
            offsets, labels = names
            return f"{source} {labels[bisect.bisect_right(offsets, offset) - 1]}"

        for pan in self.pans:
            start = 0
            while True:
                i = data.find(pan, start)
                if i < 0:
                    break
                hits.append(Hit(where(i), i, "PAN", pan.decode(),
                                self._context(data, i, i + len(pan))))
                start = i + 1
        known = set(self.pans)
        for m in _DIGIT_RUN.finditer(data):
            run = m.group()
            if run in known or not luhn_valid(run):
                continue  # a known PAN is reported above
            s, e = m.span()
            if self._in_hex_digest(data, s, e):
                self.excluded["hex digest"] += 1
                continue
            if self._in_random_id(data, s, e):
                self.excluded["random id"] += 1
                continue
            if self._is_timestamp(run):
                self.excluded["timestamp"] += 1
                continue
            hits.append(Hit(where(s), s, "Luhn-valid run", run.decode(),
                            self._context(data, s, e)))
        if text and self._cvc_standalone:
            for m in self._cvc_standalone.finditer(data):
                s, e = m.span()
                hits.append(Hit(where(s), s, "CVC", m.group().decode(),
                                self._context(data, s, e)))
        for quoted in self._cvc_json:
            start = 0
            while True:
                i = data.find(quoted, start)
                if i < 0:
                    break
                if not (text and self._cvc_standalone.match(data, i + 1)):  # not twice
                    hits.append(Hit(where(i), i, "CVC (JSON value)", quoted.decode(),
                                    self._context(data, i, i + len(quoted))))
                start = i + 1
        return hits

    def scan_parts(self, source: str, parts: list[tuple[str, bytes]], text: bool) -> list[Hit]:
        """Scans many small labelled parts (Redis keys, values) as one blob,
        each part separated by a NUL and a newline (neither a digit nor a
        letter, so no run or CVC can span two parts)."""
        offsets, labels, chunks, pos = [], [], [], 0
        for label, data in parts:
            offsets.append(pos)
            labels.append(label)
            chunks.append(data + b"\x00\n")
            pos += len(data) + 2
        return self.scan(source, b"".join(chunks), text, names=(offsets, labels))
