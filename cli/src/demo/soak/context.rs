//! What every part of the soak shares: its flags, the mesh and its processes, the clock,
//! the fault windows that decide which failures are expected, and the tally of the chaos.
//! The parts (`chaos.rs`, `load.rs`, `judge.rs`) read this, never `mod.rs`, so that no module
//! and its parent use each other (`.ci/module-cycles`).

use crate::demo::client::Http;
use crate::demo::procs::Procs;
use crate::demo::topology::Topology;
use clap::Args;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::AtomicU64;
use std::time::{Duration, Instant};

#[derive(Debug, Args)]
pub struct SoakArgs {
    /// How long the chaos and the traffic last, e.g. 30m, or 2m for CI.
    #[arg(long, default_value = "30m", value_parser = trellis_config::duration::parse)]
    pub duration: Duration,
    /// Requests per second through the gateway.
    #[arg(long, default_value_t = 1000)]
    pub rps: u32,
    /// The start-up time the growth check leaves out (memory and descriptors settle first).
    #[arg(long, default_value = "5m", value_parser = trellis_config::duration::parse)]
    pub warmup: Duration,
    /// How long after a fault ends its Service's proxy-generated answers still count as
    /// expected.
    #[arg(long, default_value = "10s", value_parser = trellis_config::duration::parse)]
    pub settle: Duration,
    /// Where the figures go: CSV files, summary.json and summary.txt.
    #[arg(long)]
    pub out: PathBuf,
    /// Exit with 1 when more unexpected failures than this were seen.
    #[arg(long, default_value_t = 0)]
    pub max_unexpected: u64,
}

/// What every part of the soak shares.
pub struct Soak {
    pub http: Http,
    pub topo: Arc<Topology>,
    pub procs: tokio::sync::Mutex<Procs>,
    pub start: Instant,
    pub windows: Windows,
    pub tally: Tally,
    events: Mutex<Vec<(f64, String)>>,
}

impl Soak {
    /// The shared state of a soak whose traffic starts now.
    pub fn new(http: Http, topo: Arc<Topology>, procs: Procs, settle: Duration) -> Soak {
        Soak {
            http,
            topo,
            procs: tokio::sync::Mutex::new(procs),
            start: Instant::now(),
            windows: Windows::new(settle),
            tally: Tally::default(),
            events: Mutex::default(),
        }
    }

    /// Every event so far, taken out for events.csv.
    pub fn take_events(&self) -> Vec<(f64, String)> {
        std::mem::take(&mut *self.events.lock().unwrap_or_else(|e| e.into_inner()))
    }

    /// Seconds since the traffic started.
    pub fn now(&self) -> f64 {
        self.start.elapsed().as_secs_f64()
    }

    /// Notes an event with its time, printed at once and kept for events.csv.
    pub fn event(&self, what: impl Into<String>) {
        let (t, what) = (self.now(), what.into());
        println!("[{t:7.1}s] {what}");
        self.events
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push((t, what));
    }
}

/// When each Service was faulted: `(service, from, to)`, seconds since the start, `to` open
/// while the fault lasts.
pub struct Windows {
    settle: f64,
    open: Mutex<Vec<(&'static str, f64, Option<f64>)>>,
}

impl Windows {
    pub fn new(settle: Duration) -> Windows {
        Windows {
            settle: settle.as_secs_f64(),
            open: Mutex::default(),
        }
    }

    pub fn begin(&self, service: &'static str, t: f64) -> usize {
        let mut w = self.open.lock().unwrap_or_else(|e| e.into_inner());
        w.push((service, t, None));
        w.len() - 1
    }

    pub fn end(&self, i: usize, t: f64) {
        let mut w = self.open.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(w) = w.get_mut(i) {
            w.2 = Some(t);
        }
    }

    /// Whether `service` was faulted at `t`, or had been until less than the settling time
    /// before it.
    pub fn faulted(&self, service: &str, t: f64) -> bool {
        let w = self.open.lock().unwrap_or_else(|e| e.into_inner());
        w.iter().any(|(s, from, to)| {
            *s == service && *from <= t && to.is_none_or(|to| t <= to + self.settle)
        })
    }

    /// Every window, for the report.
    pub fn all(&self) -> Vec<(&'static str, f64, Option<f64>)> {
        self.open.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }
}

/// How much chaos there was.
#[derive(Default, serde::Serialize)]
pub struct Tally {
    pub pushes: AtomicU64,
    pub pushes_failed: AtomicU64,
    pub kills: AtomicU64,
    pub control_plane_restarts: AtomicU64,
    pub slowdowns: AtomicU64,
}
