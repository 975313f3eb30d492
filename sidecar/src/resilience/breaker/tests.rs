//! The state machine driven by a hand-held clock: every transition, in both window types.

use super::*;
use crate::telemetry::metrics::Metrics;
use trellis_config::model::{SlidingWindow, SlidingWindowType};

mod model;

const MS: Duration = Duration::from_millis(1);

fn cfg(kind: SlidingWindowType, size: u32, min_calls: u32) -> CircuitBreaker {
    CircuitBreaker {
        failure_rate_threshold: 50.0,
        slow_call_rate_threshold: 100.0,
        slow_call_duration_threshold: Some(100 * MS),
        sliding_window: SlidingWindow { kind, size },
        minimum_calls: min_calls,
        wait_in_open: Some(Duration::from_secs(5)),
        permitted_calls_in_half_open: 2,
    }
}

fn breaker(c: CircuitBreaker) -> Arc<Breaker> {
    let name = Arc::new("billing.rides:80".to_string());
    Breaker::new(
        name.clone(),
        c,
        Metrics::default().breaker(&name),
        State::Closed,
    )
}

/// Makes one call at `now` that fails or not and takes `took`; `Err` if it was refused.
fn call(b: &Breaker, now: Duration, failed: bool, took: Duration) -> Result<(), State> {
    b.try_acquire(now)?.record(failed, took, now);
    Ok(())
}

fn ok(b: &Breaker, now: Duration) {
    call(b, now, false, MS).expect("admitted");
}

fn fail(b: &Breaker, now: Duration) {
    call(b, now, true, MS).expect("admitted");
}

fn t(secs: u64) -> Duration {
    Duration::from_secs(secs)
}

#[test]
fn never_opens_before_minimum_calls() {
    let b = breaker(cfg(SlidingWindowType::Count, 10, 5));
    for _ in 0..4 {
        fail(&b, t(1));
    }
    assert_eq!(
        b.state(),
        State::Closed,
        "4 failures of 4 calls, but 5 are needed"
    );
    fail(&b, t(1));
    assert_eq!(b.state(), State::Open);
}

#[test]
fn minimum_calls_is_capped_at_a_count_window_size() {
    // resilience4j: minimumNumberOfCalls larger than a COUNT window means the window size.
    let b = breaker(cfg(SlidingWindowType::Count, 4, 100));
    for _ in 0..4 {
        fail(&b, t(1));
    }
    assert_eq!(b.state(), State::Open);
}

#[test]
fn failure_rate_at_the_threshold_opens_a_count_window() {
    let b = breaker(cfg(SlidingWindowType::Count, 4, 4));
    ok(&b, t(1));
    ok(&b, t(1));
    fail(&b, t(1));
    assert_eq!(b.state(), State::Closed, "3 calls are under the minimum");
    fail(&b, t(1));
    assert_eq!(b.state(), State::Open, "2 of 4 failed: 50% >= 50%");
    assert_eq!(b.try_acquire(t(2)).err(), Some(State::Open));
}

#[test]
fn a_success_is_checked_too() {
    // resilience4j checks the rates after every outcome.
    let b = breaker(cfg(SlidingWindowType::Count, 2, 2));
    fail(&b, t(1));
    ok(&b, t(1));
    assert_eq!(
        b.state(),
        State::Open,
        "the success brings the window to 2 calls, 1 failed: 50% >= 50%"
    );

    let b = breaker(cfg(SlidingWindowType::Time, 2, 2));
    for _ in 0..3 {
        ok(&b, t(10));
    }
    fail(&b, t(11));
    fail(&b, t(11));
    assert_eq!(b.state(), State::Closed, "2 of 5 failed: 40%");
    ok(&b, t(12));
    assert_eq!(
        b.state(),
        State::Open,
        "second 10 has left the window: 2 of the 3 calls of seconds 11-12 failed"
    );
}

#[test]
fn a_count_window_forgets_old_failures() {
    let b = breaker(cfg(SlidingWindowType::Count, 4, 4));
    fail(&b, t(1));
    for _ in 0..10 {
        ok(&b, t(1));
    }
    fail(&b, t(1));
    assert_eq!(b.state(), State::Closed, "1 of the last 4 failed: 25%");
}

#[test]
fn failure_rate_opens_a_time_window_and_old_seconds_drop_out() {
    let b = breaker(cfg(SlidingWindowType::Time, 2, 4));
    // Second 10: three failures, one success.
    fail(&b, t(10));
    fail(&b, t(10));
    ok(&b, t(10));
    // Second 13: the window (12-13) no longer holds second 10.
    ok(&b, t(13));
    ok(&b, t(13));
    ok(&b, t(13));
    fail(&b, t(13));
    assert_eq!(b.state(), State::Closed, "1 of 4 in the window failed");
    fail(&b, t(14));
    fail(&b, t(14));
    assert_eq!(b.state(), State::Open, "3 of 6 in seconds 13-14 failed");
}

