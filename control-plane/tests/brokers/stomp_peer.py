"""A STOMP client for the broker tests (stomp.py), on ONE connection for its whole life.

    stomp_peer.py consume PORT NAME    subscribe to /queue/orders (acked one by one) and
                                       /topic/events; print "queue BODY" / "topic BODY"
    stomp_peer.py produce PORT COUNT   send COUNT messages to each, one pair every 20 ms;
                                       print "sent N" after each pair
    stomp_peer.py probe PORT           try to connect; print "connected" or "refused"

Every line goes to stdout at once. "ready" means connected and subscribed (with receipts).
If the connection drops, the peer prints "disconnected" and exits 3: the tests assert that
nothing the mesh does (config push, control-plane restart, certificate rotation) drops it.
"""

import sys
import threading
import time

import stomp


def say(line):
    print(line, flush=True)


class Listener(stomp.ConnectionListener):
    def __init__(self, conn):
        self.conn = conn
        self.receipts = set()
        self.cond = threading.Condition()
        self.stopping = False

    def on_message(self, frame):
        dest = frame.headers.get("destination", "")
        kind = "queue" if dest.startswith("/queue/") else "topic"
        say(f"{kind} {frame.body}")
        if kind == "queue":
            self.conn.ack(frame.headers["message-id"], frame.headers["subscription"])

    def on_receipt(self, frame):
        with self.cond:
            self.receipts.add(frame.headers.get("receipt-id"))
            self.cond.notify_all()

    def on_disconnected(self):
        if not self.stopping:
            say("disconnected")
            sys.stdout.flush()
            import os

            os._exit(3)

    def wait_receipt(self, rid, timeout=20):
        with self.cond:
            ok = self.cond.wait_for(lambda: rid in self.receipts, timeout)
        if not ok:
            raise SystemExit(f"no receipt {rid}")


def connect(port, client_id, probing=False):
    # No heartbeats and no reconnects: one TCP connection, or a visible failure.
    conn = stomp.Connection(
        [("127.0.0.1", port)], heartbeats=(0, 0), reconnect_attempts_max=1
    )
    listener = Listener(conn)
    listener.stopping = probing
    conn.set_listener("peer", listener)
    conn.connect(wait=True, headers={"client-id": client_id})
    return conn, listener


def main():
    role, port = sys.argv[1], int(sys.argv[2])
    if role == "probe":
        try:
            conn, _ = connect(port, "probe", probing=True)
            say("connected")
            conn.disconnect()
        except Exception as e:  # the mesh closed the connection: no CONNECTED frame
            say(f"refused {type(e).__name__}")
        return
    if role == "consume":
        name = sys.argv[3]
        conn, listener = connect(port, name)
        conn.subscribe("/queue/orders", id="q", ack="client-individual", headers={"activemq.prefetchSize": "1"})
        conn.subscribe("/topic/events", id="t", ack="auto", receipt="sub")
        listener.wait_receipt("sub")
        say("ready")
        # Runs until the test kills it.
        while True:
            time.sleep(3600)
    if role == "produce":
        count = int(sys.argv[3])
        conn, listener = connect(port, "producer")
        say("ready")
        for i in range(count):
            last = {"receipt": "last"} if i == count - 1 else {}
            conn.send("/queue/orders", f"order-{i}", headers={"persistent": "true"})
            conn.send("/topic/events", f"event-{i}", **last)
            say(f"sent {i + 1}")
            time.sleep(0.02)
        # The broker has taken every message once it answers the last one's receipt.
        listener.wait_receipt("last")
        say("finished")
        while True:
            time.sleep(3600)


if __name__ == "__main__":
    main()
