#!/usr/bin/python3
"""An app server's event consumer: follows WatchRecharges, credits and takes
back coins exactly once, and resumes after a restart from the last cursor it
handled (docs/lifecycle.md).

Run against the stack that ./scripts/run.sh starts:
    /usr/bin/python3 examples/watch_recharges.py [127.0.0.1:50051]
It calls as dev-app with the bearer token in var/dev/app.token, keeps its
state in var/examples/consumer.json (the last cursor and the coins applied,
written atomically after each event) and prints one line per event. Stop it
with Ctrl-C and start it again: it goes on from where it stopped, and an
event it sees twice changes nothing.

It needs Debian's python3-grpcio and the Python code generated from
protos/ into build/python (./scripts/run.sh makes it).
"""
import json
import os
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.environ.get("RECHARGE_PY_OUT", os.path.join(ROOT, "build", "python")))

import grpc  # noqa: E402
from recharge.v1 import recharge_pb2 as pb  # noqa: E402
from recharge.v1 import recharge_pb2_grpc as rpc  # noqa: E402

STATE = os.path.join(ROOT, "var", "examples", "consumer.json")


def load_state() -> dict:
    try:
        with open(STATE) as f:
            return json.load(f)
    except FileNotFoundError:
        return {"cursor": "", "applied": {}, "balances": {}}


def save_state(state: dict) -> None:
    """Atomically: the cursor and what was applied move together. (A real app
    server does this in one transaction of its own database.)"""
    os.makedirs(os.path.dirname(STATE), exist_ok=True)
    tmp = STATE + ".tmp"
    with open(tmp, "w") as f:
        json.dump(state, f)
    os.replace(tmp, STATE)


def apply(state: dict, event: "pb.RechargeEvent") -> bool:
    """Credits or takes back coins once per (recharge, event type); False if
    this event was applied before (seen again after a resume)."""
    key = f"{event.recharge.recharge_id}/{pb.RechargeEventType.Name(event.type)}"
    if key in state["applied"]:
        return False
    user = event.recharge.user_id
    state["balances"][user] = state["balances"].get(user, 0) + event.coins_delta
    state["applied"][key] = event.coins_delta
    return True


def main() -> None:
    target = sys.argv[1] if len(sys.argv) > 1 else "127.0.0.1:50051"
    with open(os.path.join(ROOT, "var", "dev", "app.token")) as f:
        token = f.read().strip()
    metadata = [("authorization", f"Bearer {token}")]
    state = load_state()
    stub = rpc.RechargeGatewayStub(grpc.insecure_channel(target))
    while True:
        try:
            for event in stub.WatchRecharges(pb.WatchRechargesRequest(after_cursor=state["cursor"]),
                                             metadata=metadata):
                fresh = apply(state, event)
                state["cursor"] = event.cursor
                save_state(state)
                r = event.recharge
                print(f"{event.cursor} {pb.RechargeEventType.Name(event.type):30} {r.recharge_id} "
                      f"{pb.RechargeStatus.Name(r.status):30} user={r.user_id} "
                      f"coins {event.coins_delta:+d}{'' if fresh else ' (already applied)'}",
                      flush=True)
        except grpc.RpcError as e:
            if e.code() == grpc.StatusCode.OUT_OF_RANGE:
                # Behind the retention: events were lost to this consumer.
                # Reconcile with ListRecharges before going on from the oldest.
                sys.exit(f"cursor expired: {e.details()}")
            if e.code() in (grpc.StatusCode.UNAUTHENTICATED, grpc.StatusCode.PERMISSION_DENIED,
                            grpc.StatusCode.INVALID_ARGUMENT):
                sys.exit(f"{e.code().name}: {e.details()}")
            # UNAVAILABLE (a restart, a network cut): resume from the cursor.
            print(f"stream ended ({e.code().name}); resuming from {state['cursor'] or 'the start'}",
                  file=sys.stderr)
            time.sleep(1)


if __name__ == "__main__":
    try:
        main()
    except KeyboardInterrupt:
        pass
