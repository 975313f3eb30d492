//! A consistent-hash ring (Ketama style): each endpoint owns many points, so adding or
//! removing one endpoint moves only about 1/N of the keys.

use std::hash::{DefaultHasher, Hash, Hasher};
use std::net::SocketAddr;

/// Points per endpoint: enough to keep the spread within a few percent.
const POINTS_PER_ENDPOINT: u32 = 128;

#[derive(Debug)]
pub struct Ring {
    /// Sorted by hash; the value is an index into the cluster's endpoint list.
    points: Vec<(u64, usize)>,
}

/// The hash used for keys and points alike. `DefaultHasher::new()` uses fixed keys.
pub fn hash_key(key: impl Hash) -> u64 {
    let mut h = DefaultHasher::new();
    key.hash(&mut h);
    h.finish()
}

impl Ring {
    pub fn new(endpoints: &[SocketAddr]) -> Ring {
        let mut points: Vec<(u64, usize)> = endpoints
            .iter()
            .enumerate()
            .flat_map(|(i, addr)| (0..POINTS_PER_ENDPOINT).map(move |p| (hash_key((addr, p)), i)))
            .collect();
        points.sort_unstable();
        Ring { points }
    }

    /// The endpoint index that owns `hash`. The ring is never empty when this is called.
    pub fn lookup(&self, hash: u64) -> usize {
        let i = self.points.partition_point(|(h, _)| *h < hash);
        self.points
            .get(i)
            .or(self.points.first())
            .map_or(0, |p| p.1)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_key_same_endpoint_and_few_keys_move() {
        let eps: Vec<SocketAddr> = (1..=4)
            .map(|i| format!("127.0.0.{i}:80").parse().unwrap())
            .collect();
        let ring = Ring::new(&eps);
        let before: Vec<usize> = (0..1000u64).map(|k| ring.lookup(hash_key(k))).collect();
        assert_eq!(before[7], ring.lookup(hash_key(7u64)));
        // Every endpoint gets a fair share (25% each, allow 15-35%).
        for i in 0..4 {
            let n = before.iter().filter(|&&e| e == i).count();
            assert!((150..350).contains(&n), "endpoint {i} got {n} of 1000 keys");
        }
        // Removing the last endpoint moves only its own keys.
        let ring3 = Ring::new(&eps[..3]);
        let moved = (0..1000)
            .filter(|&k| before[k] != 3 && ring3.lookup(hash_key(k)) != before[k])
            .count();
        assert_eq!(moved, 0);
    }
}
