//! The command line: global flags, subcommands, and the parsers that check each argument
//! before anything is sent to the control plane.

use clap::error::ErrorKind;
use clap::{Args, CommandFactory, Parser, Subcommand, ValueEnum};
use std::path::PathBuf;
use std::time::Duration;

/// The largest weight the Gateway API allows on a `backendRef`.
pub const MAX_WEIGHT: u32 = 1_000_000;

/// `trellis`: check mesh YAML offline, and inspect and steer a running mesh.
#[derive(Debug, Parser)]
#[command(name = "trellis", version, about, propagate_version = true)]
pub struct Cli {
    /// Address of trellis-control's admin gRPC API (host:port, or https://host:port).
    #[arg(
        long,
        global = true,
        value_name = "ADDR",
        env = "TRELLIS_CONTROL_PLANE",
        default_value = "https://127.0.0.1:15010",
        value_parser = control_plane_address
    )]
    pub control_plane: String,

    /// The mesh CA bundle (PEM) that the control plane's certificate chains to: the
    /// `ca.pem` in trellis-control's state directory, or the `--ca-cert` it was given.
    #[arg(
        long,
        global = true,
        value_name = "FILE",
        env = "TRELLIS_CA_BUNDLE",
        default_value = ".trellis/ca.pem"
    )]
    pub ca_bundle: PathBuf,

    /// Output format.
    #[arg(short, long, global = true, value_enum, default_value_t = Output::Table)]
    pub output: Output,

    #[command(subcommand)]
    pub command: Command,
}

/// How a command prints its result.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Output {
    /// Aligned columns for people.
    Table,
    /// One JSON document for scripts.
    Json,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Validate mesh YAML files or directories, offline.
    Check(CheckArgs),
    /// Show every proxy the control plane knows and the state of its config.
    Status,
    /// Show the effective routes of one Service, or of all.
    Routes(RoutesArgs),
    /// Show the snapshot one proxy holds.
    ProxyConfig(ProxyConfigArgs),
    /// Set an HTTPRoute's backend weights and wait until every affected proxy has ACKed.
    Shift(ShiftArgs),
    /// Show the golden metrics (success rate, requests per second, latency) per Service, or
    /// per route, backend and caller of one Service, from the proxies' summaries.
    Stat(StatArgs),
    /// Show the busiest routes and the slowest calls, refreshed until interrupted.
    Top(TopArgs),
    /// Print the dashboard's URL, and open it where a browser can be started.
    Dashboard(DashboardArgs),
    /// Add the Trellis sidecar to the Pods, Deployments, StatefulSets, DaemonSets, ReplicaSets,
    /// Jobs and CronJobs of a YAML stream, offline; prints the result (`kubectl apply -f -` it).
    /// `--ca-bundle` must be the cluster's mesh CA (the trellis-ca Secret's tls.crt).
    Inject(InjectArgs),
    /// Print the trellis.dev CustomResourceDefinitions, offline.
    Crds,
    /// Run the ride-hailing demo on this machine: control plane, services, sidecars, gateway,
    /// traffic and failure scenarios (docs/demo.md).
    Demo(crate::demo::DemoArgs),
    /// A process the demo starts: the control plane, a proxy or a demo service. It exits
    /// when its stdin closes, so it never outlives the demo.
    #[command(name = "__child", hide = true)]
    Child(crate::child::ChildArgs),
    /// The demo's mesh under chaos for a while: what `bench/soak` runs (docs/reliability.md).
    #[command(name = "__soak", hide = true)]
    Soak(crate::demo::soak::SoakArgs),
}

#[derive(Debug, Args)]
pub struct StatArgs {
    /// `name`, `name.namespace` or `namespace/name` of a Service; every Service if absent.
    pub service: Option<String>,
    /// How far back, e.g. 30s, 1m or 15m (at most 15m, in 10s steps).
    #[arg(long, value_name = "DURATION", default_value = "1m", value_parser = window)]
    pub window: Duration,
}

#[derive(Debug, Args)]
pub struct TopArgs {
    /// How far back each view looks.
    #[arg(long, value_name = "DURATION", default_value = "30s", value_parser = window)]
    pub window: Duration,
    /// How often the view is redrawn.
    #[arg(long, value_name = "DURATION", default_value = "2s", value_parser = timeout)]
    pub interval: Duration,
    /// Rows in each table.
    #[arg(long, default_value_t = 10)]
    pub rows: usize,
    /// Print this many views, one after the other, without clearing the screen, then exit.
    #[arg(short = 'n', long, value_name = "N")]
    pub count: Option<u32>,
}

#[derive(Debug, Args)]
pub struct DashboardArgs {
    /// Only print the URL, even where a browser could be opened.
    #[arg(long)]
    pub no_open: bool,
}

