//! Message brokers through the mesh, for real: Debian's ActiveMQ with STOMP clients from
//! stomp.py (`stomp_peer.py`), each client and the broker behind its own sidecar, under
//! STRICT mTLS and an AuthorizationPolicy by identity. Competing consumers on a queue get
//! every message exactly once and both subscribers of a topic get every message, across a
//! config push, a control-plane restart and certificate rotations, none of which drops a
//! broker connection.
//!
//! ActiveMQ: `apt-get install activemq`. stomp.py: the tracing tests' venv
//! (`target/trace-venv`, or `TRELLIS_TRACE_VENV`), which .ci/run fills.

#[path = "../support/mod.rs"]
mod support;

mod activemq;
mod kafka;

use activemq::{ActiveMq, Peer, have_activemq_and_stomp};
use std::collections::BTreeSet;
use std::time::Duration;
use support::*;

const MESSAGES: usize = 600;

/// STRICT mTLS; Service `activemq` whose STOMP port only the producer's and the consumers'
/// service accounts may call; `extra` appended (the push adds a Service).
fn mesh(extra: &str) -> String {
    format!(
        "apiVersion: trellis.dev/v1alpha1\nkind: Mesh\nmetadata: {{name: default}}\n\
         spec: {{mtls: {{mode: STRICT}}}}\n---\n\
         apiVersion: v1\nkind: Service\nmetadata: {{name: activemq, namespace: rides}}\n\
         spec:\n  selector: {{app: activemq}}\n  ports: [{{name: stomp, port: 61613, targetPort: stomp, appProtocol: stomp}}]\n---\n\
         apiVersion: trellis.dev/v1alpha1\nkind: AuthorizationPolicy\n\
         metadata: {{name: activemq, namespace: rides}}\n\
         spec:\n  targetRef: {{kind: Service, name: activemq}}\n  action: ALLOW\n\
         \x20 rules: [{{from: [{{serviceAccounts: [rides/producer, rides/consumer]}}]}}]\n---\n{extra}"
    )
}

const FORWARD: &str = "tcp: [{listen: 127.0.0.1:0, service: activemq:61613}]\n";

