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

/// An app that echoes every byte back, on its own port.
async fn echo_app() -> SocketAddr {
    let app = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = app.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = app.accept().await {
            tokio::spawn(async move {
                let (mut r, mut w) = s.split();
                let _ = tokio::io::copy(&mut r, &mut w).await;
            });
        }
    });
    addr
}

/// Service `echo` port 9000 (opaque) as the server sidecar's own mesh file sees it: it
/// selects the server's workload (`app: trip`), so its policies protect the app port.
fn echo_server_mesh(extra: &str) -> String {
    format!(
        "apiVersion: v1\nkind: Service\nmetadata: {{name: echo, namespace: rides}}\n\
         spec:\n  selector: {{app: trip}}\n  ports: [{{name: echo, port: 9000, targetPort: echo, appProtocol: tcp}}]\n---\n{extra}"
    )
}

/// The client sidecar's mesh: Service `echo`, whose one endpoint is the server sidecar.
fn echo_client_mesh(server: &Harness, extra: &str) -> String {
    format!(
        "apiVersion: v1\nkind: Service\nmetadata: {{name: echo, namespace: rides}}\n\
         spec:\n  selector: {{app: echo}}\n  ports: [{{name: echo, port: 9000, targetPort: echo, appProtocol: tcp}}]\n---\n\
         apiVersion: trellis.dev/v1alpha1\nkind: Workload\n\
         metadata: {{name: echo-0, namespace: rides, labels: {{app: echo}}}}\n\
         spec: {{address: 127.0.0.1, sidecarInbound: {}}}\n---\n{extra}",
        server.inbound.port()
    )
}

/// Two sidecars in front of an echo app, and one connection open through both.
async fn echo_through_two(
    server_extra: &str,
    client_mesh_extra: &str,
) -> (Harness, Harness, tokio::net::TcpStream) {
    let app = echo_app().await;
    let ports = format!("{{echo: {}}}", app.port());
    let server = start_with_app(&echo_server_mesh(""), server_extra, &ports).await;
    let client = start(
        &echo_client_mesh(&server, client_mesh_extra),
        "tcp: [{listen: 127.0.0.1:0, service: echo:9000}]\n",
    )
    .await;
    let mut conn = tokio::net::TcpStream::connect(client.tcp[0]).await.unwrap();
    assert_eq!(
        round_trip(&mut conn, b"hello").await.as_deref(),
        Some(&b"hello"[..])
    );
    (server, client, conn)
}

/// Writes `msg` and reads as many bytes back; `None` when the connection closed instead.
async fn round_trip(conn: &mut tokio::net::TcpStream, msg: &[u8]) -> Option<Vec<u8>> {
    conn.write_all(msg).await.ok()?;
    let mut back = vec![0u8; msg.len()];
    match tokio::time::timeout(Duration::from_secs(10), conn.read_exact(&mut back)).await {
        Ok(Ok(_)) => Some(back),
        Ok(Err(_)) => None,
        Err(_) => panic!("no answer and no close within 10s"),
    }
}

/// Resolves when the peer closes `conn` (EOF or reset), or panics after 10 s.
async fn closed(conn: &mut tokio::net::TcpStream) {
    let mut buf = [0u8; 64];
    let r = tokio::time::timeout(Duration::from_secs(10), conn.read(&mut buf)).await;
    match r {
        Ok(Ok(0)) | Ok(Err(_)) => {}
        Ok(Ok(n)) => panic!("{n} unexpected bytes"),
        Err(_) => panic!("the connection is still open after 10s"),
    }
}

#[tokio::test]
async fn a_push_leaves_an_open_connection_alone_until_policy_denies_it() {
    let (server, _client, mut conn) = echo_through_two("", "").await;

    // A push that changes other Services (and the version) leaves the connection open.
    let old = server.version().await;
    server.write_mesh(&echo_server_mesh(&service("billing", "")));
    server.wait_for_new_version(&old).await;
    assert_eq!(
        round_trip(&mut conn, b"still here").await.as_deref(),
        Some(&b"still here"[..]),
        "an unrelated push closed the connection"
    );

    // A policy that admits only rides/producer: this plaintext caller is now denied, and its
    // open connection is closed, not left to run under the old policy.
    let old = server.version().await;
    let written = std::time::Instant::now();
    server.write_mesh(&echo_server_mesh(
        "apiVersion: trellis.dev/v1alpha1\nkind: AuthorizationPolicy\n\
         metadata: {name: echo, namespace: rides}\n\
         spec:\n  targetRef: {kind: Service, name: echo}\n  action: ALLOW\n\
         \x20 rules: [{from: [{serviceAccounts: [rides/producer]}]}]\n",
    ));
    server.wait_for_new_version(&old).await;
    let applied = written.elapsed();
    closed(&mut conn).await;
    println!(
        "the denied connection closed {:.1} ms after the mesh file was written (the new version was seen served after {:.1} ms)",
        written.elapsed().as_secs_f64() * 1000.0,
        applied.as_secs_f64() * 1000.0
    );
    let cut = [("direction", "inbound"), ("reason", "denied")];
    assert_eq!(
        server
            .metric("trellis_tcp_connections_cut_total", &cut)
            .await,
        1.0
    );
}

#[tokio::test]
async fn an_idle_connection_is_closed_after_its_services_idle_timeout() {
    let policy = "apiVersion: trellis.dev/v1alpha1\nkind: ResiliencePolicy\n\
                  metadata: {name: echo, namespace: rides}\n\
                  spec: {targetRef: {kind: Service, name: echo}, tcp: {idleTimeout: 1s}}\n";
    let (_server, client, mut conn) = echo_through_two("", policy).await;
    // Traffic keeps it open; silence closes it.
    for _ in 0..3 {
        tokio::time::sleep(Duration::from_millis(400)).await;
        assert!(
            round_trip(&mut conn, b"beat").await.is_some(),
            "closed while busy"
        );
    }
    closed(&mut conn).await;
    let cut = [("direction", "outbound"), ("reason", "idle")];
    assert_eq!(
        client
            .metric("trellis_tcp_connections_cut_total", &cut)
            .await,
        1.0
    );
}

#[tokio::test]
async fn a_drain_waits_for_an_open_opaque_connection() {
    let (mut server, _client, mut conn) =
        echo_through_two("limits: {drainTimeout: 60s}\n", "").await;
    assert_eq!(server.post_admin("/drain").await.status, 202);
    let running = server.running.take().unwrap();
    let mut drained = tokio::spawn(running.wait());
    // The connection outlives the start of the drain, and the drain waits for it.
    for _ in 0..3 {
        assert!(round_trip(&mut conn, b"draining").await.is_some());
        assert!(
            tokio::time::timeout(Duration::from_millis(200), &mut drained)
                .await
                .is_err(),
            "the drain ended with a connection open"
        );
    }
    // Once the client closes, the drain ends well before its 60 s limit.
    drop(conn);
    tokio::time::timeout(Duration::from_secs(20), drained)
        .await
        .expect("the drain ended once the connection closed")
        .unwrap();
}
