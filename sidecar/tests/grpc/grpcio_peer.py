"""Python grpcio (the C-core gRPC, a third-party implementation) on both ends of Trellis, for
sidecar/tests/grpc_python.rs. No .proto: messages are raw bytes, which gRPC allows.

  grpcio_peer.py serve NAME
      serves every method on 127.0.0.1:<free port>, prints the port, and answers each call
      with JSON {server, method, route}: its own NAME, the method called, and the value of
      the `x-grpc-route` request metadata (which a route's filter may set).
  grpcio_peer.py call TARGET AUTHORITY METHOD N [CA_PEM SNI]
      makes N unary calls of METHOD through TARGET (host:port) with :authority AUTHORITY,
      over TLS when CA_PEM is given (server name SNI), and prints JSON: how many answers came
      from each server, the x-grpc-route values seen, and the status codes of failed calls."""

import json
import sys
from concurrent import futures

import grpc


def serve(name):
    class Any(grpc.GenericRpcHandler):
        def service(self, details):
            md = dict(details.invocation_metadata)

            def unary(_request, _context):
                body = {"server": name, "method": details.method, "route": md.get("x-grpc-route", "")}
                return json.dumps(body).encode()

            return grpc.unary_unary_rpc_method_handler(unary)

    server = grpc.server(futures.ThreadPoolExecutor(max_workers=4), handlers=[Any()])
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    print(port, flush=True)
    server.wait_for_termination()


def call(target, authority, method, n, ca=None, sni=None):
    options = [("grpc.default_authority", authority)]
    if ca:
        creds = grpc.ssl_channel_credentials(root_certificates=open(ca, "rb").read())
        options.append(("grpc.ssl_target_name_override", sni))
        channel = grpc.secure_channel(target, creds, options=options)
    else:
        channel = grpc.insecure_channel(target, options=options)
    stub = channel.unary_unary(method)
    servers, routes, failures = {}, {}, {}
    for _ in range(n):
        try:
            r = json.loads(stub(b"ride", timeout=10))
            servers[r["server"]] = servers.get(r["server"], 0) + 1
            routes[r["route"]] = routes.get(r["route"], 0) + 1
        except grpc.RpcError as e:
            code = e.code().name
            failures[code] = failures.get(code, 0) + 1
    print(json.dumps({"servers": servers, "routes": routes, "failures": failures}), flush=True)


if __name__ == "__main__":
    if sys.argv[1] == "serve":
        serve(sys.argv[2])
    else:
        call(sys.argv[2], sys.argv[3], sys.argv[4], int(sys.argv[5]), *sys.argv[6:8])
