"""The order service: places orders and sees each one through the saga to its end.

    order.py --port PORT --orders N --state FILE

For each order it sends OrderPlaced to the inventory queue, then reacts to inventory's
answers on its own queue:

  InventoryReserved  -> charge the customer (a local payment step)
                          paid     -> CONFIRMED, OrderConfirmed on the outcomes topic
                          declined -> compensate: ReleaseInventory to inventory, and wait
  InventoryReleased  -> the compensation is done: CANCELLED, OrderCancelled on the topic
  InventoryRejected  -> out of stock, nothing to undo: CANCELLED, OrderCancelled on the topic

It exits 0 once every order is CONFIRMED or CANCELLED; 1 if some are not after --within
seconds, or if it loses its connection.
"""

import argparse
import threading

from bus import INVENTORY_QUEUE, ORDER_QUEUE, OUTCOMES_TOPIC, Bus, log, write_state

CUSTOMERS = ["ana", "ben", "chen", "dara", "eve"]
DECLINED_CARDS = {"eve"}  # the payment step declines eve's card, every time


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--port", type=int, required=True, help="this workload's sidecar forward to ActiveMQ")
    p.add_argument("--orders", type=int, default=20)
    p.add_argument("--state", required=True)
    p.add_argument("--within", type=float, default=60, help="seconds the saga may take")
    args = p.parse_args()

    orders = {}
    for i in range(1, args.orders + 1):
        oid = f"order-{i:02d}"
        orders[oid] = {"customer": CUSTOMERS[(i - 1) % len(CUSTOMERS)], "sku": "widget",
                       "qty": 1 + (i - 1) % 3, "status": "PLACED", "reason": None}
    all_done = threading.Event()
    bus = Bus("order", args.port)

    def save():
        write_state(args.state, {"orders": orders})

    def finish(oid, status, reason=None):
        order = orders[oid]
        order["status"], order["reason"] = status, reason
        log("order", f"{oid} {status}" + (f" ({reason})" if reason else ""))
        event = "OrderConfirmed" if status == "CONFIRMED" else "OrderCancelled"
        bus.publish(OUTCOMES_TOPIC, {"type": event, "order": oid, "customer": order["customer"],
                                     "qty": order["qty"], "reason": reason})

    def on_event(event):
        oid, kind = event["order"], event["type"]
        order = orders[oid]
        if kind == "InventoryReserved" and order["status"] == "PLACED":
            if order["customer"] in DECLINED_CARDS:
                # The step after the reservation failed: undo the reservation before the
                # order may end. The order stays COMPENSATING until inventory says so.
                order["status"], order["reason"] = "COMPENSATING", "payment-declined"
                log("order", f"{oid} payment declined for {order['customer']}: releasing {order['qty']} reserved")
                bus.publish(INVENTORY_QUEUE, {"type": "ReleaseInventory", "order": oid,
                                              "sku": order["sku"], "qty": order["qty"]})
            else:
                finish(oid, "CONFIRMED")
        elif kind == "InventoryRejected" and order["status"] == "PLACED":
            finish(oid, "CANCELLED", "out-of-stock")
        elif kind == "InventoryReleased" and order["status"] == "COMPENSATING":
            finish(oid, "CANCELLED", "payment-declined")
        else:
            log("order", f"ignored {kind} for {oid}, which is {order['status']}")
        save()
        if all(o["status"] in ("CONFIRMED", "CANCELLED") for o in orders.values()):
            all_done.set()

    # Every OrderPlaced goes out before we listen for answers, on this one connection, so all
    # of them are in the inventory queue ahead of any ReleaseInventory: which orders find stock
    # does not depend on timing, and every run ends the same way.
    for oid, order in orders.items():
        log("order", f"{oid} placed: {order['qty']} x {order['sku']} for {order['customer']}")
        bus.publish(INVENTORY_QUEUE, {"type": "OrderPlaced", "order": oid, "customer": order["customer"],
                                      "sku": order["sku"], "qty": order["qty"]})
    log("order", f"placed {len(orders)} orders")
    save()
    bus.subscribe(ORDER_QUEUE, on_event)

    finished = bus.wait(all_done, args.within)
    bus.close()
    if not finished:
        stuck = [oid for oid, o in orders.items() if o["status"] not in ("CONFIRMED", "CANCELLED")]
        log("order", f"{len(stuck)} orders have not ended: {' '.join(stuck)}")
        raise SystemExit(1)
    log("order", "every order has ended")


if __name__ == "__main__":
    main()
