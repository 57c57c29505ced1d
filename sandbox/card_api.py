"""Card charges API of the PSP sandbox (Stripe-like).

POST /v1/charges                       create a charge (form-encoded body)
GET  /v1/charges?idempotency_key=K     list with zero or one charge (crash-recovery Lookup)
GET  /v1/charges/<id>                  retrieve one charge

Auth: ``Authorization: Bearer <secret>``. Injected latency is the provider's
processing time: a processed charge sleeps while holding its idempotency-key
lock, so duplicates and Lookups for that key wait for the definite result.
With ``timeout_mode`` "drop" a valid create request sleeps the latency and
then the connection is closed without charging (lookups still answer).
Test instruments by card number:
4242424242424242 approves, 4000000000000002 declines (card_declined),
4000000000009995 declines (insufficient_funds), any other Luhn-valid number
starting 4000000000 declines (card_declined: a range of distinct declining
cards, for fraud scenarios), any other Luhn-valid number approves.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import secrets
import threading
import time
import urllib.parse
from typing import Any

from sandbox_core import (ApiConfig, ApiError, IdempotencyStore, Journal, JournalError, Request,
                          Response, SandboxConfig, StoredResult, error_response, json_bytes)

API_NAME = "card"

DECLINES = {
    "4000000000000002": "card_declined",
    "4000000000009995": "insufficient_funds",
}

# Every other Luhn-valid number with this prefix declines (card_declined).
DECLINE_PREFIX = "4000000000"

MAX_IDEMPOTENCY_KEY_LEN = 255
MAX_DESCRIPTION_LEN = 1000
MAX_METADATA_KEYS = 50
MAX_METADATA_KEY_LEN = 40
MAX_METADATA_VALUE_LEN = 500
MAX_AMOUNT = 99_999_999_999


def luhn_valid(number: str) -> bool:
    total = 0
    for i, ch in enumerate(reversed(number)):
        d = ord(ch) - 48
        if i % 2 == 1:
            d *= 2
            if d > 9:
                d -= 9
        total += d
    return total % 10 == 0


def _invalid(param: str, message: str) -> ApiError:
    return ApiError(error_response(400, "invalid_request_error", "parameter_invalid", message,
                                   param=param))


def _is_digits(s: str) -> bool:
    return s.isascii() and s.isdigit()


class CardApi:
    name = API_NAME

    def __init__(self, secret: str, store: IdempotencyStore, journal: Journal,
                 config: ApiConfig | SandboxConfig, clock=time.time):
        if not secret:
            raise ValueError("card API secret must not be empty")
        self._secret = secret.encode("utf-8")
        self._store = store
        self._journal = journal
        self._config = config
        self._clock = clock
        self._lock = threading.Lock()
        self._charges: dict[str, dict[str, Any]] = {}   # id -> charge record

    # ---------------------------------------------------------------- wiring

    def routes(self):
        return [
            ("POST", r"/v1/charges", self.create_charge),
            ("GET", r"/v1/charges", self.list_charges),
            ("GET", r"/v1/charges/(?P<charge_id>[^/]+)", self.retrieve_charge),
        ]

    def restore(self, rec: dict[str, Any]) -> None:
        """Rebuild charge + idempotency entry from one journal record."""
        charge = {
            "id": str(rec["id"]),
            "amount": int(rec["amount"]),
            "currency": str(rec["currency"]),
            "status": str(rec["status"]),
            "decline_code": str(rec.get("decline_code") or ""),
            "last4": str(rec["last4"]),
            "idempotency_key": rec.get("idempotency_key"),
            "ts": float(rec["ts"]),
        }
        with self._lock:
            self._charges[charge["id"]] = charge
        key = charge["idempotency_key"]
        if key:
            status, body = self._render(charge)
            self._store.put(API_NAME, key, StoredResult(
                status=status, body=body, resource_id=charge["id"], fingerprint=None,
                summary=self._summary(charge["amount"], charge["currency"], charge["last4"])))

    # ------------------------------------------------------------- handlers

    def create_charge(self, req: Request) -> Response:
        """Injected latency models the provider's processing time: a charge
        that is actually processed sleeps while holding its idempotency-key
        lock (it is "in flight"), so a concurrent duplicate or a Lookup for
        the same key waits for it and then sees the definite result. A replay
        sleeps after the in-flight request finished."""
        self._authenticate(req)
        key = self._idempotency_key(req)
        params, fingerprint = self._parse_charge_params(req)
        self._config.drop_if_configured()
        if key is None:
            self._config.simulate_latency()
            resp = self._take_charge(params, None, fingerprint)
        else:
            with self._store.key_lock(API_NAME, key):
                prior = self._store.get(API_NAME, key)
                if prior is None:
                    self._config.simulate_latency()
                    resp = self._take_charge(params, key, fingerprint)
            if prior is not None:
                self._config.simulate_latency()
                resp = self._replay(prior, params, fingerprint)
        resp.log_key = key
        return resp

    def list_charges(self, req: Request) -> Response:
        self._authenticate(req)
        self._config.simulate_latency()
        values = req.query.get("idempotency_key")
        if not values or len(values) != 1 or not values[0]:
            raise _invalid("idempotency_key", "Exactly one idempotency_key query parameter is required.")
        key = values[0]
        # Wait for an in-flight request under this key so "not found" is definite.
        with self._store.key_lock(API_NAME, key):
            prior = self._store.get(API_NAME, key)
        data = []
        if prior is not None:
            with self._lock:
                charge = self._charges.get(prior.resource_id)
            if charge is not None:
                data.append(self._charge_object(charge))
        resp = Response.json(200, {"object": "list", "data": data, "has_more": False,
                                   "url": "/v1/charges"})
        resp.log_key = key
        return resp

    def retrieve_charge(self, req: Request) -> Response:
        self._authenticate(req)
        self._config.simulate_latency()
        with self._lock:
            charge = self._charges.get(req.path_params["charge_id"])
        if charge is None:
            raise ApiError(error_response(404, "invalid_request_error", "resource_missing",
                                          "No such charge.", param="id"))
        return Response.json(200, self._charge_object(charge))

    # -------------------------------------------------------------- helpers

    def _authenticate(self, req: Request) -> None:
        auth = req.header("Authorization") or ""
        scheme, _, token = auth.strip().partition(" ")
        ok = scheme.lower() == "bearer" and hmac.compare_digest(
            token.strip().encode("utf-8", "surrogateescape"), self._secret)
        if not ok:
            raise ApiError(error_response(
                401, "invalid_request_error", "unauthorized", "Invalid API key provided.",
                headers=[("WWW-Authenticate", 'Bearer realm="psp-sandbox"')]))

    @staticmethod
    def _idempotency_key(req: Request) -> str | None:
        key = req.header("Idempotency-Key")
        if key is None:
            return None
        if (not key or len(key) > MAX_IDEMPOTENCY_KEY_LEN
                or not all(0x20 < ord(c) < 0x7F for c in key)):
            raise _invalid("Idempotency-Key", "Idempotency-Key must be 1-255 printable ASCII "
                                              "characters without spaces.")
        return key

    def _parse_charge_params(self, req: Request) -> tuple[dict[str, Any], str]:
        ctype = (req.header("Content-Type") or "").split(";")[0].strip().lower()
        if ctype != "application/x-www-form-urlencoded":
            raise ApiError(error_response(
                400, "invalid_request_error", "parameter_invalid",
                "Content-Type must be application/x-www-form-urlencoded."))
        try:
            text = req.body.decode("utf-8")
            pairs = urllib.parse.parse_qsl(text, keep_blank_values=True, strict_parsing=False,
                                           errors="strict", max_num_fields=200)
        except (UnicodeDecodeError, ValueError):
            raise ApiError(error_response(400, "invalid_request_error", "parameter_invalid",
                                          "Request body is not valid form-encoded UTF-8.")) from None

        raw: dict[str, str] = {}
        metadata: dict[str, str] = {}
        allowed = {"amount", "currency", "card[number]", "card[exp_month]", "card[exp_year]",
                   "card[cvc]", "description"}
        for k, v in pairs:
            if k in raw or (k.startswith("metadata[") and k in metadata):
                raise _invalid(k, "Parameter specified more than once.")
            if k in allowed:
                raw[k] = v
            elif k.startswith("metadata[") and k.endswith("]"):
                mk = k[len("metadata["):-1]
                if not mk or len(mk) > MAX_METADATA_KEY_LEN or "[" in mk or "]" in mk:
                    raise _invalid(k, "Invalid metadata key.")
                if len(v) > MAX_METADATA_VALUE_LEN:
                    raise _invalid(k, "Metadata values can be at most 500 characters.")
                metadata[k] = v
                if len(metadata) > MAX_METADATA_KEYS:
                    raise _invalid(k, "At most 50 metadata keys are allowed.")
            else:
                raise ApiError(error_response(400, "invalid_request_error", "parameter_unknown",
                                              "Received unknown parameter.", param=k[:100]))

        amount_s = raw.get("amount", "")
        if not _is_digits(amount_s) or not 0 < int(amount_s) <= MAX_AMOUNT:
            raise _invalid("amount", "amount must be a positive integer in minor units.")
        currency = raw.get("currency", "")
        if len(currency) != 3 or not (currency.isascii() and currency.isalpha()):
            raise _invalid("currency", "currency must be a 3-letter ISO code.")

        number = raw.get("card[number]", "")
        if not _is_digits(number) or not 12 <= len(number) <= 19 or not luhn_valid(number):
            raise _invalid("card[number]", "Your card number is incorrect.")

        month_s = raw.get("card[exp_month]", "")
        if not _is_digits(month_s) or len(month_s) > 2 or not 1 <= int(month_s) <= 12:
            raise _invalid("card[exp_month]", "Your card's expiration month is invalid.")
        year_s = raw.get("card[exp_year]", "")
        if not _is_digits(year_s) or len(year_s) not in (2, 4):
            raise _invalid("card[exp_year]", "Your card's expiration year is invalid.")
        year = int(year_s) + (2000 if len(year_s) == 2 else 0)
        now = time.gmtime(self._clock())
        if (year, int(month_s)) < (now.tm_year, now.tm_mon) or year > now.tm_year + 50:
            raise _invalid("card[exp_year]", "Your card's expiration date is invalid or in the past.")

        cvc = raw.get("card[cvc]", "")
        if not _is_digits(cvc) or len(cvc) not in (3, 4):
            raise _invalid("card[cvc]", "Your card's security code is invalid.")

        description = raw.get("description")
        if description is not None and len(description) > MAX_DESCRIPTION_LEN:
            raise _invalid("description", "description can be at most 1000 characters.")

        params = {"amount": int(amount_s), "currency": currency.upper(), "number": number}
        # Fingerprint over every raw parameter (Stripe compares the whole
        # request); kept in memory only, never journaled.
        canonical = json.dumps(sorted(pairs), separators=(",", ":")).encode("utf-8")
        return params, hashlib.sha256(canonical).hexdigest()

    @staticmethod
    def _summary(amount: int, currency: str, last4: str) -> dict[str, Any]:
        return {"amount": amount, "currency": currency, "last4": last4}

    def _replay(self, prior: StoredResult, params: dict[str, Any], fingerprint: str) -> Response:
        if prior.fingerprint is not None:
            same = hmac.compare_digest(prior.fingerprint, fingerprint)
        else:  # rebuilt from the journal: compare what the journal knows
            same = prior.summary == self._summary(params["amount"], params["currency"],
                                                  params["number"][-4:])
        if not same:
            return error_response(
                400, "idempotency_error", "idempotency_key_reused",
                "Keys for idempotent requests can only be used with the same parameters they "
                "were first used with.")
        resp = Response(prior.status, prior.body, [("Idempotent-Replayed", "true")])
        resp.replayed = True
        return resp

    def _take_charge(self, params: dict[str, Any], key: str | None, fingerprint: str) -> Response:
        # Fault injection happens before anything is charged, journaled or
        # stored under the key, so a retry with the same key may succeed.
        if self._config.inject_error():
            return Response.json(500, {"error": {"type": "api_error", "code": "internal_error",
                                                 "charged": False}})
        number = params["number"]
        decline_code = DECLINES.get(number) or (
            "card_declined" if number.startswith(DECLINE_PREFIX) else "")
        charge = {
            "id": "ch_" + secrets.token_hex(12),
            "amount": params["amount"],
            "currency": params["currency"],
            "status": "failed" if decline_code else "succeeded",
            "decline_code": decline_code,
            "last4": number[-4:],
            "idempotency_key": key,
            "ts": self._clock(),
        }
        try:
            self._journal.append({
                "ts": charge["ts"], "api": API_NAME, "id": charge["id"],
                "idempotency_key": key, "amount": charge["amount"],
                "currency": charge["currency"], "status": charge["status"],
                "decline_code": decline_code, "last4": charge["last4"],
            })
        except (OSError, JournalError):
            # Not journaled means not taken: tell the client truthfully.
            return Response.json(500, {"error": {"type": "api_error", "code": "internal_error",
                                                 "charged": False}})
        with self._lock:
            self._charges[charge["id"]] = charge
        status, body = self._render(charge)
        if key is not None:
            self._store.put(API_NAME, key, StoredResult(
                status=status, body=body, resource_id=charge["id"], fingerprint=fingerprint,
                summary=self._summary(charge["amount"], charge["currency"], charge["last4"])))
        return Response(status, body)

    @staticmethod
    def _charge_object(charge: dict[str, Any]) -> dict[str, Any]:
        obj: dict[str, Any] = {
            "id": charge["id"],
            "object": "charge",
            "amount": charge["amount"],
            "currency": charge["currency"],
            "status": charge["status"],
            "paid": charge["status"] == "succeeded",
            "card_last4": charge["last4"],
            "idempotency_key": charge["idempotency_key"],
            "created": int(charge["ts"]),
        }
        if charge["status"] == "failed":
            obj["failure_code"] = charge["decline_code"]
        return obj

    @classmethod
    def _render(cls, charge: dict[str, Any]) -> tuple[int, bytes]:
        """Status and body for the create call; a pure function of the record,
        so replays after a restart are byte-identical."""
        if charge["status"] == "succeeded":
            return 200, json_bytes(cls._charge_object(charge))
        return 402, json_bytes({"error": {
            "type": "card_error", "code": "card_declined",
            "decline_code": charge["decline_code"],
            "message": "Your card was declined.", "charge": charge["id"]}})
