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
    EchoClient::new(grpc_channel(h.outbound, "echo").await)
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

/// GET `uri` over a fresh h2c connection to `addr` (a proxy's outbound listener), naming the
/// Service in `:authority`, as an h2c client of the mesh does.
async fn h2c_get(addr: std::net::SocketAddr, uri: &str) -> http::Response<hyper::body::Incoming> {
    let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    let (mut send, conn) = hyper::client::conn::http2::handshake(
        TokioExecutor::new(),
        hyper_util::rt::TokioIo::new(tcp),
    )
    .await
    .expect("h2c handshake with the proxy");
    tokio::spawn(conn);
    let req = http::Request::builder()
        .uri(uri)
        .version(http::Version::HTTP_2)
        .body(Full::new(Bytes::new()))
        .unwrap();
    send.send_request(req).await.expect("h2c through the proxy")
}

#[tokio::test]
async fn an_http2_service_port_takes_h2c_from_every_client() {
    let up = Upstream::start("billing-v1").await;
    let mesh = service("billing-v1", ", appProtocol: http2") + &workload("billing-v1", &up);
    let h = start(&mesh, "").await;
    let res = h2c_get(h.outbound, "http://billing-v1/h2").await;
    assert_eq!(res.status(), 200);
    assert_eq!(res.version(), http::Version::HTTP_2);
    assert_eq!(res.headers()["x-seen-version"], "HTTP/2.0");
    // :authority is the Service the client named, not the endpoint's address, and no Host
    // contradicts it (RFC 9113 §8.3.1; nginx refuses such requests).
    assert_eq!(res.headers()["x-seen-host"], "billing-v1");
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
    // An HTTP/1.1 client reaches the same h2c app.
    let r = h.get("billing-v1", "/h1").await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.header("x-seen-version"), "HTTP/2.0");
}

/// An app that speaks HTTP/1.1 and nothing else, as most do: it answers 200 with the
/// version and Host it saw.
async fn http1_only_app() -> std::net::SocketAddr {
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let Ok((tcp, _)) = l.accept().await else {
                return;
            };
            tokio::spawn(async move {
                let svc = hyper::service::service_fn(
                    |req: http::Request<hyper::body::Incoming>| async move {
                        let host = req.headers().get("host").cloned();
                        let mut res =
                            http::Response::new(Full::new(Bytes::from_static(b"h1 only")));
                        res.headers_mut()
                            .insert("x-version", format!("{:?}", req.version()).parse().unwrap());
                        if let Some(h) = host {
                            res.headers_mut().insert("x-host", h);
                        }
                        Ok::<_, std::convert::Infallible>(res)
                    },
                );
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(hyper_util::rt::TokioIo::new(tcp), svc)
                    .await;
            });
        }
    });
    addr
}

#[tokio::test]
async fn an_h2c_client_reaches_an_app_that_speaks_only_http1() {
    let app = http1_only_app().await;
    // No appProtocol: the app speaks HTTP/1.1, whatever the client spoke.
    let mesh = service("billing-v1", "") + &workload_at("billing-v1", "billing-v1-0", app);
    let h = start(&mesh, "").await;
    let res = h2c_get(h.outbound, "http://billing-v1/h2").await;
    assert_eq!(res.status(), 200, "{:?}", res.headers());
    assert_eq!(
        res.version(),
        http::Version::HTTP_2,
        "the client keeps its h2"
    );
    assert_eq!(res.headers()["x-version"], "HTTP/1.1");
    assert_eq!(
        res.headers()["x-host"],
        "billing-v1",
        "the Service the client named"
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

#[tokio::test]
async fn inbound_speaks_h2c_to_an_app_whose_service_port_says_http2() {
    let app = Upstream::start("trip-app").await;
    let port = app.addr.port();
    // The workload serves trip, whose port declares the app h2c.
    let h = start_with_app(
        &service("trip", ", appProtocol: http2"),
        "",
        &format!("{{http: {port}}}"),
    )
    .await;
    let r = h.send(req(h.inbound, "trip.rides:80", "/ride")).await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(
        r.header("x-seen-version"),
        "HTTP/2.0",
        "an HTTP/1.1 caller, an h2c app"
    );
    // Without the declaration, the same app gets HTTP/1.1.
    let plain = start_with_app(&service("trip", ""), "", &format!("{{http: {port}}}")).await;
    let r = plain
        .send(req(plain.inbound, "trip.rides:80", "/ride"))
        .await;
    assert_eq!(r.header("x-seen-version"), "HTTP/1.1");
}
