//! Gateway mode: a proxy serving a Gateway's listener to clients outside the mesh, routing by
//! host and path to mesh Services, with the same metrics as every other request.

mod support;

use support::*;

const GATEWAY: &str = "apiVersion: gateway.networking.k8s.io/v1\nkind: Gateway\n\
metadata: {name: edge, namespace: rides}\n\
spec:\n  gatewayClassName: trellis\n  listeners:\n  - {name: http, port: 80, protocol: HTTP, hostname: \"*.example.com\"}\n---\n";

fn routes() -> String {
    r#"apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: api, namespace: rides}
spec:
  parentRefs: [{kind: Gateway, name: edge, sectionName: http}]
  hostnames: [rides.example.com]
  rules:
  - matches: [{path: {type: PathPrefix, value: /api/rides}}]
    filters: [{type: URLRewrite, urlRewrite: {path: {type: ReplacePrefixMatch, replacePrefixMatch: /rides}}}]
    backendRefs: [{name: passenger, port: 80}]
  - matches: [{path: {type: PathPrefix, value: /api/drivers}, method: GET}]
    backendRefs: [{name: driver, port: 80}]
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: fallback, namespace: rides}
spec:
  parentRefs: [{kind: Gateway, name: edge}]
  rules:
  - matches: [{path: {type: PathPrefix, value: /}}]
    backendRefs: [{name: driver, port: 80}]
---
"#
    .to_string()
}

async fn gateway_proxy() -> (Upstream, Upstream, Harness, std::net::SocketAddr) {
    gateway_proxy_with("").await
}

/// The gateway with `extra` added to its bootstrap's `gateway` block.
async fn gateway_proxy_with(extra: &str) -> (Upstream, Upstream, Harness, std::net::SocketAddr) {
    let passenger = Upstream::start("passenger-0").await;
    let driver = Upstream::start("driver-0").await;
    let mesh = [
        service("passenger", ""),
        service("driver", ""),
        workload("passenger", &passenger),
        workload("driver", &driver),
        GATEWAY.to_string(),
        routes(),
    ]
    .concat();
    let h = start(
        &mesh,
        &format!("gateway: {{name: edge, listen: {{http: 127.0.0.1:0}}{extra}}}\n"),
    )
    .await;
    let addr = h.running.as_ref().unwrap().gateway["http"];
    (passenger, driver, h, addr)
}

#[tokio::test]
async fn routes_by_host_and_path_and_rewrites_the_prefix() {
    let (passenger, driver, h, gw) = gateway_proxy().await;

    let r = h
        .send(req(gw, "rides.example.com", "/api/rides/42?x=1"))
        .await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.header("x-upstream"), "passenger-0");
    assert_eq!(r.header("x-seen-path"), "/rides/42?x=1");
    // Upstream sees the mesh Service as its host; the client's host travels on.
    assert_eq!(r.header("x-seen-host"), "passenger.rides");
    assert!(r.body.contains("rides.example.com"), "{}", r.body);

    let r = h
        .send(req(gw, "RIDES.example.com:8080", "/api/drivers"))
        .await;
    assert_eq!(r.header("x-upstream"), "driver-0");
    assert_eq!(r.header("x-seen-path"), "/api/drivers");

    // The method match: POST /api/drivers falls through to the catch-all route, which also
    // goes to driver but under the other route's name.
    let mut post = req(gw, "rides.example.com", "/api/drivers");
    *post.method_mut() = http::Method::POST;
    assert_eq!(h.send(post).await.status, 200);

    // The hostname-specific route wins over the catch-all for its host only.
    let r = h.send(req(gw, "maps.example.com", "/api/rides/1")).await;
    assert_eq!(r.header("x-upstream"), "driver-0");
    assert_eq!(r.header("x-seen-path"), "/api/rides/1");
    assert_eq!(passenger.hits(), 1);
    assert_eq!(driver.hits(), 3);

    let metric = |route: &'static str, svc: &'static str| {
        let h = &h;
        async move {
            h.metric(
                "trellis_requests_total",
                &[
                    ("direction", "gateway"),
                    ("route", route),
                    ("destination_service", svc),
                    ("response_code", "200"),
                ],
            )
            .await
        }
    };
    assert_eq!(metric("rides/api", "passenger.rides").await, 1.0);
    assert_eq!(metric("rides/api", "driver.rides").await, 1.0);
    assert_eq!(metric("rides/fallback", "driver.rides").await, 2.0);
}

#[tokio::test]
async fn hosts_outside_the_listener_hostname_get_a_mesh_404() {
    let (passenger, driver, h, gw) = gateway_proxy().await;
    let r = h.send(req(gw, "rides.example.org", "/api/rides/1")).await;
    assert_eq!(r.status, 404);
    assert_eq!(r.header("trellis-error"), "no-route");
    assert!(r.body.contains("Gateway rides/edge"), "{}", r.body);
    assert_eq!(passenger.hits() + driver.hits(), 0);
    // The gateway's routes are not mesh routes: on the outbound listener, passenger is
    // reached by its Service name and its own default route, without the rewrite.
    let r = h.get("passenger", "/api/rides/1").await;
    assert_eq!(r.header("x-seen-path"), "/api/rides/1");
}

