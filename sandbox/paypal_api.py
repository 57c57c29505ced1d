"""PayPal-style API of the PSP sandbox (OAuth2 client credentials + Orders v2
capture), modelled on PayPal REST.

Credentials file (``--paypal-credentials-file FILE``): UTF-8 text, exactly two
non-empty lines -- line 1 the client_id, line 2 the client_secret; whitespace
around each line is stripped, blank lines are ignored, anything else is an
error. E.g. ``printf '%s\\n%s\\n' "$ID" "$SECRET" > FILE``. Without the flag
every PayPal path answers 404 RESOURCE_NOT_FOUND ("not enabled").

POST /v1/oauth2/token
    ``Authorization: Basic base64(client_id:client_secret)``, form body
    ``grant_type=client_credentials`` -> 200
    {"scope","access_token":"A21AA...","token_type":"Bearer","app_id":"APP-SANDBOX",
     "expires_in":<ttl s>,"nonce"}.
    Wrong/missing credentials -> 401 {"error":"invalid_client",
    "error_description":"Client Authentication failed"}; other grant types ->
    400 {"error":"unsupported_grant_type",...}. TTL: config ``paypal.token_ttl_s``
    (default 32400). Tokens are self-verifying (HMAC over expiry + nonce with a
    key derived from the credentials), so they stay valid across a sandbox
    restart with the same credentials until they expire. Token grants are not
    slowed, dropped or failed by fault injection.

POST /v2/checkout/orders/{order_id}/capture
    ``Authorization: Bearer <token>`` (missing, unknown, tampered or expired ->
    401 {"error":"invalid_token","error_description":"Token signature
    verification failed"}), optional ``PayPal-Request-Id`` (1-108 printable
    ASCII, no spaces; the idempotency key), ``Content-Type: application/json``,
    body {"amount":{"currency_code":"USD","value":"0.99"}} (sandbox extension:
    the order's amount; currency 3 upper-case letters; value a decimal string
    with at most 2 decimals, none for JPY/KRW/VND, > 0). Bad input -> 400
    {"name":"INVALID_REQUEST",...,"details":[{"field":"/amount/value",
    "location":"body","issue":...,"description":...}]} (field names the
    offending member: /amount, /amount/value, /amount/currency_code, order_id,
    PayPal-Request-Id or an unknown top-level member); wrong content type -> 415.
    order_id: 1-64 of [A-Za-z0-9_-]. Outcome by order id suffix
    (case-sensitive):
      ...UNAVAILABLE -> 503 {"name":"SERVICE_UNAVAILABLE",...,"charged":false}
                        (nothing captured, journaled or stored under the key)
      ...DECLINED    -> 422 issue INSTRUMENT_DECLINED
      ...NOTAPPROVED -> 422 issue ORDER_NOT_APPROVED
      ...CAPTURED    -> 422 issue ORDER_ALREADY_CAPTURED
      anything else  -> 201 {"id":order_id,"status":"COMPLETED","purchase_units":
                        [{"reference_id":"default","payments":{"captures":[{"id":"CAP<17 hex>",
                        "status":"COMPLETED","amount":{..},"final_capture":true,
                        "create_time":..}]}}],"payer":{"payer_id":..}}
    The 422s are failed captures: journaled (status "failed", decline_code =
    issue) and stored under the key like approvals. A repeated
    PayPal-Request-Id replays the stored status and body byte for byte with
    ``PayPal-Request-Id-Replayed: true`` (also after a restart); reusing it
    with a different order id or amount -> 422 issue
    PAYPAL_REQUEST_ID_PREVIOUSLY_USED (nothing captured). Injected errors ->
    500 {"name":"INTERNAL_SERVER_ERROR",...,"charged":false} (not stored).
    The "value" in responses is normalised from minor units ("1.5" -> "1.50").

GET /v2/payments/captures?paypal_request_id=K   (bearer token)
    -> 200 {"captures":[]} or {"captures":[{"id","status":"COMPLETED"|"DECLINED",
    "order_id","paypal_request_id","amount":{..},"issue":""|<issue>,"create_time"}]}.
    Waits for an in-flight capture under the same key, so "none" is definite.

Injected latency applies to captures and lookups; timeout_mode "drop" applies
to captures only. Journal line: {"ts","api":"paypal","id","idempotency_key",
"order_id","amount":<minor units>,"currency","status","decline_code"}. The
token and the client secret are never logged or journaled.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import re
import secrets
import threading
import time
import urllib.parse
from typing import Any

from sandbox_core import (ApiConfig, ApiError, IdempotencyStore, Journal, JournalError, Request,
                          Response, Stats, StoredResult, json_bytes, minor_digits)

API_NAME = "paypal"
DEFAULT_TOKEN_TTL_S = 32400
MAX_REQUEST_ID_LEN = 108
MAX_AMOUNT = 99_999_999_999
TOKEN_PREFIX = "A21AA"
SCOPE = ("https://uri.paypal.com/services/payments/payment "
         "https://uri.paypal.com/services/payments/refund "
         "https://uri.paypal.com/services/payments/orders/readwrite")
_ORDER_ID_RE = re.compile(r"[A-Za-z0-9_-]{1,64}")
_CURRENCY_RE = re.compile(r"[A-Z]{3}")

UNPROCESSABLE_MESSAGE = ("The requested action could not be performed, semantically incorrect, "
                         "or failed business validation.")
# (order id suffix, issue, description); checked in this order.
DECLINE_SUFFIXES = (
    ("DECLINED", "INSTRUMENT_DECLINED",
     "The instrument presented was either declined by the processor or bank, or it can't be "
     "used for this payment."),
    ("NOTAPPROVED", "ORDER_NOT_APPROVED",
     "Payer has not yet approved the Order for payment. Please redirect the payer to the "
     "'rel':'approve' url returned as part of the HATEOAS links within the Create Order call "
     "or provide a valid payment_source in the request."),
    ("CAPTURED", "ORDER_ALREADY_CAPTURED",
     "Order already captured. If 'intent=CAPTURE' only one capture per order is allowed."),
)
ISSUE_DESCRIPTIONS = {issue: desc for _, issue, desc in DECLINE_SUFFIXES}
UNAVAILABLE_SUFFIX = "UNAVAILABLE"


def read_credentials(path: str) -> tuple[str, str]:
    """The two-line credentials file: client_id, then client_secret."""
    with open(path, "r", encoding="utf-8") as f:
        lines = [line.strip() for line in f.read().splitlines()]
    lines = [line for line in lines if line]
    if len(lines) != 2:
        raise ValueError(f"{path}: expected two non-empty lines (client_id, client_secret), "
                         f"found {len(lines)}")
    return lines[0], lines[1]


def parse_amount_value(value: str, currency: str) -> int | None:
    """Decimal string -> minor units, or None if malformed for the currency."""
    digits = minor_digits(currency)
    pattern = r"(0|[1-9][0-9]{0,14})" + (rf"(\.[0-9]{{1,{digits}}})?" if digits else "")
    if not isinstance(value, str) or not re.fullmatch(pattern, value):
        return None
    whole, _, frac = value.partition(".")
    return int(whole) * 10 ** digits + (int(frac.ljust(digits, "0")) if digits else 0)


def format_amount(minor: int, currency: str) -> str:
    digits = minor_digits(currency)
    if digits == 0:
        return str(minor)
    return f"{minor // 10 ** digits}.{minor % 10 ** digits:0{digits}d}"


def _random_debug_id() -> str:
    return secrets.token_hex(7)[:13]


def _derived_id(*parts: str, n: int) -> str:
    return hashlib.sha256("\0".join(parts).encode("utf-8")).hexdigest()[:n]


def _iso(ts: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(int(ts)))


def _invalid(field: str, location: str, issue: str, description: str, status: int = 400,
             name: str = "INVALID_REQUEST",
             message: str = "Request is not well-formed, syntactically incorrect, or violates "
                            "schema.") -> ApiError:
    return ApiError(Response.json(status, {
        "name": name, "message": message, "debug_id": _random_debug_id(),
        "details": [{"field": field, "location": location, "issue": issue,
                     "description": description}]}))


def _oauth_error(status: int, error: str, description: str) -> ApiError:
    return ApiError(Response.json(status, {"error": error, "error_description": description}))


class PaypalApi:
    name = API_NAME
    CONFIG_EXTRA = {"token_ttl_s": DEFAULT_TOKEN_TTL_S}

    def __init__(self, credentials: tuple[str, str] | None, store: IdempotencyStore,
                 journal: Journal, config: ApiConfig, stats: Stats | None = None,
                 clock=time.time):
        self._enabled = credentials is not None
        if credentials is not None:
            client_id, client_secret = credentials
            if not client_id or not client_secret:
                raise ValueError("PayPal client_id and client_secret must not be empty")
            self._client_id = client_id.encode("utf-8")
            self._client_secret = client_secret.encode("utf-8")
            self._token_key = hmac.new(self._client_secret,
                                       b"psp-sandbox paypal token key\0" + self._client_id,
                                       hashlib.sha256).digest()
        self._store = store
        self._journal = journal
        self._config = config
        self._stats = stats
        self._clock = clock
        self._lock = threading.Lock()
        self._captures: dict[str, dict[str, Any]] = {}   # capture id -> record

    # ---------------------------------------------------------------- wiring

    def routes(self):
        return [
            ("POST", r"/v1/oauth2/token", self.token),
            ("POST", r"/v2/checkout/orders/(?P<order_id>[^/]+)/capture", self.capture),
            ("GET", r"/v2/payments/captures", self.search_captures),
        ]

    def restore(self, rec: dict[str, Any]) -> None:
        """Rebuild a capture and its idempotency entry from a journal record."""
        cap = {
            "id": str(rec["id"]),
            "order_id": str(rec["order_id"]),
            "amount": int(rec["amount"]),
            "currency": str(rec["currency"]),
            "status": str(rec["status"]),
            "decline_code": str(rec.get("decline_code") or ""),
            "idempotency_key": rec.get("idempotency_key"),
            "ts": float(rec["ts"]),
        }
        if cap["status"] not in ("succeeded", "failed"):
            raise ValueError(f"paypal journal record {cap['id']}: bad status {cap['status']!r}")
        if cap["status"] == "failed" and cap["decline_code"] not in ISSUE_DESCRIPTIONS:
            raise ValueError(f"paypal journal record {cap['id']}: unknown issue")
        with self._lock:
            self._captures[cap["id"]] = cap
        if cap["idempotency_key"]:
            self._put(cap)

    # ------------------------------------------------------------- handlers

    def token(self, req: Request) -> Response:
        self._require_enabled()
        if not self._check_basic(req.header("Authorization") or ""):
            raise _oauth_error(401, "invalid_client", "Client Authentication failed")
        try:
            form = urllib.parse.parse_qs(req.body.decode("utf-8"), keep_blank_values=True)
        except (UnicodeDecodeError, ValueError):
            form = {}
        grant = form.get("grant_type", [""])
        if grant != ["client_credentials"]:
            raise _oauth_error(400, "unsupported_grant_type",
                               "Grant Type is NULL" if grant == [""] else "unsupported grant_type")
        ttl = int(self._config.get("token_ttl_s"))
        now = self._clock()
        token = self._issue_token(now + ttl)
        if self._stats is not None:
            self._stats.count_token_grant()
        resp = Response.json(200, {
            "scope": SCOPE, "access_token": token, "token_type": "Bearer",
            "app_id": "APP-SANDBOX", "expires_in": ttl,
            "nonce": _iso(now) + secrets.token_urlsafe(32)})
        resp.log_key = "-"
        return resp

    def capture(self, req: Request) -> Response:
        self._require_enabled()
        self._authenticate(req)
        order_id = req.path_params["order_id"]
        if not _ORDER_ID_RE.fullmatch(order_id):
            raise _invalid("order_id", "path", "INVALID_PARAMETER_VALUE",
                           "The order id must be 1-64 characters of A-Z a-z 0-9 _ -.")
        key = self._request_id(req)
        amount, currency = self._parse_body(req)
        params = {"order_id": order_id, "amount": amount, "currency": currency}
        self._config.drop_if_configured()
        if key is None:
            self._config.simulate_latency()
            resp = self._take_capture(params, None)
        else:
            with self._store.key_lock(API_NAME, key):
                prior = self._store.get(API_NAME, key)
                if prior is None:
                    self._config.simulate_latency()
                    resp = self._take_capture(params, key)
            if prior is not None:
                self._config.simulate_latency()
                resp = self._replay(prior, params)
        resp.log_key = key
        return resp

    def search_captures(self, req: Request) -> Response:
        self._require_enabled()
        self._authenticate(req)
        self._config.simulate_latency()
        values = req.query.get("paypal_request_id")
        if not values or len(values) != 1 or not values[0]:
            raise _invalid("paypal_request_id", "query", "MISSING_REQUIRED_PARAMETER",
                           "Exactly one paypal_request_id query parameter is required.")
        key = values[0]
        with self._store.key_lock(API_NAME, key):   # wait for an in-flight capture
            prior = self._store.get(API_NAME, key)
        captures = []
        if prior is not None:
            with self._lock:
                cap = self._captures.get(prior.resource_id)
            if cap is not None:
                captures.append(self._lookup_object(cap))
        resp = Response.json(200, {"captures": captures})
        resp.log_key = key
        return resp

    # -------------------------------------------------------------- helpers

    def _require_enabled(self) -> None:
        if not self._enabled:
            raise ApiError(Response.json(404, {
                "name": "RESOURCE_NOT_FOUND",
                "message": "The PayPal API is not enabled: start the sandbox with "
                           "--paypal-credentials-file.",
                "debug_id": _random_debug_id()}))

    def _check_basic(self, auth: str) -> bool:
        scheme, _, value = auth.strip().partition(" ")
        if scheme.lower() != "basic":
            return False
        try:
            raw = base64.b64decode(value.strip(), validate=True)
        except (binascii.Error, ValueError):
            return False
        cid, sep, csecret = raw.partition(b":")
        # Evaluate both comparisons (no short-circuit on the id).
        ok_id = hmac.compare_digest(cid, self._client_id)
        ok_secret = hmac.compare_digest(csecret, self._client_secret)
        return bool(sep) and ok_id and ok_secret

    def _token_mac(self, payload: bytes) -> bytes:
        return hmac.new(self._token_key, b"paypal-access-token\0" + payload,
                        hashlib.sha256).digest()[:16]

    def _issue_token(self, expires_at: float) -> str:
        # nonce (16) | expiry in unix ms (8) | truncated HMAC (16)
        payload = secrets.token_bytes(16) + int(expires_at * 1000).to_bytes(8, "big")
        blob = payload + self._token_mac(payload)
        return TOKEN_PREFIX + base64.urlsafe_b64encode(blob).rstrip(b"=").decode("ascii")

    def _token_valid(self, token: str) -> bool:
        if not token.startswith(TOKEN_PREFIX) or len(token) > 200:
            return False
        body = token[len(TOKEN_PREFIX):]
        try:
            blob = base64.urlsafe_b64decode(body + "=" * (-len(body) % 4))
        except (binascii.Error, ValueError):
            return False
        if len(blob) != 40:
            return False
        payload, mac = blob[:24], blob[24:]
        if not hmac.compare_digest(mac, self._token_mac(payload)):
            return False
        return int.from_bytes(payload[16:], "big") > self._clock() * 1000

    def _authenticate(self, req: Request) -> None:
        auth = req.header("Authorization") or ""
        scheme, _, token = auth.strip().partition(" ")
        if scheme.lower() != "bearer" or not self._token_valid(token.strip()):
            raise ApiError(Response.json(
                401, {"error": "invalid_token",
                      "error_description": "Token signature verification failed"},
                headers=[("WWW-Authenticate", 'Bearer realm="psp-sandbox"')]))

    @staticmethod
    def _request_id(req: Request) -> str | None:
        key = req.header("PayPal-Request-Id")
        if key is None:
            return None
        if (not key or len(key) > MAX_REQUEST_ID_LEN
                or not all(0x20 < ord(c) < 0x7F for c in key)):
            raise _invalid("PayPal-Request-Id", "header", "INVALID_PARAMETER_VALUE",
                           "PayPal-Request-Id must be 1-108 printable ASCII characters without "
                           "spaces.")
        return key

    @staticmethod
    def _parse_body(req: Request) -> tuple[int, str]:
        ctype = (req.header("Content-Type") or "").split(";")[0].strip().lower()
        if ctype != "application/json":
            raise _invalid("Content-Type", "header", "UNSUPPORTED_MEDIA_TYPE",
                           "Content-Type must be application/json.", status=415,
                           name="UNSUPPORTED_MEDIA_TYPE",
                           message="The requested resource does not support the media type.")
        try:
            body = json.loads(req.body.decode("utf-8"))
        except (UnicodeDecodeError, ValueError):
            raise _invalid("/", "body", "MALFORMED_REQUEST_JSON",
                           "The request JSON is not well formed.") from None
        if not isinstance(body, dict):
            raise _invalid("/", "body", "MALFORMED_REQUEST_JSON",
                           "The request body must be a JSON object.")
        for k in body:
            if k != "amount":
                raise _invalid("/" + str(k)[:100], "body", "UNKNOWN_FIELD",
                               "Only the amount member is accepted by the sandbox.")
        amount = body.get("amount")
        if not isinstance(amount, dict):
            raise _invalid("/amount", "body", "MISSING_REQUIRED_PARAMETER",
                           "amount must be an object with currency_code and value.")
        for k in amount:
            if k not in ("currency_code", "value"):
                raise _invalid("/amount/" + str(k)[:100], "body", "UNKNOWN_FIELD",
                               "amount accepts only currency_code and value.")
        currency = amount.get("currency_code")
        if not isinstance(currency, str) or not _CURRENCY_RE.fullmatch(currency):
            raise _invalid("/amount/currency_code", "body", "INVALID_PARAMETER_VALUE",
                           "currency_code must be a 3-letter upper-case ISO 4217 code.")
        minor = parse_amount_value(amount.get("value"), currency)
        if minor is None or not 0 < minor <= MAX_AMOUNT:
            raise _invalid("/amount/value", "body", "INVALID_PARAMETER_VALUE",
                           f"value must be a positive decimal string with at most "
                           f"{minor_digits(currency)} decimal places for {currency}.")
        return minor, currency

    @staticmethod
    def _summary(cap: dict[str, Any]) -> dict[str, Any]:
        return {"order_id": cap["order_id"], "amount": cap["amount"], "currency": cap["currency"]}

    def _put(self, cap: dict[str, Any]) -> None:
        status, body = self._render(cap)
        # Everything compared on reuse is journaled, so no separate fingerprint.
        self._store.put(API_NAME, cap["idempotency_key"], StoredResult(
            status=status, body=body, resource_id=cap["id"], fingerprint=None,
            summary=self._summary(cap)))

    def _replay(self, prior: StoredResult, params: dict[str, Any]) -> Response:
        if prior.summary != params:
            return _invalid("PayPal-Request-Id", "header", "PAYPAL_REQUEST_ID_PREVIOUSLY_USED",
                           "The PayPal-Request-Id has already been used for another request.",
                           status=422, name="UNPROCESSABLE_ENTITY",
                           message=UNPROCESSABLE_MESSAGE).response
        resp = Response(prior.status, prior.body, [("PayPal-Request-Id-Replayed", "true")])
        resp.replayed = True
        return resp

    def _server_error(self) -> Response:
        return Response.json(500, {"name": "INTERNAL_SERVER_ERROR",
                                   "message": "An internal server error has occurred.",
                                   "debug_id": _random_debug_id(), "charged": False})

    def _take_capture(self, params: dict[str, Any], key: str | None) -> Response:
        # Injected errors and UNAVAILABLE happen before anything is captured,
        # journaled or stored under the key: a retry may succeed.
        if self._config.inject_error():
            return self._server_error()
        order_id = params["order_id"]
        if order_id.endswith(UNAVAILABLE_SUFFIX):
            return Response.json(503, {"name": "SERVICE_UNAVAILABLE",
                                       "message": "Service Unavailable.",
                                       "debug_id": _random_debug_id(), "charged": False})
        issue = ""
        for suffix, code, _ in DECLINE_SUFFIXES:
            if order_id.endswith(suffix):
                issue = code
                break
        cap = {
            "id": "CAP" + secrets.token_hex(9)[:17].upper(),
            "order_id": order_id,
            "amount": params["amount"],
            "currency": params["currency"],
            "status": "failed" if issue else "succeeded",
            "decline_code": issue,
            "idempotency_key": key,
            "ts": self._clock(),
        }
        try:
            self._journal.append({
                "ts": cap["ts"], "api": API_NAME, "id": cap["id"], "idempotency_key": key,
                "order_id": order_id, "amount": cap["amount"], "currency": cap["currency"],
                "status": cap["status"], "decline_code": issue,
            })
        except (OSError, JournalError):
            return self._server_error()   # not journaled means not captured
        with self._lock:
            self._captures[cap["id"]] = cap
        if key is not None:
            self._put(cap)
        status, body = self._render(cap)
        return Response(status, body)

    @staticmethod
    def _amount_object(cap: dict[str, Any]) -> dict[str, str]:
        return {"currency_code": cap["currency"],
                "value": format_amount(cap["amount"], cap["currency"])}

    @classmethod
    def _lookup_object(cls, cap: dict[str, Any]) -> dict[str, Any]:
        return {
            "id": cap["id"],
            "status": "COMPLETED" if cap["status"] == "succeeded" else "DECLINED",
            "order_id": cap["order_id"],
            "paypal_request_id": cap["idempotency_key"],
            "amount": cls._amount_object(cap),
            "issue": cap["decline_code"],
            "create_time": _iso(cap["ts"]),
        }

    @classmethod
    def _render(cls, cap: dict[str, Any]) -> tuple[int, bytes]:
        """Status and body of the capture call; a pure function of the
        journaled record, so replays after a restart are byte-identical."""
        if cap["status"] == "succeeded":
            return 201, json_bytes({
                "id": cap["order_id"],
                "status": "COMPLETED",
                "purchase_units": [{
                    "reference_id": "default",
                    "payments": {"captures": [{
                        "id": cap["id"], "status": "COMPLETED",
                        "amount": cls._amount_object(cap), "final_capture": True,
                        "create_time": _iso(cap["ts"])}]}}],
                "payer": {"payer_id": _derived_id("payer", cap["order_id"], n=13).upper()},
            })
        issue = cap["decline_code"]
        return 422, json_bytes({
            "name": "UNPROCESSABLE_ENTITY",
            "message": UNPROCESSABLE_MESSAGE,
            "debug_id": _derived_id("debug", cap["id"], n=13),
            "details": [{"issue": issue, "description": ISSUE_DESCRIPTIONS[issue]}],
        })
