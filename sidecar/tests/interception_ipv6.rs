//! IPv6 through transparent interception: `trellis-proxy init` installs ip6tables rules too,
//! so an app's IPv6 connection to a Service's IPv6 clusterIP must reach the proxy (on its
//! `[::1]` twin of the outbound listener) and be routed like an IPv4 one, rather than be
//! redirected to a port nothing listens on. Needs root and ip6tables' nat table; the
//! addresses live on the loopback of the namespace the test creates.

mod netns;

use netns::*;
use std::process::Stdio;
use std::time::Duration;

#[tokio::test]
async fn ipv6_connections_to_a_cluster_ip_are_intercepted_and_routed() {
    if !can_run() {
        return;
    }
    let ns = Netns::create("v6").await;
    // The namespace's loopback holds the upstream's address and routes the clusterIP's
    // prefix; `nodad` makes the address usable at once.
    ns.ok(
        "ip",
        &["-6", "addr", "add", "fd00:96::2/64", "dev", "lo", "nodad"],
    )
    .await;

    let dir = tempfile::tempdir().unwrap();
    chmod(dir.path(), 0o755);
    let bin = proxy_copy(dir.path());
    let bin = bin.to_str().unwrap();
    let init = ns.ok(bin, &["init"]).await;
    if !init.contains("ip6tables: installed") {
        assert!(
            std::env::var_os("TRELLIS_REQUIRE_SYSTEM_TESTS").is_none(),
            "ip6tables' nat table is unusable here but TRELLIS_REQUIRE_SYSTEM_TESTS is set:\n{init}"
        );
        println!("skipped: ip6tables' nat table is not usable here:\n{init}");
        return;
    }
    let _upstream = ns
        .cmd("python3")
        .args([
            "-c",
            &format!("{PY_HTTP}\nserve('fd00:96::2', 8080, 'v6-upstream')\n"),
        ])
        .stdout(Stdio::null())
        .spawn()
        .expect("python3 runs");
    let boot = standalone(
        dir.path(),
        "apiVersion: v1\nkind: Service\nmetadata: {name: billing, namespace: rides}\n\
         spec: {clusterIP: \"fd00:96::10\", selector: {app: billing}, ports: [{name: http, port: 80, targetPort: 8080}]}\n---\n\
         apiVersion: trellis.dev/v1alpha1\nkind: Workload\nmetadata: {name: billing-0, namespace: rides, labels: {app: billing}}\n\
         spec: {address: \"fd00:96::2\"}\n",
        "0.0.0.0:15006",
    );
    let proxy = Proxy::start(&ns, dir.path(), bin, &boot);
    // The app (root, so redirected) calls the clusterIP over IPv6. Until the upstream
    // listens the proxy answers 503; the last answer is kept for the failure message.
    let last = std::sync::Mutex::new(String::new());
    let got = tokio::time::timeout(Duration::from_secs(20), async {
        loop {
            let out = ns
                .run("curl", &["-s", "-m", "3", "http://[fd00:96::10]/pay"])
                .await;
            let body = String::from_utf8_lossy(&out.stdout).into_owned();
            if body == "v6-upstream /pay" {
                return;
            }
            *last.lock().unwrap() = body;
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    })
    .await;
    assert!(
        got.is_ok(),
        "no answer from the upstream over IPv6; last: {:?}; proxy log:\n{}",
        last.lock().unwrap(),
        proxy.log()
    );
    let m = ns.metrics().await;
    let routed = [
        "direction=\"outbound\"",
        "destination_service=\"billing.rides\"",
        "response_code=\"200\"",
    ];
    assert!(
        metric(&m, "trellis_requests_total", &routed) >= 1.0,
        "the proxy routed it as the Service:\n{m}"
    );
}
