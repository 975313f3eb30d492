//! `trellis stat` and `trellis top`: the golden metrics the control plane keeps from its
//! proxies' summaries (docs/dashboard.md), as a table per Service or per route, or live.

use crate::admin::Admin;
use crate::args::{Output, StatArgs, TopArgs};
use crate::output::{Table, print, print_json};
use serde_json::{Value, json};
use std::process::ExitCode;
use trellis_proto::stat::{Totals, group_by};
use trellis_proto::v1::StatResponse;

pub async fn run(admin: &mut Admin, args: &StatArgs, output: Output) -> anyhow::Result<ExitCode> {
    let stat = admin.stat(args.window.as_secs() as u32).await?;
    let service = args.service.as_deref().map(service_label);
    match output {
        Output::Json => print_json(&to_json(&stat, service.as_deref()))?,
        Output::Table => print(&render(&stat, service.as_deref()))?,
    }
    Ok(ExitCode::SUCCESS)
}

/// `billing` and `billing.rides` stay as they are (a bare name matches in any namespace);
/// `rides/billing` becomes `billing.rides`, the label form.
fn service_label(s: &str) -> String {
    match s.split_once('/') {
        Some((ns, name)) => format!("{name}.{ns}"),
        None => s.to_string(),
    }
}

fn matches(destination: &str, want: &str) -> bool {
    destination == want || destination.split('.').next() == Some(want)
}

/// One row's numbers: success rate, requests per second, p50, p95, p99, mTLS share.
fn cells(t: &Totals, covered: f64) -> Vec<String> {
    let ms = |q| t.quantile_ms(q).map_or("-".to_string(), fmt_ms);
    let pct = |v: Option<f64>| v.map_or("-".to_string(), |v| format!("{:.2}%", v * 100.0));
    vec![
        pct(t.success_rate()),
        format!("{:.1}", t.rps(covered)),
        ms(0.5),
        ms(0.95),
        ms(0.99),
        pct((t.requests > 0).then(|| t.mtls as f64 / t.requests as f64)),
    ]
}

fn fmt_ms(v: f64) -> String {
    if v < 10.0 {
        format!("{v:.2}ms")
    } else {
        format!("{v:.0}ms")
    }
}

fn numbers(t: &Totals, covered: f64) -> Value {
    json!({
        "requests": t.requests,
        "successes": t.successes,
        "successRate": t.success_rate(),
        "rps": t.rps(covered),
        "latencyMs": {
            "p50": t.quantile_ms(0.5),
            "p95": t.quantile_ms(0.95),
            "p99": t.quantile_ms(0.99),
        },
        "mtlsRequests": t.mtls,
    })
}

fn render(stat: &StatResponse, service: Option<&str>) -> String {
    let covered = stat.covered_seconds;
    let mut out = String::new();
    match service {
        None => {
            let by = group_by(&stat.edges, false, |e| Some(e.destination.clone()));
            if by.is_empty() {
                return no_traffic(stat);
            }
            let mut t = Table::new(&["SERVICE", "SUCCESS", "RPS", "P50", "P95", "P99", "MTLS"]);
            for (name, totals) in &by {
                let mut row = vec![name.clone()];
                row.extend(cells(totals, covered));
                t.row(row);
            }
            out.push_str(&t.render());
        }
        Some(want) => {
            let by = group_by(&stat.edges, false, |e| {
                matches(&e.destination, want)
                    .then(|| (e.route.clone(), e.backend.clone(), e.source.clone()))
            });
            if by.is_empty() {
                return format!("no calls to {want} in the last {}s\n", stat.window_seconds)
                    + &no_traffic_hint();
            }
            let mut t = Table::new(&[
                "ROUTE", "BACKEND", "FROM", "SUCCESS", "RPS", "P50", "P95", "P99", "MTLS",
            ]);
            for ((route, backend, from), totals) in &by {
                let mut row = vec![route.clone(), backend.clone(), from.clone()];
                row.extend(cells(totals, covered));
                t.row(row);
            }
            out.push_str(&t.render());
        }
    }
    out.push_str(&footer(stat));
    out
}

fn no_traffic(stat: &StatResponse) -> String {
    format!(
        "no calls between proxies in the last {}s ({} proxies reporting)\n{}",
        stat.window_seconds,
        stat.proxies.len(),
        no_traffic_hint()
    )
}

fn no_traffic_hint() -> String {
    "proxies send their summaries every 5s; `trellis status` shows which are connected\n".into()
}

fn footer(stat: &StatResponse) -> String {
    let mut s = format!(
        "over the last {:.0}s, from {} proxies' summaries (callers' view: proxy-generated errors count as failures)\n",
        stat.covered_seconds,
        stat.proxies.len()
    );
    if stat.replicas > 1 {
        s.push_str(&format!(
            "merged from {} control-plane replicas\n",
            stat.replicas
        ));
    }
    for u in &stat.unreachable {
        s.push_str(&format!("warning: a replica's share is missing: {u}\n"));
    }
    if stat.dropped > 0 {
        s.push_str(&format!(
            "warning: {} requests did not fit the window's edge limit and are not shown\n",
            stat.dropped
        ));
    }
    s
}

