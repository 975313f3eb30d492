//! `trellis`: the operator's command-line tool. `check` validates mesh YAML offline; the
//! other commands call trellis-control's Admin gRPC API (port 15010).

mod admin;
mod args;
mod check;
mod child;
mod dashboard;
mod demo;
mod inject;
mod output;
mod proxy_config;
mod routes;
mod shift;
mod stat;
mod status;

use args::{Cli, Command};
use std::process::ExitCode;

/// jemalloc, as trellis-proxy and trellis-control have: `trellis demo` and the soak run the
/// proxies and the control plane in this binary, and should measure them on the allocator
/// they ship with. (The first 30-minute soak ran on glibc's malloc here, and every process
/// whose connections came and went once a minute crept up by under 2 MiB per 10 minutes.)
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

fn main() -> ExitCode {
    // Usage errors exit with 2 inside `parse`; everything after it exits with 0 or 1.
    let cli = args::parse();
    match run(cli) {
        Ok(code) => code,
        Err(e) if output::is_broken_pipe(&e) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    let Cli {
        control_plane,
        ca_bundle,
        output,
        command,
    } = cli;
    match &command {
        Command::Check(args) => return check::run(args, output),
        Command::Inject(args) => return inject::run(args, &ca_bundle),
        Command::Crds => return inject::print_crds(),
        Command::Child(args) => return Ok(child::run(args)),
        Command::Demo(args) => return demo::run(args),
        Command::Soak(args) => return demo::soak::run(args),
        _ => {}
    }
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async {
        let mut admin = admin::Admin::connect(&control_plane, &ca_bundle).await?;
        match &command {
            Command::Check(_)
            | Command::Inject(_)
            | Command::Crds
            | Command::Demo(_)
            | Command::Soak(_)
            | Command::Child(_) => {
                unreachable!("these run without an admin connection, above")
            }
            Command::Status => status::run(&mut admin, output).await,
            Command::Routes(args) => routes::run(&mut admin, args, output).await,
            Command::ProxyConfig(args) => proxy_config::run(&mut admin, args, output).await,
            Command::Shift(args) => shift::run(&mut admin, args, output).await,
            Command::Stat(args) => stat::run(&mut admin, args, output).await,
            Command::Top(args) => stat::top(&mut admin, args).await,
            Command::Dashboard(args) => dashboard::run(&mut admin, args).await,
        }
    })
}
