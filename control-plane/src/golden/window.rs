//! The short window of golden metrics: a ring of slots, each the counts that arrived in one
//! `RESOLUTION`, by edge. Old slots are dropped as time moves on, and a slot holds at most
//! `MAX_EDGES` edges, so the window's memory is bounded whatever the proxies send.

use std::collections::HashMap;
use std::sync::Arc;
use trellis_proto::LATENCY_BOUNDS;

/// One slot's span.
pub const RESOLUTION_SECS: u64 = 10;
/// Slots kept: 15 minutes.
pub const SLOTS: usize = 90;
/// Edges one slot holds; counts for more are dropped and counted in `Window::dropped`.
pub const MAX_EDGES: usize = 4096;
/// Generated-error keys one slot holds.
pub const MAX_ERRORS: usize = 1024;

pub const LATENCY_BUCKETS: usize = LATENCY_BOUNDS.len() + 1;

/// Where requests went. Outbound, as the caller's proxy saw them: from the caller's Service
/// (`source`) to a Service, by route and backend. Inbound, as the callee's proxy saw them:
/// from a caller's identity (`source`, `namespace/serviceaccount`, empty when unknown) to
/// the proxy's Service.
#[derive(Clone, Debug, Hash, PartialEq, Eq, PartialOrd, Ord)]
pub struct EdgeKey {
    pub inbound: bool,
    pub source: Arc<str>,
    pub destination: Arc<str>,
    pub route: Arc<str>,
    pub backend: Arc<str>,
}

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Counts {
    pub requests: u64,
    pub successes: u64,
    pub mtls: u64,
    pub latency: [u64; LATENCY_BUCKETS],
}

impl Counts {
    pub fn add(&mut self, o: &Counts) {
        self.requests += o.requests;
        self.successes += o.successes;
        self.mtls += o.mtls;
        for (a, b) in self.latency.iter_mut().zip(&o.latency) {
            *a += b;
        }
    }

    /// What was counted since `before`; a counter below its value there started again (the
    /// proxy restarted, or the key's counts were new), so all of it is new.
    pub fn since(&self, before: &Counts) -> Counts {
        if self.requests < before.requests
            || self.successes < before.successes
            || self.mtls < before.mtls
            || self.latency.iter().zip(&before.latency).any(|(a, b)| a < b)
        {
            return self.clone();
        }
        let mut latency = [0; LATENCY_BUCKETS];
        for (i, l) in latency.iter_mut().enumerate() {
            *l = self.latency[i] - before.latency[i];
        }
        Counts {
            requests: self.requests - before.requests,
            successes: self.successes - before.successes,
            mtls: self.mtls - before.mtls,
            latency,
        }
    }

    pub fn is_zero(&self) -> bool {
        self.requests == 0
    }
}

/// One slot: what arrived between `index × RESOLUTION` and the next.
#[derive(Default)]
struct Slot {
    index: u64,
    edges: HashMap<EdgeKey, Counts>,
    /// By destination and `trellis-error` code.
    errors: HashMap<(Arc<str>, Arc<str>), u64>,
}

#[derive(Default)]
pub struct Window {
    /// Oldest first; only slots that received something.
    slots: std::collections::VecDeque<Slot>,
    /// Counts dropped because a slot was full.
    pub dropped: u64,
}

/// The slot of a Unix time in seconds.
pub fn slot_of(unix_secs: u64) -> u64 {
    unix_secs / RESOLUTION_SECS
}

impl Window {
    fn slot(&mut self, index: u64) -> &mut Slot {
        let oldest = index.saturating_sub(SLOTS as u64 - 1);
        while self.slots.front().is_some_and(|s| s.index < oldest) {
            self.slots.pop_front();
        }
        if self.slots.back().is_none_or(|s| s.index < index) {
            self.slots.push_back(Slot {
                index,
                ..Slot::default()
            });
        }
        // Counts that arrive for a slot already passed (a clock step back) go to the newest.
        self.slots.back_mut().expect("pushed above")
    }

    /// Adds counts of `key` that arrived at `now` (Unix seconds).
    pub fn add(&mut self, now: u64, key: &EdgeKey, counts: &Counts) {
        if counts.is_zero() {
            return;
        }
        let slot = self.slot(slot_of(now));
        let room = slot.edges.len() < MAX_EDGES;
        match slot.edges.get_mut(key) {
            Some(c) => c.add(counts),
            None if room => {
                slot.edges.insert(key.clone(), counts.clone());
            }
            None => self.dropped += counts.requests,
        }
    }

    /// Adds `n` generated errors of `code` for `destination` that arrived at `now`.
    pub fn add_errors(&mut self, now: u64, destination: &Arc<str>, code: &Arc<str>, n: u64) {
        if n == 0 {
            return;
        }
        let slot = self.slot(slot_of(now));
        let key = (destination.clone(), code.clone());
        let room = slot.errors.len() < MAX_ERRORS;
        match slot.errors.get_mut(&key) {
            Some(c) => *c += n,
            None if room => {
                slot.errors.insert(key, n);
            }
            None => self.dropped += n,
        }
    }

