//! Routing with Gateway API HTTPRoute semantics, through a real proxy to real upstreams.

mod support;

use support::*;

fn route(spec_rules: &str) -> String {
    format!(
        "apiVersion: gateway.networking.k8s.io/v1\nkind: HTTPRoute\nmetadata: {{name: billing, namespace: rides}}\n\
         spec:\n  parentRefs: [{{kind: Service, name: billing, port: 80}}]\n  rules:\n{spec_rules}---\n"
    )
}

async fn canary() -> (Upstream, Upstream, String) {
    let v1 = Upstream::start("billing-v1").await;
    let v2 = Upstream::start("billing-v2").await;
    let mesh = [
        service("billing", ""),
        service("billing-v1", ""),
        service("billing-v2", ""),
        workload("billing-v1", &v1),
        workload("billing-v2", &v2),
    ]
    .concat();
    (v1, v2, mesh)
}

#[tokio::test]
async fn weighted_split_holds_within_three_percent() {
    let (v1, v2, mesh) = canary().await;
    let mesh = mesh
        + &route(
            "  - backendRefs: [{name: billing-v1, port: 80, weight: 90}, {name: billing-v2, port: 80, weight: 10}]\n",
        );
    let h = start(&mesh, "").await;
    let n = 5000;
    let mut v2_count = 0;
    for _ in 0..n {
        let r = h.get("billing", "/").await;
        assert_eq!(r.status, 200);
        if r.header("x-upstream") == "billing-v2" {
            v2_count += 1;
        }
    }
    let share = f64::from(v2_count) / f64::from(n);
    assert!(
        (0.07..=0.13).contains(&share),
        "billing-v2 got {:.1}% of {n}",
        share * 100.0
    );
    assert_eq!(v1.hits() + v2.hits(), n as usize);
}

#[tokio::test]
async fn every_host_form_reaches_the_service_and_unknown_hosts_get_no_route() {
    let (_v1, _v2, mesh) = canary().await;
    let h = start(&mesh, "").await;
    for host in [
        "billing-v1",
        "billing-v1:80",
        "billing-v1.rides",
        "billing-v1.rides.svc",
        "billing-v1.rides.svc.cluster.local:80",
        "Billing-V1.Rides.",
    ] {
        let r = h.get(host, "/x").await;
        assert_eq!(r.status, 200, "host {host}");
        // No HTTPRoute: the Service routes to itself.
        assert_eq!(r.header("x-upstream"), "billing-v1");
        assert_eq!(r.header("x-seen-path"), "/x");
    }
    // `billing` selects `app: billing`, which no workload carries: no endpoints at all.
    let r = h.get("billing", "/").await;
    assert_eq!(r.status, 503);
    assert_eq!(r.header("trellis-error"), "no-healthy-endpoints");
    let r = h.get("nosuch", "/").await;
    assert_eq!(r.status, 404);
    assert_eq!(r.header("trellis-error"), "no-route");
    let r = h.get("billing:8080", "/").await;
    assert_eq!(r.status, 404);
    let r = h.get("billing.other", "/").await;
    assert_eq!(r.header("trellis-error"), "no-route");
}

#[tokio::test]
async fn precedence_exact_then_longest_prefix_then_headers_and_method() {
    let (_v1, _v2, mesh) = canary().await;
    let rules = "  - matches: [{path: {type: PathPrefix, value: /}}]\n    backendRefs: [{name: billing-v1, port: 80}]\n\
                 \x20 - matches: [{path: {type: PathPrefix, value: /api}}]\n    backendRefs: [{name: billing-v2, port: 80}]\n\
                 \x20 - matches: [{path: {type: Exact, value: /api/v1}}]\n    backendRefs: [{name: billing-v1, port: 80}]\n\
                 \x20 - matches: [{path: {type: PathPrefix, value: /api}, headers: [{name: x-canary, value: \"1\"}]}]\n    backendRefs: [{name: billing-v1, port: 80}]\n\
                 \x20 - matches: [{path: {type: PathPrefix, value: /pay}, method: POST}]\n    backendRefs: [{name: billing-v2, port: 80}]\n\
                 \x20 - matches: [{path: {type: RegularExpression, value: \"/users/[0-9]+\"}, queryParams: [{name: v, value: \"2\"}]}]\n    backendRefs: [{name: billing-v2, port: 80}]\n";
    let h = start(&(mesh + &route(rules)), "").await;
    let who = |r: Resp| r.header("x-upstream").to_string();
    assert_eq!(who(h.get("billing", "/other").await), "billing-v1");
    assert_eq!(who(h.get("billing", "/api/x").await), "billing-v2");
    assert_eq!(
        who(h.get("billing", "/apix").await),
        "billing-v1",
        "prefixes match whole segments"
    );
    assert_eq!(
        who(h.get("billing", "/api/v1").await),
        "billing-v1",
        "Exact beats PathPrefix"
    );
    let mut r = req(h.outbound, "billing", "/api/x");
    r.headers_mut().insert("x-canary", "1".parse().unwrap());
    assert_eq!(
        who(h.send(r).await),
        "billing-v1",
        "a header match beats the same prefix without one"
    );
    assert_eq!(
        who(h.get("billing", "/pay").await),
        "billing-v1",
        "GET does not match the POST rule"
    );
    let mut r = req(h.outbound, "billing", "/pay");
    *r.method_mut() = http::Method::POST;
    assert_eq!(who(h.send(r).await), "billing-v2");
    assert_eq!(who(h.get("billing", "/users/42?v=2").await), "billing-v2");
    assert_eq!(who(h.get("billing", "/users/42?v=3").await), "billing-v1");
}

