//! AuthorizationPolicy enforced by the sidecars: HTTP by account, method and path with DENY
//! winning, and opaque TCP by source identity.

use super::{call, env, metrics};
use std::sync::atomic::Ordering;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

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
