//! The scenarios: each changes one thing, watches what the mesh does about it through the
//! proxies' metrics and admin endpoints, says so as it goes, and returns its figures.

use super::client::Http;
use super::procs::Procs;
use super::report::{Canary, CanaryStep, Cascade, Deny, Outage, Steady};
use super::topology::Topology;
use super::traffic::Traffic;
use super::view::Sample;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use trellis_proto::v1::ShiftRequest;

/// What scenarios share with the rest of the demo.
pub struct Ctx {
    pub http: Http,
    pub topo: Arc<Topology>,
    pub procs: Arc<tokio::sync::Mutex<Procs>>,
    pub traffic: Traffic,
    pub events: Events,
}

/// Messages for the live view, or printed at once with `--no-tui`.
#[derive(Clone)]
pub struct Events {
    start: Instant,
    print: bool,
    lines: Arc<Mutex<Vec<String>>>,
}

impl Events {
    pub fn new(start: Instant, print: bool) -> Events {
        Events {
            start,
            print,
            lines: Arc::default(),
        }
    }

    pub fn say(&self, msg: impl AsRef<str>) {
        let line = format!(
            "[{:5.1}s] {}",
            self.start.elapsed().as_secs_f64(),
            msg.as_ref()
        );
        if self.print {
            println!("{line}");
        }
        self.lines
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(line);
    }

    pub fn elapsed(&self) -> f64 {
        self.start.elapsed().as_secs_f64()
    }

    pub fn last(&self, n: usize) -> Vec<String> {
        let lines = self.lines.lock().unwrap_or_else(|e| e.into_inner());
        lines[lines.len().saturating_sub(n)..].to_vec()
    }
}

async fn sleep(d: Duration) {
    tokio::time::sleep(d).await;
}

/// Polls `check` every 250ms until it holds or `limit` passes; the time it took.
async fn until<F, Fut>(limit: Duration, mut check: F) -> Option<Duration>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let start = Instant::now();
    while start.elapsed() < limit {
        if check().await {
            return Some(start.elapsed());
        }
        sleep(Duration::from_millis(250)).await;
    }
    None
}

fn millis(d: Option<Duration>) -> Option<u64> {
    d.map(|d| d.as_millis() as u64)
}

/// Traffic alone: every request through the gateway should succeed.
pub async fn steady(cx: &Ctx, secs: u64) -> Steady {
    cx.events.say(format!(
        "steady: {secs}s of rides and driver lookups through the gateway"
    ));
    let before = cx.traffic.snapshot();
    sleep(Duration::from_secs(secs)).await;
    let d = cx.traffic.snapshot().since(&before);
    let s = Steady {
        seconds: secs as f64,
        requests: d.sent,
        errors: d.errors(),
        error_percent: if d.sent > 0 {
            100.0 * d.errors() as f64 / d.sent as f64
        } else {
            0.0
        },
    };
    cx.events.say(format!(
        "steady: {} requests, {} errors",
        s.requests, s.errors
    ));
    s
}

/// Billing 90/10 -> 50/50 -> 0/100 through the Admin API's Shift, as `trellis shift` does.
pub async fn canary(cx: &Ctx, step_secs: u64) -> anyhow::Result<Canary> {
    let addr = format!("https://{}", cx.topo.grpc);
    let mut admin = crate::admin::Admin::connect(&addr, &cx.topo.ca_bundle()).await?;
    let mut steps = Vec::new();
    for (v1, v2) in [(90u32, 10u32), (50, 50), (0, 100)] {
        let weights = [
            ("billing-v1".to_string(), v1),
            ("billing-v2".to_string(), v2),
        ];
        let mut step = CanaryStep {
            weights: weights.iter().cloned().collect(),
            ..Default::default()
        };
        if (v1, v2) == (90, 10) {
            cx.events.say(
                "canary: billing starts at 90/10 (billing-v1/billing-v2), as mesh.yaml has it",
            );
        } else {
            cx.events.say(format!(
                "canary: trellis shift rides/billing billing-v1={v1} billing-v2={v2}"
            ));
            let r = admin
                .shift(ShiftRequest {
                    route: "rides/billing".into(),
                    weights: weights.into_iter().collect(),
                    timeout_ms: 10_000,
                })
                .await?;
            step.proxies_updated = r.proxies_updated;
            step.converged_ms = r.converged_ms;
            cx.events.say(format!(
                "canary: {} proxies ACKed the new weights in {} ms{}",
                r.proxies_updated,
                r.converged_ms,
                if r.failures.is_empty() {
                    String::new()
                } else {
                    format!("; failures: {}", r.failures.join("; "))
                }
            ));
        }
        let from = Sample::take(&cx.http, &cx.topo).await;
        sleep(Duration::from_secs(step_secs)).await;
        let to = Sample::take(&cx.http, &cx.topo).await;
        let count = |n: &str| to.instance(n).since(&from.instance(n)).total as u64;
        step.v1_requests = count("billing-v1-0");
        step.v2_requests = count("billing-v2-0");
        let all = step.v1_requests + step.v2_requests;
        step.v2_percent = if all > 0 {
            100.0 * step.v2_requests as f64 / all as f64
        } else {
            0.0
        };
        cx.events.say(format!(
            "canary: at {v1}/{v2}, billing-v1 served {} and billing-v2 {} charges: {:.1}% on v2",
            step.v1_requests, step.v2_requests, step.v2_percent
        ));
        steps.push(step);
    }
    let p: Vec<f64> = steps.iter().map(|s| s.v2_percent).collect();
    let enough = steps.iter().all(|s| s.v1_requests + s.v2_requests >= 10);
    let moved = enough && p[0] < 30.0 && (25.0..=75.0).contains(&p[1]) && p[2] >= 99.9;
    Ok(Canary { steps, moved })
}

