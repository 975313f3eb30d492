//! `trellis-control --config PATH` or `trellis-control --kubernetes`: parse arguments, set up
//! logging, run the control plane (and, in a cluster, the injector webhook).
//! `trellis-control token create --service-account NS/SA`: mint a join token for a proxy.

use clap::{Args as ClapArgs, Parser, Subcommand};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;
use trellis_control::identity::ca::{Ca, CaSource};
use trellis_control::kubernetes::in_cluster;

/// jemalloc, not glibc's malloc: a control plane holds thousands of long-lived streams whose
/// buffers are freed and allocated again at every push, and glibc kept about as much freed
/// memory as it had live (10,000 scoped proxies: 1,094 MiB RSS with glibc, 645 MiB with
/// jemalloc preloaded; docs/control-plane.md, "Memory and the allocator").
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

/// The Trellis control plane.
#[derive(Parser)]
#[command(version, about, args_conflicts_with_subcommands = true)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
    #[command(flatten)]
    serve: Serve,
}

#[derive(Subcommand)]
enum Command {
    /// Join tokens: the proof a proxy in file mode shows to get its certificate.
    #[command(subcommand)]
    Token(TokenCommand),
}

#[derive(Subcommand)]
enum TokenCommand {
    /// Print a join token for one service account (`namespace/name`).
    Create {
        #[arg(long, value_name = "NAMESPACE/NAME")]
        service_account: String,
        /// How long the token may be used to get (and renew) certificates.
        #[arg(long, default_value = "720h", value_parser = parse_duration)]
        ttl: Duration,
        #[command(flatten)]
        ca: CaArgs,
    },
}

#[derive(ClapArgs)]
struct CaArgs {
    /// The CA certificate (an intermediate may be followed by its chain up to the root).
    #[arg(long, requires = "ca_key")]
    ca_cert: Option<PathBuf>,
    /// The CA's PKCS#8 private key (PEM).
    #[arg(long, requires = "ca_cert")]
    ca_key: Option<PathBuf>,
    /// Without --ca-cert/--ca-key: where the generated root CA is kept (created 0700, keys 0600).
    #[arg(long, env = "TRELLIS_STATE_DIR", default_value = ".trellis")]
    state_dir: PathBuf,
}

impl CaArgs {
    fn source(&self) -> CaSource {
        match (&self.ca_cert, &self.ca_key) {
            (Some(cert), Some(key)) => CaSource::Files {
                cert: cert.clone(),
                key: key.clone(),
            },
            _ => CaSource::StateDir(self.state_dir.clone()),
        }
    }
}

#[derive(ClapArgs)]
struct Serve {
    /// A mesh YAML file, or a folder of them; watched for changes.
    #[arg(long, conflicts_with = "kubernetes")]
    config: Option<PathBuf>,
    /// Read the mesh from the cluster (Services, EndpointSlices, Pods, HTTPRoutes and the
    /// trellis.dev resources), keep the CA in a Secret, accept service-account tokens
    /// (TokenReview) and serve the sidecar injector webhook.
    #[arg(long)]
    kubernetes: bool,
    /// The injector's HTTPS endpoint (with --kubernetes).
    #[arg(long, default_value = "0.0.0.0:15017")]
    webhook_addr: SocketAddr,
    /// The namespace trellis-control runs in: it holds the CA Secret and the Service.
    #[arg(long, env = "TRELLIS_NAMESPACE", default_value = "trellis-system")]
    namespace: String,
    /// The namespaces whose TLS Secrets Gateway listeners may use (comma-separated), each
    /// watched on its own so that RBAC grants Secrets there only; `*` watches every
    /// namespace (which needs a ClusterRole). Default: --namespace, where the sample
    /// Gateway lives. docs/kubernetes.md says what RBAC each needs.
    #[arg(long, env = "TRELLIS_GATEWAY_SECRET_NAMESPACES", value_delimiter = ',')]
    gateway_secret_namespaces: Vec<String>,
    /// The image injected pods run trellis-proxy from [default: this release's image].
    #[arg(long)]
    proxy_image: Option<String>,
    /// Where proxies and the CLI connect (discovery, identity and admin gRPC, over TLS).
    #[arg(long, default_value = "127.0.0.1:15010")]
    grpc_addr: SocketAddr,
    /// `/ready` and `/metrics`.
    #[arg(long, default_value = "127.0.0.1:15014")]
    http_addr: SocketAddr,
    /// The dashboard's listener: a browser's view of the mesh (docs/dashboard.md). Keep it
    /// on loopback and reach it with `kubectl port-forward`; `off` turns it off.
    #[arg(long, default_value = "127.0.0.1:15016", value_parser = parse_dashboard_addr)]
    dashboard_addr: DashboardAddr,
    /// Let the dashboard shift a route's weights (as `trellis shift` does); read-only
    /// otherwise.
    #[arg(long)]
    dashboard_shift: bool,
    /// How often each proxy sends its golden-metrics summary on its discovery stream (whole
    /// seconds, at least 1s). The dashboard and `trellis stat` are this fresh.
    #[arg(long, default_value = "5s", value_parser = parse_duration)]
    summary_interval: Duration,
    /// Another replica's HTTP port (`host:port`), whose golden metrics the dashboard and
    /// `trellis stat` merge with this one's; repeatable. A name that resolves to every
    /// replica (a headless Service) is enough: this replica recognises its own answer.
    #[arg(long = "peer", env = "TRELLIS_PEERS", value_delimiter = ',')]
    peers: Vec<String>,
    /// How long a proxy whose stream ended stays an endpoint. Also the warm-up after start,
    /// during which reconnecting proxies re-register before any config is pushed.
    #[arg(long, default_value = "10s", value_parser = parse_duration)]
    registration_grace: Duration,
    /// Lifetime of proxies' certificates; proxies renew at about half of it.
    #[arg(long, default_value = "24h", value_parser = parse_duration)]
    cert_ttl: Duration,
    /// Another DNS name or IP for the control plane's serving certificate (repeatable);
    /// localhost, the loopback IPs and the in-cluster Service names are always included.
    #[arg(long = "server-name")]
    server_names: Vec<String>,
    #[command(flatten)]
    ca: CaArgs,
}

