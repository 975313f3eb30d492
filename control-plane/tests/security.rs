//! Security end to end: trellis-control's CA as a process, proxies that certify with join
//! tokens, and real TLS handshakes on loopback — mTLS modes, refused certificates, join-token
//! proofs, rotation under load, and authorization over HTTP and opaque TCP.

mod support;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use rustls_pki_types::{CertificateDer, pem::PemObject};
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, SystemTime};
use support::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use trellis_identity::SpiffeId;
use trellis_proto::v1::CertifyRequest;
use trellis_proto::v1::identity_client::IdentityClient;

const TD: &str = "trellis.local";

/// billing (HTTP) and db (opaque TCP) in STRICT/PERMISSIVE mode, optionally with policies:
/// billing lets rides/trip POST /charge* except /charge/forbidden*; db lets only rides/trip in.
fn mesh_yaml(mode: &str, policies: bool) -> String {
    let mut y = format!(
        "apiVersion: trellis.dev/v1alpha1\nkind: Mesh\nmetadata: {{name: default}}\n\
         spec: {{trustDomain: {TD}, mtls: {{mode: {mode}}}}}\n---\n\
         apiVersion: v1\nkind: Service\nmetadata: {{name: billing, namespace: rides}}\n\
         spec: {{selector: {{app: billing}}, ports: [{{name: http, port: 80}}]}}\n---\n\
         apiVersion: v1\nkind: Service\nmetadata: {{name: db, namespace: rides}}\n\
         spec: {{selector: {{app: db}}, ports: [{{name: tcp, port: 5432, appProtocol: tcp}}]}}\n"
    );
    if policies {
        y += "---\napiVersion: trellis.dev/v1alpha1\nkind: AuthorizationPolicy\n\
              metadata: {name: billing, namespace: rides}\n\
              spec:\n  targetRef: {kind: Service, name: billing}\n  action: ALLOW\n  rules:\n\
              \x20 - from: [{serviceAccounts: [rides/trip]}]\n    to: [{methods: [POST], paths: [\"/charge*\"]}]\n\
              ---\napiVersion: trellis.dev/v1alpha1\nkind: AuthorizationPolicy\n\
              metadata: {name: billing-deny, namespace: rides}\n\
              spec:\n  targetRef: {kind: Service, name: billing}\n  action: DENY\n  rules:\n\
              \x20 - to: [{paths: [\"/charge/forbidden*\"]}]\n\
              ---\napiVersion: trellis.dev/v1alpha1\nkind: AuthorizationPolicy\n\
              metadata: {name: db, namespace: rides}\n\
              spec:\n  targetRef: {kind: Service, name: db}\n  rules:\n  - from: [{serviceAccounts: [rides/trip]}]\n";
    }
    y
}

// Fields drop in order: the proxies and control plane go before the folder of their config.
struct Env {
    trip: trellis_proxy::Running,
    passenger: trellis_proxy::Running,
    billing: trellis_proxy::Running,
    _db: trellis_proxy::Running,
    billing_app: Upstream,
    db_app: Echo,
    cp: ControlPlane,
    _dir: tempfile::TempDir,
}

async fn env(mode: &str, policies: bool, cp_args: &[&str]) -> Env {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("mesh.yaml");
    std::fs::write(&path, mesh_yaml(mode, policies)).unwrap();
    let cp = ControlPlane::start_with_args(&path, "300ms", cp_args).await;
    let (billing_app, db_app) = (Upstream::start("billing").await, Echo::start().await);
    let db_forward = "tcp: [{listen: 127.0.0.1:0, service: db:5432}]\n";
    let trip = proxy_as(&cp, "trip-0", "trip", "{app: trip}", 1, db_forward).await;
    let passenger = proxy_as(
        &cp,
        "passenger-0",
        "passenger",
        "{app: passenger}",
        1,
        db_forward,
    )
    .await;
    let billing = proxy_as(
        &cp,
        "billing-0",
        "billing",
        "{app: billing}",
        billing_app.addr.port(),
        "",
    )
    .await;
    let db = proxy_as(&cp, "db-0", "db", "{app: db}", db_app.addr.port(), "").await;
    cp.wait_converged(4).await;
    // Each proxy registers as an mTLS endpoint once certified; wait until the callers' configs
    // say so, or their first calls would (correctly) go out in plaintext.
    for caller in [&trip, &passenger] {
        let admin = caller.admin;
        eventually(
            Duration::from_secs(15),
            "callers to see their peers' identities",
            || async move {
                let (_, dump) = get(admin, "/config_dump").await?;
                (dump.matches("\"identity\": \"spiffe://").count() >= 2).then_some(())
            },
        )
        .await;
    }
    Env {
        trip,
        passenger,
        billing,
        _db: db,
        billing_app,
        db_app,
        cp,
        _dir: dir,
    }
}

/// A TCP echo server that counts the connections it accepted.
struct Echo {
    addr: SocketAddr,
    accepted: Arc<AtomicUsize>,
}

impl Echo {
    async fn start() -> Echo {
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let (addr, accepted) = (l.local_addr().unwrap(), Arc::new(AtomicUsize::new(0)));
        let n = accepted.clone();
        tokio::spawn(async move {
            while let Ok((mut s, _)) = l.accept().await {
                n.fetch_add(1, Ordering::SeqCst);
                tokio::spawn(async move {
                    let (mut r, mut w) = s.split();
                    let _ = tokio::io::copy(&mut r, &mut w).await;
                });
            }
        });
        Echo { addr, accepted }
    }
}

