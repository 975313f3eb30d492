//! The breaker against a reference model of resilience4j's `CircuitBreaker` state machine as
//! Trellis configures it (docs/resilience.md, "Circuit breaker"), over random calls, waits,
//! timer ticks and operator changes.

use super::*;
use proptest::prelude::*;
use std::collections::VecDeque;

/// A breaker's settings in whole percents and milliseconds, which keep the model's arithmetic
/// exact.
#[derive(Debug, Clone)]
struct Settings {
    kind: SlidingWindowType,
    size: u32,
    minimum_calls: u32,
    failure_pct: u32,
    slow_pct: u32,
    slow_ms: u64,
    wait_ms: u64,
    permitted: u32,
}

impl Settings {
    fn config(&self) -> CircuitBreaker {
        CircuitBreaker {
            failure_rate_threshold: f64::from(self.failure_pct),
            slow_call_rate_threshold: f64::from(self.slow_pct),
            slow_call_duration_threshold: Some(ms(self.slow_ms)),
            sliding_window: SlidingWindow {
                kind: self.kind,
                size: self.size,
            },
            minimum_calls: self.minimum_calls,
            wait_in_open: Some(ms(self.wait_ms)),
            permitted_calls_in_half_open: self.permitted,
        }
    }
}

/// One outcome, and the second it was recorded in (for a TIME window).
#[derive(Debug, Clone, Copy)]
struct Rec {
    sec: u64,
    failed: bool,
    slow: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct ModelPermit {
    state: State,
    phase: u64,
}

/// resilience4j's transitions, written from its documentation:
/// - CLOSED records every outcome and, after each one, opens when the window holds at least
///   `minimumNumberOfCalls` (capped at the size of a COUNT window) and the failure rate or
///   the slow-call rate is at or over its threshold;
/// - OPEN refuses calls until `waitDurationInOpenState` has passed, then the next call (or the
///   automatic transition's timer) moves it to HALF_OPEN;
/// - HALF_OPEN admits `permittedNumberOfCallsInHalfOpenState` calls, and when all have
///   finished, opens again if their rates reach a threshold and closes otherwise; a permit
///   given back is admitted again;
/// - entering CLOSED starts an empty window; DISABLED admits and counts nothing;
///   FORCED_OPEN refuses everything; only the operator leaves them.
///
/// Where Trellis differs on purpose, the model follows Trellis:
/// - an outcome changes state only in the phase that admitted its call (`state.rs`: each
///   transition bumps a generation). A late outcome of a CLOSED call still goes into that
///   phase's window, shown until CLOSED starts again, as resilience4j's OPEN state keeps
///   recording into the metrics it took over; but resilience4j would also count a late
///   outcome in a later CLOSED window, or as a HALF_OPEN probe;
/// - OPEN ends when exactly `waitInOpen` has passed (`now >= until`); resilience4j waits
///   until the instant is strictly after it.
struct Model {
    s: Settings,
    state: State,
    /// Bumped by every transition.
    phase: u64,
    /// CLOSED's outcomes, oldest first; `window` picks those that count.
    closed: VecDeque<Rec>,
    /// The phase whose calls `closed` holds: the last CLOSED one.
    closed_phase: u64,
    open_until: Duration,
    permits: u32,
    probes: Vec<Rec>,
}

impl Model {
    fn new(s: Settings) -> Model {
        Model {
            s,
            state: State::Closed,
            phase: 0,
            closed: VecDeque::new(),
            closed_phase: 0,
            open_until: Duration::ZERO,
            permits: 0,
            probes: Vec::new(),
        }
    }

    /// COUNT: the last `size` outcomes. TIME: those of the last `size` seconds, the current
    /// one included.
    fn window(&self, now: Duration) -> Totals {
        let size = self.s.size as usize;
        let counted: Vec<&Rec> = match self.s.kind {
            SlidingWindowType::Count => self.closed.iter().rev().take(size).collect(),
            SlidingWindowType::Time => (self.closed.iter())
                .filter(|r| r.sec + self.s.size as u64 > now.as_secs())
                .collect(),
        };
        totals(counted)
    }

    fn over_threshold(&self, t: Totals) -> bool {
        t.failures * 100 >= self.s.failure_pct * t.calls
            || t.slow * 100 >= self.s.slow_pct * t.calls
    }

    fn enter(&mut self, to: State, now: Duration) {
        self.state = to;
        self.phase += 1;
        match to {
            State::Closed => {
                self.closed.clear();
                self.closed_phase = self.phase;
            }
            State::Open => self.open_until = now + ms(self.s.wait_ms),
            State::HalfOpen => {
                self.permits = self.s.permitted;
                self.probes.clear();
            }
            State::Disabled | State::ForcedOpen => {}
        }
    }

    fn tick(&mut self, now: Duration) {
        if self.state == State::Open && now >= self.open_until {
            self.enter(State::HalfOpen, now);
        }
    }

    fn acquire(&mut self, now: Duration) -> Result<ModelPermit, State> {
        self.tick(now);
        let permit = ModelPermit {
            state: self.state,
            phase: self.phase,
        };
        match self.state {
            State::Closed | State::Disabled => Ok(permit),
            State::HalfOpen if self.permits > 0 => {
                self.permits -= 1;
                Ok(permit)
            }
            refused => Err(refused),
        }
    }

