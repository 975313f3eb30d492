//! The golden metrics of the proxies connected to this control plane, without Prometheus:
//! each proxy's `Summary` (cumulative counts, sent on its discovery stream) becomes the
//! difference from its previous one, added to a short window (`window.rs`); its cluster
//! health and certificate expiry are kept as they last were. The dashboard and `trellis
//! stat` read it through `stat`. docs/dashboard.md.
//!
//! With several replicas each holds its own proxies' summaries; a reader merges the
//! replicas' `StatResponse`s by summing the counts of equal edges (`merge`), which is exact
//! since every count, latency buckets included, adds.

pub mod peers;
pub mod window;

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use trellis_proto::v1::{ClusterHealth, EdgeStat, ErrorStat, ProxyHealth, StatResponse, Summary};
use window::{Counts, EdgeKey, LATENCY_BUCKETS, RESOLUTION_SECS, Window, slot_of};

/// How often proxies are asked for a Summary, unless `Options::summary_interval` says.
pub const INTERVAL: Duration = crate::options::SUMMARY_INTERVAL;

/// What one proxy may make this control plane hold, whatever it sends: a stream needs no
/// proof of identity to send a Summary, so these bound what a hostile one can cost. A real
/// proxy has one traffic key per route backend it calls and per caller identity, one error
/// key per Service and code, and reports only its clusters in trouble.
pub const MAX_TRAFFIC_KEYS: usize = 2048;
pub const MAX_ERROR_KEYS: usize = 512;
pub const MAX_CLUSTERS: usize = 512;
pub const MAX_EJECTED: usize = 64;
/// The longest name taken (a Service, route, cluster, identity or code); longer ones are
/// dropped with their entry.
pub const MAX_NAME: usize = 512;

/// A proxy not heard from for the window's length is forgotten.
const FORGET_AFTER_SECS: u64 = window::SLOTS as u64 * RESOLUTION_SECS;

/// A proxy: namespace and workload.
pub type ProxyKey = (String, String);

/// One proxy's traffic counts key: direction, destination, route, backend, caller.
type TrafficKey = (bool, Arc<str>, Arc<str>, Arc<str>, Arc<str>);

/// What one proxy last said.
#[derive(Default)]
struct ProxyState {
    started_unix_ms: i64,
    /// Its cumulative counts in its last Summary: the base of the next difference.
    traffic: HashMap<TrafficKey, Counts>,
    errors: HashMap<(Arc<str>, Arc<str>), u64>,
    services: Vec<String>,
    clusters: Vec<ClusterHealth>,
    certificate_expiry_unix: i64,
    last_unix: u64,
}

#[derive(Default)]
struct Inner {
    window: Window,
    proxies: HashMap<ProxyKey, ProxyState>,
    /// Names interned, so that the window's many copies of one edge share their strings.
    names: HashMap<Arc<str>, ()>,
    last_forget: u64,
}

pub struct Golden {
    inner: Mutex<Inner>,
    /// How often proxies send a Summary.
    pub interval: Duration,
    /// When this control plane started: the window covers nothing before it.
    started: Duration,
    /// This replica's id, made at start, by which it knows its own `/golden` among its peers'.
    pub replica: String,
    /// Summary entries refused by the per-proxy limits
    /// (`trellis_control_summary_entries_refused_total`).
    pub refused: prometheus_client::metrics::counter::Counter,
}

impl Default for Golden {
    fn default() -> Golden {
        Golden::new(INTERVAL, Duration::ZERO)
    }
}

pub fn unix_now() -> Duration {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
}

impl Inner {
    fn intern(&mut self, s: &str) -> Arc<str> {
        if let Some((k, _)) = self.names.get_key_value(s) {
            return k.clone();
        }
        let k: Arc<str> = s.into();
        self.names.insert(k.clone(), ());
        k
    }

    /// Forgets the proxies not heard from in the window's length, and the names only they
    /// used, once a minute.
    fn forget(&mut self, now: u64) {
        if now < self.last_forget + 60 {
            return;
        }
        self.last_forget = now;
        (self.proxies).retain(|_, p| p.last_unix + FORGET_AFTER_SECS > now);
        // A name is in use while anything but this table holds it.
        self.names.retain(|k, _| Arc::strong_count(k) > 1);
    }
}

fn counts(latency: &[u64], requests: u64, successes: u64, mtls: u64) -> Counts {
    let mut c = Counts {
        requests,
        successes,
        mtls,
        latency: [0; LATENCY_BUCKETS],
    };
    for (a, b) in c.latency.iter_mut().zip(latency) {
        *a = *b;
    }
    c
}

