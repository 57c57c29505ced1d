#!/usr/bin/env bash
# Makes the local development secrets under VARDIR (default var/) if they are
# missing: the dev CA and sandbox certificate (certs/), the card API key the
# sandbox and the card adapter share, the card fingerprint HMAC key, the
# password of the dev PostgreSQL ledger (pg_password), and for
# the gateway's own port (dev/): a dev CA, the server certificate (127.0.0.1,
# localhost), client certificates for the callers dev-app and dev-ops
# (app-client, ops-client) and their bearer tokens (app.token, ops.token).
# None of them is ever committed (var/ is ignored). Safe to run twice.
set -euo pipefail
cd "$(dirname "$0")/.."
VARDIR="${1:-var}"
mkdir -p "$VARDIR/certs" "$VARDIR/secrets" "$VARDIR/dev"
chmod 700 "$VARDIR/secrets" "$VARDIR/dev"
./scripts/make-dev-certs.sh "$VARDIR/certs" >/dev/null
./scripts/make-dev-certs.sh "$VARDIR/dev" app ops >/dev/null
for name in app ops; do
  f="$VARDIR/dev/$name.token"
  if [ ! -s "$f" ]; then
    (umask 077; echo "dev-$name-$(openssl rand -hex 24)" > "$f")
  fi
done
for name in card_api_key fingerprint.key ewallet_secret webhook_secret pg_password; do
  f="$VARDIR/secrets/$name"
  if [ ! -s "$f" ]; then
    (umask 077; openssl rand -hex 32 > "$f")
  fi
done
# PayPal client credentials for the sandbox's OAuth2 endpoint: two lines,
# the client id, then the client secret.
if [ ! -s "$VARDIR/secrets/paypal_credentials" ]; then
  (umask 077; printf 'sandbox-%s\n%s\n' "$(openssl rand -hex 8)" "$(openssl rand -hex 24)" \
    > "$VARDIR/secrets/paypal_credentials")
fi
# The card API key is a Stripe-style test secret key.
if ! grep -q '^sk_test_' "$VARDIR/secrets/card_api_key"; then
  (umask 077; echo "sk_test_$(openssl rand -hex 24)" > "$VARDIR/secrets/card_api_key")
fi