#[tokio::test]
async fn a_gateway_missing_from_the_config_is_a_503_that_says_so() {
    let up = Upstream::start("driver-0").await;
    let mesh = service("driver", "") + &workload("driver", &up);
    let h = start(
        &mesh,
        "gateway: {name: rides/edge, listen: {http: 127.0.0.1:0}}\n",
    )
    .await;
    let gw = h.running.as_ref().unwrap().gateway["http"];
    let r = h.send(req(gw, "x.example.com", "/")).await;
    assert_eq!(r.status, 503);
    assert_eq!(r.header("trellis-error"), "no-route");
    assert!(r.body.contains("no Gateway rides/edge"), "{}", r.body);
}

#[tokio::test]
async fn the_gateway_routes_on_the_normalized_path_and_sends_it_on() {
    let (passenger, _driver, h, gw) = gateway_proxy().await;
    // Another spelling of /api/rides/42 takes the /api/rides rule, and the rewrite works on
    // the normalized path.
    let r = h
        .send(req(
            gw,
            "rides.example.com",
            "/x/../api/./%72ides//42?q=/../a",
        ))
        .await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.header("x-upstream"), "passenger-0");
    assert_eq!(r.header("x-seen-path"), "/rides/42?q=/../a");
    // A form the mesh refuses by default never reaches a backend.
    let r = h
        .send(req(gw, "rides.example.com", "/api/rides%2F.."))
        .await;
    assert_eq!(r.status, 400);
    assert_eq!(r.header("trellis-error"), "bad-request");
    assert_eq!(passenger.hits(), 1);
}

/// The headers the upstream saw, from its JSON echo.
fn seen(r: &Resp) -> serde_json::Value {
    serde_json::from_str(&r.body).unwrap_or_else(|e| panic!("{e}: {}", r.body))
}

#[tokio::test]
async fn the_edge_writes_the_forwarded_headers_and_believes_no_client() {
    let (_p, _d, h, gw) = gateway_proxy().await;
    let mut r = req(gw, "rides.example.com", "/api/rides/1");
    let hs = r.headers_mut();
    hs.insert("x-forwarded-for", "10.0.0.1".parse().unwrap());
    hs.insert("x-forwarded-proto", "https".parse().unwrap());
    hs.insert("forwarded", "for=10.0.0.1".parse().unwrap());
    let r = h.send(r).await;
    assert_eq!(r.status, 200, "{}", r.body);
    let s = seen(&r);
    assert_eq!(s["x-forwarded-for"], "127.0.0.1", "{s}");
    assert_eq!(s["x-forwarded-proto"], "http", "{s}");
    assert_eq!(
        s["forwarded"], "for=127.0.0.1;proto=http;host=\"rides.example.com\"",
        "{s}"
    );
}

#[tokio::test]
async fn behind_a_trusted_load_balancer_the_client_is_the_one_it_saw() {
    let (_p, _d, h, gw) = gateway_proxy_with(", trustedProxies: 1").await;
    let mut r = req(gw, "rides.example.com", "/api/rides/1");
    let hs = r.headers_mut();
    hs.insert("x-forwarded-for", "10.0.0.1, 198.51.100.7".parse().unwrap());
    hs.insert("x-forwarded-proto", "https".parse().unwrap());
    let r = h.send(r).await;
    let s = seen(&r);
    assert_eq!(s["x-forwarded-for"], "198.51.100.7, 127.0.0.1", "{s}");
    assert_eq!(s["x-forwarded-proto"], "https", "{s}");
}

