//! `trellis status`: every proxy the control plane knows, whether it serves the latest
//! config, and whether the last config change was refused.

use crate::admin::Admin;
use crate::args::Output;
use crate::output::{Table, print, print_json};
use serde_json::json;
use std::process::ExitCode;
use std::time::{SystemTime, UNIX_EPOCH};
use trellis_proto::v1::{ProxyStatus, StatusResponse};

pub async fn run(admin: &mut Admin, output: Output) -> anyhow::Result<ExitCode> {
    let mut status = admin.status().await?;
    status
        .proxies
        .sort_by(|a, b| (&a.namespace, &a.workload).cmp(&(&b.namespace, &b.workload)));
    match output {
        Output::Json => print_json(&to_json(&status))?,
        Output::Table => print(&render(&status, now_unix()))?,
    }
    Ok(ExitCode::SUCCESS)
}

fn render(status: &StatusResponse, now: i64) -> String {
    let mut out = String::new();
    if status.proxies.is_empty() {
        out.push_str("no proxies have connected\n");
    } else {
        let mut table = Table::new(&["WORKLOAD", "CONNECTED", "SINCE", "ACKED", "LAST NACK"]);
        for p in &status.proxies {
            table.row(vec![
                format!("{}/{}", p.namespace, p.workload),
                if p.connected { "yes" } else { "no" }.to_string(),
                since(now, p.connected_since_unix),
                acked(p),
                or_dash(&p.last_nack_error),
            ]);
        }
        out.push_str(&table.render());
    }
    if status.config_errors.is_empty() {
        let source = match status.config_source.as_str() {
            "" => String::new(),
            s => format!("{s} "),
        };
        out.push_str(&format!("config: {source}OK\n"));
    } else {
        out.push_str(if status.config_partial {
            "config: applied without the objects these errors name (their last good version serves, or they are left out):\n"
        } else {
            "config: last change refused (the previous config keeps serving):\n"
        });
        for e in &status.config_errors {
            out.push_str(&format!("  {e}\n"));
        }
    }
    out
}

/// `5e030873 (latest)`, or `5e030873 (stale: latest 9a1c0b2e)`; `-` before any ACK.
fn acked(p: &ProxyStatus) -> String {
    let acked = or_dash(&p.acked_version);
    if p.latest_version.is_empty() {
        acked
    } else if p.acked_version == p.latest_version {
        format!("{acked} (latest)")
    } else {
        format!("{acked} (stale: latest {})", p.latest_version)
    }
}

fn or_dash(s: &str) -> String {
    if s.is_empty() { "-".into() } else { s.into() }
}

/// The age of a unix timestamp, `-` when it is unset (0).
fn since(now: i64, unix: i64) -> String {
    if unix <= 0 {
        return "-".into();
    }
    // A clock ahead of ours is not a negative age.
    age(now.saturating_sub(unix).max(0) as u64)
}

/// `45s`, `5m3s`, `3h4m`, `2d3h`: the two largest units, as kubectl shows ages.
pub fn age(secs: u64) -> String {
    let (d, h, m, s) = (secs / 86_400, secs / 3600 % 24, secs / 60 % 60, secs % 60);
    if d > 0 {
        format!("{d}d{h}h")
    } else if h > 0 {
        format!("{h}h{m}m")
    } else if m > 0 {
        format!("{m}m{s}s")
    } else {
        format!("{s}s")
    }
}

fn now_unix() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64)
}

/// The response in the protobuf JSON mapping's field names (lowerCamelCase); 64-bit
/// integers stay numbers.
fn to_json(status: &StatusResponse) -> serde_json::Value {
    let proxies: Vec<_> = status
        .proxies
        .iter()
        .map(|p| {
            json!({
                "workload": p.workload,
                "namespace": p.namespace,
                "connected": p.connected,
                "connectedSinceUnix": p.connected_since_unix,
                "latestVersion": p.latest_version,
                "ackedVersion": p.acked_version,
                "lastNackVersion": p.last_nack_version,
                "lastNackError": p.last_nack_error,
                "inbound": p.inbound,
            })
        })
        .collect();
    json!({
        "proxies": proxies,
        "configErrors": status.config_errors,
        "configSource": status.config_source,
        "configPartial": status.config_partial,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ages_show_the_two_largest_units() {
        assert_eq!(age(0), "0s");
        assert_eq!(age(59), "59s");
        assert_eq!(age(5 * 60 + 3), "5m3s");
        assert_eq!(age(3600), "1h0m");
        assert_eq!(age(3 * 3600 + 4 * 60 + 59), "3h4m");
        assert_eq!(age(2 * 86_400 + 3 * 3600 + 7), "2d3h");
    }

    #[test]
    fn since_handles_unset_and_future_times() {
        assert_eq!(since(1_000, 0), "-");
        assert_eq!(since(1_000, 697), "5m3s");
        assert_eq!(since(1_000, 1_005), "0s");
    }

    fn proxy(name: &str, acked: &str, latest: &str, nack: &str) -> ProxyStatus {
        ProxyStatus {
            workload: name.into(),
            namespace: "rides".into(),
            connected: true,
            connected_since_unix: 700,
            latest_version: latest.into(),
            acked_version: acked.into(),
            last_nack_version: if nack.is_empty() { "" } else { latest }.into(),
            last_nack_error: nack.into(),
            inbound: String::new(),
        }
    }

    #[test]
    fn table_marks_stale_proxies_and_the_config_state() {
        let status = StatusResponse {
            proxies: vec![
                proxy("trip-0", "5e03", "5e03", ""),
                proxy("billing-v1-0", "5e03", "9a1c", "bad route"),
            ],
            config_errors: vec![],
            config_source: "files: /etc/trellis".into(),
            config_partial: false,
            dashboard_url: String::new(),
        };
        assert_eq!(
            render(&status, 1_000),
            "WORKLOAD             CONNECTED   SINCE   ACKED                       LAST NACK\n\
             rides/trip-0         yes         5m0s    5e03 (latest)               -\n\
             rides/billing-v1-0   yes         5m0s    5e03 (stale: latest 9a1c)   bad route\n\
             config: files: /etc/trellis OK\n"
        );
    }

    #[test]
    fn a_refused_change_lists_its_errors() {
        let status = StatusResponse {
            proxies: vec![],
            config_errors: vec!["mesh.yaml:12: spec.rules[0]: bad".into()],
            config_source: "files: mesh.yaml".into(),
            config_partial: false,
            dashboard_url: String::new(),
        };
        assert_eq!(
            render(&status, 0),
            "no proxies have connected\n\
             config: last change refused (the previous config keeps serving):\n  mesh.yaml:12: spec.rules[0]: bad\n"
        );
    }

    #[test]
    fn objects_refused_one_by_one_are_listed_as_such() {
        let status = StatusResponse {
            proxies: vec![],
            config_errors: vec!["kubernetes:HTTPRoute/rides/broken:9: spec.rules[0].backendRefs[0].name: no Service".into()],
            config_source: String::new(),
            config_partial: true,
            dashboard_url: String::new(),
        };
        let out = render(&status, 0);
        assert!(
            out.contains("config: applied without the objects these errors name")
                && out.contains("  kubernetes:HTTPRoute/rides/broken:9:"),
            "{out}"
        );
    }
}
