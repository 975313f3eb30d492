//! Authorization that holds, end to end: each way around a policy that once worked, tried
//! next to a control that proves the setup can pass. A few lines over 400 on purpose: the
//! cases are one list of bypasses, read against the setup at the top of this file.

// trellis-control runs as a process, the proxies hold real mTLS identities, and a real app
// shows the raw path it received. The bypasses: another Service name for the same pod,
// another spelling of a denied path, and a proxy that starts before the control plane. The
// setup is `mesh`, `env`, `via` and `direct`.

mod support;

use std::net::SocketAddr;
use std::time::Duration;
use support::*;
use trellis_identity::SpiffeId;

const TD: &str = "trellis.local";

/// The canary layout: `billing` and `billing-v1` select the same pod and port. Only
/// `billing` carries policies: an ALLOW for rides/trip, and a DENY of `/admin*` for anyone.
fn mesh(mode: &str) -> String {
    format!(
        "apiVersion: trellis.dev/v1alpha1\nkind: Mesh\nmetadata: {{name: default}}\n\
         spec: {{trustDomain: {TD}, mtls: {{mode: {mode}}}}}\n---\n\
         apiVersion: v1\nkind: Service\nmetadata: {{name: billing, namespace: rides}}\n\
         spec: {{selector: {{app: billing}}, ports: [{{name: http, port: 80, targetPort: http}}]}}\n---\n\
         apiVersion: v1\nkind: Service\nmetadata: {{name: billing-v1, namespace: rides}}\n\
         spec: {{selector: {{app: billing, version: v1}}, ports: [{{name: http, port: 80, targetPort: http}}]}}\n---\n\
         apiVersion: trellis.dev/v1alpha1\nkind: AuthorizationPolicy\n\
         metadata: {{name: billing, namespace: rides}}\n\
         spec:\n  targetRef: {{kind: Service, name: billing}}\n  action: ALLOW\n  rules:\n\
         \x20 - from: [{{serviceAccounts: [rides/trip]}}]\n---\n\
         apiVersion: trellis.dev/v1alpha1\nkind: AuthorizationPolicy\n\
         metadata: {{name: billing-admin, namespace: rides}}\n\
         spec:\n  targetRef: {{kind: Service, name: billing}}\n  action: DENY\n  rules:\n\
         \x20 - to: [{{paths: [\"/admin*\"]}}]\n"
    )
}

// Fields drop in order: the proxies and the control plane go before the folder of their config.
struct Env {
    trip: trellis_proxy::Running,
    passenger: trellis_proxy::Running,
    billing: trellis_proxy::Running,
    billing_app: Upstream,
    /// A second app port of the billing pod that no Service targets.
    billing_side: Upstream,
    cp: ControlPlane,
    _dir: tempfile::TempDir,
}

async fn env() -> Env {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("mesh.yaml");
    std::fs::write(&path, mesh("STRICT")).unwrap();
    let cp = ControlPlane::start_with_grace(&path, "300ms").await;
    let billing_app = Upstream::start("billing").await;
    let billing_side = Upstream::start("billing-side").await;
    let trip = proxy_as(&cp, "trip-0", "trip", "{app: trip}", 1, "").await;
    let passenger = proxy_as(&cp, "passenger-0", "passenger", "{app: passenger}", 1, "").await;
    let billing = proxy_with_ports(
        &cp,
        "billing-0",
        "billing",
        "{app: billing, version: v1}",
        &format!(
            "{{http: {}, side: {}}}",
            billing_app.addr.port(),
            billing_side.addr.port()
        ),
    )
    .await;
    cp.wait_converged(3).await;
    for caller in [&trip, &passenger] {
        let admin = caller.admin;
        eventually(
            Duration::from_secs(15),
            "callers to see billing's identity",
            || async move {
                let (_, dump) = get(admin, "/config_dump").await?;
                dump.contains(&format!("spiffe://{TD}/ns/rides/sa/billing"))
                    .then_some(())
            },
        )
        .await;
    }
    Env {
        trip,
        passenger,
        billing,
        billing_app,
        billing_side,
        cp,
        _dir: dir,
    }
}

