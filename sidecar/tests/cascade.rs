//! The cascade from the resilience issue: trip calls billing through trip's sidecar, and
//! billing starts to take 2 s per answer. With a timeout and a breaker, trip's callers wait
//! at most the timeout until the breaker has its minimum calls, then get fast 503s while
//! billing gets no traffic; when billing recovers, HALF_OPEN probes close the breaker.
//!
//! Run with `cargo test -p trellis-proxy --test cascade -- --nocapture` to see the figures.

mod support;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use support::*;
use testkit::Mode;

const CLUSTER: &str = "billing.rides:80";
const WORKERS: usize = 8;

/// One call as trip's caller saw it.
struct Sample {
    started: Instant,
    took: Duration,
    status: u16,
    error: String,
}

fn p99(mut took: Vec<Duration>) -> Duration {
    took.sort();
    took.get((took.len() * 99).div_ceil(100).saturating_sub(1))
        .copied()
        .unwrap_or_default()
}

#[tokio::test]
async fn a_slow_billing_does_not_make_trip_slow() {
    let billing = Upstream::start("billing-0").await;
    let mesh = service("billing", "")
        + &workload("billing", &billing)
        + &policy(
            "billing",
            "  timeout: 300ms\n  \
             circuitBreaker: {failureRateThreshold: 50, slowCallRateThreshold: 50, \
             slowCallDurationThreshold: 100ms, slidingWindow: {type: COUNT, size: 10}, \
             minimumCalls: 10, waitInOpen: 1s, permittedCallsInHalfOpen: 3}",
        );
    let h = Arc::new(start(&mesh, "").await);
    for _ in 0..20 {
        assert_eq!(h.get("billing", "/").await.status, 200);
    }

    // Billing turns slow; trip's workers keep calling it.
    billing.set_mode(Mode::Sleep(Duration::from_secs(2)));
    let samples = Arc::new(Mutex::new(Vec::<Sample>::new()));
    let stop = Arc::new(AtomicBool::new(false));
    let workers: Vec<_> = (0..WORKERS)
        .map(|_| {
            let (h, samples, stop) = (h.clone(), samples.clone(), stop.clone());
            tokio::spawn(async move {
                while !stop.load(Ordering::Relaxed) {
                    let started = Instant::now();
                    let r = h.get("billing", "/").await;
                    samples.lock().unwrap().push(Sample {
                        started,
                        took: started.elapsed(),
                        status: r.status.as_u16(),
                        error: r.header("trellis-error").to_string(),
                    });
                }
            })
        })
        .collect();
    eventually(Duration::from_secs(10), "the breaker to open", || async {
        (h.breaker_state(CLUSTER).await == "OPEN").then_some(())
    })
    .await;
    let opened = Instant::now();
    let hits_at_open = billing.hits();
    // Let the workers make a few hundred calls against the open breaker.
    eventually(Duration::from_secs(5), "calls while OPEN", || async {
        let s = samples.lock().unwrap();
        (s.iter().filter(|s| s.started > opened).count() >= 300).then_some(())
    })
    .await;
    stop.store(true, Ordering::Relaxed);
    for w in workers {
        w.await.unwrap();
    }
    assert_eq!(
        h.breaker_state(CLUSTER).await,
        "OPEN",
        "still within waitInOpen"
    );
    let during_open = billing.hits() - hits_at_open;
    assert_eq!(
        during_open, 0,
        "billing gets nothing while the breaker is OPEN"
    );

    let samples = std::mem::take(&mut *samples.lock().unwrap());
    // Each call either reached billing and was cut off by the timeout, or was refused by the
    // open breaker without reaching it.
    let (before, after): (Vec<&Sample>, Vec<&Sample>) =
        samples.iter().partition(|s| s.error == "timeout");
    // The window already held the healthy calls, so the first timeouts were enough to pass
    // minimumCalls and the failure rate; at most two rounds of the workers' calls got through.
    assert!(
        (WORKERS..=2 * WORKERS).contains(&before.len()),
        "{} calls reached billing before the breaker opened",
        before.len()
    );
    for s in &before {
        assert_eq!(s.status, 504);
    }
    for s in &after {
        assert_eq!((s.status, s.error.as_str()), (503, "circuit-open"));
        assert!(
            s.took < Duration::from_secs(1),
            "a fast answer, not billing's 2 s"
        );
    }
    assert!(after.iter().filter(|s| s.started > opened).count() >= 300);
    let p99_before = p99(before.iter().map(|s| s.took).collect());
    let p99_after = p99(after.iter().map(|s| s.took).collect());
    println!(
        "cascade: billing answers in 2 s; trip's p99 while billing was called {p99_before:?} \
         ({} calls, cut off by the 300ms timeout), once the breaker opened {p99_after:?} \
         ({} calls); billing received {during_open} requests while OPEN",
        before.len(),
        after.len()
    );

    // Billing recovers: HALF_OPEN lets three probes through, they pass, and traffic resumes.
    billing.set_mode(Mode::Normal);
    eventually(Duration::from_secs(5), "HALF_OPEN", || async {
        (h.breaker_state(CLUSTER).await == "HALF_OPEN").then_some(())
    })
    .await;
    for _ in 0..3 {
        assert_eq!(h.get("billing", "/").await.status, 200);
    }
    assert_eq!(h.breaker_state(CLUSTER).await, "CLOSED");
    for _ in 0..20 {
        assert_eq!(h.get("billing", "/").await.status, 200);
    }
}
