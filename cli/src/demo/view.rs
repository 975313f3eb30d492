//! The live view and the summary: per service, requests per second, success rate, p50 and
//! p99 latency and breaker state, read from every proxy once a second.

use super::client::Http;
use super::metrics::{Counters, ProxyScrape, scrape};
use super::topology::Topology;
use std::collections::BTreeMap;
use std::fmt::Write;
use std::time::Instant;

/// The services in the order a request meets them.
pub const SERVICES: &[&str] = &[
    "gateway",
    "passenger",
    "trip",
    "driver",
    "billing",
    "notification",
];

/// Every proxy's state at one moment.
#[derive(Clone)]
pub struct Sample {
    pub at: Instant,
    /// `(instance name, role, scrape)`; the gateway is role `gateway`.
    pub proxies: Vec<(String, String, ProxyScrape)>,
}

impl Sample {
    pub async fn take(http: &Http, topo: &Topology) -> Sample {
        let mut proxies = Vec::new();
        for i in &topo.instances {
            let s = scrape(http, i.admin, "inbound").await;
            proxies.push((i.name.clone(), i.role.to_string(), s));
        }
        let g = scrape(http, topo.gateway_admin, "gateway").await;
        proxies.push(("ride-gateway-0".into(), "gateway".into(), g));
        Sample {
            at: Instant::now(),
            proxies,
        }
    }

    /// The summed counters of every instance of `role`.
    pub fn role(&self, role: &str) -> Counters {
        let mut c = Counters::default();
        for (_, r, s) in &self.proxies {
            if r == role {
                c.add(&s.counters);
            }
        }
        c
    }

    pub fn instance(&self, name: &str) -> Counters {
        self.proxies
            .iter()
            .find(|(n, _, _)| n == name)
            .map(|(_, _, s)| s.counters.clone())
            .unwrap_or_default()
    }

    /// The breaker state of each of `role`'s Services that a caller holds a breaker for, e.g.
    /// `billing-v1 open, billing-v2 closed`: a canary splits one Service into clusters, and
    /// each has its own breaker, so one open breaker need not stop every slow call.
    pub fn breakers(&self, role: &str) -> String {
        let mut states: BTreeMap<&str, &str> = BTreeMap::new();
        for (_, _, s) in &self.proxies {
            for c in s.clusters.iter().filter(|c| serves(&c.service, role)) {
                if let Some(b) = c.breaker.as_deref() {
                    let name = c.service.rsplit('/').next().unwrap_or(&c.service);
                    let e = states.entry(name).or_insert(b);
                    if rank(b) > rank(e) {
                        *e = b;
                    }
                }
            }
        }
        let all: Vec<String> = states.iter().map(|(n, s)| format!("{n} {s}")).collect();
        all.join(", ")
    }

    /// The worst breaker state any caller holds for `role`'s Services: open, then
    /// half_open, then closed; `-` when no caller has a breaker for it.
    pub fn breaker(&self, role: &str) -> String {
        let mut worst: Option<&str> = None;
        for (_, _, s) in &self.proxies {
            for c in s.clusters.iter().filter(|c| serves(&c.service, role)) {
                let Some(b) = c.breaker.as_deref() else {
                    continue;
                };
                if worst.is_none_or(|w| rank(b) > rank(w)) {
                    worst = Some(b);
                }
            }
        }
        worst.unwrap_or("-").to_string()
    }

    /// Instances of `role` that some caller's outlier detection has ejected.
    pub fn ejected(&self, role: &str) -> Vec<String> {
        let mut out: Vec<String> = Vec::new();
        for (_, _, s) in &self.proxies {
            for c in s.clusters.iter().filter(|c| serves(&c.service, role)) {
                for (w, health) in &c.endpoints {
                    let name = w.rsplit('/').next().unwrap_or(w).to_string();
                    if health == "ejected" && !out.contains(&name) {
                        out.push(name);
                    }
                }
            }
        }
        out
    }

