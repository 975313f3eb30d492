//! The circuit breaker, with resilience4j's semantics (CLOSED, OPEN, HALF_OPEN), plus DISABLED
//! and FORCED_OPEN for an operator on the admin port. Over 400 lines: the five states'
//! transitions share one state word and one mutex, and read best side by side.

// CLOSED counts outcomes in a sliding window and opens on a failure or slow-call rate; OPEN
// fails fast for `waitInOpen`, then HALF_OPEN lets `permittedCallsInHalfOpen` probes decide;
// DISABLED and FORCED_OPEN are left only by the operator.
//
// Admitting and recording a call is lock-free (one atomic state word, the window, and an
// `ArcSwap` per phase). State changes, which are rare, take a per-breaker mutex so that each
// happens once and is logged once.

pub(crate) mod layer;
pub(crate) mod state;
#[cfg(test)]
mod tests;

use state::{State, pack, unpack};

use super::window::{Outcome, Totals, Window};
use crate::clock;
use crate::telemetry::metrics::BreakerMetrics;
use arc_swap::ArcSwap;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;
use trellis_config::model::{CircuitBreaker, SlidingWindowType};

/// Per-phase state, tagged with the generation it belongs to.
struct Phase<T> {
    generation: u64,
    inner: T,
}

/// HALF_OPEN decides once, after all of its probes, so plain counters do instead of a window.
struct HalfOpen {
    permits: AtomicU32,
    calls: AtomicU32,
    failures: AtomicU32,
    slow: AtomicU32,
}

pub struct Breaker {
    pub cluster: Arc<String>,
    pub cfg: CircuitBreaker,
    word: AtomicU64,
    open_until_ns: AtomicU64,
    closed: ArcSwap<Phase<Window>>,
    half_open: ArcSwap<Phase<HalfOpen>>,
    /// Held only while changing state.
    transition: Mutex<()>,
    metrics: BreakerMetrics,
    /// Set when a config change replaced this breaker, so it stops writing metrics.
    retired: AtomicBool,
    me: Weak<Breaker>,
}

/// The right to make one call, and the obligation to report how it went.
pub struct Permit<'a> {
    breaker: &'a Breaker,
    state: State,
    generation: u64,
    reported: bool,
}

/// What `/clusters` shows of a breaker.
#[derive(Debug, Clone, Copy)]
pub struct Status {
    pub state: State,
    pub window: Totals,
    /// When OPEN: when it moves to HALF_OPEN.
    pub open_until: Option<Duration>,
}

// === impl Breaker ===

impl Breaker {
    /// A breaker in `initial` state (CLOSED, or a forced state carried over by a config change).
    pub fn new(
        cluster: Arc<String>,
        cfg: CircuitBreaker,
        metrics: BreakerMetrics,
        initial: State,
    ) -> Arc<Breaker> {
        metrics.show(initial as usize);
        Arc::new_cyclic(|me| Breaker {
            closed: ArcSwap::from_pointee(Phase {
                generation: 0,
                inner: Window::new(&cfg.sliding_window),
            }),
            half_open: ArcSwap::from_pointee(Phase {
                generation: 0,
                inner: HalfOpen::new(0),
            }),
            word: AtomicU64::new(pack(initial, 0)),
            open_until_ns: AtomicU64::new(0),
            transition: Mutex::new(()),
            retired: AtomicBool::new(false),
            me: me.clone(),
            cluster,
            cfg,
            metrics,
        })
    }

    pub fn state(&self) -> State {
        unpack(self.word.load(Ordering::Acquire)).0
    }

