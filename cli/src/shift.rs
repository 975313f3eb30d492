//! `trellis shift`: set an HTTPRoute's backend weights (a canary step) and report whether
//! every affected proxy applied them.

use crate::admin::{Admin, SHIFT_DEFAULT_TIMEOUT};
use crate::args::{Output, ShiftArgs};
use crate::output::{count, print, print_json};
use serde_json::json;
use std::process::ExitCode;
use trellis_proto::v1::{ShiftRequest, ShiftResponse};

pub async fn run(admin: &mut Admin, args: &ShiftArgs, output: Output) -> anyhow::Result<ExitCode> {
    let response = admin.shift(request(args)).await?;
    match output {
        Output::Json => print_json(&json!({
            "route": args.route,
            "file": response.file,
            "proxiesUpdated": response.proxies_updated,
            "convergedMs": response.converged_ms,
            "failures": response.failures,
        }))?,
        Output::Table => {
            let wait = args.timeout.unwrap_or(SHIFT_DEFAULT_TIMEOUT);
            print(&render(&args.route, &response, wait))?;
        }
    }
    Ok(if response.failures.is_empty() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

fn request(args: &ShiftArgs) -> ShiftRequest {
    ShiftRequest {
        route: args.route.clone(),
        weights: args.weights.iter().cloned().collect(),
        // A zero duration means the control plane's default too; say so in the docs.
        timeout_ms: args.timeout.map_or(0, |t| t.as_millis() as u64),
    }
}

fn render(route: &str, r: &ShiftResponse, wait: std::time::Duration) -> String {
    let head = format!("shifted {route} in {}", r.file);
    let updated = r.proxies_updated as u64;
    if r.failures.is_empty() {
        return if updated == 0 {
            format!("{head}: no proxies use this route yet\n")
        } else {
            format!(
                "{head}: {} updated, all ACKed in {} ms\n",
                count(updated, "proxy", "proxies"),
                r.converged_ms
            )
        };
    }
    let mut out = format!(
        "{head}: {} updated, {} did not apply it within {}:\n",
        count(updated, "proxy", "proxies"),
        r.failures.len(),
        trellis_config::duration::format(wait)
    );
    for f in &r.failures {
        out.push_str(&format!("  {f}\n"));
    }
    out.push_str(&format!(
        "the new weights are written to {}; see trellis status for the proxies above\n",
        r.file
    ));
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn response(updated: u32, failures: &[&str]) -> ShiftResponse {
        ShiftResponse {
            file: "mesh/routes.yaml".into(),
            proxies_updated: updated,
            converged_ms: 42,
            failures: failures.iter().map(|f| f.to_string()).collect(),
        }
    }

    #[test]
    fn a_converged_shift_is_one_line() {
        assert_eq!(
            render("rides/billing", &response(3, &[]), Duration::from_secs(30)),
            "shifted rides/billing in mesh/routes.yaml: 3 proxies updated, all ACKed in 42 ms\n"
        );
        assert_eq!(
            render("rides/billing", &response(0, &[]), Duration::from_secs(30)),
            "shifted rides/billing in mesh/routes.yaml: no proxies use this route yet\n"
        );
    }

    #[test]
    fn failures_are_listed() {
        let out = render(
            "rides/billing",
            &response(3, &["rides/trip-1: no ACK within 30s"]),
            Duration::from_secs(30),
        );
        assert!(
            out.starts_with(
                "shifted rides/billing in mesh/routes.yaml: 3 proxies updated, \
                 1 did not apply it within 30s:\n  rides/trip-1: no ACK within 30s\n"
            ),
            "{out}"
        );
    }

    #[test]
    fn the_request_carries_weights_and_timeout() {
        let args = ShiftArgs {
            route: "rides/billing".into(),
            weights: vec![("billing-v1".into(), 50), ("billing-v2".into(), 50)],
            timeout: Some(Duration::from_millis(1500)),
        };
        let req = request(&args);
        assert_eq!(req.weights["billing-v1"], 50);
        assert_eq!(req.weights["billing-v2"], 50);
        assert_eq!(req.timeout_ms, 1500);
    }
}
