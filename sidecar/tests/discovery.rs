//! The proxy as a discovery client, against a scripted control plane (a real tonic server):
//! it applies good updates, NACKs bad ones while serving the last good snapshot, keeps
//! serving when the control plane goes away, resubscribes naming what it holds, and refuses a
//! control plane too old to speak its protocol.

mod support;

use std::sync::{Arc, Mutex};
use std::time::Duration;
use support::*;
use tokio::sync::mpsc;
use tokio_stream::wrappers::{ReceiverStream, TcpListenerStream};
use tonic::{Request, Response, Status, Streaming};
use trellis_proto::v1::discovery_request::Kind;
use trellis_proto::v1::discovery_server::{Discovery, DiscoveryServer};
use trellis_proto::v1::*;

/// A control plane that sends a fixed script of updates and records every Subscribe and
/// answer.
#[derive(Clone, Default)]
struct Scripted {
    script: Arc<Mutex<Vec<DiscoveryResponse>>>,
    subscribes: Arc<Mutex<Vec<Subscribe>>>,
    answers: Arc<Mutex<Vec<Kind>>>,
    /// Names no protocol in its response headers, as control planes of protocol 1 did not.
    predates_negotiation: bool,
}

#[tonic::async_trait]
impl Discovery for Scripted {
    type StreamStream = ReceiverStream<Result<DiscoveryResponse, Status>>;
    async fn stream(
        &self,
        req: Request<Streaming<DiscoveryRequest>>,
    ) -> Result<Response<Self::StreamStream>, Status> {
        let mut inbound = req.into_inner();
        let Some(Kind::Subscribe(first)) = inbound.message().await?.and_then(|m| m.kind) else {
            panic!("the proxy subscribes first");
        };
        self.subscribes.lock().unwrap().push(first);
        let (tx, rx) = mpsc::channel(8);
        let script: Vec<DiscoveryResponse> = self.script.lock().unwrap().drain(..).collect();
        let answers = self.answers.clone();
        tokio::spawn(async move {
            for u in script {
                if tx.send(Ok(u)).await.is_err() {
                    return;
                }
                let Ok(Some(answer)) = inbound.message().await else {
                    return;
                };
                answers.lock().unwrap().push(answer.kind.unwrap());
            }
            // End of script: the stream closes and the proxy reconnects to an empty script.
        });
        let mut res = Response::new(ReceiverStream::new(rx));
        if !self.predates_negotiation {
            let headers = res.metadata_mut();
            headers.insert(
                trellis_proto::PROTOCOL_HEADER,
                trellis_proto::PROTOCOL.into(),
            );
            headers.insert(
                trellis_proto::RELEASE_HEADER,
                "0.0.0-scripted".parse().unwrap(),
            );
        }
        Ok(res)
    }
}

/// `cp` served over TLS on loopback, and a proxy subscribed to it. Sending on the returned
/// channel stops the server.
async fn serve_and_subscribe(
    cp: &Scripted,
) -> (
    trellis_proxy::Running,
    std::net::SocketAddr,
    tokio::sync::oneshot::Sender<()>,
    tokio::task::JoinHandle<Result<(), tonic::transport::Error>>,
    tempfile::TempDir,
) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    // The proxy only talks to a control plane over TLS that chains to its caBundle.
    let ca = testkit::pki::TestCa::new("scripted control plane CA");
    let serving = ca.server(&["127.0.0.1"]);
    let tls = tonic::transport::ServerTlsConfig::new().identity(
        tonic::transport::Identity::from_pem(&serving.cert_pem, &serving.key_pem),
    );
    let server = tokio::spawn(
        tonic::transport::Server::builder()
            .tls_config(tls)
            .unwrap()
            .add_service(DiscoveryServer::new(cp.clone()))
            .serve_with_incoming_shutdown(TcpListenerStream::new(listener), async {
                let _ = stop_rx.await;
            }),
    );
    let dir = tempfile::tempdir().unwrap();
    let boot = dir.path().join("bootstrap.yaml");
    std::fs::write(dir.path().join("ca.pem"), &ca.root_pem).unwrap();
    std::fs::write(
        &boot,
        format!(
            "workload: {{name: trip-0, namespace: rides}}\n\
             listeners: {{outbound: 127.0.0.1:0, inbound: 127.0.0.1:0, admin: 127.0.0.1:0}}\n\
             app: {{address: 127.0.0.1, ports: {{http: 1}}}}\ncontrolPlane: {{address: https://{addr}, caBundle: ca.pem}}\n"
        ),
    )
    .unwrap();
    let p = trellis_proxy::start(trellis_proxy::Bootstrap::load(&boot).unwrap())
        .await
        .unwrap();
    (p, addr, stop_tx, server, dir)
}

