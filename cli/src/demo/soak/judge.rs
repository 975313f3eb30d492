//! What the soak measures of its processes, and its verdicts: failures expected or not,
//! the p99 over time, and whether memory, descriptors and tasks stay flat.
//!
//! **Flat** (the rule): after the warm-up, a process's RSS grows by less than 1 MiB
//! and its open descriptors by fewer than 10 per 10 minutes. The growth is the least-squares
//! slope of its samples after the warm-up, so one late spike does not decide it. A process
//! that lived less than `MIN_JUDGED` after the warm-up (a restarted control plane or
//! instance) is listed, not judged: the check needs a long life to see a slope.

use super::context::{Soak, SoakArgs};
use super::load::{self, Bucket};
use crate::demo::metrics::sample;
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// How often every process is sampled.
const EVERY: Duration = Duration::from_secs(5);
/// The shortest life after the warm-up that the growth check judges.
const MIN_JUDGED: f64 = 240.0;
/// The growth allowed per 10 minutes.
const RSS_MIB_PER_10MIN: f64 = 1.0;
const FDS_PER_10MIN: f64 = 10.0;

/// One process at one moment.
#[derive(Clone, Debug)]
pub struct ProcSample {
    pub t: f64,
    pub name: String,
    pub pid: u32,
    pub rss_kib: u64,
    pub fds: u64,
    pub threads: u64,
    /// The async runtime's live tasks, from the process's `/metrics` (proxies and the control
    /// plane; the demo apps have none).
    pub tasks: Option<u64>,
    /// `trellis_identity_certificate_renewals_total{result="issued"}` (proxies; the first certificate counts too).
    pub renewals: Option<u64>,
}

/// Samples every running child every 5 s until dropped.
pub async fn sample_every(s: Arc<Soak>, out: Arc<Mutex<Vec<ProcSample>>>) {
    let mut tick = tokio::time::interval(EVERY);
    loop {
        tick.tick().await;
        let pids = s.procs.lock().await.pids();
        for (name, pid) in pids {
            let Some((rss_kib, threads, fds)) = read_proc(pid) else {
                continue;
            };
            let (tasks, renewals) = match metrics_addr(&s, &name) {
                Some((addr, tasks_metric)) => {
                    let text = s.http.get(addr, "/metrics").await.ok().map(|a| a.body);
                    let text = text.as_deref().unwrap_or("");
                    (
                        gauge(text, tasks_metric, &[]),
                        gauge(
                            text,
                            "trellis_identity_certificate_renewals_total",
                            &[("result", "issued")],
                        ),
                    )
                }
                None => (None, None),
            };
            let sample = ProcSample {
                t: s.now(),
                name,
                pid,
                rss_kib,
                fds,
                threads,
                tasks,
                renewals,
            };
            out.lock().unwrap_or_else(|e| e.into_inner()).push(sample);
        }
    }
}

/// Where a child serves `/metrics`, and the name of its task gauge there.
fn metrics_addr(s: &Soak, name: &str) -> Option<(std::net::SocketAddr, &'static str)> {
    match name {
        "control-plane" => Some((s.topo.cp_http, "trellis_control_runtime_tasks")),
        "ride-gateway" => Some((s.topo.gateway_admin, "trellis_runtime_tasks")),
        _ => {
            let instance = name.strip_suffix(".sidecar")?;
            Some((s.topo.instance(instance).admin, "trellis_runtime_tasks"))
        }
    }
}

/// `(VmRSS in KiB, threads, open descriptors)` of `pid`, from /proc.
fn read_proc(pid: u32) -> Option<(u64, u64, u64)> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let field = |name: &str| {
        let line = status.lines().find(|l| l.starts_with(name))?;
        line[name.len()..].split_whitespace().next()?.parse().ok()
    };
    let fds = std::fs::read_dir(format!("/proc/{pid}/fd")).ok()?.count() as u64;
    Some((field("VmRSS:")?, field("Threads:")?, fds))
}

/// The value of the series `name` with exactly `labels`, in Prometheus text (read with the
/// live view's parser, `metrics::sample`).
fn gauge(text: &str, name: &str, labels: &[(&str, &str)]) -> Option<u64> {
    text.lines()
        .filter_map(sample)
        .find(|(n, l, _)| *n == name && l.as_slice() == labels)
        .map(|(_, _, v)| v as u64)
}

