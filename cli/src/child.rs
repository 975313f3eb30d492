//! `trellis __child ...`: the processes `trellis demo` starts by re-executing itself, so one
//! binary runs the whole demo. Each child watches its stdin, a pipe from the demo, and exits
//! when it closes: the demo exiting in any way, even SIGKILL, closes it.

use clap::{Args, Subcommand};
use std::io::Read;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

#[derive(Debug, Args)]
pub struct ChildArgs {
    #[command(subcommand)]
    pub kind: ChildKind,
}

#[derive(Debug, Subcommand)]
pub enum ChildKind {
    /// trellis-control with the demo's mesh.
    Control {
        #[arg(long)]
        config: PathBuf,
        #[arg(long)]
        grpc_addr: SocketAddr,
        #[arg(long)]
        http_addr: SocketAddr,
        /// The dashboard's listener.
        #[arg(long)]
        dashboard_addr: Option<SocketAddr>,
        #[arg(long, value_parser = trellis_config::duration::parse)]
        registration_grace: Duration,
        /// Where the mesh CA is (generated there by the demo before it starts).
        #[arg(long)]
        state_dir: PathBuf,
        /// The lifetime of the proxies' certificates.
        #[arg(long, value_parser = trellis_config::duration::parse, default_value = "1h")]
        cert_ttl: Duration,
    },
    /// trellis-proxy with a bootstrap file.
    Proxy {
        #[arg(long)]
        bootstrap: PathBuf,
    },
    /// One instance of a demo service.
    App {
        #[arg(long)]
        role: trellis_demo_app::Role,
        #[arg(long)]
        name: String,
        /// `v1`, `v2`: the app's version label (`--version` is clap's own flag).
        #[arg(long, default_value = "v1")]
        app_version: String,
        #[arg(long)]
        listen: SocketAddr,
        #[arg(long)]
        sidecar: SocketAddr,
    },
}

/// Exits the process once stdin reaches EOF or fails: the parent is gone.
fn exit_with_parent() {
    std::thread::spawn(|| {
        let mut buf = [0u8; 64];
        let mut stdin = std::io::stdin();
        while matches!(stdin.read(&mut buf), Ok(n) if n > 0) {}
        std::process::exit(0);
    });
}

pub fn run(args: &ChildArgs) -> ExitCode {
    exit_with_parent();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("TRELLIS_LOG")
                .unwrap_or_else(|_| "info".into()),
        )
        .with_writer(std::io::stderr)
        .with_ansi(false)
        .init();
    // Fifteen processes share the machine: two worker threads each are plenty for the demo.
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("trellis __child: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result: Result<(), String> = rt.block_on(async {
        match &args.kind {
            ChildKind::Control {
                config,
                grpc_addr,
                http_addr,
                dashboard_addr,
                registration_grace,
                state_dir,
                cert_ttl,
            } => {
                let opts = trellis_control::Options {
                    config: config.clone(),
                    grpc_addr: *grpc_addr,
                    http_addr: *http_addr,
                    registration_grace: *registration_grace,
                    ca: trellis_control::identity::ca::CaSource::StateDir(state_dir.clone()),
                    cert_ttl: *cert_ttl,
                    server_names: trellis_control::default_server_names(),
                    gateway_secret_namespaces: None,
                    dashboard_addr: *dashboard_addr,
                    // The demo runs on the operator's own machine: its canary view may shift.
                    dashboard_shift: true,
                    summary_interval: trellis_control::golden::INTERVAL,
                    peers: Vec::new(),
                };
                let _running = trellis_control::start(opts)
                    .await
                    .map_err(|e| e.to_string())?;
                std::future::pending::<()>().await;
                Ok(())
            }
            ChildKind::Proxy { bootstrap } => {
                let b = trellis_proxy::Bootstrap::load(bootstrap).map_err(|e| e.to_string())?;
                let running = trellis_proxy::start(b).await.map_err(|e| e.to_string())?;
                running.wait().await;
                Ok(())
            }
            ChildKind::App {
                role,
                name,
                app_version,
                listen,
                sidecar,
            } => trellis_demo_app::serve(trellis_demo_app::AppConfig {
                role: *role,
                name: name.clone(),
                version: app_version.clone(),
                listen: *listen,
                sidecar: *sidecar,
            })
            .await
            .map_err(|e| format!("cannot serve on {listen}: {e}")),
        }
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("trellis __child: {e}");
            ExitCode::FAILURE
        }
    }
}
