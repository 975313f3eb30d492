//! `trellis proxy-config`: the snapshot one proxy holds, as the control plane last sent it.

use crate::admin::Admin;
use crate::args::{Output, ProxyConfigArgs};
use crate::output::{print, print_json};
use anyhow::Context;
use serde_json::json;
use std::process::ExitCode;

pub async fn run(
    admin: &mut Admin,
    args: &ProxyConfigArgs,
    output: Output,
) -> anyhow::Result<ExitCode> {
    let response = admin.proxy_config(args.workload.clone()).await?;
    let snapshot: serde_json::Value =
        serde_json::from_str(&response.snapshot_json).with_context(|| {
            format!(
                "the control plane sent a snapshot for {} that is not JSON; \
                 report this as a trellis-control bug",
                args.workload
            )
        })?;
    match output {
        Output::Json => print_json(&json!({
            "version": response.version,
            "snapshot": snapshot,
        }))?,
        Output::Table => {
            let pretty = serde_json::to_string_pretty(&snapshot)?;
            print(&format!("version: {}\n{pretty}\n", response.version))?;
        }
    }
    Ok(ExitCode::SUCCESS)
}
