//! Protocols through the proxy: h2c prior knowledge, gRPC (unary, statuses, bidirectional
//! streaming), WebSocket upgrades, trace headers and hop-by-hop headers.

mod support;

use bytes::Bytes;
use futures_util::{SinkExt, StreamExt};
use http_body_util::{BodyExt, Full};
use hyper_util::rt::TokioExecutor;
use support::*;
use testkit::grpc::{EchoClient, EchoMessage, start_echo};
use tokio_tungstenite::tungstenite::Message;

fn echo_mesh(addr: std::net::SocketAddr) -> String {
    format!(
        "apiVersion: v1\nkind: Service\nmetadata: {{name: echo, namespace: rides}}\n\
         spec:\n  selector: {{app: echo}}\n  ports: [{{name: grpc, port: 80, targetPort: {}, appProtocol: grpc}}]\n---\n\
         apiVersion: trellis.dev/v1alpha1\nkind: Workload\nmetadata: {{name: echo-0, namespace: rides, labels: {{app: echo}}}}\n\
         spec: {{address: 127.0.0.1}}\n",
        addr.port()
    )
}

/// A gRPC client that dials the proxy's outbound listener but names `echo` as its authority.
async fn grpc_client(h: &Harness) -> EchoClient<tonic::transport::Channel> {
    let channel = tonic::transport::Endpoint::from_shared(format!("http://{}", h.outbound))
        .unwrap()
        .origin("http://echo".parse().unwrap())
        .connect()
        .await
        .expect("connect to the proxy");
    EchoClient::new(channel)
}

#[tokio::test]
async fn grpc_unary_and_non_ok_status_arrive_intact() {
    let echo = start_echo().await;
    let h = start(&echo_mesh(echo), "").await;
    let mut c = grpc_client(&h).await;
    let r = c
        .unary(EchoMessage {
            text: "hello".into(),
        })
        .await
        .expect("unary ok");
    assert_eq!(r.into_inner().text, "hello");
    let err = c
        .unary(EchoMessage {
            text: "fail:7".into(),
        })
        .await
        .expect_err("non-OK");
    assert_eq!(err.code(), tonic::Code::PermissionDenied);
    assert!(err.message().contains("asked to fail"), "{}", err.message());
}

#[tokio::test]
async fn grpc_bidirectional_stream_passes_messages_both_ways() {
    let echo = start_echo().await;
    let h = start(&echo_mesh(echo), "").await;
    let mut c = grpc_client(&h).await;
    let (tx, rx) = tokio::sync::mpsc::channel(4);
    let mut replies = c
        .bidi(tokio_stream::wrappers::ReceiverStream::new(rx))
        .await
        .expect("stream opens")
        .into_inner();
    // Interleave: each reply must arrive before the next message is sent.
    for i in 0..20 {
        tx.send(EchoMessage {
            text: format!("m{i}"),
        })
        .await
        .unwrap();
        let reply = replies.next().await.expect("a reply").expect("ok");
        assert_eq!(reply.text, format!("echo:m{i}"));
    }
    drop(tx);
    assert!(
        replies.next().await.is_none(),
        "the stream ends with an OK status after the client half-closes"
    );
}

#[tokio::test]
async fn grpc_to_a_service_with_no_endpoints_gets_grpc_unavailable() {
    let mesh = "apiVersion: v1\nkind: Service\nmetadata: {name: echo, namespace: rides}\n\
                spec:\n  selector: {app: echo}\n  ports: [{port: 80, appProtocol: grpc}]\n";
    let h = start(mesh, "").await;
    let mut c = grpc_client(&h).await;
    let err = c
        .unary(EchoMessage { text: "x".into() })
        .await
        .expect_err("no endpoints");
    assert_eq!(err.code(), tonic::Code::Unavailable);
    assert!(
        err.message().contains("no healthy endpoints"),
        "{}",
        err.message()
    );
    assert_eq!(
        err.metadata().get("trellis-error").unwrap(),
        "no-healthy-endpoints"
    );
}

#[tokio::test]
async fn h2c_prior_knowledge_is_proxied_as_http2() {
    let up = Upstream::start("billing-v1").await;
    let h = start(
        &(service("billing-v1", "") + &workload("billing-v1", &up)),
        "",
    )
    .await;
    // Dial the proxy, but name the Service in :authority, as an h2c client of the mesh does.
    let tcp = tokio::net::TcpStream::connect(h.outbound).await.unwrap();
    let (mut send, conn) = hyper::client::conn::http2::handshake(
        TokioExecutor::new(),
        hyper_util::rt::TokioIo::new(tcp),
    )
    .await
    .expect("h2c handshake with the proxy");
    tokio::spawn(conn);
    let req = http::Request::builder()
        .uri("http://billing-v1/h2")
        .version(http::Version::HTTP_2)
        .body(Full::new(Bytes::new()))
        .unwrap();
    let res = send.send_request(req).await.expect("h2c through the proxy");
    assert_eq!(res.status(), 200);
    assert_eq!(res.version(), http::Version::HTTP_2);
    // appProtocol http keeps the downstream's version upstream.
    assert_eq!(res.headers()["x-seen-version"], "HTTP/2.0");
    // No Host that contradicts :authority (RFC 9113 §8.3.1; nginx refuses such requests).
    assert_eq!(res.headers()["x-seen-host"], up.addr.to_string());
    assert_eq!(res.headers()["x-seen-path"], "/h2");
    let body = http_body_util::BodyExt::collect(res.into_body())
        .await
        .unwrap()
        .to_bytes();
    assert!(
        !String::from_utf8_lossy(&body).contains("\"host\""),
        "{}",
        String::from_utf8_lossy(&body)
    );
}