fn full_update(mesh: &str) -> DiscoveryResponse {
    let cfg = trellis_config::load_str("mesh.yaml", mesh).unwrap();
    let snap = trellis_config::compile(
        &cfg,
        &trellis_config::NodeIdentity {
            namespace: "rides".into(),
            ..Default::default()
        },
    );
    let upserted = trellis_config::resources::split(&snap)
        .into_iter()
        .map(|(key, e)| trellis_config::resources::to_wire(&key, &e))
        .collect();
    DiscoveryResponse {
        version: snap.version,
        nonce: "1".into(),
        upserted,
        removed: vec![],
        replace: true,
        more: false,
    }
}

#[tokio::test]
async fn applies_good_updates_nacks_bad_ones_and_survives_the_control_plane() {
    let up = Upstream::start("billing-v1").await;
    let good = full_update(&(service("billing-v1", "") + &workload("billing-v1", &up)));
    // Claims a version its resources do not hash to.
    let mut bad = full_update(
        &(service("billing-v1", "") + &workload("billing-v1", &up) + &service("billing-v2", "")),
    );
    bad.version = "deadbeefdeadbeef".into();
    bad.nonce = "2".into();
    // A delta that removes the cluster a route still uses.
    let mut broken = DiscoveryResponse {
        version: good.version.clone(),
        nonce: "3".into(),
        ..Default::default()
    };
    broken.removed.push(ResourceKey {
        kind: "Cluster".into(),
        name: "billing-v1.rides:80".into(),
    });
    // A delta whose cluster message holds an endpoint address that is not ip:port.
    let mut malformed = good.clone();
    malformed.replace = false;
    malformed.nonce = "4".into();
    malformed.upserted.retain_mut(|r| {
        let Some(trellis_proto::resource::Payload::Cluster(body)) = &mut r.payload else {
            return false;
        };
        let mut c = <Cluster as prost::Message>::decode(body.as_ref()).unwrap();
        c.endpoints[0].address = "billing-v1".into();
        *body = prost::Message::encode_to_vec(&c).into();
        true
    });

    let cp = Scripted::default();
    cp.script
        .lock()
        .unwrap()
        .extend([good.clone(), bad, broken, malformed]);
    let (p, addr, stop_tx, server, _dir) = serve_and_subscribe(&cp).await;
    let answers = eventually(Duration::from_secs(10), "four answers", || async {
        let a = cp.answers.lock().unwrap().clone();
        (a.len() == 4).then_some(a)
    })
    .await;
    match &answers[0] {
        Kind::Ack(a) => assert_eq!(a.version, good.version),
        other => panic!("expected an ACK, got {other:?}"),
    }
    match &answers[1] {
        Kind::Nack(n) => assert!(
            n.error.contains("announced version deadbeefdeadbeef"),
            "{}",
            n.error
        ),
        other => panic!("expected a NACK, got {other:?}"),
    }
    match &answers[2] {
        Kind::Nack(n) => assert!(n.error.contains("billing-v1.rides:80"), "{}", n.error),
        other => panic!("expected a NACK, got {other:?}"),
    }
    match &answers[3] {
        Kind::Nack(n) => assert_eq!(
            n.error,
            r#"Cluster billing-v1.rides:80: endpoint 0: address "billing-v1" is not ip:port"#
        ),
        other => panic!("expected a NACK, got {other:?}"),
    }
    let client = hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
        .build_http();
    let get = |path: &'static str, host: &'static str| {
        let client = client.clone();
        let addr = if host == "admin" { p.admin } else { p.outbound };
        async move {
            client
                .request(req(addr, host, path))
                .await
                .map(|r| r.status().as_u16())
                .ok()
        }
    };
    assert_eq!(get("/ready", "admin").await, Some(200));
    assert_eq!(
        get("/", "billing-v1").await,
        Some(200),
        "the good snapshot serves"
    );

    // The script is over and the stream closed: the proxy subscribes again, naming its protocol
    // and release, the version it serves and the hash of every resource behind it, so that a
    // control plane whose snapshot moved on sends only the difference.
    let again = eventually(Duration::from_secs(10), "a second Subscribe", || async {
        cp.subscribes.lock().unwrap().get(1).cloned()
    })
    .await;
    assert_eq!(again.protocol, trellis_proto::PROTOCOL);
    assert_eq!(again.release, env!("CARGO_PKG_VERSION"));
    assert_eq!(again.version, good.version);
    let named = |key: &Option<ResourceKey>, hash: &str| {
        let k = key.clone().unwrap();
        format!("{} {} {hash}", k.kind, k.name)
    };
    let mut sent: Vec<String> = good
        .upserted
        .iter()
        .map(|r| named(&r.key, &r.hash))
        .collect();
    sent.sort();
    let held: Vec<String> = again.held.iter().map(|h| named(&h.key, &h.hash)).collect();
    assert_eq!(
        held, sent,
        "the refused updates left what it holds unchanged"
    );

    // The control plane goes away: the proxy keeps serving what it has.
    stop_tx.send(()).unwrap();
    tokio::time::timeout(Duration::from_secs(10), server)
        .await
        .expect("the scripted control plane stops")
        .unwrap()
        .unwrap();
    assert!(
        tokio::net::TcpStream::connect(addr).await.is_err(),
        "the control plane is gone"
    );
    for _ in 0..20 {
        assert_eq!(get("/", "billing-v1").await, Some(200));
    }
    assert_eq!(get("/ready", "admin").await, Some(200));
    let metrics = p.metrics_text();
    assert!(
        metrics.contains("trellis_config_reloads_total{result=\"rejected\"} 3"),
        "{metrics}"
    );
    // Each applied or refused update was timed from its arrival.
    let value = |prefix: &str| sample(&metrics, prefix);
    assert_eq!(
        value("trellis_config_apply_duration_seconds_count "),
        value("trellis_config_reloads_total{result=\"applied\"}") + 3.0,
        "{metrics}"
    );
}

#[tokio::test]
async fn a_control_plane_that_names_no_protocol_is_not_served_from() {
    // A control plane of protocol 1 (JSON resources) sent no `trellis-protocol` header.
    let up = Upstream::start("billing-v1").await;
    let cp = Scripted {
        predates_negotiation: true,
        ..Default::default()
    };
    cp.script.lock().unwrap().push(full_update(
        &(service("billing-v1", "") + &workload("billing-v1", &up)),
    ));
    let (p, _addr, _stop, _server, _dir) = serve_and_subscribe(&cp).await;
    // The proxy drops the stream before it reads an update, and retries with its backoff
    // (the upgrade may be under way).
    eventually(Duration::from_secs(10), "a retried Subscribe", || async {
        (cp.subscribes.lock().unwrap().len() >= 2).then_some(())
    })
    .await;
    assert!(
        cp.answers.lock().unwrap().is_empty(),
        "nothing was applied, so nothing was answered"
    );
    let client = hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
        .build_http();
    let ready = client
        .request(req(p.admin, "admin", "/ready"))
        .await
        .unwrap();
    assert_eq!(ready.status(), 503, "no config, so not ready");
}
