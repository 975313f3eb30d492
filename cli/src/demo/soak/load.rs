//! The soak's traffic: ride bookings and driver lookups through the gateway at a fixed rate,
//! each answer judged the moment it lands.
//!
//! A failure is **expected** when a proxy generated it (`trellis-error` is `circuit-open`,
//! `no-healthy-endpoints`, `timeout` or `rate-limited`) about a Service that was faulted
//! when the request was sent or answered, or until the settling time after. The Service is
//! the demo app's `x-failed-call` (the deepest call that failed, which the apps pass up), or
//! the gateway route's backend when the gateway's own proxy answered. Anything else, and no
//! answer within the client's timeout, is **unexpected**.

use super::context::{Soak, Windows};
use crate::demo::traffic::nth_request;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// How long the client waits for an answer.
pub const TIMEOUT: Duration = Duration::from_secs(5);
/// Seconds per row of requests.csv.
pub const BUCKET_SECS: f64 = 10.0;
/// The failures kept one by one for failures.csv; the counts go on past it.
const MAX_KEPT: usize = 20_000;
/// The proxy-generated answers that a fault may cause.
pub const EXPECTED_CODES: &[&str] = &[
    "circuit-open",
    "no-healthy-endpoints",
    "timeout",
    "rate-limited",
];

#[derive(Default)]
pub struct Bucket {
    pub sent: u64,
    pub ok: u64,
    pub expected: u64,
    pub unexpected: u64,
    /// Every answered request's latency, in microseconds.
    pub latencies_us: Vec<u32>,
}

#[derive(Clone)]
pub struct Failure {
    /// When it was sent, in seconds since the start.
    pub t: f64,
    pub path: &'static str,
    /// 0: no answer within `TIMEOUT`.
    pub status: u16,
    pub trellis_error: Option<String>,
    pub failed_call: Option<String>,
    pub expected: bool,
}

#[derive(Default)]
struct Inner {
    buckets: Vec<Bucket>,
    failures: Vec<Failure>,
}

#[derive(Clone, Default)]
pub struct Load {
    inner: Arc<Mutex<Inner>>,
}

impl Load {
    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Takes the buckets out, for the report.
    pub fn take_buckets(&self) -> Vec<Bucket> {
        std::mem::take(&mut self.lock().buckets)
    }

    pub fn failures(&self) -> Vec<Failure> {
        self.lock().failures.clone()
    }

    /// Sends `rps` requests a second until dropped: four bookings to one driver lookup, as
    /// the demo's traffic does.
    pub async fn run(self, s: Arc<Soak>, rps: u32) {
        let period = Duration::from_secs_f64(1.0 / f64::from(rps.max(1)));
        let mut tick = tokio::time::interval(period);
        // A late tick is made up at once, so the rate holds on a busy machine (with Delay, a
        // 2-core machine running the whole mesh sent about 920 a second of 1,000).
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
        for n in 1u64.. {
            tick.tick().await;
            let (method, path) = nth_request(n);
            // The gateway routes each path to one Service (the demo's mesh.yaml).
            let backend = if path == "/api/drivers" {
                "driver"
            } else {
                "passenger"
            };
            let (s, load) = (s.clone(), self.clone());
            tokio::spawn(async move {
                let sent = s.now();
                let started = Instant::now();
                let answer = s
                    .http
                    .send(method, s.topo.gateway, "rides.example.com", path, TIMEOUT)
                    .await;
                let took = started.elapsed();
                load.record(&s, sent, took, path, backend, answer.ok());
            });
        }
    }

    fn record(
        &self,
        s: &Soak,
        sent: f64,
        took: Duration,
        path: &'static str,
        backend: &str,
        answer: Option<super::super::client::Answer>,
    ) {
        let ok = answer.as_ref().is_some_and(|a| a.status.as_u16() < 400);
        let failure = (!ok).then(|| {
            let (status, trellis_error, failed_call) = match &answer {
                Some(a) => (
                    a.status.as_u16(),
                    a.trellis_error.clone(),
                    a.failed_call.clone(),
                ),
                None => (0, None, None),
            };
            let service = failed_call.as_deref().unwrap_or(backend);
            let answered = s.now();
            let expected = is_expected(
                &s.windows,
                trellis_error.as_deref(),
                service,
                sent,
                answered,
            );
            Failure {
                t: sent,
                path,
                status,
                trellis_error,
                failed_call,
                expected,
            }
        });
        let i = (sent / BUCKET_SECS) as usize;
        let mut inner = self.lock();
        if inner.buckets.len() <= i {
            inner.buckets.resize_with(i + 1, Bucket::default);
        }
        let b = &mut inner.buckets[i];
        b.sent += 1;
        if answer.is_some() {
            b.latencies_us
                .push(u32::try_from(took.as_micros()).unwrap_or(u32::MAX));
        }
        match &failure {
            None => b.ok += 1,
            Some(f) if f.expected => b.expected += 1,
            Some(_) => b.unexpected += 1,
        }
        if let Some(f) = failure
            && inner.failures.len() < MAX_KEPT
        {
            inner.failures.push(f);
        }
    }
}

/// Whether a failed answer is one the faults allow: a proxy-generated code of
/// `EXPECTED_CODES` about `service` while it was faulted (or settling) when the request was
/// sent or answered.
fn is_expected(
    windows: &Windows,
    trellis_error: Option<&str>,
    service: &str,
    sent: f64,
    answered: f64,
) -> bool {
    trellis_error.is_some_and(|e| EXPECTED_CODES.contains(&e))
        && (windows.faulted(service, sent) || windows.faulted(service, answered))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_a_mesh_answer_about_a_faulted_service_in_its_window_is_expected() {
        let w = Windows::new(Duration::from_secs(10));
        let billing = w.begin("billing", 30.0);
        w.end(billing, 40.0);
        w.begin("driver", 100.0); // still down
        let yes = |e, svc, t| is_expected(&w, Some(e), svc, t, t + 0.01);
        assert!(yes("circuit-open", "billing", 35.0));
        assert!(yes("timeout", "billing", 49.0), "settling");
        assert!(!yes("timeout", "billing", 51.0), "settled");
        assert!(!yes("circuit-open", "billing", 29.0), "before the fault");
        assert!(!yes("circuit-open", "trip", 35.0), "another Service");
        assert!(
            !yes("upstream-reset", "billing", 35.0),
            "not a code a fault excuses"
        );
        assert!(
            yes("no-healthy-endpoints", "driver", 500.0),
            "a window still open"
        );
        assert!(
            is_expected(&w, Some("circuit-open"), "billing", 29.9, 30.5),
            "sent before, answered during"
        );
        assert!(
            !is_expected(&w, None, "billing", 35.0, 35.1),
            "the app's own failure"
        );
    }
}