#[derive(Debug, Args)]
pub struct InjectArgs {
    /// The YAML stream to rewrite; `-` reads stdin.
    #[arg(short = 'f', long = "filename", value_name = "FILE")]
    pub file: PathBuf,
    /// The image injected pods run trellis-proxy from [default: this release's image].
    #[arg(long, value_name = "IMAGE")]
    pub proxy_image: Option<String>,
}

#[derive(Debug, Args)]
pub struct CheckArgs {
    /// Files or directories (every *.yaml and *.yml in it); each is checked as a whole mesh.
    #[arg(required = true, value_name = "PATH")]
    pub paths: Vec<PathBuf>,
}

#[derive(Debug, Args)]
pub struct RoutesArgs {
    /// `name` (in any namespace), `name.namespace` or `namespace/name`; all Services if absent.
    pub service: Option<String>,
}

#[derive(Debug, Args)]
pub struct ProxyConfigArgs {
    /// `name` or `namespace/name` of the proxy's workload.
    pub workload: String,
}

#[derive(Debug, Args)]
pub struct ShiftArgs {
    /// The HTTPRoute, as namespace/name.
    #[arg(value_parser = route_name)]
    pub route: String,

    /// New weights, as BACKEND=WEIGHT (a backend Service name and an integer 0..=1000000).
    #[arg(required = true, value_name = "BACKEND=WEIGHT", value_parser = weight_pair)]
    pub weights: Vec<(String, u32)>,

    /// How long to wait for every proxy to ACK, e.g. 30s or 1m30s [default: the control plane's, 30s].
    #[arg(long, value_name = "DURATION", value_parser = timeout)]
    pub timeout: Option<Duration>,
}

/// Parses the process arguments; on a usage error prints it and exits with status 2.
pub fn parse() -> Cli {
    let cli = Cli::parse();
    if let Err(message) = check(&cli) {
        let mut command = Cli::command();
        // Built, so that the usage line names the subcommand: `trellis shift ...`.
        command.build();
        let sub = command
            .find_subcommand_mut(cli.command.name())
            .expect("every Command variant is a subcommand");
        sub.error(ErrorKind::ValueValidation, message).exit();
    }
    cli
}

impl Command {
    /// The subcommand's name on the command line.
    fn name(&self) -> &'static str {
        match self {
            Command::Check(_) => "check",
            Command::Status => "status",
            Command::Routes(_) => "routes",
            Command::ProxyConfig(_) => "proxy-config",
            Command::Shift(_) => "shift",
            Command::Stat(_) => "stat",
            Command::Top(_) => "top",
            Command::Dashboard(_) => "dashboard",
            Command::Inject(_) => "inject",
            Command::Crds => "crds",
            Command::Demo(_) => "demo",
            Command::Child(_) => "__child",
            Command::Soak(_) => "__soak",
        }
    }
}

/// Checks what one argument alone cannot show.
fn check(cli: &Cli) -> Result<(), String> {
    if let Command::Shift(a) = &cli.command {
        for (i, (name, _)) in a.weights.iter().enumerate() {
            if a.weights[..i].iter().any(|(n, _)| n == name) {
                return Err(format!(
                    "backend {name:?} is given twice; give each backend one weight"
                ));
            }
        }
    }
    Ok(())
}

// === value parsers ===
//
// Each returns a message that names the bad argument; clap prints it after
// "invalid value '...' for '<ARG>'" and exits with status 2.

/// Normalises `--control-plane`: a bare `host:port` gets `https://` in front.
pub fn control_plane_address(s: &str) -> Result<String, String> {
    trellis_proto::connect::normalize(s).map_err(|e| e.to_string())
}

/// Checks a `namespace/name` HTTPRoute reference.
pub fn route_name(s: &str) -> Result<String, String> {
    match s.split_once('/') {
        Some((ns, name)) if !ns.is_empty() && !name.is_empty() && !name.contains('/') => {
            Ok(s.to_string())
        }
        _ => Err(format!(
            "route {s:?} must be namespace/name, e.g. rides/billing"
        )),
    }
}

/// Parses one `BACKEND=WEIGHT` pair.
pub fn weight_pair(s: &str) -> Result<(String, u32), String> {
    let Some((name, weight)) = s.split_once('=') else {
        return Err(format!("{s:?} is not BACKEND=WEIGHT, e.g. billing-v2=10"));
    };
    let name = name.trim();
    if name.is_empty() {
        return Err(format!(
            "{s:?} has no backend name before '=', e.g. billing-v2=10"
        ));
    }
    let weight: u32 = weight
        .trim()
        .parse()
        .ok()
        .filter(|w| *w <= MAX_WEIGHT)
        .ok_or_else(|| {
            format!("{s:?}: the weight must be an integer from 0 to {MAX_WEIGHT}, e.g. {name}=10")
        })?;
    Ok((name.to_string(), weight))
}

fn timeout(s: &str) -> Result<Duration, trellis_config::duration::DurationError> {
    trellis_config::duration::parse(s)
}

