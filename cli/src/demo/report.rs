//! The figures of a run, as `--report FILE` writes them (JSON) and the summary prints them.

use serde::Serialize;
use std::collections::BTreeMap;

#[derive(Debug, Default, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Report {
    pub duration_seconds: f64,
    pub rps: u32,
    pub steady: Option<Steady>,
    pub canary: Option<Canary>,
    pub cascade: Option<Cascade>,
    pub outage: Option<Outage>,
    pub deny: Option<Deny>,
    /// Scenarios asked for that did not finish before `--duration` or Ctrl-C.
    pub skipped: Vec<String>,
    /// Per service over the whole run, from the proxies' metrics.
    pub services: Vec<ServiceFigures>,
    /// What the traffic generator saw at the gateway over the whole run.
    pub clients: Clients,
    /// Every process the demo started, with its PID; all are stopped when it exits.
    pub processes: Vec<Process>,
    /// One booking followed through every proxy by its trace id.
    pub trace: Option<super::trace::Traced>,
}

#[derive(Debug, Default, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Steady {
    pub seconds: f64,
    pub requests: u64,
    pub errors: u64,
    pub error_percent: f64,
}

#[derive(Debug, Default, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Canary {
    pub steps: Vec<CanaryStep>,
    /// The billing-v2 share followed the weights: under 30% at 90/10, 25-75% at 50/50, all
    /// at 0/100.
    pub moved: bool,
}

#[derive(Debug, Default, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct CanaryStep {
    pub weights: BTreeMap<String, u32>,
    /// From the Shift call: how many proxies took the new weights, and how fast all ACKed.
    pub proxies_updated: u32,
    pub converged_ms: u64,
    pub v1_requests: u64,
    pub v2_requests: u64,
    pub v2_percent: f64,
}

#[derive(Debug, Default, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Cascade {
    pub billing_delay_ms: u64,
    pub trip_p99_before_ms: Option<f64>,
    /// While billing was slow and the breaker still closed.
    pub trip_p99_slow_ms: Option<f64>,
    /// While the breaker was open, over requests that began after it opened.
    pub trip_p50_open_ms: Option<f64>,
    pub trip_p99_open_ms: Option<f64>,
    /// Each billing cluster's breaker when that window began, e.g. `billing-v1 open,
    /// billing-v2 closed`.
    pub breakers_open: String,
    pub breaker_opened: bool,
    pub opened_after_ms: Option<u64>,
    pub breaker_closed: bool,
    /// From billing healing to every billing breaker closed.
    pub closed_after_ms: Option<u64>,
    pub client_requests: u64,
    pub client_errors: u64,
}

#[derive(Debug, Default, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Outage {
    pub killed: String,
    pub ejected: bool,
    pub ejected_after_ms: Option<u64>,
    pub ejections: f64,
    pub retries: f64,
    pub client_requests: u64,
    pub client_errors: u64,
    pub rejoined: bool,
    pub rejoined_after_ms: Option<u64>,
}

#[derive(Debug, Default, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Deny {
    pub calls: u64,
    /// Answers 403 from the mesh (`trellis-error: unauthorized`).
    pub forbidden: u64,
    pub statuses: BTreeMap<u16, u64>,
    pub trellis_errors: BTreeMap<String, u64>,
}

#[derive(Debug, Default, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ServiceFigures {
    pub service: String,
    pub requests: u64,
    pub success_percent: Option<f64>,
    pub p50_ms: Option<f64>,
    pub p99_ms: Option<f64>,
}

#[derive(Debug, Default, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Clients {
    pub sent: u64,
    pub ok: u64,
    pub by_status: BTreeMap<u16, u64>,
}

#[derive(Debug, Default, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Process {
    pub name: String,
    pub pid: u32,
}

fn ms(v: Option<f64>) -> String {
    v.map_or("-".into(), |v| format!("{v:.0}ms"))
}

impl Report {
    /// One line per scenario for the summary.
    pub fn scenario_lines(&self) -> Vec<(&'static str, String)> {
        let mut out = Vec::new();
        if let Some(s) = &self.steady {
            out.push((
                "steady",
                format!(
                    "{} requests through the gateway in {:.0}s, {} errors ({:.2}%)",
                    s.requests, s.seconds, s.errors, s.error_percent
                ),
            ));
        }
        if let Some(c) = &self.canary {
            let shares: Vec<String> = c
                .steps
                .iter()
                .map(|s| {
                    format!(
                        "{}/{}: {:.1}%",
                        s.weights.get("billing-v1").unwrap_or(&0),
                        s.weights.get("billing-v2").unwrap_or(&0),
                        s.v2_percent
                    )
                })
                .collect();
            out.push((
                "canary",
                format!(
                    "billing-v2 share {} ({})",
                    shares.join(" -> "),
                    if c.moved {
                        "followed the weights"
                    } else {
                        "DID NOT follow the weights"
                    }
                ),
            ));
        }
        if let Some(c) = &self.cascade {
            out.push(("cascade", format!(
                "billing +{}ms: breaker {} after {}; trip p99 {} before, {} while slow; p50 {} and p99 {} while open ({}); {}; {} of {} passenger requests failed",
                c.billing_delay_ms,
                if c.breaker_opened { "opened" } else { "DID NOT open" },
                c.opened_after_ms.map_or("-".into(), |m| format!("{:.1}s", m as f64 / 1000.0)),
                ms(c.trip_p99_before_ms),
                ms(c.trip_p99_slow_ms),
                ms(c.trip_p50_open_ms),
                ms(c.trip_p99_open_ms),
                c.breakers_open,
                match c.closed_after_ms {
                    Some(m) if c.breaker_closed => {
                        format!("closed {:.1}s after billing healed", m as f64 / 1000.0)
                    }
                    _ => "NOT closed within 15s of billing healing".to_string(),
                },
                c.client_errors,
                c.client_requests
            )));
        }
        if let Some(o) = &self.outage {
            out.push((
                "outage",
                format!(
                    "{} killed: {} after {}, {} retries; {} of {} passenger requests failed; {}",
                    o.killed,
                    if o.ejected { "ejected" } else { "NOT ejected" },
                    o.ejected_after_ms
                        .map_or("-".into(), |m| format!("{:.1}s", m as f64 / 1000.0)),
                    o.retries,
                    o.client_errors,
                    o.client_requests,
                    match o.rejoined_after_ms {
                        Some(m) if o.rejoined =>
                            format!("rejoined {:.1}s after restart", m as f64 / 1000.0),
                        _ => "did NOT rejoin".to_string(),
                    }
                ),
            ));
        }
        if let Some(d) = &self.deny {
            let statuses: Vec<String> = d
                .statuses
                .iter()
                .map(|(s, n)| format!("{s} x{n}"))
                .collect();
            out.push(("deny", format!(
                "passenger -> billing: {} of {} calls refused with 403 by the mesh (answers: {})",
                d.forbidden,
                d.calls,
                statuses.join(", ")
            )));
        }
        for s in &self.skipped {
            out.push(("skipped", s.clone()));
        }
        out
    }
}
