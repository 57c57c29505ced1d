#!/usr/bin/env bash
# Create a development CA, a server certificate (for the gateway's gRPC port
# and the PSP sandbox) and, on request, client certificates for mTLS.
#
#   scripts/make-dev-certs.sh OUTDIR [CLIENT...]
#
# Produces (only if missing):
#   OUTDIR/ca.pem      dev CA certificate (give this to clients as their CA file)
#   OUTDIR/ca.key      dev CA private key (chmod 600)
#   OUTDIR/server.pem  server certificate signed by the CA,
#                      subjectAltName DNS:localhost, IP:127.0.0.1
#   OUTDIR/server.key  server private key (chmod 600)
#   OUTDIR/CLIENT-client.pem / .key   for each CLIENT named: a client
#                      certificate (extendedKeyUsage clientAuth) signed by the
#                      CA, subject CN "CLIENT-client" (what the gateway's
#                      `callers:` names in certificate_subjects)
#
# To rotate the server certificate: delete server.pem and server.key, run
# this again (a new pair from the same CA), then send the gateway SIGHUP.
#
# Keys are EC P-256, certificates valid 825 days. Safe to run repeatedly: if all
# four files exist nothing is touched. If the CA exists but the server pair does
# not, a new server pair is issued by the existing CA. If the CA is missing, the
# whole set is regenerated (a server cert signed by a lost CA is useless).
set -euo pipefail

if [[ $# -lt 1 || -z "$1" ]]; then
  echo "usage: $0 OUTDIR [CLIENT...]" >&2
  exit 2
fi

OUTDIR=$1
shift
CLIENTS=("$@")
for c in "${CLIENTS[@]}"; do
  [[ "$c" =~ ^[a-z0-9][a-z0-9-]*$ ]] || { echo "$0: client name \"$c\" must be [a-z0-9-]" >&2; exit 2; }
done
DAYS=825
CA_CN="Coin Recharge Dev CA (NOT FOR PRODUCTION)"
SERVER_CN="localhost"

command -v openssl >/dev/null 2>&1 || { echo "$0: openssl CLI not found" >&2; exit 1; }

mkdir -p -- "$OUTDIR"
umask 077

have() { [[ -s "$OUTDIR/$1" ]]; }

clients_present() {
  local c
  for c in "${CLIENTS[@]}"; do
    have "$c-client.pem" && have "$c-client.key" || return 1
  done
}
if have ca.pem && have ca.key && have server.pem && have server.key && clients_present; then
  echo "dev certificates already present in $OUTDIR"
  exit 0
fi

WORK=$(mktemp -d "$OUTDIR/.make-dev-certs.XXXXXX")
trap 'rm -rf -- "$WORK"' EXIT

new_key() {  # new_key FILE
  openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out "$1" 2>/dev/null
  chmod 600 "$1"
}

serial() { echo "0x$(openssl rand -hex 16)"; }

regen_server=0
if have ca.pem && have ca.key; then
  cp -- "$OUTDIR/ca.pem" "$WORK/ca.pem"
  cp -- "$OUTDIR/ca.key" "$WORK/ca.key"
else
  regen_server=1
  cat >"$WORK/ca.cnf" <<EOF
[req]
distinguished_name = dn
prompt = no
x509_extensions = v3_ca

[dn]
CN = $CA_CN

[v3_ca]
basicConstraints = critical, CA:TRUE, pathlen:0
keyUsage = critical, keyCertSign, cRLSign
subjectKeyIdentifier = hash
EOF
  new_key "$WORK/ca.key"
  openssl req -new -x509 -config "$WORK/ca.cnf" -key "$WORK/ca.key" -sha256 \
    -days "$DAYS" -set_serial "$(serial)" -out "$WORK/ca.pem"
fi

if [[ $regen_server -eq 1 ]] || ! have server.pem || ! have server.key; then
  cat >"$WORK/server.cnf" <<EOF
[req]
distinguished_name = dn
prompt = no

[dn]
CN = $SERVER_CN

[v3_server]
basicConstraints = critical, CA:FALSE
keyUsage = critical, digitalSignature
extendedKeyUsage = serverAuth
subjectAltName = DNS:localhost, IP:127.0.0.1
subjectKeyIdentifier = hash
authorityKeyIdentifier = keyid, issuer
EOF
  new_key "$WORK/server.key"
  openssl req -new -config "$WORK/server.cnf" -key "$WORK/server.key" -sha256 -out "$WORK/server.csr"
  openssl x509 -req -in "$WORK/server.csr" -CA "$WORK/ca.pem" -CAkey "$WORK/ca.key" \
    -set_serial "$(serial)" -days "$DAYS" -sha256 \
    -extfile "$WORK/server.cnf" -extensions v3_server -out "$WORK/server.pem" 2>/dev/null
  openssl verify -CAfile "$WORK/ca.pem" -verify_ip 127.0.0.1 "$WORK/server.pem" >/dev/null

  # Install: keys first (mode 600), certificates last; each via atomic rename.
  if [[ $regen_server -eq 1 ]]; then
    mv -f -- "$WORK/ca.key" "$OUTDIR/ca.key"
    mv -f -- "$WORK/ca.pem" "$OUTDIR/ca.pem"
  fi
  mv -f -- "$WORK/server.key" "$OUTDIR/server.key"
  mv -f -- "$WORK/server.pem" "$OUTDIR/server.pem"
fi

for c in "${CLIENTS[@]}"; do
  if [[ $regen_server -eq 1 ]] || ! have "$c-client.pem" || ! have "$c-client.key"; then
    cat >"$WORK/client.cnf" <<CNF
[req]
distinguished_name = dn
prompt = no

[dn]
CN = $c-client

[v3_client]
basicConstraints = critical, CA:FALSE
keyUsage = critical, digitalSignature
extendedKeyUsage = clientAuth
subjectAltName = DNS:$c-client
subjectKeyIdentifier = hash
authorityKeyIdentifier = keyid, issuer
CNF
    new_key "$WORK/$c-client.key"
    openssl req -new -config "$WORK/client.cnf" -key "$WORK/$c-client.key" -sha256 -out "$WORK/client.csr"
    openssl x509 -req -in "$WORK/client.csr" -CA "$OUTDIR/ca.pem" -CAkey "$OUTDIR/ca.key" \
      -set_serial "$(serial)" -days "$DAYS" -sha256 \
      -extfile "$WORK/client.cnf" -extensions v3_client -out "$WORK/$c-client.pem" 2>/dev/null
    mv -f -- "$WORK/$c-client.key" "$OUTDIR/$c-client.key"
    mv -f -- "$WORK/$c-client.pem" "$OUTDIR/$c-client.pem"
  fi
  chmod 600 -- "$OUTDIR/$c-client.key"
  chmod 644 -- "$OUTDIR/$c-client.pem"
done

chmod 600 -- "$OUTDIR/ca.key" "$OUTDIR/server.key"
chmod 644 -- "$OUTDIR/ca.pem" "$OUTDIR/server.pem"
echo "dev certificates written to $OUTDIR (CA file: $OUTDIR/ca.pem)"
