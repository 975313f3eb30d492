//! `trellis demo`: the ride-hailing app on a local mesh in one command (docs/demo.md).

// It starts the control plane, every service with its sidecar and the gateway (re-running this
// binary, child.rs), drives traffic through the gateway, shows it live, runs the failure
// scenarios and prints a summary.

mod client;
mod metrics;
mod procs;
mod report;
mod scenarios;
pub mod soak;
mod topology;
mod trace;
mod traffic;
mod view;

use anyhow::Context;
use clap::{Args, ValueEnum};
use report::{Clients, Process, Report, ServiceFigures};
use scenarios::{Ctx, Events};
use std::io::IsTerminal;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use view::Sample;

#[derive(Debug, Args)]
pub struct DemoArgs {
    /// Run one scenario instead of all of them in turn.
    #[arg(long, value_enum, default_value_t = Scenario::All)]
    pub scenario: Scenario,
    /// Stop after this long, e.g. 90s (default: run until Ctrl-C). Scenarios not done by
    /// then are reported as skipped.
    #[arg(long, value_name = "DURATION", value_parser = trellis_config::duration::parse)]
    pub duration: Option<Duration>,
    /// Print plain lines instead of the live table (for CI and logs).
    #[arg(long)]
    pub no_tui: bool,
    /// Write the figures of the run as JSON to this file.
    #[arg(long, value_name = "FILE")]
    pub report: Option<PathBuf>,
    /// Requests per second the traffic generator sends to the gateway.
    #[arg(long, default_value_t = 20, value_parser = clap::value_parser!(u32).range(1..=500))]
    pub rps: u32,
    /// Export every proxy's spans to the OTLP receiver at this host:port (e.g. Jaeger's
    /// 127.0.0.1:4317), sampling every request (docs/observability.md).
    #[arg(long, value_name = "HOST:PORT")]
    pub otlp: Option<String>,
    /// The OTLP transport of --otlp: gRPC (port 4317 by convention) or HTTP with protobuf
    /// (4318).
    #[arg(long, value_enum, default_value_t = OtlpArg::Grpc, requires = "otlp")]
    pub otlp_protocol: OtlpArg,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum OtlpArg {
    Grpc,
    Http,
}

impl DemoArgs {
    /// The Mesh's `tracing` block for --otlp.
    fn tracing(&self) -> Option<String> {
        let address = self.otlp.as_ref()?;
        let protocol = match self.otlp_protocol {
            OtlpArg::Grpc => "GRPC",
            OtlpArg::Http => "HTTP",
        };
        Some(format!(
            "  tracing: {{collector: {{address: \"{address}\", protocol: {protocol}}}, samplingPercentage: 100}}\n"
        ))
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Scenario {
    All,
    Canary,
    Cascade,
    Outage,
    Deny,
}

pub fn run(args: &DemoArgs) -> anyhow::Result<ExitCode> {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    rt.block_on(demo(args))
}

async fn demo(args: &DemoArgs) -> anyhow::Result<ExitCode> {
    let start = Instant::now();
    let tui = !args.no_tui && std::io::stdout().is_terminal();
    let events = Events::new(start, !tui);
    let dir = tempfile::Builder::new().prefix("trellis-demo-").tempdir()?;
    let topo = Arc::new(topology::Topology::plan(
        dir.path(),
        args.tracing().as_deref(),
    )?);
    let mut procs = procs::Procs::new(dir.path())?;
    let http = client::Http::new();
    events.say(format!(
        "starting the control plane, {} service instances with their sidecars, and the gateway on 127.0.0.1:{} (logs in {})",
        topo.instances.len(),
        topo.gateway.port(),
        procs.log_dir().display()
    ));
    let started = async {
        topo.start(&mut procs)?;
        topo.wait_ready(&http, &mut procs).await
    };
    let ready = tokio::select! {
        r = started => r,
        _ = tokio::signal::ctrl_c() => Err(anyhow::anyhow!("interrupted during start-up")),
    };
    if let Err(e) = ready {
        procs.stop_all().await;
        let logs = dir.keep();
        return Err(e.context(format!(
            "the demo could not start; the logs are in {}",
            logs.display()
        )));
    }
    events.say(format!(
        "mesh ready in {:.1}s: {} processes; sending {} requests/s to http://{}/api/rides and /api/drivers",
        start.elapsed().as_secs_f64(),
        procs.started.len(),
        args.rps,
        topo.gateway
    ));
    // The same API over HTTPS, on a certificate the demo issued for rides.example.com.
    events.say(format!(
        "dashboard: http://{}/ (the service graph, each Service, the proxies and the canary split, live)",
        topo.dashboard
    ));
    events.say(format!(
        "the gateway serves HTTPS too: curl --cacert {} --resolve rides.example.com:{p}:127.0.0.1 https://rides.example.com:{p}/api/drivers",
        topo.gateway_ca.display(),
        p = topo.gateway_https.port(),
    ));
    // The demo's control plane is on a free port with its CA in a temporary folder, so the
    // CLI's defaults do not reach it; these two lines do, from another terminal.
    events.say(format!(
        "to look inside from another terminal: export TRELLIS_CONTROL_PLANE=https://{} TRELLIS_CA_BUNDLE={}",
        topo.grpc,
        topo.ca_bundle().display()
    ));
    events.say("then: trellis status, trellis stat, trellis top, trellis routes, trellis proxy-config trip-0");
    let procs = Arc::new(tokio::sync::Mutex::new(procs));
    let traffic = traffic::Traffic::default();
    let load = tokio::spawn(traffic.clone().run(http.clone(), topo.gateway, args.rps));
    let first = Sample::take(&http, &topo).await;
    if let Some(addr) = &args.otlp {
        events.say(format!(
            "exporting every request's spans to the OTLP receiver at {addr}"
        ));
    }
    let traced = match trace::book(&http, topo.gateway, args.otlp.is_some()).await {
        Ok((id, status)) => {
            events.say(format!(
                "booked one ride with trace id {id} (status {status}); its hops are in the summary"
            ));
            Some((id, status))
        }
        Err(e) => {
            events.say(format!("the traced booking got no answer: {e}"));
            None
        }
    };
    let live = tokio::spawn(live_view(
        http.clone(),
        topo.clone(),
        events.clone(),
        first.clone(),
        tui,
    ));

    let cx = Ctx {
        http: http.clone(),
        topo: topo.clone(),
        procs: procs.clone(),
        traffic: traffic.clone(),
        events: events.clone(),
    };
    let report = Arc::new(Mutex::new(Report {
        rps: args.rps,
        ..Default::default()
    }));
    let wanted: Vec<Scenario> = match args.scenario {
        Scenario::All => vec![
            Scenario::Canary,
            Scenario::Cascade,
            Scenario::Outage,
            Scenario::Deny,
        ],
        one => vec![one],
    };
    let deadline = args
        .duration
        .map(|d| tokio::time::Instant::from_std(start + d));
    let scenarios = run_scenarios(&cx, &wanted, &report, deadline);
    let until_deadline = async {
        match deadline {
            Some(d) => tokio::time::sleep_until(d).await,
            None => std::future::pending().await,
        }
    };
    tokio::select! {
        _ = scenarios => {}
        _ = until_deadline => events.say("--duration reached; stopping"),
        _ = tokio::signal::ctrl_c() => events.say("Ctrl-C; stopping"),
    }

    let last = Sample::take(&http, &topo).await;
    load.abort();
    live.abort();
    let mut procs = procs.lock().await;
    procs.stop_all().await;
    let mut report = std::mem::take(&mut *report.lock().unwrap_or_else(|e| e.into_inner()));
    finish_report(&mut report, &wanted, &first, &last, &traffic, &procs, start);
    // The children are stopped, so their logs are complete.
    report.trace = traced.map(|(trace_id, status)| trace::Traced {
        hops: trace::hops(procs.log_dir(), &trace_id),
        trace_id,
        status,
    });
    let rows = view::rows(&first, &last);
    println!(
        "\n== Trellis demo summary ({:.0}s) ==\n",
        report.duration_seconds
    );
    print!("{}", view::table(&rows, true));
    println!();
    for (name, line) in report.scenario_lines() {
        println!("{name:<8} {line}");
    }
    if let Some(t) = &report.trace {
        println!(
            "\none booking, trace id {} (status {}), as each proxy logged it:",
            t.trace_id, t.status
        );
        for h in &t.hops {
            println!(
                "  {:<24} {:<8} {:<20} {:<10} {} {:>7.2} ms  {}",
                h.proxy,
                h.direction,
                h.destination_service,
                h.path,
                h.status,
                h.duration_ms,
                h.upstream.as_deref().unwrap_or("-")
            );
        }
    }
    if let Some(path) = &args.report {
        let json = serde_json::to_string_pretty(&report)?;
        std::fs::write(path, json + "\n")
            .with_context(|| format!("cannot write the report to {}", path.display()))?;
        println!("\nreport written to {}", path.display());
    }
    Ok(ExitCode::SUCCESS)
}

/// The steady phase, then each wanted scenario, each result stored as soon as it is known.
/// With `--duration`, steady traffic continues after the last scenario until the deadline.
async fn run_scenarios(
    cx: &Ctx,
    wanted: &[Scenario],
    report: &Mutex<Report>,
    deadline: Option<tokio::time::Instant>,
) {
    let lock = || report.lock().unwrap_or_else(|e| e.into_inner());
    let steady = scenarios::steady(cx, 5).await;
    lock().steady = Some(steady);
    for s in wanted {
        let result: anyhow::Result<()> = async {
            match s {
                Scenario::Canary => lock().canary = Some(scenarios::canary(cx, 4).await?),
                Scenario::Cascade => lock().cascade = Some(scenarios::cascade(cx).await?),
                Scenario::Outage => lock().outage = Some(scenarios::outage(cx).await?),
                Scenario::Deny => lock().deny = Some(scenarios::deny(cx).await?),
                Scenario::All => {}
            }
            Ok(())
        }
        .await;
        if let Err(e) = result {
            cx.events.say(format!("{s:?} failed: {e:#}"));
        }
    }
    cx.events.say(match deadline {
        Some(_) => "all scenarios done; steady traffic continues until --duration",
        None => "all scenarios done; steady traffic continues, Ctrl-C to stop",
    });
    std::future::pending::<()>().await
}

/// Redraws the table every second (or prints one line with `--no-tui`).
async fn live_view(
    http: client::Http,
    topo: Arc<topology::Topology>,
    events: Events,
    first: Sample,
    tui: bool,
) {
    let mut prev = first;
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    tick.tick().await;
    loop {
        tick.tick().await;
        let cur = Sample::take(&http, &topo).await;
        let rows = view::rows(&prev, &cur);
        let elapsed = events.elapsed();
        if tui {
            // Clear the screen and home the cursor, then draw the whole frame at once.
            let mut frame = format!(
                "\x1b[2J\x1b[HTrellis demo: ride-hailing on a local mesh   {elapsed:.0}s   (Ctrl-C to stop)\n\n"
            );
            frame.push_str(&view::table(&rows, false));
            frame.push('\n');
            for line in events.last(12) {
                frame.push_str(&line);
                frame.push('\n');
            }
            print!("{frame}");
        } else {
            println!("{}", view::line(elapsed, &rows));
        }
        prev = cur;
    }
}

fn finish_report(
    report: &mut Report,
    wanted: &[Scenario],
    first: &Sample,
    last: &Sample,
    traffic: &traffic::Traffic,
    procs: &procs::Procs,
    start: Instant,
) {
    report.duration_seconds = start.elapsed().as_secs_f64();
    for s in wanted {
        let done = match s {
            Scenario::Canary => report.canary.is_some(),
            Scenario::Cascade => report.cascade.is_some(),
            Scenario::Outage => report.outage.is_some(),
            Scenario::Deny => report.deny.is_some(),
            Scenario::All => true,
        };
        if !done {
            report.skipped.push(format!("{s:?}").to_lowercase());
        }
    }
    report.services = view::rows(first, last)
        .into_iter()
        .map(|r| ServiceFigures {
            service: r.service.to_string(),
            requests: r.requests as u64,
            success_percent: r.success,
            p50_ms: r.p50,
            p99_ms: r.p99,
        })
        .collect();
    let c = traffic.snapshot();
    report.clients = Clients {
        sent: c.sent,
        ok: c.ok,
        by_status: c.by_status,
    };
    report.processes = procs
        .started
        .iter()
        .map(|(name, pid)| Process {
            name: name.clone(),
            pid: *pid,
        })
        .collect();
}