impl Golden {
    pub fn new(interval: Duration, started: Duration) -> Golden {
        let replica: [u8; 8] = rand::random();
        Golden {
            inner: Mutex::default(),
            interval,
            started,
            replica: replica.iter().map(|b| format!("{b:02x}")).collect(),
            refused: Default::default(),
        }
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Takes in `proxy`'s Summary, arrived at `now`. `services` are the Services that select
    /// the proxy ("name.namespace"); its calls count as the first one's, or as its workload's
    /// when none does.
    pub fn intake(&self, now: Duration, proxy: &ProxyKey, services: Vec<String>, s: Summary) {
        let now_secs = now.as_secs();
        let mut inner = self.lock();
        inner.forget(now_secs);
        let source = match services.first() {
            Some(s) => inner.intern(s),
            None => inner.intern(&format!("{}.{}", proxy.1, proxy.0)),
        };
        let mut state = inner.proxies.remove(proxy).unwrap_or_default();
        // Counts start from zero after a restart (a new start time), and for a proxy not
        // seen before that started within two intervals (a new proxy). A proxy seen for
        // the first time that started earlier (it moved here from another replica, or this
        // replica restarted) has its counts taken as the base: another replica, or this
        // one before its restart, counted what came before.
        let mut count_now = true;
        if state.started_unix_ms != s.started_unix_ms {
            let age_ms = now.as_millis() as i64 - s.started_unix_ms;
            let restart = state.started_unix_ms != 0;
            count_now = restart || age_ms <= 2 * self.interval.as_millis() as i64;
            state.traffic.clear();
            state.errors.clear();
            state.started_unix_ms = s.started_unix_ms;
        }
        let long = |s: &str| s.len() > MAX_NAME;
        for t in &s.traffic {
            let full = state.traffic.len() >= MAX_TRAFFIC_KEYS;
            if long(&t.destination) || long(&t.route) || long(&t.backend) || long(&t.caller) {
                self.refused.inc();
                continue;
            }
            let key: TrafficKey = (
                t.inbound,
                inner.intern(&t.destination),
                inner.intern(&t.route),
                inner.intern(&t.backend),
                inner.intern(&t.caller),
            );
            if full && !state.traffic.contains_key(&key) {
                self.refused.inc();
                continue;
            }
            let now_counts = counts(&t.latency, t.requests, t.successes, t.mtls);
            let base = state.traffic.get(&key).cloned().unwrap_or_default();
            if count_now {
                let edge = EdgeKey {
                    inbound: key.0,
                    source: if key.0 { key.4.clone() } else { source.clone() },
                    destination: key.1.clone(),
                    route: key.2.clone(),
                    backend: key.3.clone(),
                };
                inner.window.add(now_secs, &edge, &now_counts.since(&base));
            }
            state.traffic.insert(key, now_counts);
        }
        for e in &s.errors {
            let full = state.errors.len() >= MAX_ERROR_KEYS;
            if long(&e.destination) || long(&e.code) {
                self.refused.inc();
                continue;
            }
            let key = (inner.intern(&e.destination), inner.intern(&e.code));
            if full && !state.errors.contains_key(&key) {
                self.refused.inc();
                continue;
            }
            let base = state.errors.get(&key).copied().unwrap_or(0);
            if count_now {
                let n = if e.count < base {
                    e.count
                } else {
                    e.count - base
                };
                inner.window.add_errors(now_secs, &key.0, &key.1, n);
            }
            state.errors.insert(key, e.count);
        }
        state.services = services;
        let mut clusters = s.clusters;
        let before = clusters.len();
        clusters.retain(|c| !long(&c.service) && !long(&c.cluster) && !long(&c.breaker));
        clusters.truncate(MAX_CLUSTERS);
        for c in &mut clusters {
            c.ejected.truncate(MAX_EJECTED);
            c.ejected.retain(|a| !long(a));
        }
        self.refused.inc_by((before - clusters.len()) as u64);
        state.clusters = clusters;
        state.certificate_expiry_unix = s.certificate_expiry_unix;
        state.last_unix = now_secs;
        inner.proxies.insert(proxy.clone(), state);
    }

    /// The window's counts over the last `window` (whole slots, the current one included),
    /// and each proxy's health as it last said.
    pub fn stat(&self, now: Duration, window: Duration) -> StatResponse {
        let inner = self.lock();
        let slots = window
            .as_secs()
            .div_ceil(RESOLUTION_SECS)
            .clamp(1, window::SLOTS as u64);
        let since = slot_of(now.as_secs()).saturating_sub(slots - 1);
        let from = ((since * RESOLUTION_SECS) as f64).max(self.started.as_secs_f64());
        let covered = now.as_secs_f64() - from;
        let mut edges: Vec<EdgeStat> = (inner.window.edges(since).into_iter())
            .map(|(k, c)| EdgeStat {
                inbound: k.inbound,
                source: k.source.to_string(),
                destination: k.destination.to_string(),
                route: k.route.to_string(),
                backend: k.backend.to_string(),
                requests: c.requests,
                successes: c.successes,
                mtls: c.mtls,
                latency: c.latency.to_vec(),
            })
            .collect();
        edges.sort_by(|a, b| edge_key(a).cmp(&edge_key(b)));
        let mut errors: Vec<ErrorStat> = (inner.window.errors(since).into_iter())
            .map(|((d, c), n)| ErrorStat {
                destination: d.to_string(),
                code: c.to_string(),
                count: n,
            })
            .collect();
        errors.sort_by(|a, b| (&a.destination, &a.code).cmp(&(&b.destination, &b.code)));
        let mut proxies: Vec<ProxyHealth> = (inner.proxies.iter())
            .map(|((ns, w), p)| ProxyHealth {
                workload: w.clone(),
                namespace: ns.clone(),
                services: p.services.clone(),
                clusters: p.clusters.clone(),
                certificate_expiry_unix: p.certificate_expiry_unix,
                last_summary_unix: p.last_unix as i64,
            })
            .collect();
        proxies.sort_by(|a, b| (&a.namespace, &a.workload).cmp(&(&b.namespace, &b.workload)));
        StatResponse {
            window_seconds: (slots * RESOLUTION_SECS) as u32,
            covered_seconds: covered,
            edges,
            errors,
            proxies,
            dropped: inner.window.dropped,
            replicas: 1,
            unreachable: Vec::new(),
        }
    }

    /// The requests and successes per slot over the whole window of the edges `pick` picks.
    pub fn series(&self, now: Duration, pick: impl Fn(&EdgeKey) -> bool) -> Vec<(u64, u64)> {
        let since = slot_of(now.as_secs()).saturating_sub(window::SLOTS as u64 - 1);
        self.lock().window.series(since, now.as_secs(), pick)
    }

    /// What the window holds: its entries, the proxies' states and the names, for the
    /// memory figure (`trellis_control_summary_entries`).
    pub fn entries(&self) -> (usize, usize) {
        let inner = self.lock();
        let per_proxy: usize = (inner.proxies.values())
            .map(|p| p.traffic.len() + p.errors.len())
            .sum();
        (inner.window.entries(), per_proxy)
    }

    /// Summary entries refused by the per-proxy limits, since start.
    pub fn refused(&self) -> u64 {
        self.refused.get()
    }
}

fn edge_key(e: &EdgeStat) -> (bool, &str, &str, &str, &str) {
    (e.inbound, &e.source, &e.destination, &e.route, &e.backend)
}

/// The replicas' answers as one: equal edges and errors summed, every replica's proxies.
/// A proxy is connected to one replica at a time, so each edge's counts come from the
/// replicas its callers were connected to in the window, and summing them double-counts
/// nothing (a proxy that moved is counted by the first replica up to its move, and by the
/// second from its first Summary there).
pub fn merge(parts: Vec<StatResponse>) -> StatResponse {
    let mut out = StatResponse::default();
    let mut edges: HashMap<(bool, String, String, String, String), EdgeStat> = HashMap::new();
    let mut errors: HashMap<(String, String), u64> = HashMap::new();
    for p in parts {
        out.window_seconds = out.window_seconds.max(p.window_seconds);
        out.covered_seconds = out.covered_seconds.max(p.covered_seconds);
        out.dropped += p.dropped;
        out.replicas += p.replicas.max(1);
        out.unreachable.extend(p.unreachable);
        out.proxies.extend(p.proxies);
        for e in p.edges {
            let k = (
                e.inbound,
                e.source.clone(),
                e.destination.clone(),
                e.route.clone(),
                e.backend.clone(),
            );
            match edges.get_mut(&k) {
                Some(a) => {
                    a.requests += e.requests;
                    a.successes += e.successes;
                    a.mtls += e.mtls;
                    for (x, y) in a.latency.iter_mut().zip(&e.latency) {
                        *x += y;
                    }
                }
                None => {
                    edges.insert(k, e);
                }
            }
        }
        for e in p.errors {
            *errors.entry((e.destination, e.code)).or_default() += e.count;
        }
    }
    out.edges = edges.into_values().collect();
    out.edges.sort_by(|a, b| edge_key(a).cmp(&edge_key(b)));
    out.errors = (errors.into_iter())
        .map(|((destination, code), count)| ErrorStat {
            destination,
            code,
            count,
        })
        .collect();
    out.errors
        .sort_by(|a, b| (&a.destination, &a.code).cmp(&(&b.destination, &b.code)));
    out.proxies
        .sort_by(|a, b| (&a.namespace, &a.workload).cmp(&(&b.namespace, &b.workload)));
    out
}

#[cfg(test)]
mod tests;
