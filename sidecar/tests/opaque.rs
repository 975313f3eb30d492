//! Opaque TCP across the mesh: a client sidecar's `tcp` forward, the transport preface, and
//! the server sidecar's inbound listener delivering to the app port the preface names.
//! Redis (Debian's redis-server and redis-cli) crosses two sidecars unchanged; half-close
//! works both ways; connect failures eject endpoints.

mod support;

use std::net::SocketAddr;
use std::process::Stdio;
use std::time::Duration;
use support::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio::process::Command;

const REDIS_SERVICE: &str = "apiVersion: v1\nkind: Service\nmetadata: {name: redis, namespace: rides}\n\
    spec:\n  selector: {app: redis}\n  ports: [{name: redis, port: 6379, targetPort: redis, appProtocol: tcp}]\n---\n";

/// The server side: a sidecar whose app listens on `app`, under the port name `redis`.
/// The client side: a sidecar that forwards a local port to Service `redis`, whose one
/// endpoint is the server sidecar's inbound listener.
async fn two_sidecars(app: SocketAddr) -> (Harness, Harness) {
    let server = start_with_app(REDIS_SERVICE, "", &format!("{{redis: {}}}", app.port())).await;
    let mesh = format!(
        "{REDIS_SERVICE}apiVersion: trellis.dev/v1alpha1\nkind: Workload\n\
         metadata: {{name: redis-0, namespace: rides, labels: {{app: redis}}}}\n\
         spec: {{address: 127.0.0.1, sidecarInbound: {}}}\n",
        server.inbound.port()
    );
    let client = start(&mesh, "tcp: [{listen: 127.0.0.1:0, service: redis:6379}]\n").await;
    (server, client)
}

/// Whether a program runs here; CI installs it, so there it must.
fn have(program: &str, what: &str) -> bool {
    let ok = std::process::Command::new(program)
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if !ok {
        assert!(
            std::env::var_os("TRELLIS_REQUIRE_SYSTEM_TESTS").is_none(),
            "{program} is missing but TRELLIS_REQUIRE_SYSTEM_TESTS is set"
        );
        println!(
            "skipped {what}: {program} is not installed (Debian: apt-get install redis-server redis-tools)"
        );
    }
    ok
}

async fn redis_cli(port: u16, args: &[&str], stdin: Option<&[u8]>) -> Vec<u8> {
    let mut cmd = Command::new("redis-cli");
    cmd.args(["-h", "127.0.0.1", "-p", &port.to_string()])
        .args(args)
        .stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .kill_on_drop(true);
    let mut child = cmd.spawn().expect("redis-cli starts");
    if let Some(data) = stdin {
        let mut w = child.stdin.take().unwrap();
        w.write_all(data).await.unwrap();
    }
    let out = tokio::time::timeout(Duration::from_secs(20), child.wait_with_output())
        .await
        .expect("redis-cli finishes within 20s")
        .expect("redis-cli runs");
    out.stdout
}

