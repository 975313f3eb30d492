"""Two callers the mesh must turn away from the broker.

    outsider.py --via PORT --direct PORT

--via:    the outsider workload's sidecar forward. That sidecar has a mesh certificate, for
          saga/outsider, and connects over mTLS like the saga's sidecars do, but the
          AuthorizationPolicy on the activemq Service does not name saga/outsider.
--direct: the broker sidecar's inbound listener, in plaintext, as a process that skips the
          mesh would. Under STRICT mTLS the sidecar closes it unanswered.

Each sends a STOMP CONNECT frame. A broker that answers CONNECTED means the mesh let the
caller through: exit 1. Both closed without an answer: exit 0.
"""

import argparse
import socket

CONNECT = b"CONNECT\naccept-version:1.2\nhost:saga\n\n\x00"


def answer(port):
    """What comes back for a CONNECT sent to 127.0.0.1:port before the connection closes."""
    with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
        s.sendall(CONNECT)
        got = b""
        try:
            while chunk := s.recv(4096):
                got += chunk
                if b"\x00" in got:  # a whole frame
                    break
        except (ConnectionResetError, socket.timeout):
            pass
        return got


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--via", type=int, required=True)
    p.add_argument("--direct", type=int, required=True)
    args = p.parse_args()
    failed = False
    for what, port in [(f"saga/outsider through its own sidecar (127.0.0.1:{args.via})", args.via),
                       (f"plaintext straight to the broker's sidecar (127.0.0.1:{args.direct})", args.direct)]:
        got = answer(port)
        if got.startswith(b"CONNECTED"):
            print(f"    LET THROUGH: {what}: ActiveMQ answered CONNECTED")
            failed = True
        else:
            print(f"    refused: {what}: closed, {len(got)} bytes back")
    raise SystemExit(1 if failed else 0)


if __name__ == "__main__":
    main()
