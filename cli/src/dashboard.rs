//! `trellis dashboard`: where the control plane serves its dashboard (docs/dashboard.md).

use crate::admin::Admin;
use crate::output::print;
use std::process::ExitCode;

/// `trellis dashboard`: the dashboard's URL from the control plane, opened in a browser
/// where one can be started (`$BROWSER`, or `xdg-open` with a display).
pub async fn run(admin: &mut Admin, args: &crate::args::DashboardArgs) -> anyhow::Result<ExitCode> {
    let url = admin.status().await?.dashboard_url;
    if url.is_empty() {
        anyhow::bail!(
            "the control plane serves no dashboard: it was started with --dashboard-addr off"
        );
    }
    print(&format!("{url}\n"))?;
    if args.no_open {
        return Ok(ExitCode::SUCCESS);
    }
    let env = |k| std::env::var_os(k).filter(|v| !v.is_empty());
    let opener = env("BROWSER").or_else(|| {
        (env("DISPLAY").is_some() || env("WAYLAND_DISPLAY").is_some()).then(|| "xdg-open".into())
    });
    if let Some(opener) = opener {
        // The URL is printed either way; a browser that cannot start is only a note.
        if let Err(e) = std::process::Command::new(&opener)
            .arg(&url)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
        {
            eprintln!("note: could not start {}: {e}", opener.to_string_lossy());
        }
    }
    Ok(ExitCode::SUCCESS)
}
