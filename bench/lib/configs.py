# Used by bench/run (run: bench/run [--quick] [--arms direct,trellis,...]); not run alone.
"""Config files for the upstream (nginx), trellis-proxy and Envoy, written as text.

The two proxies get the same job: one Service named `up` whose single endpoint is the
upstream (or the next proxy), a route on its name, no access log, no retries, raised limits.
"""

import json

# Service name the load tool puts in Host / :authority on every proxied arm.
SERVICE = "up"
# The path every arm requests: the upstream's file of PAYLOAD_BYTES.
PATH = "/payload"
NAMESPACE = "bench"
PAYLOAD_BYTES = 1024
TRUST_DOMAIN = "trellis.local"


def nginx_conf(root, h1_port):
    """One worker serving the 1 KiB file over HTTP/1.1."""
    return f"""# Upstream of the bench: written and started by bench/run.
worker_processes 1;
daemon off;
pid {root}/nginx.pid;
error_log {root}/error.log warn;
events {{ worker_connections 8192; }}
http {{
  access_log off;
  client_body_temp_path {root}/tmp-body;
  proxy_temp_path {root}/tmp-proxy;
  fastcgi_temp_path {root}/tmp-fastcgi;
  uwsgi_temp_path {root}/tmp-uwsgi;
  scgi_temp_path {root}/tmp-scgi;
  # Connections are reused for the whole run, never closed by the upstream.
  keepalive_requests 100000000;
  keepalive_timeout 600s;
  open_file_cache max=16;
  server {{ listen 127.0.0.1:{h1_port}; root {root}/www; location / {{ try_files /payload =404; }} }}
}}
"""


# === trellis-proxy ===


def trellis_bootstrap(name, ports, app_port):
    """`ports` holds outbound, inbound and admin."""
    return f"""# bench/run writes this; the proxy runs as: trellis-proxy --bootstrap THIS --workers 1
workload: {{name: {name}, namespace: {NAMESPACE}, serviceAccount: {name}, labels: {{app: {name}}}}}
listeners: {{outbound: 127.0.0.1:{ports['outbound']}, inbound: 127.0.0.1:{ports['inbound']}, admin: 127.0.0.1:{ports['admin']}}}
app: {{address: 127.0.0.1, ports: {{http: {app_port}}}}}
meshFile: mesh.yaml
"""


def trellis_cp_bootstrap(name, app_label, ports, app_port, cp_url, ca_bundle, token_file, extra=""):
    """Control-plane mode: the proxy certifies itself with the join token in `token_file`
    (service account `bench/<name>`) and registers itself under the label `app: app_label`.
    `extra` is more bootstrap YAML (`upstream: {multiplex: false}`)."""
    return f"""# bench/run writes this; the proxy runs as: trellis-proxy --bootstrap THIS --workers 1
workload: {{name: {name}, namespace: {NAMESPACE}, serviceAccount: {name}, labels: {{app: {app_label}}}}}
listeners: {{outbound: 127.0.0.1:{ports['outbound']}, inbound: 127.0.0.1:{ports['inbound']}, admin: 127.0.0.1:{ports['admin']}}}
app: {{address: 127.0.0.1, ports: {{http: {app_port}}}}}
controlPlane: {{address: {cp_url}, caBundle: {ca_bundle}, tokenFile: {token_file}}}
{extra}"""


def app_protocol(proto):
    """The Service port's appProtocol for an arm: the upstream speaks what the arm's client
    does (nginx HTTP/1.1, nghttpd h2c), and Trellis picks the upstream's protocol by it."""
    return "http2" if proto == "h2" else "http"


def trellis_cp_mesh(mode, proto="h1"):
    """For trellis-control: the Mesh with mTLS `mode` and Service `up`, whose endpoints are
    the sidecars labelled `app: up` that register themselves (no static Workload)."""
    return f"""# bench/run writes this for trellis-control: mTLS mode {mode}, one Service.
apiVersion: trellis.dev/v1alpha1
kind: Mesh
metadata: {{name: default}}
spec: {{trustDomain: {TRUST_DOMAIN}, mtls: {{mode: {mode}}}}}
---
apiVersion: v1
kind: Service
metadata: {{name: {SERVICE}, namespace: {NAMESPACE}}}
spec:
  selector: {{app: {SERVICE}}}
  ports: [{{name: http, port: 80, targetPort: http, appProtocol: {app_protocol(proto)}}}]
"""


