//! Kafka through the mesh with a real Kafka-compatible broker, tansu (crates.io), and
//! kafka-python clients: produce and consume across a topic of three partitions under STRICT
//! mTLS, with the broker advertising the address that routes to it through the clients'
//! sidecar. The broker is compiled from source (about 15 minutes on two cores), which is too
//! long for .ci/run, so this test runs from `.ci/kafka`, which installs it and points
//! `TRELLIS_TANSU` at it; elsewhere it skips with one line.

use super::activemq::python;
use super::support::*;
use std::collections::BTreeSet;
use std::process::{Command, Stdio};
use std::time::Duration;

const SCRIPT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/brokers/kafka_peer.py");
const MESSAGES: usize = 300;

fn tansu() -> Option<String> {
    let path = std::env::var("TRELLIS_TANSU").ok();
    if path.is_none() {
        println!(
            "skipped the Kafka test: run .ci/kafka, which builds the tansu broker (about 15 min)"
        );
    }
    path
}

/// STRICT mTLS; Service `kafka-0`, one broker's own Service (per-broker addressing: each
/// broker advertises the address of its own Service), port 9092 declared `kafka`.
fn mesh() -> String {
    "apiVersion: trellis.dev/v1alpha1\nkind: Mesh\nmetadata: {name: default}\n\
     spec: {mtls: {mode: STRICT}}\n---\n\
     apiVersion: v1\nkind: Service\nmetadata: {name: kafka-0, namespace: rides}\n\
     spec:\n  selector: {app: kafka, broker: \"0\"}\n  ports: [{name: kafka, port: 9092, targetPort: kafka, appProtocol: kafka}]\n"
        .to_string()
}

#[tokio::test]
async fn kafka_produce_and_consume_across_partitions_through_two_sidecars() {
    let Some(tansu) = tansu() else { return };
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("mesh.yaml");
    std::fs::write(&path, mesh()).unwrap();
    let cp = ControlPlane::start(&path).await;
    // The clients' sidecar forwards a fixed local port to kafka-0: the address the broker
    // advertises, so the connections a client opens from the metadata cross the mesh too.
    let forward = free_addr();
    let broker_port = free_addr().port();
    let _broker = KillOnDrop(
        Command::new(&tansu)
            .args([
                "broker",
                "--listener-url",
                &format!("tcp://127.0.0.1:{broker_port}"),
                "--advertised-listener-url",
                &format!("tcp://{forward}"),
                "--storage-engine",
                "memory://tansu/",
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("tansu runs"),
    );
    let ports = format!("{{kafka: {broker_port}}}");
    let server = proxy_with_ports(
        &cp,
        "kafka-0",
        "kafka",
        "{app: kafka, broker: \"0\"}",
        &ports,
    )
    .await;
    let extra = format!("tcp: [{{listen: {forward}, service: kafka-0:9092}}]\n");
    let client = proxy_as(&cp, "trip-0", "trip", "{app: trip}", 1, &extra).await;
    cp.wait_converged(2).await;

    // Not a blocking wait: the sidecars run on this test's runtime.
    let run = |args: Vec<String>| async move {
        tokio::process::Command::new(python())
            .arg(SCRIPT)
            .args(args)
            .stderr(Stdio::inherit())
            .output()
            .await
            .expect("python runs")
    };
    let port = forward.port().to_string();
    // Certificates arrive after the first config; until both sides hold one, STRICT refuses.
    let produced = eventually(Duration::from_secs(60), "the producer to succeed", || {
        let out = run(vec![
            "produce".into(),
            port.clone(),
            "rides".into(),
            MESSAGES.to_string(),
        ]);
        async move {
            let out = out.await;
            out.status.success().then_some(out)
        }
    })
    .await;
    let produced = String::from_utf8_lossy(&produced.stdout).to_string();
    assert!(
        produced.contains(&format!("produced {MESSAGES}")),
        "{produced}"
    );
    let consumed = run(vec![
        "consume".into(),
        port,
        "rides".into(),
        MESSAGES.to_string(),
    ])
    .await;
    let consumed = String::from_utf8_lossy(&consumed.stdout).to_string();
    let mut values = BTreeSet::new();
    let mut partitions = BTreeSet::new();
    for line in consumed.lines() {
        if let Some((p, v)) = line
            .split_once(' ')
            .filter(|(p, _)| p.parse::<u8>().is_ok())
        {
            partitions.insert(p.to_string());
            values.insert(v.to_string());
        }
    }
    let expected: BTreeSet<String> = (0..MESSAGES).map(|i| format!("ride-{i}")).collect();
    assert_eq!(values, expected, "every message came back: {consumed}");
    assert_eq!(partitions.len(), 3, "from all three partitions");
    println!(
        "kafka: {MESSAGES} produced, {} consumed from {} partitions",
        values.len(),
        partitions.len()
    );

    // Both sidecars decoded the requests as they passed, per API key.
    for (side, admin, direction) in [
        ("client", client.admin, "outbound"),
        ("server", server.admin, "inbound"),
    ] {
        let m = get(admin, "/metrics").await.unwrap().1;
        for api in ["api_versions", "metadata", "produce", "fetch"] {
            let line = m
                .lines()
                .find(|l| {
                    l.starts_with("trellis_kafka_requests_total{")
                        && l.contains(&format!("direction=\"{direction}\""))
                        && l.contains(&format!("api_key=\"{api}\""))
                })
                .unwrap_or_else(|| panic!("{side}: no {api} series:\n{m}"));
            assert!(!line.ends_with(" 0"), "{side}: {line}");
        }
        assert!(
            m.contains("trellis_kafka_request_duration_seconds_count{"),
            "{side}: no latency:\n{m}"
        );
        if side == "client" {
            let kafka: Vec<&str> = m
                .lines()
                .filter(|l| {
                    l.starts_with("trellis_kafka_requests_total")
                        || l.starts_with("trellis_kafka_request_errors_total")
                })
                .collect();
            println!("{}", kafka.join("\n"));
        }
    }
}

/// The broker, killed when the test ends, failed or not.
struct KillOnDrop(std::process::Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}