/// `--dashboard-addr`: an address, or `off` (`None`).
#[derive(Debug, Clone, Copy)]
struct DashboardAddr(Option<SocketAddr>);

fn parse_dashboard_addr(s: &str) -> Result<DashboardAddr, String> {
    if s == "off" {
        return Ok(DashboardAddr(None));
    }
    s.parse()
        .map(|a| DashboardAddr(Some(a)))
        .map_err(|_| format!("{s:?} is not ip:port (e.g. 127.0.0.1:15016), or off"))
}

fn parse_duration(s: &str) -> Result<Duration, trellis_config::duration::DurationError> {
    trellis_config::duration::parse(s)
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("TRELLIS_LOG")
                .unwrap_or_else(|_| "info".into()),
        )
        .with_writer(std::io::stderr)
        // Colour only for a person at a terminal, never into a log file.
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    match cli.command {
        Some(Command::Token(TokenCommand::Create {
            service_account,
            ttl,
            ca,
        })) => token_create(&service_account, ttl, &ca),
        None => serve(cli.serve),
    }
}

fn token_create(sa: &str, ttl: Duration, ca: &CaArgs) -> ExitCode {
    let Some((namespace, name)) = sa.split_once('/') else {
        eprintln!(
            "trellis-control: --service-account {sa:?}: expected NAMESPACE/NAME, e.g. rides/trip"
        );
        return ExitCode::from(2);
    };
    if let Err(e) = trellis_identity::SpiffeId::new("x", namespace, name) {
        eprintln!("trellis-control: --service-account {sa:?}: {e}");
        return ExitCode::from(2);
    }
    let ca = match Ca::load(&ca.source()) {
        Ok(ca) => ca,
        Err(e) => {
            eprintln!("trellis-control: {e}");
            return ExitCode::FAILURE;
        }
    };
    let tokens = trellis_control::identity::token::JoinTokens::new(ca.token_key_material());
    let sa = trellis_control::identity::proof::ServiceAccount {
        namespace: namespace.into(),
        name: name.into(),
    };
    println!("{}", tokens.mint(&sa, ttl));
    ExitCode::SUCCESS
}

fn serve(args: Serve) -> ExitCode {
    let config = match (&args.config, args.kubernetes) {
        (_, true) => PathBuf::new(),
        (Some(c), false) => c.clone(),
        (None, false) => {
            eprintln!(
                "trellis-control: pass a mesh YAML file or folder with --config, or --kubernetes"
            );
            return ExitCode::from(2);
        }
    };
    if !args.kubernetes && !config.exists() {
        eprintln!(
            "trellis-control: {} does not exist; pass a mesh YAML file or folder with --config",
            config.display()
        );
        return ExitCode::from(2);
    }
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("trellis-control: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    rt.block_on(async {
        let mut server_names = trellis_control::default_server_names();
        server_names.extend(args.server_names.iter().cloned());
        let mut opts = trellis_control::Options {
            config,
            grpc_addr: args.grpc_addr,
            http_addr: args.http_addr,
            registration_grace: args.registration_grace,
            ca: args.ca.source(),
            cert_ttl: args.cert_ttl,
            server_names,
            gateway_secret_namespaces: match args.gateway_secret_namespaces.as_slice() {
                [] => Some(vec![args.namespace.clone()]),
                all if all.iter().any(|n| n == "*") => None,
                some => Some(some.to_vec()),
            },
            dashboard_addr: args.dashboard_addr.0,
            dashboard_shift: args.dashboard_shift,
            summary_interval: args.summary_interval.max(Duration::from_secs(1)),
            peers: args.peers.clone(),
        };
        let mut _webhook = None;
        let source = if args.kubernetes {
            let prepared = in_cluster::prepare(
                &args.namespace,
                &args.ca.state_dir,
                args.webhook_addr,
                args.proxy_image.as_deref(),
            );
            match prepared.await {
                Ok(c) => {
                    opts.ca = c.ca;
                    _webhook = Some(c.webhook);
                    trellis_control::Source::Kubernetes(c.client)
                }
                Err(e) => {
                    eprintln!("trellis-control: {e}");
                    return ExitCode::FAILURE;
                }
            }
        } else {
            trellis_control::Source::Files
        };
        let _running = match trellis_control::start_with(opts, source).await {
            Ok(r) => r,
            Err(e) => {
                eprintln!("trellis-control: {e}");
                return ExitCode::FAILURE;
            }
        };
        let mut term =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(t) => t,
                Err(e) => {
                    eprintln!("trellis-control: cannot listen for SIGTERM: {e}");
                    return ExitCode::FAILURE;
                }
            };
        tokio::select! {
            _ = term.recv() => {}
            _ = tokio::signal::ctrl_c() => {}
        }
        tracing::info!("stopping");
        ExitCode::SUCCESS
    })
}
