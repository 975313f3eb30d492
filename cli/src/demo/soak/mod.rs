//! `trellis __soak`: the demo's mesh under chaos for a while, as `bench/soak` runs it
//! (docs/reliability.md). Traffic goes through the gateway at a fixed rate while config
//! pushes, instance kills, control-plane restarts, certificate rotations and a slow billing
//! come on a fixed schedule (`chaos.rs`); every answer is judged expected or not, and every
//! process is sampled for memory, descriptors and tasks (`judge.rs` reads the figures).

mod chaos;
mod context;
mod judge;
mod load;

pub use context::SoakArgs;

use super::client::Http;
use super::procs::Procs;
use super::topology::Topology;
use anyhow::Context;
use context::Soak;
use std::fmt::Write as _;
use std::path::Path;
use std::process::ExitCode;
use std::sync::Arc;

pub fn run(args: &SoakArgs) -> anyhow::Result<ExitCode> {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    rt.block_on(soak(args))
}

async fn soak(args: &SoakArgs) -> anyhow::Result<ExitCode> {
    std::fs::create_dir_all(&args.out)
        .with_context(|| format!("cannot create {}", args.out.display()))?;
    let dir = tempfile::Builder::new().prefix("trellis-soak-").tempdir()?;
    let mut topo = Topology::plan(dir.path(), None)?;
    topo.cert_ttl = chaos::CERT_TTL;
    topo.access_log = false;
    let topo = Arc::new(topo);
    let mut procs = Procs::new(dir.path())?;
    let http = Http::new();
    println!(
        "soak: starting the demo's mesh ({} instances, the gateway and the control plane; logs in {})",
        topo.instances.len(),
        procs.log_dir().display()
    );
    topo.start(&mut procs)?;
    if let Err(e) = topo.wait_ready(&http, &mut procs).await {
        procs.stop_all().await;
        let logs = dir.keep();
        return Err(e.context(format!(
            "the mesh did not start; logs in {}",
            logs.display()
        )));
    }
    let s = Arc::new(Soak::new(http, topo, procs, args.settle));
    s.event(format!(
        "traffic: {} requests/s through the gateway for {}s, with chaos (docs/reliability.md)",
        args.rps,
        args.duration.as_secs()
    ));
    let load = load::Load::default();
    let traffic = tokio::spawn(load.clone().run(s.clone(), args.rps));
    let chaos = tokio::spawn(chaos::run(s.clone()));
    let samples = Arc::new(std::sync::Mutex::new(Vec::new()));
    let sampler = tokio::spawn(judge::sample_every(s.clone(), samples.clone()));
    tokio::select! {
        _ = tokio::time::sleep(args.duration) => {}
        _ = tokio::signal::ctrl_c() => s.event("Ctrl-C: stopping early"),
    }
    traffic.abort();
    chaos.abort();
    sampler.abort();
    // Answers still on their way are counted when they land, up to the client's timeout.
    tokio::time::sleep(load::TIMEOUT).await;
    chaos::heal(&s).await;
    s.procs.lock().await.stop_all().await;

    let samples = std::mem::take(&mut *samples.lock().unwrap_or_else(|e| e.into_inner()));
    let events = s.take_events();
    let report = judge::Report::build(args, &s, &load, &samples);
    write_files(&args.out, &report, &samples, &events, &load)?;
    let text = report.text();
    print!("\n{text}");
    std::fs::write(args.out.join("summary.txt"), &text)?;
    println!("figures in {}", args.out.display());
    Ok(if report.unexpected > args.max_unexpected {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    })
}

fn write_files(
    out: &Path,
    report: &judge::Report,
    samples: &[judge::ProcSample],
    events: &[(f64, String)],
    load: &load::Load,
) -> anyhow::Result<()> {
    let mut csv = String::from("t,process,pid,rss_kib,fds,threads,tasks\n");
    for p in samples {
        let tasks = p.tasks.map(|t| t.to_string()).unwrap_or_default();
        let _ = writeln!(
            csv,
            "{:.1},{},{},{},{},{},{tasks}",
            p.t, p.name, p.pid, p.rss_kib, p.fds, p.threads
        );
    }
    std::fs::write(out.join("processes.csv"), csv)?;
    let mut csv = String::from("t,sent,ok,expected,unexpected,p50_ms,p99_ms\n");
    for b in &report.buckets {
        let _ = writeln!(
            csv,
            "{},{},{},{},{},{:.2},{:.2}",
            b.t, b.sent, b.ok, b.expected, b.unexpected, b.p50_ms, b.p99_ms
        );
    }
    std::fs::write(out.join("requests.csv"), csv)?;
    let mut csv = String::from("t,event\n");
    for (t, e) in events {
        let _ = writeln!(csv, "{t:.1},\"{}\"", e.replace('"', "'"));
    }
    std::fs::write(out.join("events.csv"), csv)?;
    let mut csv = String::from("t,path,status,trellis_error,failed_call,expected\n");
    for f in load.failures() {
        let _ = writeln!(
            csv,
            "{:.3},{},{},{},{},{}",
            f.t,
            f.path,
            f.status,
            f.trellis_error.as_deref().unwrap_or(""),
            f.failed_call.as_deref().unwrap_or(""),
            f.expected
        );
    }
    std::fs::write(out.join("failures.csv"), csv)?;
    std::fs::write(
        out.join("summary.json"),
        serde_json::to_string_pretty(report)? + "\n",
    )?;
    Ok(())
}
