#!/usr/bin/env bash
# Makes the local development secrets under VARDIR (default var/) if they are
# missing: the dev CA and sandbox certificate, the card API key the sandbox
# and the card adapter share, and the card fingerprint HMAC key. None of them
# is ever committed (var/ is ignored). Safe to run twice.
set -euo pipefail
cd "$(dirname "$0")/.."
VARDIR="${1:-var}"
mkdir -p "$VARDIR/certs" "$VARDIR/secrets"
chmod 700 "$VARDIR/secrets"
./scripts/make-dev-certs.sh "$VARDIR/certs" >/dev/null
for name in card_api_key fingerprint.key ewallet_secret; do
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
