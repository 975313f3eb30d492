//! How a proxy gets its certificate and keeps it: join tokens and presented certificates
//! prove only their own identity, renewal after the token expires, and rotation under load.

use super::support::{ControlPlane, eventually};
use super::{call, certificates, csr, env, mesh_yaml, serial, trip_id};
use rustls_pki_types::{CertificateDer, pem::PemObject};
use std::time::{Duration, SystemTime};
use trellis_proto::v1::CertifyRequest;
use trellis_proto::v1::identity_client::IdentityClient;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_join_token_proves_only_its_own_service_account() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("mesh.yaml");
    std::fs::write(&path, mesh_yaml("STRICT", false)).unwrap();
    let cp = ControlPlane::start(&path).await;
    let mut client = IdentityClient::new(cp.channel().await);
    let trip_token = cp.token("rides/trip", "1h");

    let ok = client
        .certify(CertifyRequest {
            csr: csr("trip"),
            token: trip_token.clone(),
        })
        .await
        .expect("trip's token gets trip's certificate")
        .into_inner();
    let leaf = CertificateDer::pem_slice_iter(ok.certificate_chain[0].as_bytes())
        .next()
        .unwrap()
        .unwrap();
    let info = trellis_identity::cert::inspect(&leaf).unwrap();
    assert_eq!(info.id.to_string(), trip_id());
    assert!(
        info.not_after - info.not_before <= 24 * 3600 + 60,
        "short-lived by default"
    );

    let err = client
        .certify(CertifyRequest {
            csr: csr("billing"),
            token: trip_token,
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::PermissionDenied, "{err:?}");
    assert!(
        err.message()
            .contains("proves only spiffe://trellis.local/ns/rides/sa/trip"),
        "{}",
        err.message()
    );

    // A token minted by another CA (another state directory) is a forgery here.
    let other = ControlPlane::start(&path).await;
    let forged = other.token("rides/billing", "1h");
    let err = client
        .certify(CertifyRequest {
            csr: csr("billing"),
            token: forged,
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::Unauthenticated, "{err:?}");
    assert!(
        err.message()
            .contains("not signed by this control plane's CA"),
        "{}",
        err.message()
    );

    let expired = cp.token("rides/trip", "0s");
    let err = client
        .certify(CertifyRequest {
            csr: csr("trip"),
            token: expired,
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::Unauthenticated, "{err:?}");
    assert!(err.message().contains("expired"), "{}", err.message());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rotation_every_few_seconds_fails_no_request() {
    let env = env("STRICT", false, &["--cert-ttl", "10s"]).await;
    let mut serials = std::collections::BTreeSet::new();
    let (mut ok, mut failed) = (0, Vec::new());
    let until = tokio::time::Instant::now() + Duration::from_secs(22);
    while tokio::time::Instant::now() < until {
        let (status, error, body) = call(env.trip.outbound, "GET", "billing", "/").await;
        if status == 200 && body.contains(&format!("URI={}", trip_id())) {
            ok += 1;
        } else {
            failed.push(format!("{status} {error}"));
        }
        serials.insert(serial(env.billing.admin).await);
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(
        failed.is_empty(),
        "{} of {} requests failed: {failed:?}",
        failed.len(),
        ok + failed.len()
    );
    assert!(
        serials.len() >= 3,
        "billing's certificate should rotate at least twice in 22s: {serials:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_its_join_token_expires_a_proxy_renews_with_its_certificate() {
    let env = env("STRICT", false, &["--cert-ttl", "4s"]).await;
    // billing's join token is replaced by one that expires in a second: from then on only the
    // certificate billing holds can prove who it is. Wait until the control plane has refused
    // the token once.
    let token = env.cp.state.path().join("billing-0.token");
    std::fs::write(&token, env.cp.token("rides/billing", "1s")).unwrap();
    let cp_http = env.cp.http;
    eventually(
        Duration::from_secs(10),
        "the expired token to be refused",
        || async move { (certificates(cp_http, "bad_proof").await >= 1.0).then_some(()) },
    )
    .await;
    let at_expiry = serial(env.billing.admin).await;
    let mut serials = std::collections::BTreeSet::new();
    let mut failed = Vec::new();
    let until = tokio::time::Instant::now() + Duration::from_secs(9);
    while tokio::time::Instant::now() < until {
        let (status, error, body) = call(env.trip.outbound, "GET", "billing", "/").await;
        if status != 200 || !body.contains(&format!("URI={}", trip_id())) {
            failed.push(format!("{status} {error}"));
        }
        serials.insert(serial(env.billing.admin).await);
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    serials.remove(&at_expiry);
    assert!(
        serials.len() >= 2,
        "billing's 4s certificate should have been renewed at least twice with an expired token: {serials:?}"
    );
    assert!(failed.is_empty(), "requests failed: {failed:?}");
    // The expired token was refused once and not sent again while it did not change; the
    // certificate attempts issued.
    let refused = certificates(env.cp.http, "bad_proof").await;
    assert_eq!(refused, 1.0, "token attempts refused");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_presented_certificate_proves_only_its_own_identity_and_only_from_the_mesh_ca() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("mesh.yaml");
    std::fs::write(&path, mesh_yaml("STRICT", false)).unwrap();
    let cp = ControlPlane::start(&path).await;
    let bundle = std::fs::read(cp.ca_bundle()).unwrap();
    let presenting = |leaf: &testkit::pki::Leaf| {
        let ep = trellis_proto::connect::endpoint_with_identity(
            &cp.url(),
            &bundle,
            &leaf.cert_pem,
            &leaf.key_pem,
        )
        .unwrap();
        async move { ep.connect().await.map(IdentityClient::new) }
    };
    let mesh = testkit::pki::TestCa::from_pem(
        &std::fs::read_to_string(cp.state.path().join("ca.pem")).unwrap(),
        &std::fs::read_to_string(cp.state.path().join("ca-key.pem")).unwrap(),
    );
    let an_hour = Duration::from_secs(3600);
    let trip = mesh.spiffe(
        &trip_id(),
        SystemTime::now() - Duration::from_secs(60),
        an_hour,
    );
    let mut client = presenting(&trip)
        .await
        .expect("a mesh certificate is accepted");
    // No token: the certificate proves rides/trip, and only that.
    let ok = client
        .certify(CertifyRequest {
            csr: csr("trip"),
            token: String::new(),
        })
        .await
        .expect("trip's certificate renews trip")
        .into_inner();
    assert!(!ok.certificate_chain.is_empty());
    let err = client
        .certify(CertifyRequest {
            csr: csr("billing"),
            token: String::new(),
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::PermissionDenied, "{err:?}");
    assert!(err.message().contains("current certificate"), "{err:?}");

    // A certificate from another CA fails the handshake; so does an expired mesh one.
    let foreign = testkit::pki::TestCa::new("not the mesh").spiffe(
        &trip_id(),
        SystemTime::now() - Duration::from_secs(60),
        an_hour,
    );
    let expired = mesh.spiffe(
        &trip_id(),
        SystemTime::now() - Duration::from_secs(7200),
        an_hour,
    );
    for (what, leaf) in [("foreign", &foreign), ("expired", &expired)] {
        let refused = match presenting(leaf).await {
            Err(_) => true,
            Ok(mut c) => c
                .certify(CertifyRequest {
                    csr: csr("trip"),
                    token: String::new(),
                })
                .await
                .is_err(),
        };
        assert!(refused, "a {what} certificate was accepted");
    }
    // Neither a certificate nor a token: nothing is proven.
    let mut anonymous = IdentityClient::new(cp.channel().await);
    let err = anonymous
        .certify(CertifyRequest {
            csr: csr("trip"),
            token: String::new(),
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::Unauthenticated, "{err:?}");
}