    /// Outlier ejections counted by every proxy so far.
    pub fn ejections(&self) -> f64 {
        self.proxies.iter().map(|(_, _, s)| s.ejections).sum()
    }

    pub fn retries(&self) -> f64 {
        self.proxies.iter().map(|(_, _, s)| s.retries).sum()
    }
}

/// Whether Service `ns/name` belongs to `role`: `billing`, `billing-v1`, `billing-v2`.
/// How bad a breaker state is, for picking the worst.
fn rank(state: &str) -> u8 {
    match state {
        "open" => 2,
        "half_open" => 1,
        _ => 0,
    }
}

fn serves(service: &str, role: &str) -> bool {
    let name = service.rsplit('/').next().unwrap_or(service);
    name == role || name.strip_prefix(role).is_some_and(|r| r.starts_with('-'))
}

/// One line of the table.
pub struct Row {
    pub service: &'static str,
    pub requests: f64,
    pub rps: f64,
    pub success: Option<f64>,
    pub p50: Option<f64>,
    pub p99: Option<f64>,
    pub breaker: String,
    pub note: String,
}

/// The table rows for what happened between `from` and `to`.
pub fn rows(from: &Sample, to: &Sample) -> Vec<Row> {
    let secs = to.at.duration_since(from.at).as_secs_f64().max(0.001);
    SERVICES
        .iter()
        .map(|&svc| {
            let d = to.role(svc).since(&from.role(svc));
            let ejected = to.ejected(svc);
            Row {
                service: svc,
                requests: d.total,
                rps: d.total / secs,
                success: d.success_percent(),
                p50: d.quantile_ms(0.5),
                p99: d.quantile_ms(0.99),
                breaker: to.breaker(svc),
                note: if ejected.is_empty() {
                    String::new()
                } else {
                    format!("ejected: {}", ejected.join(", "))
                },
            }
        })
        .collect()
}

fn opt(v: Option<f64>, unit: &str) -> String {
    v.map_or("-".into(), |v| format!("{v:.1}{unit}"))
}

/// Aligned columns; `total` adds the request count column the summary shows.
pub fn table(rows: &[Row], total: bool) -> String {
    let mut out = String::new();
    let _ = write!(out, "{:<13}", "SERVICE");
    if total {
        let _ = write!(out, "{:>9}", "REQUESTS");
    }
    let _ = writeln!(
        out,
        "{:>8} {:>9} {:>9} {:>9}  {:<10} NOTE",
        "RPS", "SUCCESS", "P50", "P99", "BREAKER"
    );
    for r in rows {
        let _ = write!(out, "{:<13}", r.service);
        if total {
            let _ = write!(out, "{:>9}", r.requests as u64);
        }
        let _ = writeln!(
            out,
            "{:>8.1} {:>9} {:>9} {:>9}  {:<10} {}",
            r.rps,
            opt(r.success, "%"),
            opt(r.p50, "ms"),
            opt(r.p99, "ms"),
            r.breaker,
            r.note
        );
    }
    out
}

/// The one-line form for `--no-tui`.
pub fn line(elapsed: f64, rows: &[Row]) -> String {
    let mut out = format!("[{elapsed:5.1}s]");
    for r in rows {
        let _ = write!(
            out,
            " {} {:.0}rps {} p99 {}",
            r.service,
            r.rps,
            opt(r.success, "%"),
            opt(r.p99, "ms")
        );
        if r.breaker != "-" {
            let _ = write!(out, " breaker {}", r.breaker);
        }
        if !r.note.is_empty() {
            let _ = write!(out, " ({})", r.note);
        }
        out.push(';');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versioned_services_belong_to_their_role() {
        assert!(serves("rides/billing", "billing"));
        assert!(serves("rides/billing-v2", "billing"));
        assert!(!serves("rides/billingx", "billing"));
        assert!(!serves("rides/trip", "billing"));
    }
}
