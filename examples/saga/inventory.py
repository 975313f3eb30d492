"""The inventory service: holds the stock and reserves it for orders.

    inventory.py --port PORT --stock N --state FILE

It consumes its queue and answers on the order service's:

  OrderPlaced       -> enough stock: take it, InventoryReserved
                       not enough:   InventoryRejected
  ReleaseInventory  -> the compensation: put the order's reserved stock back, InventoryReleased

It runs until it is stopped (SIGTERM or Ctrl-C), writing its state after every event.
"""

import argparse
import signal
import threading

from bus import INVENTORY_QUEUE, ORDER_QUEUE, Bus, log, write_state


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--port", type=int, required=True, help="this workload's sidecar forward to ActiveMQ")
    p.add_argument("--stock", type=int, default=30, help="widgets in stock at the start")
    p.add_argument("--state", required=True)
    args = p.parse_args()

    state = {"initialStock": args.stock, "stock": args.stock,
             "reservations": {},  # order -> quantity held for it
             "handled": {"OrderPlaced": 0, "ReleaseInventory": 0}}
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    bus = Bus("inventory", args.port)

    def answer(kind, event, **more):
        bus.publish(ORDER_QUEUE, {"type": kind, "order": event["order"], "sku": event["sku"],
                                  "qty": event["qty"], **more})

    def on_event(event):
        oid, qty = event["order"], event["qty"]
        state["handled"][event["type"]] = state["handled"].get(event["type"], 0) + 1
        if event["type"] == "OrderPlaced":
            if state["stock"] >= qty:
                state["stock"] -= qty
                state["reservations"][oid] = qty
                log("inventory", f"{oid} reserved {qty}, {state['stock']} left")
                answer("InventoryReserved", event)
            else:
                log("inventory", f"{oid} rejected: wants {qty}, {state['stock']} left")
                answer("InventoryRejected", event, available=state["stock"])
        elif event["type"] == "ReleaseInventory":
            held = state["reservations"].pop(oid, 0)  # releasing twice puts nothing back twice
            state["stock"] += held
            log("inventory", f"{oid} released {held}, {state['stock']} left")
            answer("InventoryReleased", event)
        write_state(args.state, state)

    bus.subscribe(INVENTORY_QUEUE, on_event)
    write_state(args.state, state)  # run.sh starts the order service once this file exists
    log("inventory", f"ready with {args.stock} widgets")
    while not stop.wait(0.2):
        if bus.lost.is_set():
            raise SystemExit(1)
    bus.close()


if __name__ == "__main__":
    main()
