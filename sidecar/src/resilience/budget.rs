//! The retry budget of a cluster, after Finagle's and Linkerd's: under a failing upstream,
//! retries add at most `percent`% (plus a small reserve) to the load instead of multiplying it
//! by the number of attempts.

// Every request deposits `percent`/100 of a retry, every retry withdraws one, deposits expire
// after 10 s, and a reserve of `minPerSecond` retries per second is always there for clusters
// with little traffic.
//
// Lock-free: one counter word per second. Two retries racing for the last token may both get
// it; the overdraft is at most the number of concurrent retries.

use super::window::SecondBuckets;
use std::time::Duration;
use trellis_config::model::RetryBudget;

/// How long a deposit counts (Finagle's and Linkerd's default TTL).
pub const TTL_SECS: u64 = 10;
/// One retry, in budget units: 1/10000 of a retry is the smallest deposit.
const RETRY: u64 = 10_000;
/// Deposits in the low half of a bucket word, withdrawals in the high half.
const HALF: u32 = 32;

pub struct Budget {
    deposit: u64,
    reserve: u64,
    seconds: SecondBuckets,
}

impl Budget {
    pub fn new(cfg: RetryBudget) -> Budget {
        Budget {
            deposit: (cfg.percent.clamp(0.0, 100.0) * RETRY as f64 / 100.0).round() as u64,
            reserve: u64::from(cfg.min_per_second) * TTL_SECS * RETRY,
            seconds: SecondBuckets::new(TTL_SECS as usize),
        }
    }

    /// Called once for each request that could be retried.
    pub fn deposit(&self, now: Duration) {
        if self.deposit > 0 {
            self.seconds.add(now.as_secs(), self.deposit);
        }
    }

    /// Takes one retry from the budget, if there is one left.
    pub fn withdraw(&self, now: Duration) -> bool {
        let sec = now.as_secs();
        let (mut deposits, mut withdrawals) = (0u64, 0u64);
        for w in self.seconds.words(sec) {
            deposits += w & u64::from(u32::MAX);
            withdrawals += w >> HALF;
        }
        if self.reserve + deposits < withdrawals + RETRY {
            return false;
        }
        self.seconds.add(sec, RETRY << HALF);
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::collections::VecDeque;

    fn budget(percent: f64, min_per_second: u32) -> Budget {
        Budget::new(RetryBudget {
            percent,
            min_per_second,
        })
    }

    #[test]
    fn allows_percent_of_requests_plus_the_reserve() {
        let b = budget(20.0, 1);
        let t = Duration::from_secs(100);
        for _ in 0..100 {
            b.deposit(t);
        }
        // 20% of 100 requests, plus 1/s over the 10 s TTL.
        let allowed = (0..100).filter(|_| b.withdraw(t)).count();
        assert_eq!(allowed, 30);
    }

    #[test]
    fn deposits_and_withdrawals_expire_after_the_ttl() {
        let b = budget(50.0, 0);
        let t = Duration::from_secs(100);
        for _ in 0..10 {
            b.deposit(t);
        }
        assert_eq!((0..10).filter(|_| b.withdraw(t)).count(), 5);
        let later = t + Duration::from_secs(TTL_SECS);
        assert!(!b.withdraw(later), "old deposits no longer count");
        b.deposit(later);
        b.deposit(later);
        assert!(b.withdraw(later), "new ones do");
    }

    #[derive(Debug, Clone)]
    enum Step {
        /// Time passes, in milliseconds.
        Wait(u64),
        /// Requests arrive, each depositing.
        Requests(u32),
        /// Retries ask to withdraw.
        Retries(u32),
    }

    fn step() -> impl Strategy<Value = Step> {
        prop_oneof![
            2 => (0u64..=4000).prop_map(Step::Wait),
            2 => (1u32..=40).prop_map(Step::Requests),
            3 => (1u32..=15).prop_map(Step::Retries),
        ]
    }

    /// The seconds of the events that still count at second `sec`, oldest first.
    fn in_window(events: &mut VecDeque<u64>, sec: u64) -> u64 {
        while events.front().is_some_and(|&s| s + TTL_SECS <= sec) {
            events.pop_front();
        }
        events.len() as u64
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 1024, ..ProptestConfig::default() })]

        /// The bound the module documents, exactly: a deposit or withdrawal counts during the
        /// whole second it was made in and the `TTL_SECS` - 1 after it, and a retry at second
        /// `s` is granted if and only if, with it, the retries that count at `s` are at most
        /// `minPerSecond` × `TTL_SECS` + `percent`/100 × the requests that count at `s`. So the
        /// budget is never overdrawn, and never refuses a retry that fits.
        #[test]
        fn retries_never_exceed_the_budget_and_fitting_ones_are_granted(
            // Whole hundredths of a percent: the budget's own unit, so the bound is exact.
            hundredths in 0u32..=10_000,
            min_per_second in 0u32..=3,
            steps in prop::collection::vec(step(), 1..150),
        ) {
            let b = budget(f64::from(hundredths) / 100.0, min_per_second);
            let mut now = Duration::from_secs(1000);
            let (mut requests, mut retries) = (VecDeque::new(), VecDeque::new());
            // In ten-thousandths of a retry, to stay in integers.
            let reserve = u64::from(min_per_second) * TTL_SECS * 10_000;
            for (i, step) in steps.into_iter().enumerate() {
                let sec = now.as_secs();
                match step {
                    Step::Wait(ms) => now += Duration::from_millis(ms),
                    Step::Requests(n) => {
                        for _ in 0..n {
                            b.deposit(now);
                            requests.push_back(sec);
                        }
                    }
                    Step::Retries(n) => {
                        for _ in 0..n {
                            let deposits = u64::from(hundredths) * in_window(&mut requests, sec);
                            let fits = (in_window(&mut retries, sec) + 1) * 10_000
                                <= reserve + deposits;
                            let granted = b.withdraw(now);
                            prop_assert_eq!(granted, fits, "step {}: retry at second {}", i, sec);
                            if granted {
                                retries.push_back(sec);
                            }
                        }
                    }
                }
            }
        }
    }
}
