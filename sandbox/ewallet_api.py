"""E-wallet API of the PSP sandbox: one API for regional wallets, the
provider in the path.

Secret (``--ewallet-secret-file FILE``): one HMAC secret shared by all
providers; whitespace around it is stripped. Without the flag every e-wallet
path answers 404 {"code":"NOT_ENABLED"}.

Providers and currencies (fixed): gcash PHP; dana IDR; grabpay SGD, MYR;
paytm INR; momo VND; kakaopay KRW; any provider whose name starts with "toy"
(e.g. toypay) accepts any currency. Provider names are matched exactly
(lower case).

Signing (every request, checked before anything else; failures never charge):
    X-Timestamp: unix seconds as a decimal integer string
    X-Signature: lowercase hex HMAC-SHA256(secret,
                 X-Timestamp + "\\n" + METHOD + "\\n" + path_with_query + "\\n" + body)
    where path_with_query is the request target exactly as sent on the request
    line (e.g. "/ewallet/v1/gcash/payments?idempotency_key=k1") and body the
    raw body bytes (empty for GET). Missing/malformed/wrong signature or
    timestamp -> 401 {"code":"INVALID_SIGNATURE"}; a correctly signed request
    whose timestamp is more than 300 s from the server clock -> 401
    {"code":"STALE_TIMESTAMP"}.

POST /ewallet/v1/{provider}/payments
    headers: X-Timestamp, X-Signature, X-Idempotency-Key (required, 1-255
    printable ASCII without spaces), Content-Type: application/json
    body {"merchant_ref":"rch_..","account_id":"..","amount":<int minor units>,
          "currency":"PHP"}   (exactly these members; merchant_ref 1-255 printable
    ASCII; account_id 4-64 printable ASCII without spaces; amount a positive
    JSON integer; currency 3 letters, upper-cased)
    Order of checks: signature/timestamp (401) -> provider (404
    {"code":"UNKNOWN_PROVIDER"}) -> key and body (400 {"code":"INVALID_REQUEST",
    "field":..,"message":..}) -> currency (400 {"code":"UNSUPPORTED_CURRENCY"}).
    Outcome by account_id suffix:
      ...0005 -> 503 {"code":"SYSTEM_BUSY","charged":false} (nothing charged,
                 journaled or stored under the key)
      ...0002 -> 200 {..,"status":"FAILED","failure_code":"INSUFFICIENT_BALANCE",..}
      ...0003 -> 200 {..,"status":"FAILED","failure_code":"ACCOUNT_BLOCKED",..}
      other   -> 200 {"payment_id":"EW-<24 upper hex>","provider","status":"SUCCESS",
                 "amount","currency","account_id","merchant_ref"}
    FAILED payments are journaled (status "failed", decline_code = failure
    code) and stored under the key like successes. Idempotency per provider
    and X-Idempotency-Key: the same key with the same body replays the stored
    status and body (header ``X-Idempotent-Replayed: true``); with a different
    body -> 409 {"code":"IDEMPOTENCY_CONFLICT"}; concurrent duplicates wait on a
    per-key lock, so one payment. Injected errors -> 500
    {"code":"SYSTEM_ERROR","charged":false} (not stored).

GET /ewallet/v1/{provider}/payments?idempotency_key=K   (signed, empty body)
    -> 200 {"payments":[]} or {"payments":[<payment object as above>]}; waits for
    an in-flight payment under the key, so "none" is definite.

Journal line: {"ts","api":"ewallet","provider","id","idempotency_key","amount",
"currency","status","decline_code","account_id_last4","merchant_ref"}
(merchant_ref is an addition to the agreed format, so that replays after a
restart keep it). The full account_id is never journaled, so after a restart
replayed bodies and lookups show it as "****" + last 4 -- the one field that is
not byte-identical across restarts -- and a key reused with a different
account_id is detected on its last 4 only (as for card numbers). Injected
latency applies to payments and lookups; timeout_mode "drop" to payments only.
The secret and signatures are never logged.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import re
import secrets
import threading
import time
from typing import Any

from sandbox_core import (ApiConfig, ApiError, IdempotencyStore, Journal, JournalError, Request,
                          Response, StoredResult, json_bytes)

API_NAME = "ewallet"
PROVIDERS: dict[str, tuple[str, ...]] = {
    "gcash": ("PHP",),
    "dana": ("IDR",),
    "grabpay": ("SGD", "MYR"),
    "paytm": ("INR",),
    "momo": ("VND",),
    "kakaopay": ("KRW",),
}
TOY_PREFIX = "toy"
FAILURE_SUFFIXES = {"0002": "INSUFFICIENT_BALANCE", "0003": "ACCOUNT_BLOCKED"}
BUSY_SUFFIX = "0005"
MAX_SKEW_S = 300
MAX_KEY_LEN = 255
MAX_AMOUNT = 99_999_999_999
_PROVIDER_RE = re.compile(r"[a-z0-9_-]{1,40}")
_TS_RE = re.compile(r"[0-9]{1,12}")
_SIG_RE = re.compile(r"[0-9a-f]{64}")
_ACCOUNT_RE = re.compile(r"[\x21-\x7e]{4,64}")
_REF_RE = re.compile(r"[\x20-\x7e]{1,255}")
_CURRENCY_RE = re.compile(r"[A-Za-z]{3}")
BODY_FIELDS = ("merchant_ref", "account_id", "amount", "currency")


def provider_currencies(provider: str) -> tuple[str, ...] | None:
    """Currencies of a provider; () means any; None means unknown provider."""
    if provider in PROVIDERS:
        return PROVIDERS[provider]
    if provider.startswith(TOY_PREFIX) and _PROVIDER_RE.fullmatch(provider):
        return ()
    return None


def sign(secret: bytes, timestamp: str, method: str, path_with_query: str, body: bytes) -> str:
    """The X-Signature value (also what a client computes)."""
    msg = f"{timestamp}\n{method}\n{path_with_query}\n".encode("utf-8") + body
    return hmac.new(secret, msg, hashlib.sha256).hexdigest()


def _code(status: int, code: str, **extra: Any) -> ApiError:
    return ApiError(Response.json(status, {"code": code, **extra}))


def _invalid(field: str, message: str) -> ApiError:
    return _code(400, "INVALID_REQUEST", field=field, message=message)


class EwalletApi:
    name = API_NAME

    def __init__(self, secret: str | None, store: IdempotencyStore, journal: Journal,
                 config: ApiConfig, clock=time.time):
        if secret is not None and not secret:
            raise ValueError("e-wallet secret must not be empty")
        self._secret = secret.encode("utf-8") if secret is not None else None
        self._store = store
        self._journal = journal
        self._config = config
        self._clock = clock
        self._lock = threading.Lock()
        self._payments: dict[str, dict[str, Any]] = {}   # payment id -> record

    # ---------------------------------------------------------------- wiring

    def routes(self):
        path = r"/ewallet/v1/(?P<provider>[^/]+)/payments"
        return [
            ("POST", path, self.create_payment),
            ("GET", path, self.lookup_payments),
        ]

    @staticmethod
    def _namespace(provider: str) -> str:
        # Providers are different companies: keys are scoped per provider, so
        # failing over from one wallet to another with the same key is fine.
        return f"{API_NAME}:{provider}"

    def restore(self, rec: dict[str, Any]) -> None:
        """Rebuild a payment and its idempotency entry from a journal record.
        The full account_id is not journaled (see module docstring)."""
        last4 = str(rec["account_id_last4"])
        pay = {
            "id": str(rec["id"]),
            "provider": str(rec["provider"]),
            "amount": int(rec["amount"]),
            "currency": str(rec["currency"]),
            "status": str(rec["status"]),
            "decline_code": str(rec.get("decline_code") or ""),
            "account_id": "****" + last4,
            "account_id_last4": last4,
            "merchant_ref": str(rec.get("merchant_ref") or ""),
            "idempotency_key": rec.get("idempotency_key"),
            "ts": float(rec["ts"]),
        }
        if pay["status"] not in ("succeeded", "failed"):
            raise ValueError(f"ewallet journal record {pay['id']}: bad status {pay['status']!r}")
        with self._lock:
            self._payments[pay["id"]] = pay
        if pay["idempotency_key"]:
            status, body = self._render(pay)
            self._store.put(self._namespace(pay["provider"]), pay["idempotency_key"], StoredResult(
                status=status, body=body, resource_id=pay["id"], fingerprint=None,
                summary=self._summary(pay)))

    # ------------------------------------------------------------- handlers

    def create_payment(self, req: Request) -> Response:
        self._verify(req)
        provider, currencies = self._provider(req)
        key = req.header("X-Idempotency-Key")
        if (not key or len(key) > MAX_KEY_LEN
                or not all(0x20 < ord(c) < 0x7F for c in key)):
            raise _invalid("X-Idempotency-Key", "X-Idempotency-Key is required: 1-255 printable "
                                                "ASCII characters without spaces.")
        params, fingerprint = self._parse_body(req, provider)
        if currencies and params["currency"] not in currencies:
            raise _code(400, "UNSUPPORTED_CURRENCY")
        self._config.drop_if_configured()
        ns = self._namespace(provider)
        with self._store.key_lock(ns, key):
            prior = self._store.get(ns, key)
            if prior is None:
                self._config.simulate_latency()
                resp = self._take_payment(params, key, fingerprint)
        if prior is not None:
            self._config.simulate_latency()
            resp = self._replay(prior, params, fingerprint)
        resp.log_key = key
        return resp

    def lookup_payments(self, req: Request) -> Response:
        self._verify(req)
        provider, _ = self._provider(req)
        self._config.simulate_latency()
        values = req.query.get("idempotency_key")
        if not values or len(values) != 1 or not values[0]:
            raise _invalid("idempotency_key",
                           "Exactly one idempotency_key query parameter is required.")
        key = values[0]
        ns = self._namespace(provider)
        with self._store.key_lock(ns, key):   # wait for an in-flight payment
            prior = self._store.get(ns, key)
        payments = []
        if prior is not None:
            with self._lock:
                pay = self._payments.get(prior.resource_id)
            if pay is not None:
                payments.append(self._payment_object(pay))
        resp = Response.json(200, {"payments": payments})
        resp.log_key = key
        return resp

    # -------------------------------------------------------------- helpers

    def _verify(self, req: Request) -> None:
        if self._secret is None:
            raise _code(404, "NOT_ENABLED", message="The e-wallet API is not enabled: start the "
                                                    "sandbox with --ewallet-secret-file.")
        ts = req.header("X-Timestamp") or ""
        sig = req.header("X-Signature") or ""
        if not _TS_RE.fullmatch(ts) or not _SIG_RE.fullmatch(sig):
            raise _code(401, "INVALID_SIGNATURE")
        expected = sign(self._secret, ts, req.method, req.target, req.body)
        if not hmac.compare_digest(expected, sig):
            raise _code(401, "INVALID_SIGNATURE")
        if abs(self._clock() - int(ts)) > MAX_SKEW_S:
            raise _code(401, "STALE_TIMESTAMP")

    @staticmethod
    def _provider(req: Request) -> tuple[str, tuple[str, ...]]:
        provider = req.path_params["provider"]
        currencies = provider_currencies(provider)
        if currencies is None:
            raise _code(404, "UNKNOWN_PROVIDER")
        return provider, currencies

    @staticmethod
    def _parse_body(req: Request, provider: str) -> tuple[dict[str, Any], str]:
        ctype = (req.header("Content-Type") or "").split(";")[0].strip().lower()
        if ctype != "application/json":
            raise _invalid("Content-Type", "Content-Type must be application/json.")
        try:
            body = json.loads(req.body.decode("utf-8"))
        except (UnicodeDecodeError, ValueError):
            raise _invalid("body", "The body must be a JSON object.") from None
        if not isinstance(body, dict):
            raise _invalid("body", "The body must be a JSON object.")
        for k in body:
            if k not in BODY_FIELDS:
                raise _invalid(str(k)[:100], "Unknown field.")
        ref = body.get("merchant_ref")
        if not isinstance(ref, str) or not _REF_RE.fullmatch(ref):
            raise _invalid("merchant_ref", "merchant_ref must be 1-255 printable ASCII characters.")
        account = body.get("account_id")
        if not isinstance(account, str) or not _ACCOUNT_RE.fullmatch(account):
            raise _invalid("account_id", "account_id must be 4-64 printable ASCII characters "
                                         "without spaces.")
        amount = body.get("amount")
        if isinstance(amount, bool) or not isinstance(amount, int) or not 0 < amount <= MAX_AMOUNT:
            raise _invalid("amount", "amount must be a positive integer in minor units.")
        currency = body.get("currency")
        if not isinstance(currency, str) or not _CURRENCY_RE.fullmatch(currency):
            raise _invalid("currency", "currency must be a 3-letter ISO 4217 code.")
        params = {"provider": provider, "merchant_ref": ref, "account_id": account,
                  "amount": amount, "currency": currency.upper()}
        canonical = json.dumps(params, sort_keys=True, separators=(",", ":")).encode("utf-8")
        return params, hashlib.sha256(canonical).hexdigest()

    @staticmethod
    def _summary(pay: dict[str, Any]) -> dict[str, Any]:
        return {"provider": pay["provider"], "merchant_ref": pay["merchant_ref"],
                "amount": pay["amount"], "currency": pay["currency"],
                "account_id_last4": pay["account_id"][-4:]}   # "****"+last4 when restored

    def _replay(self, prior: StoredResult, params: dict[str, Any], fingerprint: str) -> Response:
        if prior.fingerprint is not None:
            same = hmac.compare_digest(prior.fingerprint, fingerprint)
        else:   # rebuilt from the journal: compare what the journal knows
            same = prior.summary == self._summary(params)
        if not same:
            return Response.json(409, {"code": "IDEMPOTENCY_CONFLICT"})
        resp = Response(prior.status, prior.body, [("X-Idempotent-Replayed", "true")])
        resp.replayed = True
        return resp

    def _take_payment(self, params: dict[str, Any], key: str, fingerprint: str) -> Response:
        # Injected errors and SYSTEM_BUSY happen before anything is charged,
        # journaled or stored under the key: a retry may succeed.
        if self._config.inject_error():
            return Response.json(500, {"code": "SYSTEM_ERROR", "charged": False})
        account = params["account_id"]
        if account.endswith(BUSY_SUFFIX):
            return Response.json(503, {"code": "SYSTEM_BUSY", "charged": False})
        failure = FAILURE_SUFFIXES.get(account[-4:], "")
        pay = {
            "id": "EW-" + secrets.token_hex(12).upper(),
            "provider": params["provider"],
            "amount": params["amount"],
            "currency": params["currency"],
            "status": "failed" if failure else "succeeded",
            "decline_code": failure,
            "account_id": account,
            "account_id_last4": account[-4:],
            "merchant_ref": params["merchant_ref"],
            "idempotency_key": key,
            "ts": self._clock(),
        }
        try:
            self._journal.append({
                "ts": pay["ts"], "api": API_NAME, "provider": pay["provider"], "id": pay["id"],
                "idempotency_key": key, "amount": pay["amount"], "currency": pay["currency"],
                "status": pay["status"], "decline_code": failure,
                "account_id_last4": pay["account_id_last4"], "merchant_ref": pay["merchant_ref"],
            })
        except (OSError, JournalError):
            return Response.json(500, {"code": "SYSTEM_ERROR", "charged": False})
        with self._lock:
            self._payments[pay["id"]] = pay
        status, body = self._render(pay)
        self._store.put(self._namespace(pay["provider"]), key, StoredResult(
            status=status, body=body, resource_id=pay["id"], fingerprint=fingerprint,
            summary=self._summary(pay)))
        return Response(status, body)

    @staticmethod
    def _payment_object(pay: dict[str, Any]) -> dict[str, Any]:
        obj: dict[str, Any] = {"payment_id": pay["id"], "provider": pay["provider"]}
        if pay["status"] == "succeeded":
            obj["status"] = "SUCCESS"
        else:
            obj["status"] = "FAILED"
            obj["failure_code"] = pay["decline_code"]
        obj.update({"amount": pay["amount"], "currency": pay["currency"],
                    "account_id": pay["account_id"], "merchant_ref": pay["merchant_ref"]})
        return obj

    @classmethod
    def _render(cls, pay: dict[str, Any]) -> tuple[int, bytes]:
        """Status and body of the create call (a function of the record)."""
        return 200, json_bytes(cls._payment_object(pay))
