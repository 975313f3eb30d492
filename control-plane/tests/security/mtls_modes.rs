//! STRICT and PERMISSIVE mTLS between sidecars: what each accepts, and which certificates a
//! STRICT sidecar refuses (a foreign CA's, an expired one).

use super::support::mesh_ca;
use super::{call, env, metrics, mtls_request, raw_request, trip_id};
use std::time::{Duration, SystemTime};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn strict_refuses_plaintext_and_certificates_from_a_foreign_ca_or_expired() {
    let env = env("STRICT", true, &[]).await;

    // Sidecar to sidecar is mTLS: billing's app sees who called, as Envoy's XFCC says it.
    let (status, _, body) = call(env.trip.outbound, "POST", "billing", "/charge/1").await;
    assert_eq!(status, 200, "{body}");
    assert!(body.contains(&format!("URI={}", trip_id())), "{body}");
    let served = env.billing_app.hits();

    // Plaintext straight at billing's inbound port: closed without an answer.
    let tcp = tokio::net::TcpStream::connect(env.billing.inbound)
        .await
        .unwrap();
    assert_eq!(raw_request(tcp, "/charge/2").await, None);
    let m = metrics(env.billing.admin).await;
    assert!(m.contains(r#"trellis_tls_handshake_errors_total{direction="inbound",reason="plaintext-refused"} 1"#), "{m}");

    // The harness can succeed: a current certificate from the mesh CA is served...
    let now = SystemTime::now();
    let good = mesh_ca(&env.cp).spiffe(
        &trip_id(),
        now - Duration::from_secs(60),
        Duration::from_secs(3600),
    );
    let answer = mtls_request(&env, &good, "/charge/3")
        .await
        .expect("an answer over mTLS");
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    // ...but the same identity from a foreign CA is not,
    let foreign = testkit::pki::TestCa::new("not the mesh CA").spiffe(
        &trip_id(),
        now - Duration::from_secs(60),
        Duration::from_secs(3600),
    );
    assert_eq!(mtls_request(&env, &foreign, "/charge/4").await, None);
    // and neither is an expired certificate from the mesh CA.
    let expired = mesh_ca(&env.cp).spiffe(
        &trip_id(),
        now - Duration::from_secs(7200),
        Duration::from_secs(3600),
    );
    assert_eq!(mtls_request(&env, &expired, "/charge/5").await, None);

    assert_eq!(
        env.billing_app.hits(),
        served + 1,
        "only the valid mTLS request reached the app"
    );
    let m = metrics(env.billing.admin).await;
    assert!(
        m.contains(
            r#"trellis_tls_handshake_errors_total{direction="inbound",reason="handshake-failed"} 2"#
        ),
        "{m}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn permissive_accepts_plaintext_and_mtls() {
    let env = env("PERMISSIVE", false, &[]).await;
    let (status, _, body) = call(env.trip.outbound, "GET", "billing", "/").await;
    assert_eq!(status, 200, "{body}");
    assert!(
        body.contains(&format!("URI={}", trip_id())),
        "mTLS from the sidecar: {body}"
    );
    let (status, _, body) = call(env.billing.inbound, "GET", "billing.rides", "/").await;
    assert_eq!(status, 200, "{body}");
    assert!(
        !body.contains("x-forwarded-client-cert"),
        "plaintext has no peer identity: {body}"
    );
}
