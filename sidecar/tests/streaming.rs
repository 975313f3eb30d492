//! Bodies stream: a 1 GiB upload passes through the proxy while its memory stays flat.
//! Its own test binary, so the resident-set reading is not shared with other tests.

mod support;

use bytes::Bytes;
use http_body_util::{BodyExt, StreamBody};
use hyper::body::Frame;
use support::*;

/// Peak resident set of this process (the proxy runs in-process), in KiB.
fn peak_rss_kib() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find(|l| l.starts_with("VmHWM:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_gib_upload_streams_with_flat_memory() {
    let up = Upstream::start("sink").await;
    let h = start(&(service("sink", "") + &workload("sink", &up)), "").await;
    // Warm up pools and buffers before taking the baseline.
    assert_eq!(h.get("sink", "/").await.status, 200);
    let before = peak_rss_kib();

    const CHUNK: usize = 256 * 1024;
    const TOTAL: usize = 1 << 30;
    let chunk = Bytes::from(vec![7u8; CHUNK]);
    let frames = futures_util::stream::iter(
        (0..TOTAL / CHUNK)
            .map(move |_| Ok::<_, std::convert::Infallible>(Frame::data(chunk.clone()))),
    );
    let client = hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
        .build_http();
    let req = http::Request::builder()
        .method("POST")
        .uri(format!("http://{}/echo", h.outbound))
        .header("host", "sink")
        .body(StreamBody::new(frames))
        .unwrap();
    let res = client.request(req).await.expect("upload accepted");
    assert_eq!(res.status(), 200);
    // The upstream echoes the body back; count it as it streams instead of collecting it.
    let mut body = res.into_body();
    let mut received = 0usize;
    while let Some(frame) = body.frame().await {
        if let Ok(d) = frame.expect("body frame").into_data() {
            received += d.len();
        }
    }
    assert_eq!(received, TOTAL, "every byte came back");
    let grown_mib = peak_rss_kib().saturating_sub(before) / 1024;
    // Client, proxy and upstream share this process; buffering the body anywhere would add
    // at least 1024 MiB.
    assert!(
        grown_mib < 64,
        "peak RSS grew by {grown_mib} MiB while streaming 1 GiB"
    );
}
