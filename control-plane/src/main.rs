//! `trellis-control --config PATH`: parse arguments, set up logging, run the control plane.

use clap::Parser;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

/// The Trellis control plane.
#[derive(Parser)]
#[command(version, about)]
struct Args {
    /// A mesh YAML file, or a folder of them; watched for changes.
    #[arg(long)]
    config: PathBuf,
    /// Where proxies and the CLI connect (discovery and admin gRPC).
    #[arg(long, default_value = "127.0.0.1:15010")]
    grpc_addr: SocketAddr,
    /// `/ready` and `/metrics`.
    #[arg(long, default_value = "127.0.0.1:15014")]
    http_addr: SocketAddr,
    /// How long a proxy whose stream ended stays an endpoint. Also the warm-up after start,
    /// during which reconnecting proxies re-register before any config is pushed.
    #[arg(long, default_value = "10s", value_parser = parse_duration)]
    registration_grace: std::time::Duration,
}

fn parse_duration(s: &str) -> Result<std::time::Duration, String> {
    trellis_config::duration::parse(s)
}

fn main() -> ExitCode {
    let args = Args::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("TRELLIS_LOG")
                .unwrap_or_else(|_| "info".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    if !args.config.exists() {
        eprintln!(
            "trellis-control: {} does not exist; pass a mesh YAML file or folder with --config",
            args.config.display()
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
        let opts = trellis_control::Options {
            config: args.config,
            grpc_addr: args.grpc_addr,
            http_addr: args.http_addr,
            registration_grace: args.registration_grace,
        };
        let _running = match trellis_control::start(opts).await {
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
