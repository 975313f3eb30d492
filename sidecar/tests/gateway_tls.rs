//! HTTPS at a Gateway listener: TLS terminated by the proxy with certificates from `Secret`
//! documents, chosen by SNI, checked by real clients (curl over HTTP/2 and HTTP/1.1, openssl
//! s_client), rotated under a request loop, and refused when expired; and the HTTP listener
//! beside it redirecting to HTTPS.

mod support;

use rustls_pki_types::CertificateDer;
use rustls_pki_types::pem::PemObject;
use std::net::SocketAddr;
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, SystemTime};
use support::*;
use testkit::pki::{Leaf, TestCa};

const GATEWAY: &str = r#"apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {name: edge, namespace: rides}
spec:
  listeners:
  - {name: http, port: 80, protocol: HTTP}
  - name: https
    port: 443
    protocol: HTTPS
    tls:
      mode: Terminate
      certificateRefs: [{name: rides-cert}, {name: maps-cert}]
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: api, namespace: rides}
spec:
  parentRefs: [{kind: Gateway, name: edge, sectionName: https}]
  rules:
  - backendRefs: [{name: passenger, port: 80}]
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: to-https, namespace: rides}
spec:
  parentRefs: [{kind: Gateway, name: edge, sectionName: http}]
  rules:
  - filters: [{type: RequestRedirect, requestRedirect: {scheme: https, statusCode: 301}}]
---
"#;

struct Edge {
    h: Harness,
    _passenger: Upstream,
    mesh: String,
    http: SocketAddr,
    https: SocketAddr,
    ca: TestCa,
    ca_file: tempfile::NamedTempFile,
}

/// A gateway proxy whose HTTPS listener serves `rides` (rides.example.com) first and `maps`
/// (*.maps.example.com) by SNI, in front of one passenger app.
async fn edge(rides: &Leaf, maps: &Leaf, ca: TestCa) -> Edge {
    let passenger = Upstream::start("passenger-0").await;
    let mesh = [
        service("passenger", ""),
        workload("passenger", &passenger),
        GATEWAY.to_string(),
    ]
    .concat();
    let full = format!(
        "{mesh}{}{}",
        tls_secret("rides-cert", rides),
        tls_secret("maps-cert", maps)
    );
    let h = start(
        &full,
        "gateway: {name: edge, listen: {http: 127.0.0.1:0, https: 127.0.0.1:0}}\n",
    )
    .await;
    let running = h.running.as_ref().unwrap();
    let (http, https) = (running.gateway["http"], running.gateway["https"]);
    let ca_file = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(ca_file.path(), &ca.root_pem).unwrap();
    Edge {
        h,
        _passenger: passenger,
        mesh,
        http,
        https,
        ca,
        ca_file,
    }
}

/// Runs a command off the runtime's thread (the proxy under test runs on it), with no stdin,
/// and returns its status and output.
async fn run(cmd: &'static str, args: Vec<String>) -> (bool, String, String) {
    tokio::task::spawn_blocking(move || {
        let out = Command::new(cmd)
            .args(&args)
            .stdin(std::process::Stdio::null())
            .output()
            .unwrap_or_else(|e| panic!("{cmd} runs: {e}"));
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    })
    .await
    .unwrap()
}

async fn curl(e: &Edge, host: &str, version: &str) -> (bool, String, String) {
    let args = [
        "-sS",
        "--max-time",
        "10",
        version,
        "--cacert",
        e.ca_file.path().to_str().unwrap(),
        "--resolve",
        &format!("{host}:{}:127.0.0.1", e.https.port()),
        "-D",
        "-",
        &format!("https://{host}:{}/rides/7", e.https.port()),
    ];
    run("curl", args.iter().map(|s| s.to_string()).collect()).await
}