async fn set_fault(cx: &Ctx, role: &str, query: &str) -> anyhow::Result<()> {
    for i in cx.topo.instances.iter().filter(|i| i.role == role) {
        cx.http.post(i.app, &format!("/fault{query}")).await?;
    }
    Ok(())
}

/// Billing turns slow: trip's breaker opens and trip fails fast (charges deferred) instead
/// of waiting; once billing heals, half-open probes succeed and the breaker closes.
pub async fn cascade(cx: &Ctx) -> anyhow::Result<Cascade> {
    let delay = 600;
    let trip = |a: &Sample, b: &Sample| b.role("trip").since(&a.role("trip"));
    let clients = cx.traffic.snapshot();
    let s0 = Sample::take(&cx.http, &cx.topo).await;
    sleep(Duration::from_secs(2)).await;
    let s1 = Sample::take(&cx.http, &cx.topo).await;
    let mut c = Cascade {
        billing_delay_ms: delay,
        trip_p99_before_ms: trip(&s0, &s1).quantile_ms(0.99),
        ..Default::default()
    };
    cx.events.say(format!(
        "cascade: billing answers {delay}ms late from now (POST /fault?delayMs={delay})"
    ));
    set_fault(cx, "billing", &format!("?delayMs={delay}")).await?;
    let mut last = s1.clone();
    let (t, mut opened) = (Instant::now(), None);
    while t.elapsed() < Duration::from_secs(10) {
        last = Sample::take(&cx.http, &cx.topo).await;
        if last.breaker("billing") == "open" {
            opened = Some(t.elapsed());
            break;
        }
        sleep(Duration::from_millis(250)).await;
    }
    c.breaker_opened = opened.is_some();
    c.opened_after_ms = millis(opened);
    c.trip_p99_slow_ms = trip(&s1, &last).quantile_ms(0.99);
    if c.breaker_opened {
        cx.events.say(format!(
            "cascade: trip's breaker for billing is OPEN after {:.1}s ({}); trip defers the charges it refuses instead of waiting",
            opened.unwrap_or_default().as_secs_f64(),
            last.breakers("billing")
        ));
        // Requests that reached billing before the breaker opened still take `delay` to
        // finish; let them drain first, so the open window holds only requests that began
        // with the breaker open. The window ends before `waitInOpen` (3s) lets the
        // half-open probes through, which wait on the slow billing again.
        sleep(Duration::from_millis(delay + 400)).await;
        let o0 = Sample::take(&cx.http, &cx.topo).await;
        sleep(Duration::from_millis(1500)).await;
        let o1 = Sample::take(&cx.http, &cx.topo).await;
        c.trip_p50_open_ms = trip(&o0, &o1).quantile_ms(0.5);
        c.trip_p99_open_ms = trip(&o0, &o1).quantile_ms(0.99);
        c.breakers_open = o0.breakers("billing");
        // Under the canary, billing is two clusters with a breaker each; the one with the
        // smaller share sees too few calls to open as soon, and its charges still wait on
        // the slow billing. p99 shows that, so the line names each breaker's state.
        cx.events.say(format!(
            "cascade: trip p99 {:.0}ms while billing was slow; with the breaker open, p50 {:.0}ms and p99 {:.0}ms (requests begun after it opened; breakers: {})",
            c.trip_p99_slow_ms.unwrap_or(0.0),
            c.trip_p50_open_ms.unwrap_or(0.0),
            c.trip_p99_open_ms.unwrap_or(0.0),
            c.breakers_open
        ));
    } else {
        cx.events
            .say("cascade: the breaker did not open within 10s");
    }
    cx.events.say("cascade: billing heals (POST /fault)");
    set_fault(cx, "billing", "").await?;
    let closed = until(Duration::from_secs(15), || async {
        Sample::take(&cx.http, &cx.topo).await.breaker("billing") == "closed"
    })
    .await;
    c.breaker_closed = closed.is_some();
    c.closed_after_ms = millis(closed);
    match closed {
        Some(d) => cx.events.say(format!(
            "cascade: half-open probes succeeded; breaker CLOSED {:.1}s after billing healed",
            d.as_secs_f64()
        )),
        None => cx
            .events
            .say("cascade: the breaker did not close within 15s"),
    }
    let d = cx.traffic.snapshot().since(&clients);
    c.client_requests = d.sent;
    c.client_errors = d.errors();
    Ok(c)
}