#[tokio::test]
async fn redis_cli_through_two_sidecars_reads_what_it_wrote() {
    if !have("redis-server", "the Redis test") || !have("redis-cli", "the Redis test") {
        return;
    }
    let port = dead_addr().port();
    let dir = tempfile::tempdir().unwrap();
    let _redis = Command::new("redis-server")
        .args([
            "--port",
            &port.to_string(),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
        ])
        .arg("--dir")
        .arg(dir.path())
        .stdout(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .expect("redis-server starts");
    eventually(
        Duration::from_secs(10),
        "redis-server to answer PING",
        || async { (redis_cli(port, &["PING"], None).await == b"PONG\n").then_some(()) },
    )
    .await;
    let (server, client) = two_sidecars(SocketAddr::from(([127, 0, 0, 1], port))).await;
    let via = client.tcp[0].port();

    assert_eq!(
        redis_cli(via, &["SET", "trip:42", "driver-7"], None).await,
        b"OK\n"
    );
    assert_eq!(
        redis_cli(via, &["GET", "trip:42"], None).await,
        b"driver-7\n"
    );
    // A value large enough to take many reads and writes each way.
    let big: String = (0..200_000)
        .map(|i| char::from(b'a' + (i % 26) as u8))
        .collect();
    assert_eq!(
        redis_cli(via, &["-x", "SET", "big"], Some(big.as_bytes())).await,
        b"OK\n"
    );
    let back = redis_cli(via, &["GET", "big"], None).await;
    assert_eq!(back.len(), big.len() + 1);
    assert!(
        back.starts_with(big.as_bytes()),
        "the value read is the value written"
    );
    // And it really is stored in the server, not only echoed by the path.
    assert_eq!(redis_cli(port, &["STRLEN", "big"], None).await, b"200000\n");

    let out = [
        ("direction", "outbound"),
        ("destination_service", "redis.rides"),
    ];
    assert!(client.metric("trellis_tcp_sent_bytes_total", &out).await >= 200_000.0);
    assert!(
        client
            .metric("trellis_tcp_received_bytes_total", &out)
            .await
            >= 200_000.0
    );
    assert_eq!(
        client
            .metric("trellis_tcp_connections_opened_total", &out)
            .await,
        4.0
    );
    eventually(
        Duration::from_secs(5),
        "the client sidecar to count 4 closed connections",
        || async {
            (client
                .metric("trellis_tcp_connections_closed_total", &out)
                .await
                == 4.0)
                .then_some(())
        },
    )
    .await;
    let inbound = [("direction", "inbound")];
    assert_eq!(
        server
            .metric("trellis_tcp_connections_opened_total", &inbound)
            .await,
        4.0
    );
}

#[tokio::test]
async fn half_close_passes_both_ways() {
    let app = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = app.local_addr().unwrap();
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    tokio::spawn(async move {
        loop {
            let (mut s, _) = app.accept().await.unwrap();
            let tx = tx.clone();
            tokio::spawn(async move {
                let mut first = [0u8; 5];
                s.read_exact(&mut first).await.unwrap();
                if &first == b"reply" {
                    // The client half-closes after its request; answer after its EOF.
                    let mut rest = Vec::new();
                    s.read_to_end(&mut rest).await.unwrap();
                    s.write_all(format!("got {} bytes", rest.len()).as_bytes())
                        .await
                        .unwrap();
                } else {
                    // The server half-closes first and keeps reading.
                    s.write_all(b"goodbye").await.unwrap();
                    s.shutdown().await.unwrap();
                    let mut rest = Vec::new();
                    s.read_to_end(&mut rest).await.unwrap();
                    tx.send(rest).unwrap();
                }
            });
        }
    });
    let (_server, client) = two_sidecars(addr).await;

    let mut c = tokio::net::TcpStream::connect(client.tcp[0]).await.unwrap();
    c.write_all(b"reply").await.unwrap();
    c.write_all(&[7u8; 1000]).await.unwrap();
    c.shutdown().await.unwrap();
    let mut answer = String::new();
    c.read_to_string(&mut answer).await.unwrap();
    assert_eq!(
        answer, "got 1000 bytes",
        "the answer came back after the client's half-close"
    );

    let mut c = tokio::net::TcpStream::connect(client.tcp[0]).await.unwrap();
    c.write_all(b"close").await.unwrap();
    let mut greeting = Vec::new();
    c.read_to_end(&mut greeting).await.unwrap();
    assert_eq!(
        greeting, b"goodbye",
        "the server's half-close arrived as EOF"
    );
    c.write_all(b"still talking").await.unwrap();
    c.shutdown().await.unwrap();
    let rest = tokio::time::timeout(Duration::from_secs(10), rx.recv())
        .await
        .expect("the server reads to EOF")
        .unwrap();
    assert_eq!(
        rest, b"still talking",
        "bytes sent after the server's half-close arrive"
    );
}