/// The leaf certificate the HTTPS listener presents for `sni` (none: no SNI at all), as
/// openssl s_client prints it.
async fn presented(e: &Edge, sni: Option<&str>) -> String {
    let args: Vec<String> = match sni {
        Some(n) => vec![
            "-servername".into(),
            n.into(),
            "-verify_hostname".into(),
            n.into(),
        ],
        None => vec!["-noservername".into()],
    };
    s_client(e, args).await
}

/// `openssl s_client` to the HTTPS listener, trusting the test CA, with `extra` arguments;
/// its stdout and stderr together.
async fn s_client(e: &Edge, extra: Vec<String>) -> String {
    let mut args = vec![
        "s_client".to_string(),
        "-connect".into(),
        e.https.to_string(),
        "-CAfile".into(),
        e.ca_file.path().display().to_string(),
    ];
    args.extend(extra);
    let (_, out, err) = run("openssl", args).await;
    format!("{out}{err}")
}

fn der(leaf: &Leaf) -> CertificateDer<'static> {
    CertificateDer::from_pem_slice(leaf.cert_pem.as_bytes()).unwrap()
}

/// One HTTPS request for /rides/1 on a new connection, trusting `ca`.
async fn https_get(
    addr: SocketAddr,
    sni: &str,
    ca: &str,
) -> Result<(u16, CertificateDer<'static>), String> {
    testkit::tls::https_get(addr, sni, ca, "/rides/1").await
}

#[tokio::test]
async fn curl_over_h2_and_http11_reaches_an_http11_app_with_forwarded_https() {
    let ca = TestCa::new("edge-ca");
    let (rides, maps) = (
        ca.server(&["rides.example.com"]),
        ca.server(&["*.maps.example.com"]),
    );
    let e = edge(&rides, &maps, ca).await;

    // A browser-style client: HTTP/2 by ALPN over TLS. The app speaks what its port declares
    // (plain `http`, so HTTP/1.1), whatever the client spoke.
    let (ok, out, err) = curl(&e, "rides.example.com", "--http2").await;
    assert!(ok, "curl --http2 failed: {err}\n{out}");
    assert!(out.starts_with("HTTP/2 200"), "{out}");
    let lower = out.to_ascii_lowercase();
    assert!(lower.contains("x-upstream: passenger-0"), "{out}");
    assert!(
        lower.contains("x-seen-version: http/1.1"),
        "the app got HTTP/1.1: {out}"
    );
    // The edge says how the client came: https, not what the client claimed.
    assert!(lower.contains("\"x-forwarded-proto\":\"https\""), "{out}");

    let (ok, out, err) = curl(&e, "rides.example.com", "--http1.1").await;
    assert!(ok, "curl --http1.1 failed: {err}\n{out}");
    assert!(out.starts_with("HTTP/1.1 200"), "{out}");

    // A wildcard name, served by the second certificate.
    let (ok, out, err) = curl(&e, "api.maps.example.com", "--http2").await;
    assert!(ok, "curl to the wildcard failed: {err}\n{out}");
    assert!(out.starts_with("HTTP/2 200"), "{out}");

    let ok =
        e.h.metric(
            "trellis_requests_total",
            &[("direction", "gateway"), ("response_code", "200")],
        )
        .await;
    assert_eq!(ok, 3.0);
}