/// A request through `addr` (a proxy's outbound or inbound listener): status, the
/// `trellis-error` header, and the body.
async fn call(addr: SocketAddr, method: &str, host: &str, path: &str) -> (u16, String, String) {
    let client = hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
        .build_http::<Full<Bytes>>();
    let req = http::Request::builder()
        .method(method)
        .uri(format!("http://{addr}{path}"))
        .header("host", host)
        .body(Full::new(Bytes::new()))
        .unwrap();
    let res = tokio::time::timeout(Duration::from_secs(10), client.request(req))
        .await
        .expect("an answer in time")
        .expect("an HTTP answer");
    let status = res.status().as_u16();
    let error = res
        .headers()
        .get("trellis-error")
        .map(|v| v.to_str().unwrap().to_string())
        .unwrap_or_default();
    let body = res.into_body().collect().await.unwrap().to_bytes();
    (status, error, String::from_utf8_lossy(&body).into_owned())
}

/// Sends one HTTP/1.1 request over `stream` and returns what came back: `None` when the
/// connection failed or closed before any answer.
async fn raw_request<S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin>(
    mut stream: S,
    path: &str,
) -> Option<String> {
    let req = format!(
        "POST {path} HTTP/1.1\r\nhost: billing.rides\r\ncontent-length: 0\r\nconnection: close\r\n\r\n"
    );
    stream.write_all(req.as_bytes()).await.ok()?;
    let mut buf = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(5), stream.read_to_end(&mut buf)).await;
    (!buf.is_empty()).then(|| String::from_utf8_lossy(&buf).into_owned())
}

/// An mTLS client to billing's inbound listener presenting `leaf`, verifying the server as
/// rides/billing against the mesh CA — the same checks a sidecar makes.
async fn mtls_request(env: &Env, leaf: &testkit::pki::Leaf, path: &str) -> Option<String> {
    let billing = SpiffeId::new(TD, "rides", "billing").unwrap();
    let tls = mtls_connect(&env.cp, env.billing.inbound, leaf, &billing).await?;
    raw_request(tls, path).await
}

/// `trellis_control_certificates{result}` on the control plane's HTTP port.
async fn certificates(http: SocketAddr, result: &str) -> f64 {
    let (_, m) = get(http, "/metrics").await.expect("metrics");
    m.lines()
        .find(|l| {
            l.starts_with("trellis_control_certificates")
                && l.contains(&format!("result=\"{result}\""))
        })
        .and_then(|l| l.rsplit(' ').next()?.parse().ok())
        .unwrap_or(0.0)
}

/// The serial of the certificate a proxy serves, from its `/config_dump`.
async fn serial(admin: SocketAddr) -> String {
    let (_, dump) = get(admin, "/config_dump").await.expect("config dump");
    let v: serde_json::Value = serde_json::from_str(&dump).unwrap();
    v["identity"]["serial"]
        .as_str()
        .unwrap_or_default()
        .to_string()
}

/// A CSR (PEM) asking for `rides/<sa>`'s SPIFFE ID, with a fresh key.
fn csr(sa: &str) -> String {
    let key = rcgen::KeyPair::generate().unwrap();
    let mut p = rcgen::CertificateParams::default();
    p.subject_alt_names = vec![rcgen::SanType::URI(
        format!("spiffe://{TD}/ns/rides/sa/{sa}")
            .try_into()
            .unwrap(),
    )];
    p.serialize_request(&key).unwrap().pem().unwrap()
}

fn trip_id() -> String {
    format!("spiffe://{TD}/ns/rides/sa/trip")
}

async fn metrics(admin: SocketAddr) -> String {
    get(admin, "/metrics").await.expect("metrics").1
}

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
async fn authorization_by_account_method_and_path_with_deny_winning() {
    let env = env("STRICT", true, &[]).await;
    let before = env.billing_app.hits();
    let cases = [
        (&env.trip, "POST", "/charge/1", 200),
        (&env.trip, "GET", "/charge/1", 403), // wrong method
        (&env.trip, "POST", "/refund", 403),  // path not allowed
        (&env.trip, "POST", "/charge/forbidden/1", 403), // DENY wins over ALLOW
        (&env.passenger, "POST", "/charge/1", 403), // wrong service account
    ];
    for (from, method, path, want) in cases {
        let (status, error, body) = call(from.outbound, method, "billing", path).await;
        assert_eq!(status, want, "{method} {path}: {body}");
        if want == 403 {
            assert_eq!(error, "unauthorized", "{method} {path}");
        }
    }
    assert_eq!(
        env.billing_app.hits(),
        before + 1,
        "denied requests never reach the app"
    );
    let m = metrics(env.billing.admin).await;
    assert!(
        m.contains(r#"policy="rides/billing-deny""#) && m.contains(r#"policy="no-allow-match""#),
        "{m}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn opaque_tcp_is_authorized_by_source_identity() {
    let env = env("STRICT", true, &[]).await;
    let mut s = tokio::net::TcpStream::connect(env.trip.tcp[0])
        .await
        .unwrap();
    s.write_all(b"ping over mTLS\n").await.unwrap();
    let mut buf = [0u8; 15];
    tokio::time::timeout(Duration::from_secs(10), s.read_exact(&mut buf))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(&buf, b"ping over mTLS\n");
    let accepted = env.db_app.accepted.load(Ordering::SeqCst);

    let mut s = tokio::net::TcpStream::connect(env.passenger.tcp[0])
        .await
        .unwrap();
    let _ = s.write_all(b"let me in\n").await;
    let mut buf = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(10), s.read_to_end(&mut buf))
        .await
        .unwrap();
    assert!(read.is_err() || buf.is_empty(), "passenger got {buf:?}");
    assert_eq!(
        env.db_app.accepted.load(Ordering::SeqCst),
        accepted,
        "the app never saw the denied connection"
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
