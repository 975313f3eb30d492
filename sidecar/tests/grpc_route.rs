//! GRPCRoute through a sidecar: real gRPC calls (tonic) routed by method match and split by
//! weights, to two real gRPC servers. Which rule and backend served a call is read from
//! response headers the route's filters add.

mod support;

use support::*;
use testkit::grpc::{EchoClient, EchoMessage, start_echo};

fn mesh(a: std::net::SocketAddr, b: std::net::SocketAddr, rules: &str) -> String {
    let svc = |name: &str, selector: &str| {
        format!(
            "apiVersion: v1\nkind: Service\nmetadata: {{name: {name}, namespace: rides}}\n\
             spec:\n  selector: {selector}\n  ports: [{{name: grpc, port: 80, targetPort: grpc, appProtocol: grpc}}]\n---\n"
        )
    };
    let wl = |name: &str, v: &str, addr: std::net::SocketAddr| {
        format!(
            "apiVersion: trellis.dev/v1alpha1\nkind: Workload\n\
             metadata: {{name: {name}, namespace: rides, labels: {{app: echo, v: {v}}}}}\n\
             spec: {{address: 127.0.0.1, ports: {{grpc: {}}}}}\n---\n",
            addr.port()
        )
    };
    svc("echo", "{app: echo}")
        + &svc("echo-a", "{app: echo, v: a}")
        + &svc("echo-b", "{app: echo, v: b}")
        + &wl("echo-a-0", "a", a)
        + &wl("echo-b-0", "b", b)
        + "apiVersion: gateway.networking.k8s.io/v1\nkind: GRPCRoute\n\
           metadata: {name: echo, namespace: rides}\n\
           spec:\n  parentRefs: [{group: \"\", kind: Service, name: echo, port: 80}]\n  rules:\n"
        + rules
}

fn set(name: &str, value: &str) -> String {
    format!(
        "{{type: ResponseHeaderModifier, responseHeaderModifier: {{set: [{{name: {name}, value: {value}}}]}}}}"
    )
}

async fn client(h: &Harness) -> EchoClient<tonic::transport::Channel> {
    EchoClient::new(grpc_channel(h.outbound, "echo").await)
}

fn header(md: &tonic::metadata::MetadataMap, name: &str) -> String {
    md.get(name)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_string()
}

#[tokio::test]
async fn a_method_match_picks_the_rule_and_weights_split_the_calls() {
    let (a, b) = (start_echo().await, start_echo().await);
    let rules = format!(
        "  - matches: [{{method: {{service: trellis.test.v1.Echo, method: Unary}}, headers: [{{name: x-tenant, value: blue}}]}}]\n    \
           filters: [{rule_blue}]\n    backendRefs: [{{name: echo-a, port: 80}}]\n  \
         - matches: [{{method: {{service: trellis.test.v1.Echo, method: Unary}}}}]\n    \
           filters: [{rule_split}]\n    \
           backendRefs:\n    \
           - {{name: echo-a, port: 80, weight: 80, filters: [{to_a}]}}\n    \
           - {{name: echo-b, port: 80, weight: 20, filters: [{to_b}]}}\n",
        rule_blue = set("x-rule", "blue"),
        rule_split = set("x-rule", "split"),
        to_a = set("x-backend", "a"),
        to_b = set("x-backend", "b"),
    );
    let h = start(&mesh(a, b, &rules), "").await;
    let mut c = client(&h).await;

    // The header match makes the first rule the more specific one.
    let mut req = tonic::Request::new(EchoMessage { text: "hi".into() });
    req.metadata_mut()
        .insert("x-tenant", "blue".parse().unwrap());
    let r = c.unary(req).await.expect("unary through the route");
    assert_eq!(header(r.metadata(), "x-rule"), "blue");
    assert_eq!(r.into_inner().text, "hi");

    // 200 calls without it: the split rule, about 80/20.
    let mut to_a = 0;
    for i in 0..200 {
        let r = c
            .unary(EchoMessage {
                text: format!("call {i}"),
            })
            .await
            .expect("unary ok");
        assert_eq!(header(r.metadata(), "x-rule"), "split");
        match header(r.metadata(), "x-backend").as_str() {
            "a" => to_a += 1,
            "b" => {}
            other => panic!("no backend header: {other:?}"),
        }
    }
    // Binomial(200, 0.8): mean 160, sd 5.7; 130..=190 is over five sd either side.
    assert!((130..=190).contains(&to_a), "{to_a} of 200 went to echo-a");

    // A method no rule names: no route matches, and the caller gets UNIMPLEMENTED, as from a
    // server that lacks the method.
    let (tx, rx) = tokio::sync::mpsc::channel::<EchoMessage>(1);
    drop(tx);
    let err = c
        .bidi(tokio_stream::wrappers::ReceiverStream::new(rx))
        .await
        .expect_err("Bidi is not routed");
    assert_eq!(err.code(), tonic::Code::Unimplemented, "{err:?}");
    assert_eq!(header(err.metadata(), "trellis-error"), "no-route");
}

#[tokio::test]
async fn a_grpcroute_on_a_gateway_routes_an_outside_grpc_client_by_method() {
    let (a, b) = (start_echo().await, start_echo().await);
    let gateway = "apiVersion: gateway.networking.k8s.io/v1\nkind: Gateway\n\
        metadata: {name: edge, namespace: rides}\n\
        spec:\n  gatewayClassName: trellis\n  listeners:\n  - {name: grpc, port: 80, protocol: HTTP}\n---\n";
    // The route's parent is the Gateway, not the Service.
    let rules = format!(
        "  - matches: [{{method: {{service: trellis.test.v1.Echo, method: Unary}}}}]\n    \
           filters: [{}]\n    backendRefs: [{{name: echo-b, port: 80}}]\n",
        set("x-rule", "unary")
    );
    let yaml = mesh(a, b, &rules).replace(
        "parentRefs: [{group: \"\", kind: Service, name: echo, port: 80}]",
        "parentRefs: [{kind: Gateway, name: edge, sectionName: grpc}]",
    ) + "---\n"
        + gateway;
    let h = start(
        &yaml,
        "gateway: {name: edge, listen: {grpc: 127.0.0.1:0}}\n",
    )
    .await;
    let addr = h.running.as_ref().unwrap().gateway["grpc"];
    let channel = tonic::transport::Endpoint::from_shared(format!("http://{addr}"))
        .unwrap()
        .connect()
        .await
        .expect("connect to the gateway");
    let mut c = EchoClient::new(channel);
    let r = c
        .unary(EchoMessage {
            text: "through the edge".into(),
        })
        .await
        .expect("unary through the gateway");
    assert_eq!(header(r.metadata(), "x-rule"), "unary");
    assert_eq!(r.into_inner().text, "through the edge");
}
