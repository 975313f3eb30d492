//! One booking followed across the mesh. The demo books a ride through the gateway with a
//! trace id of its own; every sidecar writes an access-log line naming it (the apps carry
//! the trace context from the request they serve to the calls they make), and at the end
//! the demo reads the hops back from the logs. This is the trace id an operator would
//! search for in a tracing backend.

use super::client::Http;
use http::Method;
use serde::Serialize;
use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

/// One proxy's record of the booking: an access-log line.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Hop {
    /// The process whose log it is: `ride-gateway`, or `<instance>.sidecar`.
    pub proxy: String,
    pub direction: String,
    pub destination_service: String,
    pub path: String,
    pub upstream: Option<String>,
    pub status: u16,
    pub duration_ms: f64,
}

#[derive(Debug, Default, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Traced {
    pub trace_id: String,
    pub status: u16,
    pub hops: Vec<Hop>,
}

/// Books one ride through the gateway with a new trace id, and returns that id and the
/// answer's status. It is marked sampled only when the proxies export spans (`--otlp`):
/// otherwise an app that samples by its parent would record it for nothing.
pub async fn book(
    http: &Http,
    gateway: SocketAddr,
    sampled: bool,
) -> anyhow::Result<(String, u16)> {
    let trace_id = format!("{:032x}", rand::random::<u128>().max(1));
    let span_id = format!("{:016x}", rand::random::<u64>().max(1));
    let flags = if sampled { "01" } else { "00" };
    let traceparent = format!("00-{trace_id}-{span_id}-{flags}");
    let answer = http
        .send_with(
            Method::POST,
            gateway,
            "rides.example.com",
            "/api/rides",
            &[("traceparent", traceparent)],
            Duration::from_secs(5),
        )
        .await?;
    Ok((trace_id, answer.status.as_u16()))
}

/// Every access-log line in `logs` (one `<process>.log` each) that names `trace_id`, the
/// gateway's first and then in the order of the call chain's services.
pub fn hops(logs: &Path, trace_id: &str) -> Vec<Hop> {
    let mut hops = Vec::new();
    let Ok(dir) = std::fs::read_dir(logs) else {
        return hops;
    };
    for entry in dir.flatten() {
        let path = entry.path();
        let Some(proxy) = (path.file_name().and_then(|n| n.to_str()))
            .and_then(|n| n.strip_suffix(".log"))
            .filter(|n| *n == "ride-gateway" || n.ends_with(".sidecar"))
        else {
            continue;
        };
        let Ok(text) = std::fs::read_to_string(&path) else {
            continue;
        };
        for line in text.lines().filter(|l| l.contains(trace_id)) {
            let Ok(v) = serde_json::from_str::<serde_json::Value>(line) else {
                continue;
            };
            if v["trace_id"] != trace_id {
                continue;
            }
            let field = |k: &str| v[k].as_str().unwrap_or_default().to_string();
            hops.push(Hop {
                proxy: proxy.to_string(),
                direction: field("direction"),
                destination_service: field("destination_service"),
                path: field("path"),
                upstream: v["upstream"].as_str().map(str::to_string),
                status: v["status"].as_u64().unwrap_or_default() as u16,
                duration_ms: v["duration_ms"].as_f64().unwrap_or_default(),
            });
        }
    }
    // The call chain's order: the gateway, then each service from the caller's outbound
    // to the callee's inbound.
    const CHAIN: [&str; 5] = ["passenger", "trip", "driver", "billing", "notification"];
    let rank = |h: &Hop| {
        let name = (h.destination_service.split('.').next()).unwrap_or_default();
        let service = CHAIN.iter().position(|s| *s == name).unwrap_or(CHAIN.len());
        (h.direction != "gateway", service, h.direction != "outbound")
    };
    hops.sort_by_key(rank);
    hops
}