#[tokio::test]
async fn activemq_queue_and_topic_lose_nothing_across_push_restart_and_rotation() {
    if !have_activemq_and_stomp() {
        return;
    }
    let broker = ActiveMq::start().await;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("mesh.yaml");
    std::fs::write(&path, mesh("")).unwrap();
    // Certificates live 8 s and are renewed at about half that: several rotations per run.
    let mut cp = ControlPlane::start_with_args(&path, "500ms", &["--cert-ttl", "8s"]).await;
    let ports = format!("{{stomp: {}}}", broker.port);
    let server = proxy_with_ports(&cp, "activemq-0", "activemq", "{app: activemq}", &ports).await;
    let producer = proxy_as(&cp, "producer-0", "producer", "{app: producer}", 1, FORWARD).await;
    let consumer_a = proxy_as(&cp, "consumer-a", "consumer", "{app: consumer}", 1, FORWARD).await;
    let consumer_b = proxy_as(&cp, "consumer-b", "consumer", "{app: consumer}", 1, FORWARD).await;
    let outsider = proxy_as(&cp, "outsider-0", "outsider", "{app: outsider}", 1, FORWARD).await;
    cp.wait_converged(5).await;

    // Until every sidecar holds a certificate, STRICT refuses; clients wait for that.
    let mut a =
        Peer::start_when_ready(&["consume", &consumer_a.tcp[0].port().to_string(), "a"]).await;
    let mut b =
        Peer::start_when_ready(&["consume", &consumer_b.tcp[0].port().to_string(), "b"]).await;
    let serials_before = [serial(server.admin).await, serial(producer.admin).await];
    let mut p = Peer::start_when_ready(&[
        "produce",
        &producer.tcp[0].port().to_string(),
        &MESSAGES.to_string(),
    ])
    .await;

    // While messages flow: a config push, then a control-plane restart.
    p.wait_for_line(|l| l == "sent 100").await;
    write_atomically(&path, &mesh(&support_service()));
    eventually(
        Duration::from_secs(20),
        "the push to reach the broker's sidecar",
        || async {
            let (_, dump) = get(server.admin, "/config_dump").await?;
            dump.contains("\"rides/billing\"").then_some(())
        },
    )
    .await;
    p.wait_for_line(|l| l == "sent 250").await;
    cp.kill();
    p.wait_for_line(|l| l == "sent 300").await;
    cp.restart().await;
    cp.wait_converged(5).await;
    p.wait_for_line(|l| l == "finished").await;
    // Rotation: both ends of the producer's hop have new certificates since it connected.
    eventually(
        Duration::from_secs(20),
        "the certificates to rotate",
        || async {
            let now = [serial(server.admin).await, serial(producer.admin).await];
            (now[0] != serials_before[0] && now[1] != serials_before[1]).then_some(())
        },
    )
    .await;

    // Every queue message reached exactly one consumer; both consumers got every event.
    let expected: BTreeSet<String> = (0..MESSAGES).map(|i| format!("order-{i}")).collect();
    eventually(
        Duration::from_secs(30),
        "every message to arrive",
        || async {
            let n = a.lines_starting("queue ").len() + b.lines_starting("queue ").len();
            let t = a
                .lines_starting("topic ")
                .len()
                .min(b.lines_starting("topic ").len());
            (n >= MESSAGES && t >= MESSAGES).then_some(())
        },
    )
    .await;
    let qa = a.lines_starting("queue ");
    let qb = b.lines_starting("queue ");
    let set_a: BTreeSet<String> = qa.iter().cloned().collect();
    let set_b: BTreeSet<String> = qb.iter().cloned().collect();
    assert_eq!(
        qa.len() + qb.len(),
        MESSAGES,
        "no message was delivered twice"
    );
    assert!(
        set_a.is_disjoint(&set_b),
        "a message reached both consumers"
    );
    let all: BTreeSet<String> = set_a.union(&set_b).cloned().collect();
    assert_eq!(all, expected, "every queue message arrived");
    assert!(
        !qa.is_empty() && !qb.is_empty(),
        "the consumers competed: a {} b {}",
        qa.len(),
        qb.len()
    );
    let events: BTreeSet<String> = (0..MESSAGES).map(|i| format!("event-{i}")).collect();
    for (name, peer) in [("a", &a), ("b", &b)] {
        let got: Vec<String> = peer.lines_starting("topic ");
        assert_eq!(got.len(), MESSAGES, "subscriber {name} got each event once");
        assert_eq!(
            got.iter().cloned().collect::<BTreeSet<_>>(),
            events,
            "subscriber {name}"
        );
    }
    println!(
        "queue: {} to a, {} to b, 0 lost, 0 twice; topic: {MESSAGES} to each subscriber",
        qa.len(),
        qb.len()
    );

    // No connection dropped: each peer still runs on its first connection (a peer whose
    // connection drops prints "disconnected" and exits), and the broker's sidecar opened
    // exactly three and closed none.
    for (name, peer) in [("a", &mut a), ("b", &mut b), ("producer", &mut p)] {
        assert!(
            peer.alive(),
            "{name} lost its connection: {:?}",
            peer.lines()
        );
    }
    let inbound = "direction=\"inbound\",destination_service=\"activemq.rides\"";
    let m = get(server.admin, "/metrics").await.unwrap().1;
    assert_eq!(
        sample(&m, "trellis_tcp_connections_opened_total", inbound),
        3.0,
        "{m}"
    );
    assert_eq!(
        sample(&m, "trellis_tcp_connections_closed_total", inbound),
        0.0,
        "{m}"
    );

    // Another identity is refused by the broker's sidecar and never reaches the broker.
    let probe = Peer::run(&["probe", &outsider.tcp[0].port().to_string()]).await;
    assert!(probe.iter().any(|l| l.starts_with("refused")), "{probe:?}");
    let m = get(server.admin, "/metrics").await.unwrap().1;
    assert_eq!(
        sample(&m, "trellis_tcp_connections_opened_total", inbound),
        3.0,
        "{m}"
    );
    assert!(
        sample(
            &m,
            "trellis_authorization_denied_total",
            "destination_service=\"activemq.rides\""
        ) >= 1.0,
        "{m}"
    );
    assert_eq!(
        broker.connections_seen(),
        3,
        "the broker saw only the three allowed clients"
    );
}

/// A Service nobody here calls: a push that changes the config but not the broker's.
fn support_service() -> String {
    "apiVersion: v1\nkind: Service\nmetadata: {name: billing, namespace: rides}\n\
     spec:\n  selector: {app: billing}\n  ports: [{name: http, port: 80}]\n"
        .to_string()
}

/// The value of the first series of `name` whose labels contain `labels`; 0 when none.
fn sample(metrics: &str, name: &str, labels: &str) -> f64 {
    metrics
        .lines()
        .filter(|l| l.starts_with(&format!("{name}{{")) && l.contains(labels))
        .find_map(|l| l.rsplit(' ').next()?.parse().ok())
        .unwrap_or(0.0)
}