/// The least-squares slope of `(x, y)`, in y per unit of x; 0 for fewer than two x values.
fn slope(points: &[(f64, f64)]) -> f64 {
    let n = points.len() as f64;
    if points.len() < 2 {
        return 0.0;
    }
    let (mx, my) = points
        .iter()
        .fold((0.0, 0.0), |(a, b), (x, y)| (a + x / n, b + y / n));
    let (num, den) = points.iter().fold((0.0, 0.0), |(num, den), (x, y)| {
        (num + (x - mx) * (y - my), den + (x - mx) * (x - mx))
    });
    if den == 0.0 { 0.0 } else { num / den }
}

/// Whether `ys` never went down and ended more than `floor` above where it started: the
/// shape of a leak, whatever its size.
fn only_grows(ys: &[f64], floor: f64) -> bool {
    ys.len() >= 3
        && ys.windows(2).all(|w| w[1] >= w[0])
        && ys.last().unwrap_or(&0.0) - ys.first().unwrap_or(&0.0) > floor
}

/// The verdict on one process (one life of it: a restart is a new pid).
#[derive(Debug, serde::Serialize)]
pub struct ProcVerdict {
    pub name: String,
    pub pid: u32,
    /// Seconds it was sampled for, in all and after the warm-up.
    pub lived_s: f64,
    pub after_warmup_s: f64,
    pub rss_first_mib: f64,
    pub rss_last_mib: f64,
    pub rss_max_mib: f64,
    pub fds_first: u64,
    pub fds_last: u64,
    pub fds_max: u64,
    pub tasks_first: Option<u64>,
    pub tasks_last: Option<u64>,
    pub tasks_max: Option<u64>,
    pub threads_max: u64,
    /// Growth per 10 minutes after the warm-up (least squares); `None` when not judged.
    pub rss_mib_per_10min: Option<f64>,
    pub fds_per_10min: Option<f64>,
    pub tasks_per_10min: Option<f64>,
    /// `None`: lived too short after the warm-up to judge.
    pub flat: Option<bool>,
    /// Figures that rose at every sample after the warm-up.
    pub only_grows: Vec<&'static str>,
}

impl ProcVerdict {
    fn of(name: &str, pid: u32, all: &[&ProcSample], warmup: f64) -> ProcVerdict {
        let after: Vec<&&ProcSample> = all.iter().filter(|p| p.t >= warmup).collect();
        let span = |v: &[&&ProcSample]| match (v.first(), v.last()) {
            (Some(a), Some(b)) => b.t - a.t,
            _ => 0.0,
        };
        let after_warmup_s = span(&after);
        let judged = after_warmup_s >= MIN_JUDGED;
        let per_10min = |f: &dyn Fn(&ProcSample) -> Option<f64>| {
            let pts: Vec<(f64, f64)> = after.iter().filter_map(|p| Some((p.t, f(p)?))).collect();
            (judged && pts.len() >= 2).then(|| slope(&pts) * 600.0)
        };
        let mib = |p: &ProcSample| Some(p.rss_kib as f64 / 1024.0);
        let fds = |p: &ProcSample| Some(p.fds as f64);
        let tasks = |p: &ProcSample| p.tasks.map(|t| t as f64);
        let rss_mib_per_10min = per_10min(&mib);
        let fds_per_10min = per_10min(&fds);
        let mut grows = Vec::new();
        if judged {
            let series = |f: &dyn Fn(&ProcSample) -> Option<f64>| -> Vec<f64> {
                after.iter().filter_map(|p| f(p)).collect()
            };
            let threads = |p: &ProcSample| Some(p.threads as f64);
            for (what, ys, floor) in [
                ("rss", series(&mib), 0.25),
                ("fds", series(&fds), 2.0),
                ("tasks", series(&tasks), 2.0),
                ("threads", series(&threads), 0.0),
            ] {
                if only_grows(&ys, floor) {
                    grows.push(what);
                }
            }
        }
        let (first, last) = (all.first(), all.last());
        ProcVerdict {
            name: name.to_string(),
            pid,
            lived_s: span(&all.iter().collect::<Vec<_>>()),
            after_warmup_s,
            rss_first_mib: first.map_or(0.0, |p| p.rss_kib as f64 / 1024.0),
            rss_last_mib: last.map_or(0.0, |p| p.rss_kib as f64 / 1024.0),
            rss_max_mib: all.iter().map(|p| p.rss_kib).max().unwrap_or(0) as f64 / 1024.0,
            fds_first: first.map_or(0, |p| p.fds),
            fds_last: last.map_or(0, |p| p.fds),
            fds_max: all.iter().map(|p| p.fds).max().unwrap_or(0),
            tasks_first: first.and_then(|p| p.tasks),
            tasks_last: last.and_then(|p| p.tasks),
            tasks_max: all.iter().filter_map(|p| p.tasks).max(),
            threads_max: all.iter().map(|p| p.threads).max().unwrap_or(0),
            flat: match (rss_mib_per_10min, fds_per_10min) {
                (Some(r), Some(f)) => Some(r < RSS_MIB_PER_10MIN && f < FDS_PER_10MIN),
                _ => None,
            },
            rss_mib_per_10min,
            fds_per_10min,
            tasks_per_10min: per_10min(&tasks),
            only_grows: grows,
        }
    }
}