    fn record(&mut self, p: ModelPermit, failed: bool, took_ms: u64, now: Duration) {
        let rec = Rec {
            sec: now.as_secs(),
            failed,
            slow: took_ms > self.s.slow_ms,
        };
        if p.state == State::Closed && p.phase == self.closed_phase {
            self.closed.push_back(rec);
        }
        if p.phase != self.phase {
            return;
        }
        match p.state {
            State::Closed => {
                let minimum = match self.s.kind {
                    SlidingWindowType::Count => self.s.minimum_calls.min(self.s.size),
                    SlidingWindowType::Time => self.s.minimum_calls,
                };
                let t = self.window(now);
                if t.calls >= minimum && self.over_threshold(t) {
                    self.enter(State::Open, now);
                }
            }
            State::HalfOpen => {
                self.probes.push(rec);
                if self.probes.len() == self.s.permitted as usize {
                    let verdict = if self.over_threshold(totals(self.probes.iter())) {
                        State::Open
                    } else {
                        State::Closed
                    };
                    self.enter(verdict, now);
                }
            }
            _ => {}
        }
    }

    fn release(&mut self, p: ModelPermit) {
        if p.state == State::HalfOpen && p.phase == self.phase {
            self.permits += 1;
        }
    }
}

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

fn totals<'a>(recs: impl IntoIterator<Item = &'a Rec>) -> Totals {
    let mut t = Totals::default();
    for r in recs {
        t.calls += 1;
        t.failures += u32::from(r.failed);
        t.slow += u32::from(r.slow);
    }
    t
}

#[derive(Debug, Clone)]
enum Op {
    /// Time passes.
    Wait(u64),
    /// A call is admitted or refused; if admitted, it takes `took` ms and then reports.
    Call { failed: bool, took: u64 },
    /// A call is admitted or refused; if admitted, it is held until `Finish` or `Ignore`.
    Start,
    /// The `which`-th held call (modulo how many there are) reports.
    Finish {
        which: usize,
        failed: bool,
        took: u64,
    },
    /// The `which`-th held call proves nothing (or its caller went away).
    Ignore { which: usize },
    /// OPEN's timer fires.
    Tick,
    /// An operator sets a state on the admin port.
    Force(State),
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        3 => (0u64..=1500).prop_map(Op::Wait),
        8 => (any::<bool>(), 0u64..=300).prop_map(|(failed, took)| Op::Call { failed, took }),
        2 => Just(Op::Start),
        2 => (any::<usize>(), any::<bool>(), 0u64..=300)
            .prop_map(|(which, failed, took)| Op::Finish { which, failed, took }),
        1 => any::<usize>().prop_map(|which| Op::Ignore { which }),
        1 => Just(Op::Tick),
        1 => prop::sample::select(vec![State::Closed, State::Disabled, State::ForcedOpen])
            .prop_map(Op::Force),
    ]
}

fn settings() -> impl Strategy<Value = Settings> {
    (
        prop_oneof![
            3 => Just(SlidingWindowType::Count),
            1 => Just(SlidingWindowType::Time)
        ],
        1u32..=8,
        1u32..=10,
        // resilience4j refuses a threshold of 0; Trellis's validation allows it.
        1u32..=100,
        1u32..=100,
        10u64..=200,
        100u64..=3000,
        1u32..=4,
    )
        .prop_map(
            |(kind, size, minimum_calls, failure_pct, slow_pct, slow_ms, wait_ms, permitted)| {
                Settings {
                    kind,
                    size,
                    minimum_calls,
                    failure_pct,
                    slow_pct,
                    slow_ms,
                    wait_ms,
                    permitted,
                }
            },
        )
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 1024, ..ProptestConfig::default() })]

    /// After every step, the breaker is in the state resilience4j's state machine would be in
    /// (with Trellis's two documented differences, see `Model`), admits and refuses the same
    /// calls, holds the same window and ends OPEN at the same instant.
    #[test]
    fn the_breaker_follows_resilience4j_transitions(
        s in settings(),
        ops in prop::collection::vec(op(), 1..100),
    ) {
        let b = breaker(s.config());
        let mut m = Model::new(s);
        let mut now = t(1000);
        let mut held: Vec<(Permit<'_>, ModelPermit)> = Vec::new();
        for (step, op) in ops.into_iter().enumerate() {
            match op {
                Op::Wait(n) => now += ms(n),
                Op::Tick => {
                    b.tick(now);
                    m.tick(now);
                }
                Op::Force(to) => {
                    b.force(to, now);
                    m.enter(to, now);
                }
                Op::Call { .. } | Op::Start => {
                    let got = b.try_acquire(now);
                    let want = m.acquire(now);
                    prop_assert_eq!(
                        got.as_ref().map(|p| p.state()).map_err(|s| *s),
                        want.map(|p| p.state),
                        "step {}: admitted or refused",
                        step
                    );
                    if let (Ok(p), Ok(mp)) = (got, want) {
                        match op {
                            Op::Call { failed, took } => {
                                now += ms(took);
                                p.record(failed, ms(took), now);
                                m.record(mp, failed, took, now);
                            }
                            _ => held.push((p, mp)),
                        }
                    }
                }
                Op::Finish { which, failed, took } if !held.is_empty() => {
                    let (p, mp) = held.swap_remove(which % held.len());
                    p.record(failed, ms(took), now);
                    m.record(mp, failed, took, now);
                }
                Op::Ignore { which } if !held.is_empty() => {
                    let (p, mp) = held.swap_remove(which % held.len());
                    p.ignore();
                    m.release(mp);
                }
                Op::Finish { .. } | Op::Ignore { .. } => {}
            }
            prop_assert_eq!(b.state(), m.state, "step {}: state", step);
            let status = b.status(now);
            prop_assert_eq!(status.window, m.window(now), "step {}: window", step);
            if m.state == State::Open {
                prop_assert_eq!(status.open_until, Some(m.open_until), "step {}: OPEN's end", step);
            }
        }
    }
}
