use super::*;
use trellis_proto::v1::{ErrorCount, TrafficCounts};

const START: i64 = 1_800_000_000_000;

fn at(ms: i64) -> Duration {
    Duration::from_millis(ms as u64)
}

fn traffic(requests: u64, successes: u64) -> TrafficCounts {
    let mut latency = vec![0; LATENCY_BUCKETS];
    latency[4] = requests;
    TrafficCounts {
        inbound: false,
        destination: "billing.rides".into(),
        route: "rides/billing".into(),
        backend: "billing".into(),
        caller: String::new(),
        requests,
        successes,
        latency,
        mtls: requests,
    }
}

fn summary(started: i64, requests: u64, successes: u64) -> Summary {
    Summary {
        started_unix_ms: started,
        traffic: vec![traffic(requests, successes)],
        clusters: vec![],
        errors: vec![ErrorCount {
            destination: "billing.rides".into(),
            code: "circuit-open".into(),
            count: requests - successes,
        }],
        certificate_expiry_unix: 0,
    }
}

fn proxy(name: &str) -> ProxyKey {
    ("rides".into(), name.into())
}

fn trip() -> Vec<String> {
    vec!["trip.rides".into()]
}

/// The one outbound edge's (requests, successes) over the last minute, and the errors.
fn edge(g: &Golden, now: Duration) -> (u64, u64, u64) {
    let s = g.stat(now, Duration::from_secs(60));
    let e: Vec<_> = s.edges.iter().filter(|e| !e.inbound).collect();
    assert!(e.len() <= 1, "{e:?}");
    let errors = s.errors.iter().map(|e| e.count).sum();
    e.first()
        .map_or((0, 0, errors), |e| (e.requests, e.successes, errors))
}

#[test]
fn two_proxies_of_one_service_add_up_on_one_edge() {
    let g = Golden::default();
    // Both started a moment ago: everything they counted is new.
    g.intake(
        at(START + 1000),
        &proxy("trip-1"),
        trip(),
        summary(START, 10, 9),
    );
    g.intake(
        at(START + 1200),
        &proxy("trip-2"),
        trip(),
        summary(START, 4, 4),
    );
    g.intake(
        at(START + 6000),
        &proxy("trip-1"),
        trip(),
        summary(START, 25, 22),
    );
    let s = g.stat(at(START + 6000), Duration::from_secs(60));
    assert_eq!(s.edges.len(), 1);
    let e = &s.edges[0];
    assert_eq!(
        (e.source.as_str(), e.destination.as_str()),
        ("trip.rides", "billing.rides")
    );
    assert_eq!((e.requests, e.successes, e.mtls), (29, 26, 29));
    assert_eq!(e.latency[4], 29);
    assert_eq!(s.errors[0].count, 3);
    assert_eq!(s.proxies.len(), 2);
}

#[test]
fn a_restarted_proxy_counts_from_zero() {
    let g = Golden::default();
    let p = proxy("trip-1");
    g.intake(at(START + 1000), &p, trip(), summary(START, 100, 100));
    g.intake(at(START + 6000), &p, trip(), summary(START, 150, 140));
    assert_eq!(edge(&g, at(START + 6000)), (150, 140, 10));
    // It restarts: a new start time, and counters below the last ones.
    let restarted = START + 8000;
    g.intake(at(START + 11_000), &p, trip(), summary(restarted, 7, 7));
    assert_eq!(edge(&g, at(START + 11_000)), (157, 147, 10));
    // Counters that go down without a new start time (a key that was reset) count from
    // zero too.
    g.intake(at(START + 16_000), &p, trip(), summary(restarted, 3, 2));
    assert_eq!(edge(&g, at(START + 16_000)), (160, 149, 11));
}

#[test]
fn a_long_running_proxy_seen_first_here_is_counted_from_its_next_summary() {
    let g = Golden::default();
    let p = proxy("trip-1");
    // It started an hour ago and moved here from another replica, which counted its past.
    let now = START + 3_600_000;
    g.intake(at(now), &p, trip(), summary(START, 5000, 4990));
    assert_eq!(edge(&g, at(now)), (0, 0, 0));
    g.intake(at(now + 5000), &p, trip(), summary(START, 5020, 5009));
    assert_eq!(edge(&g, at(now + 5000)), (20, 19, 1));
}

#[test]
fn the_window_forgets_what_is_older_than_asked_for() {
    let g = Golden::default();
    let p = proxy("trip-1");
    g.intake(at(START + 1000), &p, trip(), summary(START, 10, 10));
    // Two minutes on, the first counts are out of the last minute but in the last five.
    let later = START + 121_000;
    g.intake(at(later), &p, trip(), summary(START, 12, 12));
    assert_eq!(edge(&g, at(later)), (2, 2, 0));
    let five = g.stat(at(later), Duration::from_secs(300));
    assert_eq!(five.edges[0].requests, 12);
    assert!(five.covered_seconds > 290.0 && five.covered_seconds <= 300.0);
}

#[test]
fn replicas_merge_by_adding_equal_edges() {
    let (a, b) = (Golden::default(), Golden::default());
    a.intake(
        at(START + 1000),
        &proxy("trip-1"),
        trip(),
        summary(START, 10, 9),
    );
    b.intake(
        at(START + 1000),
        &proxy("trip-2"),
        trip(),
        summary(START, 6, 6),
    );
    let now = at(START + 2000);
    let window = Duration::from_secs(60);
    let m = merge(vec![a.stat(now, window), b.stat(now, window)]);
    assert_eq!(m.replicas, 2);
    assert_eq!(m.edges.len(), 1);
    assert_eq!((m.edges[0].requests, m.edges[0].successes), (16, 15));
    assert_eq!(m.edges[0].latency[4], 16);
    assert_eq!(m.proxies.len(), 2);
    assert_eq!(m.errors[0].count, 1);
}

#[test]
fn forgotten_proxies_take_their_state_with_them() {
    let g = Golden::default();
    for i in 0..50 {
        g.intake(
            at(START + 1000),
            &proxy(&format!("trip-{i}")),
            trip(),
            summary(START, 1, 1),
        );
    }
    assert_eq!(
        g.entries().1,
        100,
        "one traffic and one error key per proxy"
    );
    // After the window's length without a Summary, they are forgotten.
    let later = START + 1000 + (FORGET_AFTER_SECS as i64 + 61) * 1000;
    g.intake(at(later), &proxy("trip-0"), trip(), summary(START, 2, 2));
    assert_eq!(g.entries().1, 2);
    assert_eq!(g.stat(at(later), Duration::from_secs(60)).proxies.len(), 1);
}

#[test]
fn a_proxy_cannot_make_the_control_plane_hold_more_than_its_limits() {
    let g = Golden::default();
    let p = proxy("hostile");
    let mut s = summary(START, 1, 1);
    s.traffic = (0..MAX_TRAFFIC_KEYS + 100)
        .map(|i| {
            let mut t = traffic(1, 1);
            t.route = format!("rides/r{i}");
            t
        })
        .collect();
    s.errors = (0..MAX_ERROR_KEYS + 10)
        .map(|i| ErrorCount {
            destination: "billing.rides".into(),
            code: format!("c{i}"),
            count: 1,
        })
        .collect();
    let mut long = traffic(1, 1);
    long.destination = "x".repeat(MAX_NAME + 1);
    s.traffic.push(long);
    g.intake(at(START + 1000), &p, trip(), s);
    assert_eq!(g.entries().1, MAX_TRAFFIC_KEYS + MAX_ERROR_KEYS);
    assert_eq!(g.refused(), 100 + 10 + 1);
}
