//! `trellis routes`: the effective routes of one Service, or of all, as the control
//! plane compiled them.

use crate::admin::Admin;
use crate::args::{Output, RoutesArgs};
use crate::output::{Table, print, print_json};
use serde_json::json;
use std::process::ExitCode;
use trellis_proto::v1::RouteLine;

pub async fn run(admin: &mut Admin, args: &RoutesArgs, output: Output) -> anyhow::Result<ExitCode> {
    let service = args.service.clone().unwrap_or_default();
    let routes = admin.routes(service).await?.routes;
    match output {
        Output::Json => print_json(&to_json(&routes))?,
        Output::Table if routes.is_empty() => match &args.service {
            Some(s) => print(&format!("no routes for Service {s}\n"))?,
            None => print("no routes\n")?,
        },
        Output::Table => print(&render(&routes))?,
    }
    Ok(ExitCode::SUCCESS)
}

/// Rows in the order the control plane sent them: within a port, that is rule precedence.
fn render(routes: &[RouteLine]) -> String {
    let mut table = Table::new(&["SERVICE", "PORT", "ROUTE", "MATCH", "BACKENDS"]);
    for r in routes {
        table.row(vec![
            r.service.clone(),
            r.port.to_string(),
            r.route.clone(),
            r.r#match.clone(),
            r.backends.join(", "),
        ]);
    }
    table.render()
}

fn to_json(routes: &[RouteLine]) -> serde_json::Value {
    let routes: Vec<_> = routes
        .iter()
        .map(|r| {
            json!({
                "service": r.service,
                "port": r.port,
                "route": r.route,
                "match": r.r#match,
                "backends": r.backends,
            })
        })
        .collect();
    json!({ "routes": routes })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backends_are_joined() {
        let routes = [RouteLine {
            service: "rides/billing".into(),
            port: 80,
            route: "rides/billing".into(),
            r#match: "PathPrefix /".into(),
            backends: vec![
                "billing-v1.rides:80=90".into(),
                "billing-v2.rides:80=10".into(),
            ],
        }];
        assert_eq!(
            render(&routes),
            "SERVICE         PORT   ROUTE           MATCH          BACKENDS\n\
             rides/billing   80     rides/billing   PathPrefix /   billing-v1.rides:80=90, billing-v2.rides:80=10\n"
        );
    }
}