#[test]
fn slow_call_rate_opens_both_window_types() {
    for kind in [SlidingWindowType::Count, SlidingWindowType::Time] {
        let slow_breaker = || {
            let mut c = cfg(kind, 10, 3);
            c.slow_call_rate_threshold = 60.0;
            breaker(c)
        };
        let b = slow_breaker();
        for took in [10, 10, 150] {
            call(&b, t(1), false, took * MS).unwrap();
        }
        assert_eq!(b.state(), State::Closed, "{kind:?}: 1 of 3 slow is 33%");
        let b = slow_breaker();
        for took in [150, 10, 150] {
            call(&b, t(1), false, took * MS).unwrap();
        }
        assert_eq!(b.state(), State::Open, "{kind:?}: 2 of 3 slow is 66%");
    }
}

#[test]
fn a_call_exactly_at_the_slow_threshold_is_not_slow() {
    let mut c = cfg(SlidingWindowType::Count, 2, 2);
    c.slow_call_rate_threshold = 50.0;
    let b = breaker(c);
    call(&b, t(1), false, 100 * MS).unwrap();
    call(&b, t(1), false, 100 * MS).unwrap();
    assert_eq!(b.state(), State::Closed);
}

fn opened() -> Arc<Breaker> {
    let b = breaker(cfg(SlidingWindowType::Count, 2, 2));
    fail(&b, t(100));
    fail(&b, t(100));
    assert_eq!(b.state(), State::Open);
    b
}

#[test]
fn open_moves_to_half_open_after_wait_in_open() {
    let b = opened();
    assert_eq!(b.try_acquire(t(104)).err(), Some(State::Open));
    // The timer's tick before the wait is over changes nothing; after it, HALF_OPEN.
    b.tick(t(104));
    assert_eq!(b.state(), State::Open);
    b.tick(t(105));
    assert_eq!(b.state(), State::HalfOpen);
}

#[test]
fn the_first_call_after_the_wait_moves_to_half_open_and_probes_are_limited() {
    let b = opened();
    let p1 = b.try_acquire(t(105)).expect("a probe");
    assert_eq!(p1.state(), State::HalfOpen);
    let p2 = b.try_acquire(t(105)).expect("a second probe");
    assert_eq!(b.try_acquire(t(105)).err(), Some(State::HalfOpen), "only 2");
    p1.record(false, MS, t(105));
    assert_eq!(b.state(), State::HalfOpen, "decides after all probes");
    p2.record(false, MS, t(105));
    assert_eq!(b.state(), State::Closed);
    assert_eq!(
        b.status(t(105)).window.calls,
        0,
        "CLOSED starts a fresh window"
    );
}

#[test]
fn failing_half_open_probes_open_again() {
    let b = opened();
    b.tick(t(105));
    ok(&b, t(105));
    fail(&b, t(105));
    assert_eq!(b.state(), State::Open, "1 of 2 probes failed: 50%");
    assert_eq!(b.try_acquire(t(109)).err(), Some(State::Open), "a new wait");
    b.tick(t(110));
    assert_eq!(b.state(), State::HalfOpen);
}

#[test]
fn a_refused_half_open_call_frees_no_probe_slot() {
    let b = opened();
    b.tick(t(105));
    let _p1 = b.try_acquire(t(105)).unwrap();
    let _p2 = b.try_acquire(t(105)).unwrap();
    for _ in 0..3 {
        assert_eq!(
            b.try_acquire(t(105)).err(),
            Some(State::HalfOpen),
            "both probes are still out"
        );
    }
}

#[test]
fn a_dropped_probe_gives_its_permit_back() {
    let b = opened();
    b.tick(t(105));
    let p1 = b.try_acquire(t(105)).unwrap();
    let _p2 = b.try_acquire(t(105)).unwrap();
    assert!(b.try_acquire(t(105)).is_err());
    drop(p1);
    assert!(b.try_acquire(t(105)).is_ok());
}

#[test]
fn an_outcome_from_an_earlier_phase_is_ignored() {
    let b = breaker(cfg(SlidingWindowType::Count, 2, 2));
    let late = b.try_acquire(t(1)).unwrap();
    fail(&b, t(1));
    fail(&b, t(1));
    assert_eq!(b.state(), State::Open);
    b.force(State::Closed, t(2));
    late.record(true, MS, t(2));
    assert_eq!(b.status(t(2)).window.calls, 0);
}

#[test]
fn forced_states_hold_until_an_operator_changes_them() {
    let b = breaker(cfg(SlidingWindowType::Count, 2, 2));
    assert_eq!(b.force(State::ForcedOpen, t(1)), State::Closed);
    assert_eq!(b.try_acquire(t(1)).err(), Some(State::ForcedOpen));
    b.tick(t(1000));
    assert_eq!(b.try_acquire(t(1000)).err(), Some(State::ForcedOpen));

    b.force(State::Disabled, t(1000));
    for _ in 0..10 {
        fail(&b, t(1000));
    }
    assert_eq!(b.state(), State::Disabled, "DISABLED never opens");

    b.force(State::Closed, t(1000));
    fail(&b, t(1000));
    fail(&b, t(1000));
    assert_eq!(b.state(), State::Open, "CLOSED counts again");
}