/// One row of requests.csv.
#[derive(Debug, serde::Serialize)]
pub struct BucketRow {
    /// Start of the row's 10 s, in seconds since the start.
    pub t: u64,
    pub sent: u64,
    pub ok: u64,
    pub expected: u64,
    pub unexpected: u64,
    pub p50_ms: f64,
    pub p99_ms: f64,
}

/// The nearest-rank `q` quantile of sorted `v`, in milliseconds.
fn quantile_ms(sorted_us: &[u32], q: f64) -> f64 {
    if sorted_us.is_empty() {
        return 0.0;
    }
    let rank = ((q * sorted_us.len() as f64).ceil() as usize).clamp(1, sorted_us.len());
    f64::from(sorted_us[rank - 1]) / 1000.0
}

#[derive(Debug, serde::Serialize)]
pub struct Report {
    pub duration_s: f64,
    pub rps: u32,
    pub warmup_s: f64,
    pub settle_s: f64,
    pub sent: u64,
    pub ok: u64,
    pub expected: u64,
    pub unexpected: u64,
    /// Failures by `expected|unexpected status trellis-error failed-call`.
    pub failures_by_cause: BTreeMap<String, u64>,
    pub p99_ms_whole_run: f64,
    pub pushes: u64,
    pub pushes_failed: u64,
    pub kills: u64,
    pub control_plane_restarts: u64,
    pub slowdowns: u64,
    /// Certificate renewals the proxies counted (each proxy's last sample less its first).
    pub certificate_renewals: u64,
    /// `(service, from, to)` of every fault window, in seconds.
    pub fault_windows: Vec<(String, f64, Option<f64>)>,
    pub processes: Vec<ProcVerdict>,
    /// Every judged process is flat.
    pub flat: bool,
    pub buckets: Vec<BucketRow>,
}

impl Report {
    pub fn build(args: &SoakArgs, s: &Soak, load: &load::Load, samples: &[ProcSample]) -> Report {
        use std::sync::atomic::Ordering::Relaxed;
        let mut all_us = Vec::new();
        let buckets: Vec<BucketRow> = (load.take_buckets().into_iter().enumerate())
            .map(|(i, mut b): (usize, Bucket)| {
                b.latencies_us.sort_unstable();
                all_us.extend_from_slice(&b.latencies_us);
                BucketRow {
                    t: (i as f64 * load::BUCKET_SECS) as u64,
                    sent: b.sent,
                    ok: b.ok,
                    expected: b.expected,
                    unexpected: b.unexpected,
                    p50_ms: quantile_ms(&b.latencies_us, 0.50),
                    p99_ms: quantile_ms(&b.latencies_us, 0.99),
                }
            })
            .collect();
        all_us.sort_unstable();
        let mut failures_by_cause = BTreeMap::new();
        for f in load.failures() {
            let key = format!(
                "{} {} {} {}",
                if f.expected { "expected" } else { "unexpected" },
                f.status,
                f.trellis_error.as_deref().unwrap_or("-"),
                f.failed_call.as_deref().unwrap_or("-")
            );
            *failures_by_cause.entry(key).or_insert(0) += 1;
        }
        let mut lives: BTreeMap<(String, u32), Vec<&ProcSample>> = BTreeMap::new();
        for p in samples {
            lives.entry((p.name.clone(), p.pid)).or_default().push(p);
        }
        let warmup = args.warmup.as_secs_f64();
        let processes: Vec<ProcVerdict> = lives
            .iter()
            .map(|((name, pid), v)| ProcVerdict::of(name, *pid, v, warmup))
            .collect();
        let certificate_renewals = lives
            .values()
            .filter_map(|v| {
                let first = v.iter().find_map(|p| p.renewals)?;
                let last = v.iter().rev().find_map(|p| p.renewals)?;
                Some(last.saturating_sub(first))
            })
            .sum();
        let sum = |f: fn(&BucketRow) -> u64| buckets.iter().map(f).sum();
        Report {
            duration_s: args.duration.as_secs_f64(),
            rps: args.rps,
            warmup_s: warmup,
            settle_s: args.settle.as_secs_f64(),
            sent: sum(|b| b.sent),
            ok: sum(|b| b.ok),
            expected: sum(|b| b.expected),
            unexpected: sum(|b| b.unexpected),
            failures_by_cause,
            p99_ms_whole_run: quantile_ms(&all_us, 0.99),
            pushes: s.tally.pushes.load(Relaxed),
            pushes_failed: s.tally.pushes_failed.load(Relaxed),
            kills: s.tally.kills.load(Relaxed),
            control_plane_restarts: s.tally.control_plane_restarts.load(Relaxed),
            slowdowns: s.tally.slowdowns.load(Relaxed),
            certificate_renewals,
            fault_windows: (s.windows.all().into_iter())
                .map(|(s, a, b)| (s.to_string(), a, b))
                .collect(),
            flat: processes.iter().all(|p| p.flat != Some(false)),
            processes,
            buckets,
        }
    }