/// A window of the control plane's golden metrics: 10s to 15m.
fn window(s: &str) -> Result<Duration, String> {
    let d = trellis_config::duration::parse(s).map_err(|e| e.to_string())?;
    if d < Duration::from_secs(10) || d > Duration::from_secs(900) {
        return Err(format!(
            "window {s:?} is outside 10s..15m, the span the control plane keeps"
        ));
    }
    Ok(d)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_bare_host_port_gets_https() {
        assert_eq!(
            control_plane_address("127.0.0.1:15010").unwrap(),
            "https://127.0.0.1:15010"
        );
        assert_eq!(
            control_plane_address("control.rides:15010").unwrap(),
            "https://control.rides:15010"
        );
    }

    #[test]
    fn an_address_with_a_scheme_is_kept() {
        assert_eq!(
            control_plane_address("https://127.0.0.1:15010").unwrap(),
            "https://127.0.0.1:15010"
        );
    }

    #[test]
    fn a_bad_address_is_refused() {
        assert!(control_plane_address("").unwrap_err().contains("empty"));
        assert!(
            control_plane_address("http://control:15010")
                .unwrap_err()
                .contains("use https://control:15010")
        );
        assert!(
            control_plane_address("127.0.0.1:15010 x")
                .unwrap_err()
                .contains("host:port")
        );
    }

    #[test]
    fn weight_pairs_parse() {
        assert_eq!(
            weight_pair("billing-v1=50").unwrap(),
            ("billing-v1".into(), 50)
        );
        assert_eq!(
            weight_pair("billing-v2=0").unwrap(),
            ("billing-v2".into(), 0)
        );
        assert_eq!(
            weight_pair("billing-v2=1000000").unwrap(),
            ("billing-v2".into(), MAX_WEIGHT)
        );
    }

    #[test]
    fn bad_weight_pairs_name_the_argument() {
        for bad in [
            "billing-v1",
            "=50",
            "billing-v1=",
            "billing-v1=-1",
            "billing-v1=1.5",
        ] {
            let e = weight_pair(bad).unwrap_err();
            assert!(e.contains(&format!("{bad:?}")), "{bad}: {e}");
        }
        assert!(
            weight_pair("billing-v1=1000001")
                .unwrap_err()
                .contains("0 to 1000000")
        );
        assert!(
            weight_pair("billing-v1=ten")
                .unwrap_err()
                .contains("integer")
        );
    }

    #[test]
    fn routes_must_be_namespaced() {
        assert_eq!(route_name("rides/billing").unwrap(), "rides/billing");
        for bad in ["billing", "/billing", "rides/", "rides/billing/v2"] {
            assert!(
                route_name(bad).unwrap_err().contains("namespace/name"),
                "{bad}"
            );
        }
    }

    #[test]
    fn shift_parses_pairs_and_timeout() {
        let cli = Cli::try_parse_from([
            "trellis",
            "shift",
            "rides/billing",
            "billing-v1=90",
            "billing-v2=10",
            "--timeout",
            "1m30s",
        ])
        .unwrap();
        let Command::Shift(a) = cli.command else {
            panic!("not shift: {:?}", cli.command)
        };
        assert_eq!(
            a.weights,
            [("billing-v1".into(), 90), ("billing-v2".into(), 10)]
        );
        assert_eq!(a.timeout, Some(Duration::from_secs(90)));
    }

    #[test]
    fn shift_without_weights_is_a_usage_error() {
        let e = Cli::try_parse_from(["trellis", "shift", "rides/billing"]).unwrap_err();
        assert_eq!(e.exit_code(), 2);
        let e = Cli::try_parse_from(["trellis", "shift", "rides/billing", "v1=x"]).unwrap_err();
        assert_eq!(e.exit_code(), 2);
        assert!(e.to_string().contains("\"v1=x\""), "{e}");
    }

    #[test]
    fn a_backend_given_twice_is_refused() {
        let cli =
            Cli::try_parse_from(["trellis", "shift", "rides/billing", "v1=1", "v1=2"]).unwrap();
        assert!(check(&cli).unwrap_err().contains("\"v1\" is given twice"));
    }

    #[test]
    fn every_command_name_is_a_subcommand() {
        let command = Cli::command();
        for line in [
            vec!["trellis", "check", "x"],
            vec!["trellis", "status"],
            vec!["trellis", "routes"],
            vec!["trellis", "proxy-config", "trip-0"],
            vec!["trellis", "shift", "rides/billing", "v1=1"],
            vec!["trellis", "demo", "--no-tui", "--scenario", "canary"],
        ] {
            let cli = Cli::try_parse_from(&line).unwrap();
            assert!(
                command.find_subcommand(cli.command.name()).is_some(),
                "{line:?}"
            );
        }
    }

    #[test]
    fn clap_definition_is_consistent() {
        Cli::command().debug_assert();
    }
}