#[tokio::test]
async fn openssl_sees_the_certificate_its_sni_names_and_the_first_without_one() {
    let ca = TestCa::new("edge-ca");
    let (rides, maps) = (
        ca.server(&["rides.example.com"]),
        ca.server(&["*.maps.example.com"]),
    );
    let e = edge(&rides, &maps, ca).await;
    for (sni, want, verified) in [
        (Some("rides.example.com"), &rides, true),
        (Some("api.maps.example.com"), &maps, true),
        // No SNI, or a name no certificate has: the listener's first certificate, which
        // openssl then checks against no name (so it verifies) or the wrong one.
        (None, &rides, true),
        (Some("unknown.example.org"), &rides, false),
    ] {
        let out = presented(&e, sni).await;
        let leaf = out.find("-----BEGIN CERTIFICATE-----").map(|start| {
            let end = out[start..].find("-----END CERTIFICATE-----").unwrap();
            &out[start..start + end]
        });
        assert_eq!(
            leaf.map(|p| p.split_whitespace().collect::<String>()),
            Some(
                want.cert_pem
                    .split("-----END")
                    .next()
                    .unwrap()
                    .split_whitespace()
                    .collect()
            ),
            "{sni:?} got another certificate: {out}"
        );
        assert!(out.contains("TLSv1.3"), "TLS 1.3 is preferred: {out}");
        if verified {
            assert!(out.contains("Verify return code: 0 (ok)"), "{sni:?}: {out}");
        }
    }
    // The same choice as rustls clients see it.
    let got = https_get(e.https, "api.maps.example.com", &e.ca.root_pem)
        .await
        .unwrap();
    assert_eq!(got, (200, der(&maps)));
}

#[tokio::test]
async fn a_rotated_certificate_serves_new_connections_with_no_failed_request() {
    let ca = TestCa::new("edge-ca");
    let (rides, maps) = (
        ca.server(&["rides.example.com"]),
        ca.server(&["*.maps.example.com"]),
    );
    let e = edge(&rides, &maps, ca).await;
    let before = e.h.version().await;
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let looping = {
        let (stop, ca, addr) = (stop.clone(), e.ca.root_pem.clone(), e.https);
        tokio::spawn(async move {
            let (mut ok, mut failed) = (0, Vec::new());
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                match https_get(addr, "rides.example.com", &ca).await {
                    Ok((200, _)) => ok += 1,
                    Ok((s, _)) => failed.push(format!("status {s}")),
                    Err(err) => failed.push(err),
                }
            }
            (ok, failed)
        })
    };
    tokio::time::sleep(Duration::from_millis(300)).await;
    let renewed = e.ca.server(&["rides.example.com"]);
    e.h.write_mesh(&format!(
        "{}{}{}",
        e.mesh,
        tls_secret("rides-cert", &renewed),
        tls_secret("maps-cert", &maps)
    ));
    e.h.wait_for_new_version(&before).await;
    let now = https_get(e.https, "rides.example.com", &e.ca.root_pem)
        .await
        .unwrap();
    assert_eq!(
        now.1,
        der(&renewed),
        "new connections get the renewed certificate"
    );
    tokio::time::sleep(Duration::from_millis(300)).await;
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let (ok, failed) = looping.await.unwrap();
    assert!(
        failed.is_empty(),
        "{} of {} failed: {failed:?}",
        failed.len(),
        ok + failed.len()
    );
    assert!(ok > 10, "the loop ran: {ok} requests");
}

#[tokio::test]
async fn an_expired_certificate_is_left_out_and_the_other_listeners_serve() {
    let ca = TestCa::new("edge-ca");
    let expired = ca.server_valid(
        &["rides.example.com"],
        SystemTime::now() - Duration::from_secs(30 * 86400),
        Duration::from_secs(86400),
    );
    let maps = ca.server(&["*.maps.example.com"]);
    let e = edge(&expired, &maps, ca).await;
    // The expired certificate is not served: the next one is the default now, so a client
    // asking for rides gets a certificate that does not name it, and refuses it.
    let err = https_get(e.https, "rides.example.com", &e.ca.root_pem)
        .await
        .unwrap_err();
    assert!(err.contains("handshake"), "{err}");
    assert!(
        https_get(e.https, "api.maps.example.com", &e.ca.root_pem)
            .await
            .is_ok()
    );
    // /config_dump shows the listener's usable certificates, names and validity, no key.
    let dump = e.h.admin("/config_dump").await.body;
    assert!(!dump.contains("PRIVATE KEY"), "a key in /config_dump");
    let v: serde_json::Value = serde_json::from_str(&dump).unwrap();
    let v = &v["snapshot"];
    let listener = &v["gateways"]["rides/edge"]["listeners"][1];
    assert_eq!(
        listener["certificates"],
        serde_json::json!(["rides/maps-cert"])
    );
    assert_eq!(
        v["certificates"]["rides/maps-cert"]["dnsNames"],
        serde_json::json!(["*.maps.example.com"])
    );
    // The HTTP listener beside it is untouched.
    let r = e.h.send(req(e.http, "rides.example.com", "/x?y=1")).await;
    assert_eq!(r.status, 301);
}