#[tokio::test]
async fn websocket_echo_through_the_proxy() {
    let up = Upstream::start("chat").await;
    let h = start(&(service("chat", "") + &workload("chat", &up)), "").await;
    let stream = tokio::net::TcpStream::connect(h.outbound).await.unwrap();
    let (mut ws, res) = tokio_tungstenite::client_async("ws://chat/ws", stream)
        .await
        .expect("websocket handshake via the proxy");
    assert_eq!(res.status(), 101);
    for i in 0..5 {
        ws.send(Message::text(format!("ping {i}"))).await.unwrap();
        let back = ws.next().await.expect("a message").expect("ok");
        assert_eq!(back, Message::text(format!("ping {i}")));
    }
    ws.send(Message::binary(vec![0u8, 1, 2, 255]))
        .await
        .unwrap();
    assert_eq!(
        ws.next().await.unwrap().unwrap(),
        Message::binary(vec![0u8, 1, 2, 255])
    );
    ws.close(None).await.unwrap();
}

#[tokio::test]
async fn trace_context_passes_unchanged_and_hop_by_hop_headers_are_dropped() {
    let up = Upstream::start("billing-v1").await;
    let h = start(
        &(service("billing-v1", "") + &workload("billing-v1", &up)),
        "",
    )
    .await;
    let traceparent = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
    let mut r = req(h.outbound, "billing-v1", "/");
    let hd = r.headers_mut();
    hd.insert("traceparent", traceparent.parse().unwrap());
    hd.insert("tracestate", "congo=t61rcWkgMzE".parse().unwrap());
    hd.insert("x-request-id", "req-123".parse().unwrap());
    hd.insert("connection", "x-hop".parse().unwrap());
    hd.insert("x-hop", "secret".parse().unwrap());
    hd.insert("proxy-connection", "keep-alive".parse().unwrap());
    let r = h.send(r).await;
    assert_eq!(r.status, 200);
    let seen: serde_json::Value = serde_json::from_str(&r.body).unwrap();
    // The proxy exports no span, so it names none as the app's parent: the caller's span
    // stays the parent.
    assert_eq!(seen["traceparent"], traceparent);
    assert_eq!(seen["tracestate"], "congo=t61rcWkgMzE");
    assert_eq!(seen["x-request-id"], "req-123");
    assert!(
        seen.get("b3").is_none() && seen.get("x-b3-traceid").is_none(),
        "no B3 context made up: {seen}"
    );
    assert!(
        seen.get("x-hop").is_none() && seen.get("proxy-connection").is_none(),
        "{seen}"
    );

    // A B3 context whose sampling decision was deferred stays deferred.
    let mut r = req(h.outbound, "billing-v1", "/");
    let b3 = "80f198ee56343ba864fe8b2a57d3eff7-e457b5a2e4d86bd1";
    r.headers_mut().insert("b3", b3.parse().unwrap());
    let seen: serde_json::Value = serde_json::from_str(&h.send(r).await.body).unwrap();
    assert_eq!(seen["b3"], b3);
    assert!(seen.get("traceparent").is_none(), "{seen}");

    // Nothing incoming: a root, marked not sampled, so that an app sampling by its parent
    // records nothing it was not asked to.
    let r = h.get("billing-v1", "/").await;
    let seen: serde_json::Value = serde_json::from_str(&r.body).unwrap();
    let tp = seen["traceparent"].as_str().unwrap();
    assert_eq!(tp.len(), 55, "{tp}");
    assert!(tp.starts_with("00-") && tp.ends_with("-00"), "{tp}");
    assert_eq!(seen["x-request-id"].as_str().unwrap().len(), 36);
}

#[tokio::test]
async fn inbound_delivers_to_the_local_app() {
    let app = Upstream::start("trip-app").await;
    let h = start_with_app("", "", &format!("{{http: {}}}", app.addr.port())).await;
    let r = h.send(req(h.inbound, "trip.rides:80", "/ride?id=7")).await;
    assert_eq!(r.status, 200);
    assert_eq!(r.header("x-upstream"), "trip-app");
    assert_eq!(r.header("x-seen-path"), "/ride?id=7");
    let body = BodyExt::collect(Full::new(Bytes::from(r.body)))
        .await
        .unwrap()
        .to_bytes();
    assert!(!body.is_empty());
}
