#!/usr/bin/env bash
# Encodes the text-format seeds of corpus/recharge_request/ (*.txtpb) into
# the binary RecordRechargeRequest seeds (*.bin) that recharge_request_fuzz
# starts from. Run it after editing a seed or the proto; commit both files.
set -euo pipefail
cd "$(dirname "$0")/../.."
for txt in tests/fuzz/corpus/recharge_request/*.txtpb; do
  protoc --proto_path=protos --encode=recharge.v1.RecordRechargeRequest --deterministic_output \
    protos/recharge/v1/recharge.proto < "$txt" > "${txt%.txtpb}.bin"
done
echo "encoded $(ls tests/fuzz/corpus/recharge_request/*.txtpb | wc -l) seeds" >&2