#[tokio::test]
async fn a_listener_with_no_usable_certificate_fails_handshakes_and_counts_them() {
    let ca = TestCa::new("edge-ca");
    let other_ca = TestCa::new("someone-else");
    // Keys that are not their certificates': both refused when the config loads.
    let mismatched = |name: &str| Leaf {
        cert_pem: ca.server(&[name]).cert_pem,
        key_pem: other_ca.server(&[name]).key_pem,
    };
    let (rides, maps) = (
        mismatched("rides.example.com"),
        mismatched("*.maps.example.com"),
    );
    let e = edge(&rides, &maps, ca).await;
    let err = https_get(e.https, "rides.example.com", &e.ca.root_pem)
        .await
        .unwrap_err();
    assert!(err.contains("handshake"), "{err}");
    let failed =
        e.h.metric(
            "trellis_tls_handshake_errors_total",
            &[("direction", "gateway"), ("reason", "handshake-failed")],
        )
        .await;
    assert_eq!(failed, 1.0);
    let r = e.h.send(req(e.http, "rides.example.com", "/")).await;
    assert_eq!(r.status, 301, "the HTTP listener still serves");
}

#[tokio::test]
async fn the_http_listener_redirects_to_https_on_the_default_port() {
    let ca = TestCa::new("edge-ca");
    let (rides, maps) = (
        ca.server(&["rides.example.com"]),
        ca.server(&["*.maps.example.com"]),
    );
    let e = edge(&rides, &maps, ca).await;
    // Gateway API: scheme https with no port set goes to 443, which a URL leaves out; the
    // request's port (8080 here) is not carried over to another scheme.
    let r =
        e.h.send(req(e.http, "rides.example.com:8080", "/book?ride=1"))
            .await;
    assert_eq!(r.status, 301);
    assert_eq!(
        r.header("location"),
        "https://rides.example.com/book?ride=1"
    );
}

#[tokio::test]
async fn a_returning_client_resumes_across_a_config_change_that_keeps_its_certificate() {
    let ca = TestCa::new("edge-ca");
    let (rides, maps) = (
        ca.server(&["rides.example.com"]),
        ca.server(&["*.maps.example.com"]),
    );
    let e = edge(&rides, &maps, ca).await;
    let sess = e.ca_file.path().with_extension("sess");
    // TLS 1.2, whose ticket comes inside the handshake, so s_client saves it before it quits.
    let resume = |io: &str| {
        let args = ["-servername", "rides.example.com", "-tls1_2", io]
            .map(String::from)
            .into_iter()
            .chain([sess.display().to_string()])
            .collect();
        s_client(&e, args)
    };
    let first = resume("-sess_out").await;
    assert!(first.contains("New, TLSv1.2"), "{first}");
    assert!(resume("-sess_in").await.contains("Reused, TLSv1.2"));
    // Another document changes; the listener's certificates do not: the listener keeps its
    // TLS config, and with it the key the ticket was sealed with.
    let before = e.h.version().await;
    let other = "---\napiVersion: v1\nkind: Service\nmetadata: {name: spare, namespace: rides}\n\
                 spec: {selector: {app: spare}, ports: [{port: 80}]}\n";
    let secrets = tls_secret("rides-cert", &rides) + &tls_secret("maps-cert", &maps);
    e.h.write_mesh(&format!("{}{secrets}{other}", e.mesh));
    e.h.wait_for_new_version(&before).await;
    let again = resume("-sess_in").await;
    assert!(again.contains("Reused, TLSv1.2"), "{again}");
}