fn to_json(stat: &StatResponse, service: Option<&str>) -> Value {
    let covered = stat.covered_seconds;
    let keep = |d: &str| service.is_none_or(|w| matches(d, w));
    let services: Vec<Value> = group_by(&stat.edges, false, |e| {
        keep(&e.destination).then(|| e.destination.clone())
    })
    .iter()
    .map(|(name, t)| {
        let mut v = numbers(t, covered);
        v["service"] = json!(name);
        v
    })
    .collect();
    let routes: Vec<Value> = group_by(&stat.edges, false, |e| {
        keep(&e.destination).then(|| {
            (
                e.destination.clone(),
                e.route.clone(),
                e.backend.clone(),
                e.source.clone(),
            )
        })
    })
    .iter()
    .map(|((service, route, backend, from), t)| {
        let mut v = numbers(t, covered);
        v["service"] = json!(service);
        v["route"] = json!(route);
        v["backend"] = json!(backend);
        v["from"] = json!(from);
        v
    })
    .collect();
    json!({
        "windowSeconds": stat.window_seconds,
        "coveredSeconds": covered,
        "proxies": stat.proxies.len(),
        "replicas": stat.replicas,
        "dropped": stat.dropped,
        "unreachable": stat.unreachable,
        "services": services,
        "routes": routes,
    })
}

/// `trellis top`: the busiest routes and the slowest calls, redrawn every `--interval`.
pub async fn top(admin: &mut Admin, args: &TopArgs) -> anyhow::Result<ExitCode> {
    let mut shown = 0;
    loop {
        let stat = admin.stat(args.window.as_secs() as u32).await?;
        let mut screen = String::new();
        if args.count.is_none() {
            // Clear the screen and go home, as top does.
            screen.push_str("\x1b[2J\x1b[H");
        }
        screen.push_str(&top_screen(&stat, args.rows));
        print(&screen)?;
        shown += 1;
        if args.count.is_some_and(|n| shown >= n) {
            return Ok(ExitCode::SUCCESS);
        }
        tokio::time::sleep(args.interval).await;
    }
}

fn top_screen(stat: &StatResponse, rows: usize) -> String {
    let covered = stat.covered_seconds;
    let by = group_by(&stat.edges, false, |e| {
        Some((e.source.clone(), e.destination.clone(), e.route.clone()))
    });
    let mut out = format!(
        "trellis top: last {}s, {} proxies\n\nBUSIEST ROUTES\n",
        stat.window_seconds,
        stat.proxies.len()
    );
    if by.is_empty() {
        out.push_str("(no calls yet)\n");
        return out;
    }
    // The first `rows` calls, as a table.
    let table = |calls: Vec<(&(String, String, String), &Totals)>| {
        let header = [
            "FROM", "TO", "ROUTE", "SUCCESS", "RPS", "P50", "P95", "P99", "MTLS",
        ];
        let mut t = Table::new(&header);
        for ((from, to, route), totals) in calls.into_iter().take(rows) {
            let mut row = vec![from.clone(), to.clone(), route.clone()];
            row.extend(cells(totals, covered));
            t.row(row);
        }
        t.render()
    };
    let mut busiest: Vec<_> = by.iter().collect();
    busiest.sort_by_key(|(_, t)| std::cmp::Reverse(t.requests));
    out.push_str(&table(busiest));
    out.push_str("\nSLOWEST CALLS (p99)\n");
    let mut slowest: Vec<_> = by.iter().filter(|(_, t)| t.requests > 0).collect();
    slowest.sort_by(|a, b| {
        let p = |t: &Totals| t.quantile_ms(0.99).unwrap_or(0.0);
        p(b.1).total_cmp(&p(a.1))
    });
    out.push_str(&table(slowest));
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use trellis_proto::v1::EdgeStat;

    fn edge(source: &str, destination: &str, backend: &str, requests: u64, ok: u64) -> EdgeStat {
        let mut latency = vec![0; trellis_proto::LATENCY_BOUNDS.len() + 1];
        latency[4] = requests;
        EdgeStat {
            inbound: false,
            source: source.into(),
            destination: destination.into(),
            route: "rides/billing".into(),
            backend: backend.into(),
            requests,
            successes: ok,
            mtls: requests,
            latency,
        }
    }

    #[test]
    fn a_service_row_sums_its_callers_and_backends() {
        let stat = StatResponse {
            window_seconds: 60,
            covered_seconds: 50.0,
            edges: vec![
                edge("trip.rides", "billing.rides", "billing", 90, 90),
                edge("passenger.rides", "billing.rides", "billing-v2", 10, 5),
                edge("gateway.rides", "trip.rides", "trip", 50, 50),
            ],
            ..Default::default()
        };
        let text = render(&stat, None);
        let billing = text
            .lines()
            .find(|l| l.starts_with("billing.rides"))
            .unwrap();
        assert!(
            billing.contains("95.00%") && billing.contains(" 2.0 "),
            "{text}"
        );
        let v = to_json(&stat, Some("billing"));
        assert_eq!(v["services"].as_array().unwrap().len(), 1);
        assert_eq!(v["services"][0]["requests"], 100);
        assert_eq!(v["services"][0]["rps"], 2.0);
        assert_eq!(v["routes"].as_array().unwrap().len(), 2);
        assert_eq!(service_label("rides/billing"), "billing.rides");
    }
}
