#!/usr/bin/env python3
# python3 examples/standalone/upstream.py 19101 billing-v1
"""A sample upstream for the standalone example: answers every request with 200, its name
in the body and in an `x-upstream` header, so that you can see which one served you."""

import sys
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


class Handler(BaseHTTPRequestHandler):
    # HTTP/1.1 keeps connections open, as the proxy's connection pool expects.
    protocol_version = "HTTP/1.1"
    name = "upstream"

    def answer(self, with_body=True):
        length = int(self.headers.get("Content-Length") or 0)
        if length:
            self.rfile.read(length)
        elif "chunked" in self.headers.get("Transfer-Encoding", ""):
            # The stdlib cannot read chunked bodies; close instead of misreading the next request.
            self.close_connection = True
        body = f"{self.name}\n".encode()
        self.send_response(200)
        self.send_header("Content-Type", "text/plain; charset=utf-8")
        self.send_header("Content-Length", str(len(body)))
        self.send_header("x-upstream", self.name)
        self.end_headers()
        if with_body:
            self.wfile.write(body)

    def do_GET(self):
        self.answer()

    def do_POST(self):
        self.answer()

    do_PUT = do_DELETE = do_PATCH = do_POST

    def do_HEAD(self):
        self.answer(with_body=False)

    def log_message(self, format, *args):
        pass  # quiet: run.sh prints what matters


def main():
    if len(sys.argv) != 3:
        sys.exit("usage: upstream.py PORT NAME")
    port, Handler.name = int(sys.argv[1]), sys.argv[2]
    server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
    server.daemon_threads = True
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass


if __name__ == "__main__":
    main()
