//! Whom a control plane in a cluster trusts: admin calls only from loopback, a proxy's labels
//! only as its Pod has them now, and no certificate to renew itself.

use super::{PODS, WAIT, cluster, cluster_with, node};
use serde_json::json;
use std::time::Duration;
use testkit::eventually;

#[tokio::test]
async fn in_a_cluster_the_admin_api_answers_only_on_loopback() {
    let Some(ip) = testkit::non_loopback_ip() else {
        eprintln!("skipped: this machine has no non-loopback address to call from");
        return;
    };
    let c = cluster_with(|o| {
        o.grpc_addr = ([0, 0, 0, 0], 0).into();
        o.server_names.push(ip.to_string());
    })
    .await;
    c.until("the first config", |w| w.config.services.len() == 4)
        .await;
    let pem = std::fs::read(c.state_dir().join("ca.pem")).unwrap();
    let port = c.running.grpc.port();
    let admin = |host: String| {
        let pem = pem.clone();
        async move {
            let ep =
                trellis_proto::connect::endpoint(&format!("https://{host}:{port}"), &pem).unwrap();
            trellis_proto::v1::admin_client::AdminClient::new(ep.connect().await.unwrap())
        }
    };
    // From another address (any pod, through the Service): refused, saying what to do.
    let e = admin(ip.to_string())
        .await
        .status(trellis_proto::v1::StatusRequest::default())
        .await
        .unwrap_err();
    assert_eq!(e.code(), tonic::Code::PermissionDenied, "{e}");
    assert!(e.message().contains("port-forward"), "{e}");
    // Through port-forward, which arrives on loopback: served, naming its source.
    let status = admin("127.0.0.1".into())
        .await
        .status(trellis_proto::v1::StatusRequest::default())
        .await
        .expect("loopback is served")
        .into_inner();
    assert_eq!(status.config_source, "kubernetes");
    assert!(status.config_errors.is_empty() && !status.config_partial);
    // Discovery and Certify stay open to every address: a handshake from the non-loopback
    // address reaches the identity service (and is refused for its bad proof, not its origin).
    let ep = trellis_proto::connect::endpoint(&format!("https://{ip}:{port}"), &pem).unwrap();
    let mut id =
        trellis_proto::v1::identity_client::IdentityClient::new(ep.connect().await.unwrap());
    let e = id
        .certify(trellis_proto::v1::CertifyRequest::default())
        .await
        .unwrap_err();
    assert_ne!(e.code(), tonic::Code::PermissionDenied, "{e}");
}

#[tokio::test]
async fn a_proxy_is_served_as_its_pod_is_labelled_now() {
    let c = cluster().await;
    c.until("the first config", |w| w.config.services.len() == 4)
        .await;
    let cp = c.running.cp.clone();
    // What the proxy read from the downward API at start matches the Pod: served as claimed.
    let claimed = node("trip-7d9f8-pqrst", "trip", "trip");
    assert_eq!(cp.cluster_identity(&claimed), None);
    // A proxy claiming another workload's labels is served as its pod is labelled.
    let spoofed = node("trip-7d9f8-pqrst", "billing", "billing");
    assert_eq!(*cp.serving_identity(&spoofed), claimed);
    // Relabelled, the pod's proxy is served with the new labels, without a restart.
    let mut pod = c
        .api
        .object(PODS, "rides", "trip-7d9f8-pqrst")
        .expect("the fixture's pod");
    pod["metadata"]["labels"]["version"] = json!("v2");
    c.api.event(PODS, "MODIFIED", pod);
    let now = eventually(WAIT, "the relabel to reach the Pod watch", || {
        let id = cp.cluster_identity(&claimed);
        async move { id }
    })
    .await;
    assert_eq!(now.labels["version"], "v2");
    assert_eq!(now.labels["app"], "trip");
    let mut v2 = claimed.clone();
    v2.labels.insert("version".into(), "v2".into());
    assert_eq!(now, v2);
    // A proxy whose pod the cluster does not have (a VM, say) is served as it claims.
    let vm = node("trip-on-a-vm", "trip", "trip");
    assert_eq!(cp.cluster_identity(&vm), None);
}

#[tokio::test]
async fn in_a_cluster_a_certificate_does_not_renew_itself() {
    // The kubelet keeps every pod's projected token fresh, so nothing in a cluster needs
    // renewal by certificate, and a stolen key must not be renewable with it.
    let c = cluster().await;
    c.until("the first config", |w| w.config.services.len() == 4)
        .await;
    let state = c.state_dir();
    let mesh = testkit::pki::TestCa::from_pem(
        &std::fs::read_to_string(state.join("ca.pem")).unwrap(),
        &std::fs::read_to_string(state.join("ca-key.pem")).unwrap(),
    );
    let id = "spiffe://rides.example/ns/rides/sa/trip";
    let now = std::time::SystemTime::now();
    let leaf = mesh.spiffe(id, now - Duration::from_secs(60), Duration::from_secs(3600));
    let ep = trellis_proto::connect::endpoint_with_identity(
        &format!("https://127.0.0.1:{}", c.running.grpc.port()),
        &std::fs::read(state.join("ca.pem")).unwrap(),
        &leaf.cert_pem,
        &leaf.key_pem,
    )
    .unwrap();
    let mut client =
        trellis_proto::v1::identity_client::IdentityClient::new(ep.connect().await.unwrap());
    let key = rcgen::KeyPair::generate().unwrap();
    let mut params = rcgen::CertificateParams::default();
    params.subject_alt_names = vec![rcgen::SanType::URI(id.try_into().unwrap())];
    let csr = params.serialize_request(&key).unwrap().pem().unwrap();
    let e = client
        .certify(trellis_proto::v1::CertifyRequest {
            csr,
            token: String::new(),
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), tonic::Code::Unauthenticated, "{e}");
    assert!(
        e.message().contains("projected service-account token"),
        "{e}"
    );
}