/// One driver instance dies: outlier detection ejects it and retries hide it from
/// passengers; restarted, it rejoins once its ejection ends.
pub async fn outage(cx: &Ctx) -> anyhow::Result<Outage> {
    let victim = "driver-2";
    let clients = cx.traffic.snapshot();
    let s0 = Sample::take(&cx.http, &cx.topo).await;
    cx.events.say(format!(
        "outage: killing {victim}'s app (SIGKILL); its sidecar stays up and answers 503"
    ));
    cx.procs.lock().await.kill(victim).await?;
    let ejected = until(Duration::from_secs(10), || async {
        Sample::take(&cx.http, &cx.topo)
            .await
            .ejected("driver")
            .iter()
            .any(|e| e == victim)
    })
    .await;
    let mut o = Outage {
        killed: victim.into(),
        ejected: ejected.is_some(),
        ejected_after_ms: millis(ejected),
        ..Default::default()
    };
    match ejected {
        Some(d) => cx.events.say(format!(
            "outage: outlier detection EJECTED {victim} after {:.1}s",
            d.as_secs_f64()
        )),
        None => cx
            .events
            .say(format!("outage: {victim} was not ejected within 10s")),
    }
    sleep(Duration::from_secs(2)).await;
    cx.events.say(format!("outage: restarting {victim}"));
    {
        let mut procs = cx.procs.lock().await;
        cx.topo.start_app(&mut procs, cx.topo.instance(victim))?;
    }
    let restarted = Instant::now();
    let mut last = Sample::take(&cx.http, &cx.topo).await;
    let mut rejoined = None;
    while restarted.elapsed() < Duration::from_secs(30) {
        sleep(Duration::from_millis(250)).await;
        let now = Sample::take(&cx.http, &cx.topo).await;
        let served = now.instance(victim).ok > last.instance(victim).ok;
        let back = served && !now.ejected("driver").iter().any(|e| e == victim);
        last = now;
        if back {
            rejoined = Some(restarted.elapsed());
            break;
        }
    }
    o.rejoined = rejoined.is_some();
    o.rejoined_after_ms = millis(rejoined);
    let end = Sample::take(&cx.http, &cx.topo).await;
    o.ejections = end.ejections() - s0.ejections();
    o.retries = end.retries() - s0.retries();
    let d = cx.traffic.snapshot().since(&clients);
    o.client_requests = d.sent;
    o.client_errors = d.errors();
    cx.events.say(format!(
        "outage: {} retries; passengers saw {} errors in {} requests; {victim} {}",
        o.retries,
        o.client_errors,
        o.client_requests,
        if o.rejoined {
            "rejoined and serves again"
        } else {
            "did not rejoin within 30s"
        }
    ));
    Ok(o)
}

/// The passenger service calls billing directly: billing's AuthorizationPolicy admits only
/// trip, so the mesh answers 403.
pub async fn deny(cx: &Ctx) -> anyhow::Result<Deny> {
    let passenger = cx.topo.instance("passenger-0").app;
    cx.events
        .say("deny: passenger-0 calls billing's POST /charge directly, 10 times");
    let mut d = Deny::default();
    for _ in 0..10 {
        let a = cx
            .http
            .post(passenger, "/call?service=billing&path=/charge")
            .await?;
        d.calls += 1;
        *d.statuses.entry(a.status.as_u16()).or_default() += 1;
        if let Some(e) = a.trellis_error {
            *d.trellis_errors.entry(e).or_default() += 1;
        }
        if a.status == 403 {
            d.forbidden += 1;
        }
    }
    cx.events.say(format!(
        "deny: {} of {} calls refused with 403",
        d.forbidden, d.calls
    ));
    Ok(d)
}
