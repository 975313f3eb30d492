//! ExternalName against a real DNS server: dnsmasq (Debian's `dnsmasq-base`) serves the name
//! inside a network namespace, whose resolv.conf points at it (`ip netns exec` mounts
//! /etc/netns/NAME/resolv.conf). When the answer changes the proxy follows within a TTL or
//! two; when the server dies the proxy keeps the last good addresses. Needs root, like the
//! other namespace tests; under .ci/run a missing dnsmasq fails the test.

mod netns;

use netns::*;
use std::process::Stdio;
use std::time::Duration;

/// Two backends on two loopback addresses of the namespace, each saying which it is.
fn backends() -> String {
    format!(
        "{PY_HTTP}\nbackground('127.0.0.20', 8080, 'first')\nserve('127.0.0.21', 8080, 'second')\n"
    )
}

fn have_dnsmasq() -> bool {
    let ok = std::process::Command::new("dnsmasq")
        .arg("--version")
        .stdout(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if !ok {
        assert!(
            std::env::var_os("TRELLIS_REQUIRE_SYSTEM_TESTS").is_none(),
            "dnsmasq is missing but TRELLIS_REQUIRE_SYSTEM_TESTS is set"
        );
        println!("skipped: dnsmasq is not installed (Debian: apt-get install dnsmasq-base)");
    }
    ok
}

/// /etc/netns/NAME, removed on drop.
struct NetnsEtc(std::path::PathBuf);

impl Drop for NetnsEtc {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

#[tokio::test]
async fn external_names_follow_dns_answers_and_keep_the_last_good_ones() {
    if !can_run() || !have_dnsmasq() {
        return;
    }
    let ns = Netns::create("dns").await;
    let etc = NetnsEtc(std::path::PathBuf::from(format!("/etc/netns/{}", ns.0)));
    std::fs::create_dir_all(&etc.0).unwrap();
    std::fs::write(etc.0.join("resolv.conf"), "nameserver 127.0.0.53\n").unwrap();

    let dir = tempfile::tempdir().unwrap();
    chmod(dir.path(), 0o755);
    let hosts = dir.path().join("hosts");
    std::fs::write(&hosts, "127.0.0.20 api.payments.test\n").unwrap();
    let mut dnsmasq = ns
        .cmd("dnsmasq")
        .args([
            "--keep-in-foreground",
            "--conf-file=/dev/null",
            "--no-resolv",
            "--no-hosts",
            "--listen-address=127.0.0.53",
            "--bind-interfaces",
            "--local-ttl=1",
            "--user=root",
            "--pid-file=",
        ])
        .arg(format!("--addn-hosts={}", hosts.display()))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("dnsmasq runs");
    let _backends = ns
        .cmd("python3")
        .args(["-c", &backends()])
        .stdout(Stdio::null())
        .spawn()
        .expect("python3 runs");

    let bin = proxy_copy(dir.path());
    let bin = bin.to_str().unwrap();
    let boot = standalone(
        dir.path(),
        "apiVersion: v1\nkind: Service\nmetadata: {name: payments, namespace: rides}\n\
         spec:\n  type: ExternalName\n  externalName: api.payments.test\n  ports: [{name: http, port: 8080}]\n",
        "127.0.0.1:15006",
    );
    let proxy = Proxy::start(&ns, dir.path(), bin, &boot);
    let call = || async {
        let out = ns
            .run(
                "curl",
                &[
                    "-s",
                    "-m",
                    "3",
                    "-H",
                    "Host: payments.rides:8080",
                    "http://127.0.0.1:15001/",
                ],
            )
            .await;
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    testkit::eventually(Duration::from_secs(20), "the first answer", || async {
        (call().await == "first /").then_some(())
    })
    .await;

    // The name moves: dnsmasq re-reads its hosts file on SIGHUP, and with a 1 s TTL the
    // proxy asks again within about a second.
    std::fs::write(&hosts, "127.0.0.21 api.payments.test\n").unwrap();
    let pid = dnsmasq.id().expect("dnsmasq is running").to_string();
    let hup = std::process::Command::new("kill")
        .args(["-HUP", &pid])
        .status()
        .unwrap();
    assert!(hup.success());
    // (Were the 1 s TTL ignored, the proxy would look again only after an hour.)
    testkit::eventually(Duration::from_secs(10), "the new address", || async {
        (call().await == "second /").then_some(())
    })
    .await;

    // DNS goes away: the failed lookup is logged, and the last good address keeps serving.
    // A lookup to a dead server fails only when the resolver gives up on it (hickory's
    // defaults, like resolv.conf's: a 5 s timeout, two attempts; about 31 s measured here
    // for the A and AAAA lookups), so this waits for the log line, not a clock.
    dnsmasq.kill().await.unwrap();
    let _ = dnsmasq.wait().await;
    let killed = std::time::Instant::now();
    testkit::eventually(
        Duration::from_secs(60),
        "a failed lookup of the name to be logged",
        || async {
            let log = proxy.log();
            (log.contains("ExternalName resolution failed") && log.contains("api.payments.test"))
                .then_some(())
        },
    )
    .await;
    println!(
        "the failed lookup was logged {:?} after DNS died",
        killed.elapsed()
    );
    for _ in 0..5 {
        assert_eq!(call().await, "second /", "proxy log:\n{}", proxy.log());
    }
}
