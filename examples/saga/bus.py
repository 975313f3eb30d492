"""What the saga's services share: a STOMP connection to ActiveMQ, events as JSON, and a
state file that run.sh reads at the end.

None of this knows about the mesh. Each service is given a port on 127.0.0.1 and speaks
plain STOMP to it; that port is its own sidecar's `tcp` forward, which carries the bytes
over mTLS to the broker's sidecar, which hands them to ActiveMQ.
"""

import json
import logging
import os
import threading
import time

import stomp

# Where the events go.
INVENTORY_QUEUE = "/queue/saga.inventory"  # OrderPlaced, ReleaseInventory      -> inventory
ORDER_QUEUE = "/queue/saga.orders"  # InventoryReserved, -Rejected, -Released  -> order
OUTCOMES_TOPIC = "/topic/saga.outcomes"  # OrderConfirmed, OrderCancelled -> every subscriber


def log(service, text):
    now = time.time()
    print(f"{time.strftime('%H:%M:%S', time.localtime(now))}.{int(now % 1 * 1000):03d} {service:<9} {text}",
          flush=True)


def write_state(path, state):
    """Writes `state` as JSON, atomically, so a reader never sees half a file."""
    tmp = f"{path}.tmp"
    with open(tmp, "w") as f:
        json.dump(state, f, indent=1, sort_keys=True)
    os.replace(tmp, path)


class Bus(stomp.ConnectionListener):
    """One STOMP 1.2 connection. Handlers run one at a time, on stomp.py's receiver
    thread, and each message is acknowledged after its handler returns."""

    def __init__(self, service, port, connect_within=15.0):
        self.service = service
        self.handlers = {}  # subscription id -> function(event)
        self.receipts = {}  # receipt id -> threading.Event
        self.connected = threading.Event()
        self.lost = threading.Event()  # the connection ended without us closing it
        self.settled = threading.Event()  # connected or lost, whichever came first
        self.closing = False
        self._connect(port, connect_within)

    def _connect(self, port, within):
        # The sidecar accepts at once, then closes the connection if it cannot reach the
        # broker: while its config has no endpoint for it yet, or when the broker's sidecar
        # refuses this workload's identity. Try again until `within` has passed.
        deadline = time.monotonic() + within
        attempt = 0
        quiet = logging.getLogger("stomp.py")
        quiet.setLevel(logging.CRITICAL)  # a closed attempt is expected; no tracebacks for it
        while True:
            attempt += 1
            for e in (self.connected, self.lost, self.settled):
                e.clear()
            self.conn = stomp.Connection12(
                [("127.0.0.1", port)], heartbeats=(0, 0), reconnect_attempts_max=1
            )
            self.conn.set_listener("bus", self)
            try:
                self.conn.connect(wait=False)
                self.settled.wait(5)
                if self.connected.is_set() and not self.lost.is_set():
                    log(self.service, f"connected to ActiveMQ via 127.0.0.1:{port} (attempt {attempt})")
                    quiet.setLevel(logging.NOTSET)
                    return
            except (stomp.exception.StompException, OSError):
                pass
            if not self.lost.is_set():  # no answer at all: give up on this connection
                try:
                    self.conn.disconnect()
                except Exception:
                    pass
            if time.monotonic() > deadline:
                log(self.service, f"no answer from ActiveMQ through 127.0.0.1:{port} in {within:.0f}s "
                    f"({attempt} attempts); the broker's sidecar logs why it closed them")
                raise SystemExit(1)
            time.sleep(0.5)

    def subscribe(self, destination, handler, ack="client-individual"):
        """Subscribes and returns once the broker has confirmed it (a RECEIPT frame)."""
        sub = str(len(self.handlers) + 1)
        self.handlers[sub] = handler
        self._with_receipt(
            f"sub-{sub}", lambda r: self.conn.subscribe(destination, id=sub, ack=ack, headers={"receipt": r})
        )

    def publish(self, destination, event):
        self.conn.send(destination, json.dumps(event), content_type="application/json",
                       headers={"event-type": event["type"]})

    def wait(self, event, within):
        """Waits for `event`; False after `within` seconds, or at once if the connection is lost."""
        deadline = time.monotonic() + within
        while not event.wait(0.2):
            if self.lost.is_set() or time.monotonic() > deadline:
                return False
        return True

    def close(self):
        self.closing = True
        if self.connected.is_set() and not self.lost.is_set():
            self._with_receipt("bye", lambda r: self.conn.disconnect(receipt=r), required=False)

    def _with_receipt(self, receipt, send, required=True):
        done = self.receipts[receipt] = threading.Event()
        send(receipt)
        if not done.wait(10) and required:
            raise SystemExit(f"{self.service}: no receipt {receipt} from the broker in 10s")

    # stomp.ConnectionListener callbacks, on the receiver thread.

    def on_connected(self, frame):
        self.connected.set()
        self.settled.set()

    def on_disconnected(self):
        self.lost.set()
        self.settled.set()
        if self.connected.is_set() and not self.closing:
            log(self.service, "the connection to ActiveMQ was lost")

    def on_error(self, frame):
        log(self.service, f"ERROR frame from the broker: {frame.headers.get('message')} {frame.body}")

    def on_receipt(self, frame):
        done = self.receipts.get(frame.headers.get("receipt-id"))
        if done:
            done.set()

    def on_message(self, frame):
        sub = frame.headers["subscription"]
        try:
            self.handlers[sub](json.loads(frame.body))
        except Exception as e:  # a bug in a handler: say so, but keep consuming
            log(self.service, f"handler failed on {frame.body}: {e!r}")
        if "ack" in frame.headers:  # a client-individual subscription: done with it
            self.conn.ack(frame.headers["ack"])
