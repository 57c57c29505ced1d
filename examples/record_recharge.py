#!/usr/bin/python3
"""A minimal app-server client: lists the US packages, records a card
recharge, replays it, and reads it back.

Run against the stack that ./scripts/run.sh starts:
    /usr/bin/python3 examples/record_recharge.py [127.0.0.1:50051]
        plaintext, calling as dev-app with the bearer token in var/dev/app.token
    /usr/bin/python3 examples/record_recharge.py --tls [127.0.0.1:50051]
        against `GATEWAY_TLS=1 ./scripts/run.sh`: TLS trusting var/dev/ca.pem,
        calling as dev-app with the client certificate var/dev/app-client.pem
It needs Debian's python3-grpcio and the Python code generated from
protos/ into build/python (./scripts/run.sh makes it).
"""
import os
import sys
import uuid

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.environ.get("RECHARGE_PY_OUT", os.path.join(ROOT, "build", "python")))

import grpc  # noqa: E402
from recharge.v1 import recharge_pb2 as pb  # noqa: E402
from recharge.v1 import recharge_pb2_grpc as rpc  # noqa: E402


DEV = os.path.join(ROOT, "var", "dev")


def read(name: str) -> bytes:
    with open(os.path.join(DEV, name), "rb") as f:
        return f.read()


def main() -> int:
    args = sys.argv[1:]
    tls = "--tls" in args
    args = [a for a in args if a != "--tls"]
    target = args[0] if args else "127.0.0.1:50051"
    if tls:
        # mTLS: the certificate says who calls; no token needed.
        creds = grpc.ssl_channel_credentials(root_certificates=read("ca.pem"),
                                             private_key=read("app-client.key"),
                                             certificate_chain=read("app-client.pem"))
        channel = grpc.secure_channel(target, creds)
        auth = None
    else:
        channel = grpc.insecure_channel(target)
        auth = [("authorization", "Bearer " + read("app.token").decode().strip())]
    with channel:
        gateway = rpc.RechargeGatewayStub(channel)

        packages = gateway.ListPackages(pb.ListPackagesRequest(region="US"), timeout=5, metadata=auth)
        for p in packages.packages:
            print(f"{p.package_id:12} {p.coins:6} coins  {p.price.currency} {p.price.minor_units}")

        request = pb.RecordRechargeRequest(
            idempotency_key=f"example-{uuid.uuid4().hex}",
            user_id="user-42",
            package_id="coins_65",
            amount=pb.Money(currency="USD", minor_units=99),
            region="US",
            card=pb.Card(number="4242424242424242", exp_month=12, exp_year=2030, cvc="123"),
            client=pb.ClientContext(ip="203.0.113.7", device_id="device-1"),
        )
        first = gateway.RecordRecharge(request, timeout=10, metadata=auth)
        print("recorded:", pb.RechargeStatus.Name(first.status), first.recharge_id,
              "coins", first.coins_credited, "via", first.payment.adapter)
        again = gateway.RecordRecharge(request, timeout=10, metadata=auth)
        print("retried: ", again.recharge_id, "replayed =", again.replayed)
        stored = gateway.GetRecharge(pb.GetRechargeRequest(recharge_id=first.recharge_id), timeout=5,
                                    metadata=auth)
        print("stored:  ", stored.card_masked, pb.RechargeStatus.Name(stored.status))
        ok = (first.status == pb.RECHARGE_STATUS_APPROVED and again.replayed
              and again.recharge_id == first.recharge_id)
        return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