#[tokio::test]
async fn no_matching_rule_is_404_no_route() {
    let (_v1, _v2, mesh) = canary().await;
    let rules = "  - matches: [{path: {type: Exact, value: /only}}]\n    backendRefs: [{name: billing-v1, port: 80}]\n";
    let h = start(&(mesh + &route(rules)), "").await;
    assert_eq!(h.get("billing", "/only").await.status, 200);
    let r = h.get("billing", "/elsewhere").await;
    assert_eq!(r.status, 404);
    assert_eq!(r.header("trellis-error"), "no-route");
}

#[tokio::test]
async fn header_modifiers_rewrite_and_redirect() {
    let (_v1, _v2, mesh) = canary().await;
    let rules = "  - matches: [{path: {type: PathPrefix, value: /old}}]\n\
                 \x20   filters:\n\
                 \x20   - {type: RequestHeaderModifier, requestHeaderModifier: {set: [{name: x-set, value: s}], add: [{name: x-add, value: a}], remove: [x-drop]}}\n\
                 \x20   - {type: ResponseHeaderModifier, responseHeaderModifier: {set: [{name: x-resp, value: r}], remove: [x-seen-version]}}\n\
                 \x20   - {type: URLRewrite, urlRewrite: {hostname: billing.internal, path: {type: ReplacePrefixMatch, replacePrefixMatch: /new}}}\n\
                 \x20   backendRefs: [{name: billing-v1, port: 80}]\n\
                 \x20 - matches: [{path: {type: PathPrefix, value: /moved}}]\n\
                 \x20   filters: [{type: RequestRedirect, requestRedirect: {scheme: https, hostname: example.com, statusCode: 301}}]\n";
    let h = start(&(mesh + &route(rules)), "").await;
    let mut r = req(h.outbound, "billing", "/old/page?q=1");
    r.headers_mut().insert("x-drop", "gone".parse().unwrap());
    r.headers_mut().insert("x-add", "first".parse().unwrap());
    let r = h.send(r).await;
    assert_eq!(r.status, 200);
    assert_eq!(r.header("x-seen-path"), "/new/page?q=1");
    assert_eq!(r.header("x-seen-host"), "billing.internal");
    assert!(r.body.contains("\"x-set\":\"s\""), "{}", r.body);
    assert!(!r.body.contains("x-drop"), "{}", r.body);
    assert!(
        r.body.contains("\"x-add\":\"first, a\""),
        "add appends to the existing value: {}",
        r.body
    );
    assert_eq!(r.header("x-resp"), "r");
    assert!(r.headers.get("x-seen-version").is_none());

    let r = h.get("billing", "/moved/here?a=b").await;
    assert_eq!(r.status, 301);
    assert_eq!(r.header("location"), "https://example.com/moved/here?a=b");
}

#[tokio::test]
async fn request_mirror_copies_traffic_and_its_failures_do_not_matter() {
    let (v1, v2, mesh) = canary().await;
    let rules = "  - filters: [{type: RequestMirror, requestMirror: {backendRef: {name: billing-v2, port: 80}}}]\n\
                 \x20   backendRefs: [{name: billing-v1, port: 80}]\n";
    let h = start(&(mesh + &route(rules)), "").await;
    for _ in 0..10 {
        let r = h.get("billing", "/").await;
        assert_eq!(r.header("x-upstream"), "billing-v1");
    }
    eventually(
        std::time::Duration::from_secs(5),
        "10 mirrored requests",
        || async { (v2.hits() == 10).then_some(()) },
    )
    .await;
    assert_eq!(v1.hits(), 10);
}

#[tokio::test]
async fn route_timeout_answers_504() {
    let (_v1, _v2, mesh) = canary().await;
    let rules = "  - backendRefs: [{name: billing-v1, port: 80}]\n    timeouts: {request: 200ms}\n";
    let h = start(&(mesh + &route(rules)), "").await;
    assert_eq!(h.get("billing", "/sleep/10").await.status, 200);
    let r = h.get("billing", "/sleep/2000").await;
    assert_eq!(r.status, 504);
    assert_eq!(r.header("trellis-error"), "timeout");
}