#[tokio::test]
async fn the_cors_filter_answers_preflights_and_marks_allowed_origins_only() {
    let (passenger, h, gw) = passenger_behind_edge(
        r#"apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: api, namespace: rides}
spec:
  parentRefs: [{kind: Gateway, name: edge}]
  hostnames: [rides.example.com]
  rules:
  - filters:
    - type: CORS
      cors:
        allowOrigins: ["https://app.example.com", "https://*.partners.example.com"]
        allowCredentials: true
        allowMethods: [GET, POST]
        allowHeaders: [x-ride]
        exposeHeaders: [x-upstream]
        maxAge: 600
    backendRefs: [{name: passenger, port: 80}]
---
"#,
        "",
    )
    .await;
    let with = |method: &str, origin: &str, preflight: bool| {
        let mut r = req(gw, "rides.example.com", "/rides");
        *r.method_mut() = method.parse().unwrap();
        r.headers_mut().insert("origin", origin.parse().unwrap());
        if preflight {
            r.headers_mut()
                .insert("access-control-request-method", "POST".parse().unwrap());
            r.headers_mut()
                .insert("access-control-request-headers", "x-ride".parse().unwrap());
        }
        r
    };
    // A preflight from an allowed origin is answered by the gateway, not the backend.
    let r = h
        .send(with("OPTIONS", "https://app.example.com", true))
        .await;
    assert_eq!(r.status, 200);
    assert_eq!(
        r.header("access-control-allow-origin"),
        "https://app.example.com"
    );
    assert_eq!(r.header("access-control-allow-credentials"), "true");
    assert_eq!(r.header("access-control-allow-methods"), "GET, POST");
    assert_eq!(r.header("access-control-allow-headers"), "x-ride");
    assert_eq!(r.header("access-control-max-age"), "600");
    assert_eq!(passenger.hits(), 0);
    // The actual request goes on, and its answer says the origin may read it.
    let r = h
        .send(with("POST", "https://eu.partners.example.com", false))
        .await;
    assert_eq!(r.status, 200);
    assert_eq!(
        r.header("access-control-allow-origin"),
        "https://eu.partners.example.com"
    );
    assert_eq!(r.header("access-control-expose-headers"), "x-upstream");
    assert_eq!(r.header("vary"), "origin");
    assert_eq!(passenger.hits(), 1);
    // Another origin gets no CORS headers (the browser refuses it), and its preflight is the
    // backend's to answer.
    let r = h
        .send(with("POST", "https://evil.example.org", false))
        .await;
    assert_eq!(r.status, 200);
    assert_eq!(r.header("access-control-allow-origin"), "");
    let r = h
        .send(with("OPTIONS", "https://evil.example.org", true))
        .await;
    assert_eq!(r.header("access-control-allow-origin"), "");
    assert_eq!(passenger.hits(), 3);
    // An answer the gateway makes itself still tells an allowed origin's code why.
    passenger.set_mode(testkit::Mode::Reset);
    let r = h.send(with("POST", "https://app.example.com", false)).await;
    assert!(r.status.is_server_error(), "{}", r.status);
    assert!(!r.header("trellis-error").is_empty());
    assert_eq!(
        r.header("access-control-allow-origin"),
        "https://app.example.com"
    );
}

#[tokio::test]
async fn a_client_rate_limit_counts_each_client_address_apart() {
    // Behind one trusted load balancer: the client is the address it appended.
    let (passenger, h, gw) = passenger_behind_edge(
        r#"apiVersion: trellis.dev/v1alpha1
kind: ClientRateLimit
metadata: {name: per-client, namespace: rides}
spec: {requestsPerSecond: 0.5, burst: 2}
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: api, namespace: rides}
spec:
  parentRefs: [{kind: Gateway, name: edge}]
  hostnames: [rides.example.com]
  rules:
  - filters: [{type: ExtensionRef, extensionRef: {group: trellis.dev, kind: ClientRateLimit, name: per-client}}]
    backendRefs: [{name: passenger, port: 80}]
---
"#,
        ", trustedProxies: 1",
    )
    .await;
    let from = |client: &'static str| {
        let mut r = req(gw, "rides.example.com", "/rides");
        r.headers_mut()
            .insert("x-forwarded-for", client.parse().unwrap());
        r
    };
    for _ in 0..2 {
        assert_eq!(h.send(from("203.0.113.7")).await.status, 200);
    }
    let r = h.send(from("203.0.113.7")).await;
    assert_eq!(r.status, 429, "{}", r.body);
    assert_eq!(r.header("trellis-error"), "rate-limited");
    assert_eq!(r.header("retry-after"), "2", "one token every 2 s");
    assert!(
        r.body.contains("203.0.113.7") && r.body.contains("rides/per-client"),
        "{}",
        r.body
    );
    // Another client has its own bucket.
    assert_eq!(h.send(from("198.51.100.1")).await.status, 200);
    assert_eq!(passenger.hits(), 3);
    let limited = h
        .metric(
            "trellis_requests_total",
            &[("direction", "gateway"), ("response_code", "429")],
        )
        .await;
    assert_eq!(limited, 1.0);
}

/// passenger behind the Gateway `edge` (its `http` listener), with `routes` attached and
/// `extra` added to the bootstrap's `gateway` block.
async fn passenger_behind_edge(
    routes: &str,
    extra: &str,
) -> (Upstream, Harness, std::net::SocketAddr) {
    let passenger = Upstream::start("passenger-0").await;
    let mesh = [
        service("passenger", ""),
        workload("passenger", &passenger),
        GATEWAY.to_string(),
        routes.to_string(),
    ]
    .concat();
    let h = start(
        &mesh,
        &format!("gateway: {{name: edge, listen: {{http: 127.0.0.1:0}}{extra}}}\n"),
    )
    .await;
    let gw = h.running.as_ref().unwrap().gateway["http"];
    (passenger, h, gw)
}