    /// The slots from `since` (a slot index) on.
    fn from(&self, since: u64) -> impl Iterator<Item = &Slot> {
        self.slots.iter().filter(move |s| s.index >= since)
    }

    /// Each edge's counts summed over the slots from `since` (a slot index) to now.
    pub fn edges(&self, since: u64) -> HashMap<EdgeKey, Counts> {
        let mut out: HashMap<EdgeKey, Counts> = HashMap::new();
        for s in self.from(since) {
            for (k, c) in &s.edges {
                out.entry(k.clone()).or_default().add(c);
            }
        }
        out
    }

    /// The requests and successes of the edges that `pick` picks, per slot from `since`,
    /// oldest first, with the slots that received nothing as zeros: a sparkline.
    pub fn series(&self, since: u64, now: u64, pick: impl Fn(&EdgeKey) -> bool) -> Vec<(u64, u64)> {
        let now = slot_of(now);
        let mut out = vec![(0, 0); (now + 1).saturating_sub(since) as usize];
        for s in self.from(since) {
            let Some(o) = out.get_mut((s.index - since) as usize) else {
                continue;
            };
            for (_, c) in s.edges.iter().filter(|(k, _)| pick(k)) {
                o.0 += c.requests;
                o.1 += c.successes;
            }
        }
        out
    }

    /// Generated errors summed over the slots from `since`.
    pub fn errors(&self, since: u64) -> HashMap<(Arc<str>, Arc<str>), u64> {
        let mut out = HashMap::new();
        for s in self.from(since) {
            for (k, n) in &s.errors {
                *out.entry(k.clone()).or_default() += n;
            }
        }
        out
    }

    /// Edges held, over every slot: what the window's memory grows with.
    pub fn entries(&self) -> usize {
        self.slots
            .iter()
            .map(|s| s.edges.len() + s.errors.len())
            .sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    pub fn key(source: &str, destination: &str) -> EdgeKey {
        EdgeKey {
            inbound: false,
            source: source.into(),
            destination: destination.into(),
            route: "rides/r".into(),
            backend: destination.into(),
        }
    }

    pub fn counts(requests: u64, successes: u64) -> Counts {
        let mut latency = [0; LATENCY_BUCKETS];
        latency[3] = requests;
        Counts {
            requests,
            successes,
            mtls: requests,
            latency,
        }
    }

    #[test]
    fn counts_sum_over_the_slots_asked_for_and_old_slots_are_dropped() {
        let mut w = Window::default();
        let k = key("trip.rides", "billing.rides");
        let t0 = 1_000_000;
        w.add(t0, &k, &counts(10, 9));
        w.add(t0 + 3, &k, &counts(5, 5));
        w.add(t0 + RESOLUTION_SECS, &k, &counts(7, 6));
        assert_eq!(w.edges(slot_of(t0))[&k], {
            let mut c = counts(22, 20);
            c.latency[3] = 22;
            c
        });
        assert_eq!(w.edges(slot_of(t0 + RESOLUTION_SECS))[&k].requests, 7);
        assert_eq!(
            w.series(slot_of(t0), t0 + 2 * RESOLUTION_SECS, |e| *e == k),
            vec![(15, 14), (7, 6), (0, 0)]
        );
        // Fifteen minutes on, the first slots are gone.
        let later = t0 + RESOLUTION_SECS * SLOTS as u64;
        w.add(later, &k, &counts(1, 1));
        assert_eq!(w.slots.len(), 2, "the first slot fell out of the window");
        assert_eq!(w.edges(0)[&k].requests, 8);
    }

    #[test]
    fn memory_is_bounded_however_many_edges_arrive() {
        let mut w = Window::default();
        let t0 = 2_000_000;
        // Every slot of the window, each offered twice its edge cap.
        for s in 0..(SLOTS as u64 + 10) {
            for e in 0..(2 * MAX_EDGES) {
                let k = key(&format!("s{e}.ns"), "d.ns");
                w.add(t0 + s * RESOLUTION_SECS, &k, &counts(1, 1));
            }
        }
        assert_eq!(w.slots.len(), SLOTS);
        assert_eq!(w.entries(), SLOTS * MAX_EDGES);
        assert_eq!(w.dropped, (SLOTS as u64 + 10) * MAX_EDGES as u64);
    }

    #[test]
    fn a_counter_below_its_last_value_counts_from_zero() {
        let before = counts(100, 90);
        assert_eq!(counts(130, 115).since(&before), {
            let mut c = counts(30, 25);
            c.latency[3] = 30;
            c
        });
        // A restarted proxy's counts are lower: all of them are new.
        assert_eq!(counts(4, 4).since(&before), counts(4, 4));
    }
}
