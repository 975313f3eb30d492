//! `trellis-proxy --bootstrap FILE`: parse arguments, set up logging, run the proxy.
//! `trellis-proxy init`: install the iptables rules of transparent interception.

use clap::Parser;
use std::path::PathBuf;
use std::process::ExitCode;

/// jemalloc, not glibc's malloc: glibc kept the pages of the initial sync's short-lived
/// buffers among the config's long-lived ones, about 170 bytes per configured endpoint, and
/// jemalloc is also a few percent cheaper per request (docs/performance.md, "Proxy memory
/// per endpoint"). Build with `--no-default-features` to profile the heap with heaptrack.
#[cfg(feature = "jemalloc")]
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

/// The Trellis sidecar proxy.
#[derive(Parser)]
#[command(version, about)]
struct Args {
    #[command(subcommand)]
    command: Option<Command>,
    /// The bootstrap YAML: workload identity, listeners, app address, config source.
    #[arg(long, conflicts_with = "kubernetes")]
    bootstrap: Option<PathBuf>,
    /// Take the bootstrap from the pod the injector set up (environment variables, downward
    /// API files, the projected token) instead of a file. See docs/kubernetes.md.
    #[arg(long)]
    kubernetes: bool,
    /// Worker threads for the proxy's runtime (default: one per core). A sidecar that should
    /// not compete with its app takes 1 or 2.
    #[arg(long, value_parser = clap::value_parser!(u16).range(1..))]
    workers: Option<u16>,
}

#[derive(clap::Subcommand)]
enum Command {
    /// Install the iptables nat rules that redirect the workload's TCP through the proxy
    /// (the init container's job; needs CAP_NET_ADMIN). See docs/interception.md.
    Init(trellis_proxy::init::InitArgs),
}

fn main() -> ExitCode {
    let args = Args::parse();
    if let Some(Command::Init(init)) = &args.command {
        return match trellis_proxy::init::run(init) {
            Ok(report) => {
                for line in report {
                    println!("trellis-proxy init: {line}");
                }
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("trellis-proxy init: {e}");
                ExitCode::FAILURE
            }
        };
    }
    if args.bootstrap.is_none() && !args.kubernetes {
        eprintln!(
            "trellis-proxy: give --bootstrap FILE (or --kubernetes in an injected pod) to run the proxy, or run `trellis-proxy init`"
        );
        return ExitCode::from(2);
    }
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("TRELLIS_LOG")
                .unwrap_or_else(|_| "info".into()),
        )
        .with_writer(std::io::stderr)
        // Colour only for a person at a terminal, never into a log file.
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    let loaded = match &args.bootstrap {
        Some(path) => trellis_proxy::Bootstrap::load(path).map_err(|e| e.to_string()),
        None => {
            trellis_proxy::bootstrap_from_env(|k| std::env::var(k).ok()).map_err(|e| e.to_string())
        }
    };
    let bootstrap = match loaded {
        Ok(b) => b,
        Err(e) => {
            eprintln!("trellis-proxy: {e}");
            return ExitCode::from(2);
        }
    };
    let mut builder = tokio::runtime::Builder::new_multi_thread();
    builder.enable_all();
    if let Some(n) = args.workers {
        builder.worker_threads(usize::from(n));
    }
    let rt = match builder.build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("trellis-proxy: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    rt.block_on(async {
        let running = match trellis_proxy::start(bootstrap).await {
            Ok(r) => r,
            Err(e) => {
                eprintln!("trellis-proxy: {e}");
                return ExitCode::FAILURE;
            }
        };
        running.drain_on_signal();
        running.wait().await;
        tracing::info!("drained; exiting");
        ExitCode::SUCCESS
    })
}