def trellis_mesh(target_port, proto="h1"):
    """Service `up` (port 80) with one Workload endpoint at 127.0.0.1:target_port."""
    return f"""# bench/run writes this: one Service, one endpoint, the implicit route.
apiVersion: v1
kind: Service
metadata: {{name: {SERVICE}, namespace: {NAMESPACE}}}
spec:
  selector: {{app: {SERVICE}}}
  ports: [{{name: http, port: 80, targetPort: {target_port}, appProtocol: {app_protocol(proto)}}}]
---
apiVersion: trellis.dev/v1alpha1
kind: Workload
metadata: {{name: {SERVICE}-0, namespace: {NAMESPACE}, labels: {{app: {SERVICE}}}}}
spec: {{address: 127.0.0.1, ports: {{http: {target_port}}}, serviceAccount: {SERVICE}}}
"""


def trellis_mesh_endpoints(n_endpoints, per_service=10):
    """n_endpoints Workloads, `per_service` to a Service, never contacted (for RSS only)."""
    docs = ["# bench/run writes this: a large mesh, to weigh the proxy's memory per endpoint."]
    for s in range(n_endpoints // per_service):
        docs.append(
            f"apiVersion: v1\nkind: Service\nmetadata: {{name: svc-{s}, namespace: {NAMESPACE}}}\n"
            f"spec: {{selector: {{app: svc-{s}}}, ports: [{{name: http, port: 80, targetPort: http}}]}}\n"
        )
        for e in range(per_service):
            docs.append(
                f"apiVersion: trellis.dev/v1alpha1\nkind: Workload\n"
                f"metadata: {{name: svc-{s}-{e}, namespace: {NAMESPACE}, labels: {{app: svc-{s}}}}}\n"
                f"spec: {{address: {endpoint_ip(s * per_service + e)}, ports: {{http: 8080}}}}\n"
            )
    return "---\n".join(docs)


def endpoint_ip(i):
    # Loopback addresses only: these endpoints are configured, never sent traffic.
    return f"127.{1 + i // 62500}.{(i // 250) % 250}.{1 + i % 250}"


# === Envoy ===

# Envoy's defaults would cap a cluster at 1,024 requests/connections; the issue asks for
# limits raised so the breaker never shapes a benchmark.
_UNLIMITED = 1_000_000_000
_BREAKERS = {
    "thresholds": [
        {
            "max_connections": _UNLIMITED,
            "max_pending_requests": _UNLIMITED,
            "max_requests": _UNLIMITED,
            "max_retries": _UNLIMITED,
        }
    ]
}


def _domains(service):
    # The names a Trellis sidecar accepts for a Service in its own namespace; ports are
    # stripped by the connection manager, as Trellis ignores a port that selects port 80.
    return [service, f"{service}.{NAMESPACE}", f"{service}.{NAMESPACE}.svc", f"{service}.{NAMESPACE}.svc.cluster.local"]


def _cluster(name, endpoints):
    return {
        "name": name,
        "type": "STATIC",
        "connect_timeout": "3s",
        "circuit_breakers": _BREAKERS,
        # HTTP/1.1 upstream for HTTP/1.1 downstream, h2c for h2. Each arm's client and
        # upstream speak the same protocol, so this is what Trellis does with the Service
        # port's `appProtocol` (`http` for the HTTP/1.1 arms, `http2` for the h2c ones).
        "typed_extension_protocol_options": {
            "envoy.extensions.upstreams.http.v3.HttpProtocolOptions": {
                "@type": "type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions",
                "use_downstream_protocol_config": {"http_protocol_options": {}, "http2_protocol_options": {}},
            }
        },
        "load_assignment": {
            "cluster_name": name,
            "endpoints": [
                {
                    "lb_endpoints": [
                        {"endpoint": {"address": {"socket_address": {"address": ip, "port_value": port}}}}
                        for ip, port in endpoints
                    ]
                }
            ],
        },
    }


def envoy_config(listen_port, admin_port, virtual_hosts, clusters, downstream_tls=None):
    """A listener that speaks HTTP/1.1 and h2c (codec AUTO), with stats (always on in Envoy),
    no tracing provider, no access log, and request ids generated as Trellis does.
    `downstream_tls` makes it an mTLS listener (`envoy_mtls_listener`)."""
    hcm = {
        "@type": "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager",
        "stat_prefix": "bench",
        "codec_type": "AUTO",
        "generate_request_id": True,
        "strip_any_host_port": True,
        # The new-connection figure's client (ab) speaks HTTP/1.0, which Trellis takes;
        # Envoy refuses it (426) unless told otherwise.
        "http_protocol_options": {"accept_http_10": True},
        "route_config": {"name": "bench", "virtual_hosts": virtual_hosts},
        "http_filters": [
            {
                "name": "envoy.filters.http.router",
                "typed_config": {"@type": "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router"},
            }
        ],
    }
    return json.dumps(
        {
            "admin": {"address": {"socket_address": {"address": "127.0.0.1", "port_value": admin_port}}},
            "static_resources": {
                "listeners": [
                    {
                        "name": "bench",
                        "address": {"socket_address": {"address": "127.0.0.1", "port_value": listen_port}},
                        "filter_chains": [
                            {
                                "filters": [
                                    {"name": "envoy.filters.network.http_connection_manager", "typed_config": hcm}
                                ],
                                **({"transport_socket": downstream_tls} if downstream_tls else {}),
                            }
                        ],
                    }
                ],
                "clusters": clusters,
            },
        },
        indent=1,
    )


def envoy_one_service(listen_port, admin_port, target_port):
    vhost = {
        "name": SERVICE,
        "domains": _domains(SERVICE),
        "routes": [{"match": {"prefix": "/"}, "route": {"cluster": SERVICE}}],
    }
    return envoy_config(listen_port, admin_port, [vhost], [_cluster(SERVICE, [("127.0.0.1", target_port)])])


def envoy_endpoints(listen_port, admin_port, n_endpoints, per_service=10):
    """The Envoy twin of `trellis_mesh_endpoints`: a virtual host and a cluster per Service."""
    vhosts, clusters = [], []
    for s in range(n_endpoints // per_service):
        name = f"svc-{s}"
        vhosts.append(
            {"name": name, "domains": _domains(name), "routes": [{"match": {"prefix": "/"}, "route": {"cluster": name}}]}
        )
        clusters.append(_cluster(name, [(endpoint_ip(s * per_service + e), 8080) for e in range(per_service)]))
    return envoy_config(listen_port, admin_port, vhosts, clusters)


# === Envoy with mTLS between two sidecars (envoy-2hop-mtls) ===
#
# What Istio gives two Envoys, with static files in place of SDS: each presents a leaf of the
# same test CA whose only SAN is its SPIFFE ID, requires the peer's, and accepts only the
# SPIFFE ID it expects, as a Trellis sidecar checks its peer. TLS 1.3 both ways, as Trellis.

_TLS13 = {"tls_minimum_protocol_version": "TLSv1_3", "tls_maximum_protocol_version": "TLSv1_3"}


def _tls_common(pki, me, peer, alpn):
    return {
        "tls_params": _TLS13,
        "tls_certificates": [
            {"certificate_chain": {"filename": pki[me]["cert"]}, "private_key": {"filename": pki[me]["key"]}}
        ],
        "alpn_protocols": alpn,
        "validation_context": {
            "trusted_ca": {"filename": pki["ca"]},
            "match_typed_subject_alt_names": [{"san_type": "URI", "matcher": {"exact": pki[peer]["id"]}}],
        },
    }


def envoy_mtls_listener(pki):
    """The server sidecar's listener: requires the client sidecar's certificate."""
    return {
        "name": "envoy.transport_sockets.tls",
        "typed_config": {
            "@type": "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.DownstreamTlsContext",
            "require_client_certificate": True,
            "common_tls_context": _tls_common(pki, "server", "client", ["h2", "http/1.1"]),
        },
    }


def envoy_mtls_client(listen_port, admin_port, target_port, pki, proto):
    """The client sidecar: plaintext from the load, mTLS to the server sidecar, speaking the
    downstream's protocol upstream (Istio's default), with the ALPN that names it."""
    cluster = _cluster(SERVICE, [("127.0.0.1", target_port)])
    cluster["transport_socket"] = {
        "name": "envoy.transport_sockets.tls",
        "typed_config": {
            "@type": "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.UpstreamTlsContext",
            "common_tls_context": _tls_common(pki, "client", "server", ["h2"] if proto == "h2" else ["http/1.1"]),
        },
    }
    vhost = {
        "name": SERVICE,
        "domains": _domains(SERVICE),
        "routes": [{"match": {"prefix": "/"}, "route": {"cluster": SERVICE}}],
    }
    return envoy_config(listen_port, admin_port, [vhost], [cluster])


def envoy_mtls_server(listen_port, admin_port, target_port, pki):
    """The server sidecar: mTLS in, plaintext to the upstream in the downstream's protocol."""
    vhost = {
        "name": SERVICE,
        "domains": _domains(SERVICE),
        "routes": [{"match": {"prefix": "/"}, "route": {"cluster": SERVICE}}],
    }
    clusters = [_cluster(SERVICE, [("127.0.0.1", target_port)])]
    return envoy_config(listen_port, admin_port, [vhost], clusters, downstream_tls=envoy_mtls_listener(pki))
