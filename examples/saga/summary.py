"""Prints what the saga did, from the services' state files and the broker sidecar's
metrics, and exits 1 if the numbers do not add up.

    summary.py --dir STATE_DIR --orders N --broker-admin HOST:PORT

STATE_DIR holds order.json, inventory.json, notifier.json and saga.log, the log all three
services append to.
"""

import argparse
import json
import os
import urllib.request


def load(path):
    with open(path) as f:
        return json.load(f)


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--dir", required=True, help="where the state files and saga.log are")
    p.add_argument("--orders", type=int, required=True)
    p.add_argument("--broker-admin", required=True)
    args = p.parse_args()

    orders = load(os.path.join(args.dir, "order.json"))["orders"]
    inventory = load(os.path.join(args.dir, "inventory.json"))
    seen = load(os.path.join(args.dir, "notifier.json"))["seen"]
    metrics = urllib.request.urlopen(f"http://{args.broker_admin}/metrics", timeout=5).read().decode()

    def status(s, reason=None):
        return [o for o in orders.values() if o["status"] == s and (reason is None or o["reason"] == reason)]

    confirmed, cancelled = status("CONFIRMED"), status("CANCELLED")
    out_of_stock, declined = status("CANCELLED", "out-of-stock"), status("CANCELLED", "payment-declined")
    sold = sum(o["qty"] for o in confirmed)
    released = inventory["handled"].get("ReleaseInventory", 0)

    print("==> the saga")
    print(f"    orders placed: {len(orders)}   confirmed: {len(confirmed)}   compensated (cancelled): {len(cancelled)}")
    print(f"      out of stock (InventoryRejected): {len(out_of_stock)}")
    print(f"      payment declined, stock released (ReleaseInventory): {len(declined)}")
    print(f"    inventory: {inventory['initialStock']} widgets at the start, {sold} sold, "
          f"{inventory['stock']} left; {released} releases put "
          f"{sum(o['qty'] for o in declined)} back")
    print(f"    notifier saw on the topic: " + ", ".join(f"{n} {t}" for t, n in sorted(seen.items())))

    # One order of each ending, as the services logged it (they all append to one log).
    with open(os.path.join(args.dir, "saga.log")) as f:
        log = f.read().splitlines()
    for title, group in [("confirmed", confirmed), ("payment declined, then compensated", declined),
                         ("out of stock", out_of_stock)]:
        if group:
            oid = next(k for k, o in orders.items() if o is group[0])
            print(f"\n==> {oid}, {title}: its events, as the services logged them")
            for line in log:
                if f" {oid} " in line or line.endswith(f" {oid}"):
                    print(f"    {line}")

    print(f"\n==> the broker's sidecar, http://{args.broker_admin}/metrics")
    wanted = ("trellis_tcp_connections_opened_total", "trellis_authorization_denied_total")
    lines = [l for l in metrics.splitlines() if l.startswith(wanted)]
    for l in lines:
        print(f"    {l}")

    def total(name, *must):
        return sum(float(l.rsplit(" ", 1)[1]) for l in lines if l.startswith(name + "{") and all(m in l for m in must))

    inbound = total("trellis_tcp_connections_opened_total", 'direction="inbound"')
    denied = total("trellis_authorization_denied_total")
    checks = [
        (f"{args.orders} orders placed", len(orders) == args.orders),
        ("every order ended confirmed or compensated, none lost or stuck",
         len(confirmed) + len(cancelled) == len(orders)),
        ("the inventory saw every OrderPlaced once",
         inventory["handled"].get("OrderPlaced", 0) == len(orders)),
        ("every declined payment was compensated by one ReleaseInventory", released == len(declined)),
        ("stock left = stock at the start - widgets of confirmed orders",
         inventory["stock"] == inventory["initialStock"] - sold),
        ("inventory still holds a reservation for exactly the confirmed orders",
         sorted(inventory["reservations"]) == sorted(k for k, o in orders.items() if o["status"] == "CONFIRMED")),
        ("the notifier saw one OrderConfirmed per confirmed order", seen.get("OrderConfirmed", 0) == len(confirmed)),
        ("the notifier saw one OrderCancelled per compensated order", seen.get("OrderCancelled", 0) == len(cancelled)),
        ("the broker's sidecar took the 3 services' connections inbound (mTLS)", inbound >= 3),
        ("the broker's sidecar refused the outsider (AuthorizationPolicy)", denied >= 1),
    ]
    print("\n==> checks")
    for text, ok in checks:
        print(f"    {'ok  ' if ok else 'FAIL'} {text}")
    failed = [t for t, ok in checks if not ok]
    if failed:
        raise SystemExit(f"summary.py: {len(failed)} check(s) failed")


if __name__ == "__main__":
    main()
