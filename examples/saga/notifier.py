"""The notifier: subscribes to the outcomes topic and tells customers how their order ended.

    notifier.py --port PORT --expect N --state FILE

A topic is publish/subscribe: the order service publishes each OrderConfirmed and
OrderCancelled once, and every subscriber gets its own copy. The notifier is one such
subscriber; it never talks to the order service. It exits 0 once it has seen N outcomes;
1 if it has not after --within seconds, or if it loses its connection.
"""

import argparse
import threading

from bus import OUTCOMES_TOPIC, Bus, log, write_state


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--port", type=int, required=True, help="this workload's sidecar forward to ActiveMQ")
    p.add_argument("--expect", type=int, required=True, help="outcomes to wait for (one per order)")
    p.add_argument("--state", required=True)
    p.add_argument("--within", type=float, default=90)
    args = p.parse_args()

    seen = {}  # event type -> count
    enough = threading.Event()
    bus = Bus("notifier", args.port)

    def on_event(event):
        seen[event["type"]] = seen.get(event["type"], 0) + 1
        if event["type"] == "OrderConfirmed":
            log("notifier", f"to {event['customer']}: {event['order']} is confirmed")
        else:
            log("notifier", f"to {event['customer']}: sorry, {event['order']} is cancelled ({event['reason']})")
        write_state(args.state, {"seen": seen})
        if sum(seen.values()) >= args.expect:
            enough.set()

    # auto ack: a topic subscriber that is not listening misses messages anyway.
    bus.subscribe(OUTCOMES_TOPIC, on_event, ack="auto")
    write_state(args.state, {"seen": seen})  # run.sh places orders once this file exists
    log("notifier", f"subscribed to {OUTCOMES_TOPIC}")
    ok = bus.wait(enough, args.within)
    bus.close()
    if not ok:
        log("notifier", f"saw {sum(seen.values())} of {args.expect} outcomes")
        raise SystemExit(1)


if __name__ == "__main__":
    main()
