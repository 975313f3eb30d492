//! One request label set's golden metrics, resolved once instead of per request.
//!
//! Every label of `trellis_requests_total` but the status code is known before the request
//! is: the route and destination when the route rule is picked, the caller's identity when
//! its connection is accepted. A `RequestSeries` holds those labels, and each status code it
//! has seen in a small table of slots: a request finds its code's counter and histogram with
//! a few atomic loads, and no lock or hash. Only the first request with a given code takes
//! the metric family's lock, to create the series; past `SLOTS` distinct codes (a route that
//! answers more than eight different statuses) the rest go through the family as before.

use super::metrics::{HistogramFamily, Metrics, RequestLabels};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::Histogram;
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU16, Ordering};
use std::time::Duration;

/// Distinct status codes held in slots. Most routes answer two or three.
const SLOTS: usize = 8;

pub struct RequestSeries {
    /// The labels, with `response_code` left at 0.
    labels: RequestLabels,
    codes: [AtomicU16; SLOTS],
    series: [OnceLock<(Counter, Histogram)>; SLOTS],
    requests: Family<RequestLabels, Counter>,
    durations: HistogramFamily,
}

impl std::fmt::Debug for RequestSeries {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RequestSeries")
            .field("labels", &self.labels)
            .finish_non_exhaustive()
    }
}

impl RequestSeries {
    /// The series of `labels` (whose `response_code` is ignored), for a route rule or a
    /// caller's connection to hold.
    pub fn new(metrics: &Metrics, labels: RequestLabels) -> RequestSeries {
        let (requests, durations) = metrics.request_families();
        RequestSeries {
            labels,
            codes: Default::default(),
            series: Default::default(),
            requests,
            durations,
        }
    }

    /// Counts one request that was answered `code` after `elapsed`.
    pub fn record(&self, code: u16, elapsed: Duration) {
        let secs = elapsed.as_secs_f64();
        for (slot, series) in self.codes.iter().zip(&self.series) {
            let mut held = slot.load(Ordering::Acquire);
            if held == 0 {
                // Claim the free slot; whoever loses the race sees the winner's code.
                held = match slot.compare_exchange(0, code, Ordering::AcqRel, Ordering::Acquire) {
                    Ok(_) => code,
                    Err(other) => other,
                };
            }
            if held == code {
                let (count, hist) = series.get_or_init(|| self.create(code));
                count.inc();
                hist.observe(secs);
                return;
            }
        }
        let (count, hist) = self.create(code);
        count.inc();
        hist.observe(secs);
    }

    fn create(&self, code: u16) -> (Counter, Histogram) {
        let mut l = self.labels.clone();
        l.response_code = code;
        (
            self.requests.get_or_create(&l).clone(),
            self.durations.get_or_create(&l).clone(),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    fn labels(route: &str) -> RequestLabels {
        let s = |v: &str| Arc::new(v.to_string());
        RequestLabels {
            direction: "outbound",
            source_workload: s("trip"),
            source_namespace: s("rides"),
            source_identity: s("trip"),
            destination_service: s("billing.rides"),
            route: s(route),
            response_code: 0,
        }
    }

    /// The value of the `trellis_requests_total` line whose labels include all of `has`.
    fn count(m: &Metrics, has: &[&str]) -> u64 {
        let text = m.render();
        let line = text
            .lines()
            .find(|l| l.starts_with("trellis_requests_total{") && has.iter().all(|h| l.contains(h)))
            .unwrap_or_else(|| panic!("no series with {has:?}:\n{text}"));
        line.rsplit(' ').next().unwrap().parse().unwrap()
    }

    #[test]
    fn counts_land_on_the_series_of_their_status_code_past_the_slots_too() {
        let m = Metrics::default();
        let s = RequestSeries::new(&m, labels("rides/billing"));
        // Twelve distinct codes: eight take slots, four go through the family.
        let codes: Vec<u16> = (0..12).map(|i| 200 + i).collect();
        for (i, &code) in codes.iter().enumerate() {
            for _ in 0..=i {
                s.record(code, Duration::from_millis(3));
            }
        }
        for (i, code) in codes.iter().enumerate() {
            let want = i as u64 + 1;
            let code = format!("response_code=\"{code}\"");
            assert_eq!(count(&m, &[&code, "route=\"rides/billing\""]), want);
        }
        // The same labels recorded the old way add to the same series.
        let mut l = labels("rides/billing");
        l.response_code = 200;
        m.record(&l, Duration::from_millis(1));
        assert_eq!(count(&m, &["response_code=\"200\""]), 2);
    }

    #[test]
    fn threads_racing_for_slots_lose_no_request() {
        let m = Metrics::default();
        let s = Arc::new(RequestSeries::new(&m, labels("rides/race")));
        let threads: Vec<_> = (0..4)
            .map(|t| {
                let s = s.clone();
                std::thread::spawn(move || {
                    for i in 0..1000u16 {
                        s.record(200 + (i + t) % 10, Duration::from_micros(50));
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        let total: u64 = (200..210)
            .map(|c| count(&m, &[&format!("response_code=\"{c}\"")]))
            .sum();
        assert_eq!(total, 4000);
    }
}