    /// The summary as text: the totals, the chaos, and one line per process life.
    pub fn text(&self) -> String {
        use std::fmt::Write;
        let mut t = String::new();
        let _ = writeln!(
            t,
            "== soak: {:.0}s at {} requests/s (sent {}, {:.0}/s) ==",
            self.duration_s,
            self.rps,
            self.sent,
            self.sent as f64 / self.duration_s.max(1.0)
        );
        let _ = writeln!(
            t,
            "answers: {} ok, {} expected failures, {} unexpected failures; p99 {:.1} ms over the run",
            self.ok, self.expected, self.unexpected, self.p99_ms_whole_run
        );
        for (cause, n) in &self.failures_by_cause {
            let _ = writeln!(t, "  {n:>7}  {cause}");
        }
        let _ = writeln!(
            t,
            "chaos: {} pushes ({} failed), {} kills of driver-2, {} control-plane restarts, {} billing slowdowns, {} certificate renewals",
            self.pushes,
            self.pushes_failed,
            self.kills,
            self.control_plane_restarts,
            self.slowdowns,
            self.certificate_renewals
        );
        let _ = writeln!(
            t,
            "processes (growth per 10 min after the {:.0}s warm-up; flat: < {RSS_MIB_PER_10MIN} MiB and < {FDS_PER_10MIN} descriptors):",
            self.warmup_s
        );
        let _ = writeln!(
            t,
            "  {:<22} {:>7} {:>8} {:>9} {:>9} {:>10} {:>6} {:>9} {:>7} {:>9}  verdict",
            "process",
            "pid",
            "lived s",
            "rss MiB",
            "max MiB",
            "MiB/10min",
            "fds",
            "fds/10min",
            "tasks",
            "tasks max"
        );
        let mut lives: BTreeMap<&str, Vec<&ProcVerdict>> = BTreeMap::new();
        for p in &self.processes {
            lives.entry(&p.name).or_default().push(p);
        }
        let num = |v: Option<f64>| v.map_or("-".to_string(), |v| format!("{v:+.2}"));
        let opt = |v: Option<u64>| v.map_or("-".to_string(), |v| v.to_string());
        for (name, ps) in lives {
            if let [p] = ps[..] {
                let verdict = match p.flat {
                    Some(true) => "flat",
                    Some(false) => "GROWS",
                    None => "not judged (short life)",
                };
                let grows = match p.only_grows.as_slice() {
                    [] => String::new(),
                    g => format!("; only grows: {}", g.join(", ")),
                };
                let _ = writeln!(
                    t,
                    "  {name:<22} {:>7} {:>8.0} {:>9.1} {:>9.1} {:>10} {:>6} {:>9} {:>7} {:>9}  {verdict}{grows}",
                    p.pid,
                    p.lived_s,
                    p.rss_last_mib,
                    p.rss_max_mib,
                    num(p.rss_mib_per_10min),
                    p.fds_last,
                    num(p.fds_per_10min),
                    opt(p.tasks_last),
                    opt(p.tasks_max),
                );
                continue;
            }
            // A process restarted by the chaos: one line for all its lives, with the range
            // of each life's peak, so that a trend across lives shows.
            let range = |f: &dyn Fn(&ProcVerdict) -> f64| {
                let v: Vec<f64> = ps.iter().map(|p| f(p)).collect();
                let lo = v.iter().copied().fold(f64::INFINITY, f64::min);
                let hi = v.iter().copied().fold(f64::NEG_INFINITY, f64::max);
                (
                    lo,
                    hi,
                    v.first().copied().unwrap_or(0.0),
                    v.last().copied().unwrap_or(0.0),
                )
            };
            let (rlo, rhi, rfirst, rlast) = range(&|p| p.rss_max_mib);
            let (flo, fhi, ..) = range(&|p| p.fds_max as f64);
            let tasks = if ps.iter().any(|p| p.tasks_max.is_some()) {
                let (tlo, thi, ..) = range(&|p| p.tasks_max.unwrap_or(0) as f64);
                format!(", peak tasks {tlo:.0}-{thi:.0}")
            } else {
                String::new()
            };
            let _ = writeln!(
                t,
                "  {name:<22} {} lives: peak RSS {rlo:.1}-{rhi:.1} MiB (first life {rfirst:.1}, last {rlast:.1}), peak fds {flo:.0}-{fhi:.0}{tasks}; not judged (short lives)",
                ps.len()
            );
        }
        let _ = writeln!(
            t,
            "verdict: {} unexpected failures; memory and descriptors {}",
            self.unexpected,
            if self.flat { "flat" } else { "GROW" }
        );
        t
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slope_of_a_line_and_of_noise() {
        let line: Vec<(f64, f64)> = (0..10).map(|i| (i as f64, 3.0 * i as f64 + 1.0)).collect();
        assert!((slope(&line) - 3.0).abs() < 1e-9);
        let flat: Vec<(f64, f64)> = (0..10)
            .map(|i| (i as f64, if i % 2 == 0 { 5.0 } else { 6.0 }))
            .collect();
        assert!(slope(&flat).abs() < 0.1);
        assert_eq!(slope(&[(1.0, 2.0)]), 0.0);
    }

    #[test]
    fn only_grows_needs_every_step_up_and_more_than_the_floor() {
        assert!(only_grows(&[1.0, 1.0, 2.0, 5.0], 2.0));
        assert!(!only_grows(&[1.0, 3.0, 2.0, 5.0], 2.0), "it went down once");
        assert!(!only_grows(&[1.0, 1.0, 1.5], 2.0), "under the floor");
    }

    fn sample(t: f64, rss_mib: f64, fds: u64) -> ProcSample {
        ProcSample {
            t,
            name: "trip-0.sidecar".into(),
            pid: 7,
            rss_kib: (rss_mib * 1024.0) as u64,
            fds,
            threads: 3,
            tasks: Some(10),
            renewals: None,
        }
    }

    #[test]
    fn a_process_that_leaks_two_descriptors_a_minute_is_not_flat() {
        let leaking: Vec<ProcSample> = (0..120)
            .map(|i| sample(i as f64 * 5.0, 20.0, 10 + i / 6))
            .collect();
        let v = ProcVerdict::of("p", 7, &leaking.iter().collect::<Vec<_>>(), 60.0);
        assert_eq!(v.flat, Some(false), "{v:?}");
        assert!(v.only_grows.contains(&"fds"), "{v:?}");
        let steady: Vec<ProcSample> = (0..120)
            .map(|i| sample(i as f64 * 5.0, 20.0 + (i % 3) as f64 * 0.1, 10))
            .collect();
        let v = ProcVerdict::of("p", 7, &steady.iter().collect::<Vec<_>>(), 60.0);
        assert_eq!(v.flat, Some(true), "{v:?}");
        let short: Vec<ProcSample> = (0..20).map(|i| sample(i as f64 * 5.0, 20.0, 10)).collect();
        let v = ProcVerdict::of("p", 7, &short.iter().collect::<Vec<_>>(), 60.0);
        assert_eq!(v.flat, None, "too short to judge");
    }

    #[test]
    fn quantiles_are_nearest_rank() {
        let v: Vec<u32> = (1..=100).map(|i| i * 1000).collect();
        assert_eq!(quantile_ms(&v, 0.99), 99.0);
        assert_eq!(quantile_ms(&v, 0.50), 50.0);
        assert_eq!(quantile_ms(&[], 0.99), 0.0);
    }

    #[test]
    fn gauge_reads_the_exact_series() {
        let text = "trellis_runtime_tasks 41\ntrellis_runtime_tasks_other 9\nx{result=\"ok\"} 3\n";
        assert_eq!(gauge(text, "trellis_runtime_tasks", &[]), Some(41));
        assert_eq!(gauge(text, "x", &[("result", "ok")]), Some(3));
        assert_eq!(gauge(text, "x", &[]), None, "the labels must match too");
        assert_eq!(gauge(text, "missing", &[]), None);
    }
}
