//! A route's `ClientRateLimit`: a token bucket per client address (GCRA: one timestamp per
//! client), in shards so that clients rarely share a lock and no lock is global. The table
//! is bounded: a shard that fills up first forgets the clients whose buckets are full again
//! (nothing is lost by that), and past its cap lets a new client through untracked rather
//! than refuse it or grow without bound.

use crate::clock;
use std::collections::HashMap;
use std::hash::BuildHasher;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::Duration;

const SHARDS: usize = 64;
/// Clients tracked per shard: 64 × 4,096 = 262,144 addresses, about 10 MB at most.
const PER_SHARD: usize = 4096;

pub struct ClientLimiter {
    /// `namespace/name` of the ClientRateLimit, for the error.
    pub name: String,
    pub per_second: f64,
    pub burst: u32,
    /// Nanoseconds between two tokens, and how far ahead a client may spend (`burst`).
    interval: u64,
    tolerance: u64,
    shards: Box<[Mutex<Shard>]>,
    /// Random per limiter (SipHash keys), so a client cannot pick addresses that crowd one
    /// shard.
    hasher: std::collections::hash_map::RandomState,
}

#[derive(Default)]
struct Shard {
    /// Per client: when its bucket would be full again, in clock nanos.
    tat: HashMap<IpAddr, u64>,
    /// When the shard last forgot its idle clients: at most once a second, so a full shard
    /// under a flood of new addresses costs one scan a second, not one per request.
    swept: u64,
}

impl ClientLimiter {
    pub fn new(name: String, per_second: f64, burst: u32) -> ClientLimiter {
        let interval = (1e9 / per_second).clamp(1.0, u64::MAX as f64 / 4.0) as u64;
        ClientLimiter {
            name,
            per_second,
            burst,
            interval,
            tolerance: interval.saturating_mul(u64::from(burst.max(1))),
            shards: (0..SHARDS).map(|_| Mutex::default()).collect(),
            hasher: Default::default(),
        }
    }

    /// Whether a limiter built for `per_second` and `burst` is this one's twin, so that a
    /// config change that keeps them keeps the buckets too.
    pub fn same_settings(&self, per_second: f64, burst: u32) -> bool {
        self.per_second == per_second && self.burst == burst
    }

    /// Takes a token for `client` now, or says how long until it has one.
    pub fn check(&self, client: IpAddr) -> Result<(), Duration> {
        self.check_at(client, clock::nanos(clock::now()))
    }

    fn check_at(&self, client: IpAddr, now: u64) -> Result<(), Duration> {
        let shard = &self.shards[self.hasher.hash_one(client) as usize % SHARDS];
        let mut shard = shard.lock().unwrap_or_else(|e| e.into_inner());
        if shard.tat.len() >= PER_SHARD && !shard.tat.contains_key(&client) {
            if now.saturating_sub(shard.swept) >= 1_000_000_000 {
                // Forget the clients whose buckets are full again.
                shard.tat.retain(|_, tat| *tat > now);
                shard.swept = now;
            }
            if shard.tat.len() >= PER_SHARD {
                return Ok(());
            }
        }
        let tat = shard.tat.entry(client).or_insert(0);
        let next = (*tat).max(now).saturating_add(self.interval);
        if next - now > self.tolerance {
            return Err(Duration::from_nanos(next - now - self.tolerance));
        }
        *tat = next;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SEC: u64 = 1_000_000_000;

    #[test]
    fn each_client_has_its_own_bucket_of_burst_then_rate() {
        let l = ClientLimiter::new("rides/per-client".into(), 2.0, 3);
        let (a, b): (IpAddr, IpAddr) = ("10.0.0.1".parse().unwrap(), "10.0.0.2".parse().unwrap());
        let t = 100 * SEC;
        for _ in 0..3 {
            assert!(l.check_at(a, t).is_ok());
        }
        let wait = l.check_at(a, t).unwrap_err();
        assert_eq!(wait, Duration::from_millis(500), "one token every 500ms");
        // Another client is untouched by a's spending.
        assert!(l.check_at(b, t).is_ok());
        // Half a second later a has one token again, and only one.
        assert!(l.check_at(a, t + SEC / 2).is_ok());
        assert!(l.check_at(a, t + SEC / 2).is_err());
    }

    #[test]
    fn a_full_shard_forgets_idle_clients_and_never_grows_past_its_cap() {
        let l = ClientLimiter::new("x".into(), 1.0, 1);
        let t = 100 * SEC;
        for i in 0..(SHARDS * PER_SHARD * 2) as u32 {
            let ip = IpAddr::from(i.to_be_bytes());
            let _ = l.check_at(ip, t);
        }
        let tracked: usize = l.shards.iter().map(|s| s.lock().unwrap().tat.len()).sum();
        assert!(tracked <= SHARDS * PER_SHARD, "{tracked}");
        // Ten seconds on, every bucket is full again: a new client is tracked again.
        let fresh = IpAddr::from([250, 0, 0, 1]);
        assert!(l.check_at(fresh, t + 10 * SEC).is_ok());
        assert!(
            l.check_at(fresh, t + 10 * SEC).is_err(),
            "tracked, so limited"
        );
    }
}
