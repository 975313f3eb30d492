//! The soak's faults, on a fixed schedule from the start of the traffic, and the windows in
//! which a Service's proxy-generated answers are expected.
//!
//! | what | when | for |
//! |---|---|---|
//! | a config push: billing's split moves between 90/10 and 80/20 (`trellis shift`) | every 5 s from 2.5 s | - |
//! | `driver-2` (app and sidecar) killed with SIGKILL, restarted 5 s later | every 20 s from 7 s | until it is ready again |
//! | the control plane killed with SIGKILL and started again | every 2 min from 60 s | until it is ready |
//! | billing's apps answer 600 ms late (`/fault?delayMs=600`) | every minute from 30 s | 10 s |
//! | every proxy's certificate renews (a 60 s lifetime, renewed at about half) | about every 30 s | - |

use super::context::Soak;
use http::Method;
use std::sync::atomic::Ordering::Relaxed;
use std::time::Duration;
use trellis_proto::v1::ShiftRequest;

/// The proxies' certificate lifetime: they renew at about half of it.
pub const CERT_TTL: Duration = Duration::from_secs(60);
/// The instance that is killed and restarted: one of driver's three.
const VICTIM: &str = "driver-2";
/// How late billing answers while it is slow: beyond billing's 250 ms slow-call threshold.
const SLOW_MS: u64 = 600;

/// Runs every kind of fault on its schedule until dropped.
pub async fn run(s: std::sync::Arc<Soak>) {
    tokio::join!(
        every(&s, 2.5, 5.0, push),
        every(&s, 7.0, 20.0, kill),
        every(&s, 30.0, 60.0, slow_billing),
        every(&s, 60.0, 120.0, restart_control_plane),
    );
}

/// Runs `f` at `first`, then every `period` seconds after the start; a run that overruns
/// its period delays the next, never overlaps it.
async fn every<'a, F, Fut>(s: &'a Soak, first: f64, period: f64, f: F)
where
    F: Fn(&'a Soak, u64) -> Fut,
    Fut: std::future::Future<Output = ()>,
{
    for k in 0u64.. {
        let at = first + period * k as f64;
        let when = tokio::time::Instant::from_std(s.start + Duration::from_secs_f64(at));
        tokio::time::sleep_until(when).await;
        f(s, k).await;
    }
}

/// A config push: billing's split alternates between 90/10 and 80/20 through the Admin API.
async fn push(s: &Soak, k: u64) {
    let v1 = if k.is_multiple_of(2) { 80 } else { 90 };
    let result = async {
        let addr = format!("https://{}", s.topo.grpc);
        let mut admin = crate::admin::Admin::connect(&addr, &s.topo.ca_bundle()).await?;
        admin
            .shift(ShiftRequest {
                route: "rides/billing".into(),
                weights: [
                    ("billing-v1".to_string(), v1),
                    ("billing-v2".to_string(), 100 - v1),
                ]
                .into_iter()
                .collect(),
                timeout_ms: 4_000,
            })
            .await
    };
    match tokio::time::timeout(Duration::from_secs(5), result).await {
        Ok(Ok(r)) if r.failures.is_empty() => {
            s.tally.pushes.fetch_add(1, Relaxed);
        }
        Ok(Ok(r)) => {
            s.tally.pushes_failed.fetch_add(1, Relaxed);
            s.event(format!("push {v1}/{}: {}", 100 - v1, r.failures.join("; ")));
        }
        Ok(Err(e)) => {
            s.tally.pushes_failed.fetch_add(1, Relaxed);
            s.event(format!("push {v1}/{} not made: {e:#}", 100 - v1));
        }
        Err(_) => {
            s.tally.pushes_failed.fetch_add(1, Relaxed);
            s.event(format!("push {v1}/{} not answered in 5s", 100 - v1));
        }
    }
}

/// Kills the victim instance, app and sidecar, as a node loss would; starts it again 5 s
/// later; driver is faulted until the new instance is ready.
async fn kill(s: &Soak, _: u64) {
    let window = s.windows.begin("driver", s.now());
    s.tally.kills.fetch_add(1, Relaxed);
    {
        let mut procs = s.procs.lock().await;
        for name in [format!("{VICTIM}.sidecar"), VICTIM.to_string()] {
            if let Err(e) = procs.kill(&name).await {
                s.event(format!("kill {name}: {e:#}"));
            }
        }
    }
    tokio::time::sleep(Duration::from_secs(5)).await;
    {
        let mut procs = s.procs.lock().await;
        let i = s.topo.instance(VICTIM);
        let started = s
            .topo
            .start_app(&mut procs, i)
            .and_then(|_| s.topo.start_sidecar(&mut procs, i));
        if let Err(e) = started {
            s.event(format!("restart {VICTIM}: {e:#}"));
        }
    }
    let admin = s.topo.instance(VICTIM).admin;
    let restarted = s.now();
    let ready = wait_ready(s, admin, Duration::from_secs(30)).await;
    s.event(if ready {
        format!("{VICTIM} restarted, ready in {:.1}s", s.now() - restarted)
    } else {
        format!("{VICTIM} was not ready 30s after its restart")
    });
    s.windows.end(window, s.now());
}

/// Billing's apps answer late for 10 s: trip's breaker for billing should open, and trip
/// defers the charge instead of waiting.
async fn slow_billing(s: &Soak, _: u64) {
    let window = s.windows.begin("billing", s.now());
    s.tally.slowdowns.fetch_add(1, Relaxed);
    set_billing_delay(s, SLOW_MS).await;
    tokio::time::sleep(Duration::from_secs(10)).await;
    set_billing_delay(s, 0).await;
    s.windows.end(window, s.now());
}

async fn set_billing_delay(s: &Soak, ms: u64) {
    for i in s.topo.instances.iter().filter(|i| i.role == "billing") {
        let path = format!("/fault?delayMs={ms}");
        if let Err(e) = s
            .http
            .send(
                Method::POST,
                i.app,
                "localhost",
                &path,
                Duration::from_secs(3),
            )
            .await
        {
            s.event(format!("{}: /fault?delayMs={ms}: {e:#}", i.name));
        }
    }
}

/// The control plane dies (SIGKILL) and starts again. The proxies keep serving what they
/// hold meanwhile, so no Service is faulted: a failure in this window is unexpected.
async fn restart_control_plane(s: &Soak, _: u64) {
    let t0 = s.now();
    s.tally.control_plane_restarts.fetch_add(1, Relaxed);
    {
        let mut procs = s.procs.lock().await;
        if let Err(e) = procs.kill("control-plane").await {
            s.event(format!("kill control-plane: {e:#}"));
        }
        if let Err(e) = s.topo.start_control(&mut procs) {
            s.event(format!("restart control-plane: {e:#}"));
            return;
        }
    }
    let ready = wait_ready(s, s.topo.cp_http, Duration::from_secs(30)).await;
    s.event(if ready {
        format!("control plane restarted, ready in {:.1}s", s.now() - t0)
    } else {
        "the control plane was not ready 30s after its restart".to_string()
    });
}

/// Polls `admin`'s `/ready` until it answers 200 or `limit` passes.
async fn wait_ready(s: &Soak, admin: std::net::SocketAddr, limit: Duration) -> bool {
    let deadline = tokio::time::Instant::now() + limit;
    while tokio::time::Instant::now() < deadline {
        if s.http
            .get(admin, "/ready")
            .await
            .is_ok_and(|r| r.status == 200)
        {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    false
}

/// Ends any fault still on, so that the last figures are read from a healthy mesh.
pub async fn heal(s: &Soak) {
    set_billing_delay(s, 0).await;
}