    /// Asks to make a call at `now`. `Err` names the state that refused it.
    pub fn try_acquire(&self, now: Duration) -> Result<Permit<'_>, State> {
        loop {
            let (state, generation) = unpack(self.word.load(Ordering::Acquire));
            // Made only for a call that is admitted: a dropped `Permit` gives its HALF_OPEN
            // slot back, so one made for a refused call would free a slot it never held.
            let permit = || Permit {
                breaker: self,
                state,
                generation,
                reported: false,
            };
            match state {
                State::Closed | State::Disabled => return Ok(permit()),
                State::ForcedOpen => break Err(state),
                State::Open => {
                    if clock::nanos(now) < self.open_until_ns.load(Ordering::Acquire) {
                        break Err(state);
                    }
                    // resilience4j moves to HALF_OPEN on the first call after the wait, and a
                    // timer does it too when no call comes; whichever is first wins.
                    self.transition(generation, State::HalfOpen, now, || {
                        format!("waited {:?} in OPEN", self.wait_in_open())
                    });
                }
                State::HalfOpen => {
                    let half = self.half_open.load();
                    let granted = half.generation == generation
                        && half
                            .inner
                            .permits
                            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |p| p.checked_sub(1))
                            .is_ok();
                    if granted {
                        return Ok(permit());
                    }
                    break Err(state);
                }
            }
        }
        .inspect_err(|_| {
            if !self.retired.load(Ordering::Relaxed) {
                self.metrics.rejected.inc();
            }
        })
    }

    /// Records a finished call admitted by `p`, and changes state if the rates say so.
    fn record(&self, p: &Permit<'_>, o: Outcome, now: Duration) {
        match p.state {
            State::Closed => {
                let closed = self.closed.load();
                if closed.generation != p.generation {
                    return;
                }
                closed.inner.record(o, now);
                // Checked after every outcome, as resilience4j does: a success can open the
                // breaker too, when it brings the window up to `minimumCalls` with a rate
                // already at its threshold, or when older successes have left a TIME window.
                let t = closed.inner.totals(now);
                if t.calls >= self.minimum_calls() && self.over_threshold(&t) {
                    self.transition(p.generation, State::Open, now, || {
                        format!("{} over {}", self.rates(&t), self.window_name())
                    });
                }
            }
            State::HalfOpen => {
                let half = self.half_open.load();
                if half.generation != p.generation {
                    return;
                }
                let h = &half.inner;
                if o.failed {
                    h.failures.fetch_add(1, Ordering::AcqRel);
                }
                if o.slow {
                    h.slow.fetch_add(1, Ordering::AcqRel);
                }
                // The counters above are written before `calls`, so whoever completes the last
                // permitted call sees every outcome.
                let calls = h.calls.fetch_add(1, Ordering::AcqRel) + 1;
                if calls != self.cfg.permitted_calls_in_half_open {
                    return;
                }
                let t = Totals {
                    calls,
                    failures: h.failures.load(Ordering::Acquire),
                    slow: h.slow.load(Ordering::Acquire),
                };
                let (to, verdict) = if self.over_threshold(&t) {
                    (State::Open, "failed")
                } else {
                    (State::Closed, "passed")
                };
                self.transition(p.generation, to, now, || {
                    format!("{calls} half-open probes {verdict}: {}", self.rates(&t))
                });
            }
            _ => {}
        }
    }

    /// Gives back an unused HALF_OPEN permit, when its call was dropped before an outcome.
    fn release(&self, p: &Permit<'_>) {
        if p.state == State::HalfOpen {
            let half = self.half_open.load();
            if half.generation == p.generation {
                half.inner.permits.fetch_add(1, Ordering::AcqRel);
            }
        }
    }

    /// Sets a state from the admin port: CLOSED (a fresh window), DISABLED or FORCED_OPEN.
    /// Returns the state it replaced.
    pub fn force(&self, to: State, now: Duration) -> State {
        let _held = self.transition.lock().unwrap_or_else(|e| e.into_inner());
        let (from, generation) = unpack(self.word.load(Ordering::Acquire));
        self.enter(from, to, generation + 1, now, "set on the admin port");
        from
    }

    /// Moves OPEN to HALF_OPEN once the wait is over; the timer started on opening calls it.
    pub fn tick(&self, now: Duration) {
        let (state, generation) = unpack(self.word.load(Ordering::Acquire));
        if state == State::Open && clock::nanos(now) >= self.open_until_ns.load(Ordering::Acquire) {
            self.transition(generation, State::HalfOpen, now, || {
                format!("waited {:?} in OPEN", self.wait_in_open())
            });
        }
    }

    /// Stops this breaker from writing metrics: a config change replaced it.
    pub fn retire(&self) {
        self.retired.store(true, Ordering::Relaxed);
    }

    pub fn status(&self, now: Duration) -> Status {
        let state = self.state();
        Status {
            state,
            window: self.closed.load().inner.totals(now),
            open_until: (state == State::Open)
                .then(|| Duration::from_nanos(self.open_until_ns.load(Ordering::Acquire))),
        }
    }

    /// Changes state from generation `expected` to `to`, unless another call already did.
    fn transition(&self, expected: u64, to: State, now: Duration, why: impl FnOnce() -> String) {
        let _held = self.transition.lock().unwrap_or_else(|e| e.into_inner());
        let (from, generation) = unpack(self.word.load(Ordering::Acquire));
        if generation != expected {
            return;
        }
        self.enter(from, to, generation + 1, now, &why());
    }

    /// Sets up phase `to` and publishes it. Called with the transition lock held.
    fn enter(&self, from: State, to: State, generation: u64, now: Duration, why: &str) {
        // Phase state is stored before the state word, so a call that sees the new word also
        // sees its phase.
        match to {
            State::Closed => self.closed.store(Arc::new(Phase {
                generation,
                inner: Window::new(&self.cfg.sliding_window),
            })),
            State::HalfOpen => self.half_open.store(Arc::new(Phase {
                generation,
                inner: HalfOpen::new(self.cfg.permitted_calls_in_half_open),
            })),
            State::Open => {
                let until = now + self.wait_in_open();
                self.open_until_ns
                    .store(clock::nanos(until), Ordering::Release);
                self.wake_at(until);
            }
            State::Disabled | State::ForcedOpen => {}
        }
        self.word.store(pack(to, generation), Ordering::Release);
        if self.retired.load(Ordering::Relaxed) {
            return;
        }
        self.metrics.transition(from as usize, to as usize);
        if to == State::Open || to == State::ForcedOpen {
            tracing::warn!(cluster = %self.cluster, from = from.name(), to = to.name(), "circuit breaker opened: {why}");
        } else {
            tracing::info!(cluster = %self.cluster, from = from.name(), to = to.name(), "circuit breaker changed state: {why}");
        }
    }

    /// Moves to HALF_OPEN at `until` even if no call arrives to do it (resilience4j's
    /// `automaticTransitionFromOpenToHalfOpenEnabled`), so the state shown is never stale.
    fn wake_at(&self, until: Duration) {
        let Ok(rt) = tokio::runtime::Handle::try_current() else {
            return;
        };
        let me = self.me.clone();
        rt.spawn(async move {
            loop {
                let left = until.saturating_sub(clock::now());
                if !left.is_zero() {
                    tokio::time::sleep(left).await;
                }
                let Some(b) = me.upgrade() else { return };
                if clock::now() >= until {
                    b.tick(clock::now());
                    return;
                }
            }
        });
    }

    fn over_threshold(&self, t: &Totals) -> bool {
        t.failure_rate() >= self.cfg.failure_rate_threshold
            || t.slow_rate() >= self.cfg.slow_call_rate_threshold
    }

    /// resilience4j caps `minimumNumberOfCalls` at the size of a COUNT window.
    fn minimum_calls(&self) -> u32 {
        let w = &self.cfg.sliding_window;
        match w.kind {
            SlidingWindowType::Count => self.cfg.minimum_calls.min(w.size),
            SlidingWindowType::Time => self.cfg.minimum_calls,
        }
        .max(1)
    }

    fn wait_in_open(&self) -> Duration {
        self.cfg.wait_in_open.unwrap_or(Duration::from_secs(60))
    }

    /// How long a call may take before it counts as slow.
    pub fn slow_after(&self) -> Duration {
        self.cfg
            .slow_call_duration_threshold
            .unwrap_or(Duration::from_secs(60))
    }

    fn rates(&self, t: &Totals) -> String {
        format!(
            "failure rate {:.1}% (threshold {}%), slow-call rate {:.1}% (threshold {}%) of {} calls",
            t.failure_rate(),
            self.cfg.failure_rate_threshold,
            t.slow_rate(),
            self.cfg.slow_call_rate_threshold,
            t.calls
        )
    }

    fn window_name(&self) -> String {
        let w = &self.cfg.sliding_window;
        match w.kind {
            SlidingWindowType::Count => format!("the COUNT window of the last {} calls", w.size),
            SlidingWindowType::Time => format!("the TIME window of the last {}s", w.size),
        }
    }
}

impl HalfOpen {
    fn new(permits: u32) -> HalfOpen {
        HalfOpen {
            permits: AtomicU32::new(permits),
            calls: AtomicU32::new(0),
            failures: AtomicU32::new(0),
            slow: AtomicU32::new(0),
        }
    }
}

// === impl Permit ===

impl Permit<'_> {
    #[cfg(test)]
    pub fn state(&self) -> State {
        self.state
    }

    /// Reports how the call went. `elapsed` decides whether it was slow.
    pub fn record(mut self, failed: bool, elapsed: Duration, now: Duration) {
        self.reported = true;
        let slow = elapsed > self.breaker.slow_after();
        self.breaker.record(&self, Outcome { failed, slow }, now);
    }

    /// Reports that the call proved nothing about the cluster (e.g. a malformed request).
    pub fn ignore(mut self) {
        self.reported = true;
        self.breaker.release(&self);
    }
}

impl Drop for Permit<'_> {
    fn drop(&mut self) {
        // The caller went away mid-call: free the probe slot so that HALF_OPEN can decide.
        if !self.reported {
            self.breaker.release(self);
        }
    }
}