fn sa(name: &str) -> String {
    format!("spiffe://{TD}/ns/rides/sa/{name}")
}

fn billing_id() -> SpiffeId {
    SpiffeId::new(TD, "rides", "billing").unwrap()
}

/// A raw GET to a caller's outbound listener: status, `trellis-error`, and the path the
/// billing app saw (`x-seen-path`, empty when the app was not reached).
async fn via(caller: SocketAddr, host: &str, path: &str) -> (u16, String, String) {
    let tcp = tokio::net::TcpStream::connect(caller).await.unwrap();
    let answer = raw_exchange(tcp, &raw_get(host, path))
        .await
        .unwrap_or_default();
    let (status, error) = status_and_header(&answer, "trellis-error");
    let (_, seen) = status_and_header(&answer, "x-seen-path");
    (status, error, seen)
}

/// A raw GET straight at billing's inbound listener over mTLS as `identity`: what a caller
/// with a stolen key, or with no sidecar of its own, can send.
async fn direct(env: &Env, identity: &str, host: &str, path: &str) -> (u16, String, String) {
    let leaf = mesh_leaf(&env.cp, identity);
    let tls = mtls_connect(&env.cp, env.billing.inbound, &leaf, &billing_id())
        .await
        .expect("an mTLS handshake with billing's sidecar");
    let answer = raw_exchange(tls, &raw_get(host, path))
        .await
        .unwrap_or_default();
    let (status, error) = status_and_header(&answer, "trellis-error");
    let (_, seen) = status_and_header(&answer, "x-seen-path");
    (status, error, seen)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_policy_on_a_service_protects_its_port_whatever_name_the_caller_uses() {
    let env = env().await;
    let (trip, passenger) = (env.trip.outbound, env.passenger.outbound);

    // The control: rides/trip may call billing by either name.
    assert_eq!(via(trip, "billing", "/charge").await.0, 200);
    assert_eq!(via(trip, "billing-v1", "/charge").await.0, 200);
    assert_eq!(via(trip, "billing-v1.rides", "/charge").await.0, 200);
    let served = env.billing_app.hits();

    // rides/passenger may not, by any name: billing-v1 has no policy of its own, but it
    // reaches the port that billing's policy protects.
    for host in [
        "billing",
        "billing-v1",
        "billing-v1.rides",
        "billing.rides.svc",
    ] {
        let (status, error, _) = via(passenger, host, "/charge").await;
        assert_eq!((status, error.as_str()), (403, "unauthorized"), "{host}");
    }
    assert_eq!(
        env.billing_app.hits(),
        served,
        "no refused call reached the app"
    );

    // Straight at the inbound listener, a Host naming a port that billing-v1 does not have
    // is refused: the Host never picks another port.
    let side = env.billing_side.addr.port();
    for id in [sa("passenger"), sa("trip")] {
        let (status, _, _) = direct(&env, &id, &format!("billing-v1.rides:{side}"), "/").await;
        assert_eq!(status, 404, "{id}");
    }
    // A Host that names no Service reaches the app port no Service targets only under every
    // policy of the workload: rides/trip passes, rides/passenger does not.
    let (status, error, _) =
        direct(&env, &sa("passenger"), &format!("127.0.0.1:{side}"), "/").await;
    assert_eq!((status, error.as_str()), (403, "unauthorized"));
    assert_eq!(env.billing_side.hits(), 0);
    let (status, _, _) = direct(&env, &sa("trip"), &format!("127.0.0.1:{side}"), "/").await;
    assert_eq!(status, 200);
    assert_eq!(env.billing_side.hits(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_spelling_of_a_denied_path_reaches_the_app() {
    let env = env().await;
    // Each spelling resolves to /admin in common app frameworks; each must be refused, or
    // reach the app only as a normalized path outside /admin.
    let spellings = [
        "/admin",
        "/admin/",
        "/%61dmin",
        "//admin",
        "/./admin",
        "/x/../admin",
        "/%2e/admin",
        "/%2e%2e/admin",
        "/admin%2F..",
        "/..;/admin",
        "/\\admin",
        "/%5Cadmin",
        "/admin%2",
    ];
    let before = env.billing_app.hits();
    for path in spellings {
        for (how, (status, error, seen)) in [
            (
                "through trip's sidecar",
                via(env.trip.outbound, "billing", path).await,
            ),
            (
                "straight at billing's",
                direct(&env, &sa("trip"), "billing", path).await,
            ),
        ] {
            assert!(
                (status == 403 && error == "unauthorized")
                    || (status == 400 && error == "bad-request"),
                "{path} {how}: {status} {error} {seen}"
            );
        }
    }
    assert_eq!(
        env.billing_app.hits(),
        before,
        "no spelling reached the app"
    );

    // The controls: a different path passes, and the app receives the normalized form.
    for (path, normal) in [
        ("/ADMIN", "/ADMIN"),
        ("/x/%2e", "/x/"),
        ("/%63harge/./7", "/charge/7"),
        ("/a//b/../c?q=/../admin", "/a/c?q=/../admin"),
    ] {
        for (how, (status, _, seen)) in [
            (
                "through trip's sidecar",
                via(env.trip.outbound, "billing", path).await,
            ),
            (
                "straight at billing's",
                direct(&env, &sa("trip"), "billing", path).await,
            ),
        ] {
            assert_eq!((status, seen.as_str()), (200, normal), "{path} {how}");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_proxy_without_config_delivers_nothing_then_serves_mtls() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("mesh.yaml");
    std::fs::write(&path, mesh("STRICT")).unwrap();
    // Start once to make the mesh CA and the join tokens, then take the control plane away.
    let mut cp = ControlPlane::start_with_grace(&path, "300ms").await;
    let trip = proxy_as(&cp, "trip-0", "trip", "{app: trip}", 1, "").await;
    cp.kill();
    let app = Upstream::start("billing").await;
    let billing = start_unready(
        &cp,
        "billing-0",
        "billing",
        "{app: billing}",
        app.addr.port(),
    )
    .await;

    // No config: plaintext HTTP hears why, and nothing reaches the app.
    let tcp = tokio::net::TcpStream::connect(billing.inbound)
        .await
        .unwrap();
    let answer = raw_exchange(tcp, &raw_get("billing", "/charge"))
        .await
        .expect("an answer");
    let (status, error) = status_and_header(&answer, "trellis-error");
    assert_eq!((status, error.as_str()), (503, "not-ready"), "{answer}");
    assert!(answer.contains("waiting for the control plane"), "{answer}");
    // A caller with a valid identity is not let in either (the proxy has no certificate
    // yet, so the handshake cannot even finish).
    let leaf = mesh_leaf(&cp, &sa("trip"));
    if let Some(tls) = mtls_connect(&cp, billing.inbound, &leaf, &billing_id()).await {
        let answer = raw_exchange(tls, &raw_get("billing", "/charge")).await;
        assert!(
            answer
                .as_deref()
                .is_none_or(|a| a.starts_with("HTTP/1.1 503")),
            "{answer:?}"
        );
    }
    assert_eq!(app.hits(), 0, "nothing reached the app without a config");

    // The control plane comes back: STRICT now refuses plaintext, and trip gets in over mTLS.
    cp.restart().await;
    let admin = billing.admin;
    eventually(
        Duration::from_secs(20),
        "billing to be ready",
        || async move { (get(admin, "/ready").await?.0 == 200).then_some(()) },
    )
    .await;
    let tcp = tokio::net::TcpStream::connect(billing.inbound)
        .await
        .unwrap();
    assert_eq!(
        raw_exchange(tcp, &raw_get("billing", "/charge")).await,
        None
    );
    let trip_out = trip.outbound;
    eventually(
        Duration::from_secs(20),
        "trip to reach billing",
        || async move { (via(trip_out, "billing", "/charge").await.0 == 200).then_some(()) },
    )
    .await;
    assert!(app.hits() >= 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn service_accounts_with_long_names_get_certificates_and_serve_mtls() {
    // Kubernetes accepts both: a service account is a DNS subdomain (253 characters), with
    // no limit on a label's length. Neither fits a plain TLS server name.
    let long_label = "b".repeat(70);
    let near_limit = [
        "l".repeat(62),
        "m".repeat(62),
        "n".repeat(62),
        "o".repeat(62),
    ]
    .join(".");
    assert_eq!(near_limit.len(), 251);
    let services = |extra: &str| {
        format!(
            "apiVersion: trellis.dev/v1alpha1\nkind: Mesh\nmetadata: {{name: default}}\n\
             spec: {{trustDomain: {TD}, mtls: {{mode: STRICT}}}}\n---\n\
             apiVersion: v1\nkind: Service\nmetadata: {{name: billing, namespace: rides}}\n\
             spec: {{selector: {{app: billing}}, ports: [{{name: http, port: 80}}]}}\n---\n\
             apiVersion: v1\nkind: Service\nmetadata: {{name: ledger, namespace: rides}}\n\
             spec: {{selector: {{app: ledger}}, ports: [{{name: http, port: 80}}]}}\n{extra}"
        )
    };
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("mesh.yaml");
    std::fs::write(&path, services("")).unwrap();
    let cp = ControlPlane::start_with_grace(&path, "300ms").await;
    let (billing_app, ledger_app) = (
        Upstream::start("billing").await,
        Upstream::start("ledger").await,
    );
    let trip = proxy_as(&cp, "trip-0", "trip", "{app: trip}", 1, "").await;
    let _billing = proxy_as(
        &cp,
        "billing-0",
        &long_label,
        "{app: billing}",
        billing_app.addr.port(),
        "",
    )
    .await;
    let _ledger = proxy_as(
        &cp,
        "ledger-0",
        &near_limit,
        "{app: ledger}",
        ledger_app.addr.port(),
        "",
    )
    .await;
    cp.wait_converged(3).await;

    // Both are reached over mTLS, as the identity they were certified for.
    for (host, sa_name) in [("billing", &long_label), ("ledger", &near_limit)] {
        let out = trip.outbound;
        let want = format!("URI={}", sa("trip"));
        let (status, body) = eventually(
            Duration::from_secs(15),
            &format!("trip to reach {host} over mTLS"),
            || {
                let want = want.clone();
                async move {
                    let (status, _, body) = request(out, host, "/").await?;
                    (status == 200 && body.contains(&want)).then_some((status, body))
                }
            },
        )
        .await;
        assert_eq!(status, 200);
        assert!(body.contains(&format!("By={}", sa(sa_name))), "{body}");
    }

    // The caller keeps taking updates: a new Service reaches its config.
    let admin = trip.admin;
    write_atomically(
        &path,
        &services(
            "---\napiVersion: v1\nkind: Service\nmetadata: {name: receipts, namespace: rides}\n\
             spec: {selector: {app: receipts}, ports: [{name: http, port: 80}]}\n",
        ),
    );
    eventually(
        Duration::from_secs(15),
        "trip to see the new Service",
        || async move {
            let (_, dump) = get(admin, "/config_dump").await?;
            dump.contains("rides/receipts").then_some(())
        },
    )
    .await;
    assert_eq!(
        request(trip.outbound, "ledger", "/").await.map(|r| r.0),
        Some(200)
    );
}
