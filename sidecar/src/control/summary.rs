//! The `Summary` of golden metrics that the proxy sends on its discovery stream when the
//! control plane asks for one (`trellis-summary-interval`), for its dashboard and
//! `trellis stat` (docs/dashboard.md). Counts are cumulative (`telemetry/golden.rs`); a key
//! that did not change since the stream's last Summary is left out.

use crate::clock;
use crate::shared::Shared;
use crate::telemetry::golden::GoldenKey;
use std::collections::HashMap;
use std::sync::atomic::Ordering;
use trellis_proto::v1::{ClusterHealth, ErrorCount, Summary, TrafficCounts};

/// What one stream has sent: each key's request count in its last Summary.
#[derive(Default)]
pub struct Sent(HashMap<GoldenKey, u64>);

/// The Summary of now: every key whose counts moved since `sent`, the clusters whose breaker
/// is not closed or that have an endpoint ejected (a proxy of a large mesh holds a thousand
/// clusters, nearly all healthy: those are left out), and the generated errors.
pub fn summary(shared: &Shared, sent: &mut Sent) -> Summary {
    let golden = &shared.metrics.golden;
    let mut traffic = Vec::new();
    for (key, c) in golden.keys() {
        let requests = c.requests.load(Ordering::Relaxed);
        if sent.0.get(&key) == Some(&requests) {
            continue;
        }
        sent.0.insert(key.clone(), requests);
        traffic.push(TrafficCounts {
            inbound: key.inbound,
            destination: key.destination.to_string(),
            route: key.route.to_string(),
            backend: key.backend.to_string(),
            caller: key.caller.to_string(),
            requests,
            successes: c.successes.load(Ordering::Relaxed),
            latency: c
                .latency
                .iter()
                .map(|b| b.load(Ordering::Relaxed))
                .collect(),
            mtls: c.mtls.load(Ordering::Relaxed),
        });
    }
    let now = clock::now();
    let clusters = shared.config.current_full().map_or_else(Vec::new, |rt| {
        let mut out: Vec<ClusterHealth> = (rt.clusters.values())
            .map(|c| ClusterHealth {
                service: c.service_label.to_string(),
                cluster: c.upstream.name.to_string(),
                breaker: (c.resilience.breaker.as_ref())
                    .map(|b| b.status(now).state.name().to_ascii_lowercase())
                    .unwrap_or_default(),
                endpoints: c.upstream.balancer.endpoints.len() as u32,
                ejected: (c.upstream.balancer.endpoints.iter())
                    .filter(|e| e.health.ejected_until(now).is_some())
                    .map(|e| e.addr.to_string())
                    .collect(),
            })
            .filter(|h| !(h.breaker.is_empty() || h.breaker == "closed") || !h.ejected.is_empty())
            .collect();
        out.sort_by(|a, b| a.cluster.cmp(&b.cluster));
        out
    });
    let errors = (golden.errors().into_iter())
        .map(|(destination, code, count)| ErrorCount {
            destination: destination.to_string(),
            code: code.to_string(),
            count,
        })
        .collect();
    Summary {
        started_unix_ms: golden.started_unix_ms,
        traffic,
        clusters,
        errors,
        certificate_expiry_unix: shared.metrics.security.cert_expiry.get(),
    }
}
