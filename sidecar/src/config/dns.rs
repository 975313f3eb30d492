//! ExternalName Services: the last good set of addresses of each DNS name, which every runtime
//! build fills in as its clusters' endpoints.

// The names are looked up with hickory-resolver (hosts file, then `/etc/resolv.conf`'s
// servers) by `control/resolve.rs`.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};
use trellis_config::Snapshot;
use trellis_config::snapshot::Endpoint;

/// The last good addresses of each name. Read when a runtime is built, never per request.
#[derive(Default)]
pub struct Resolved {
    addrs: Mutex<HashMap<String, Vec<IpAddr>>>,
}

impl Resolved {
    /// Sets the endpoints of every DNS cluster in `snap` from the last good addresses.
    pub fn fill(&self, snap: &mut Snapshot) {
        let addrs = self.addrs.lock().unwrap_or_else(|e| e.into_inner());
        for c in snap.clusters.values_mut() {
            let Some(dns) = c.dns.clone() else { continue };
            // Only an ExternalName cluster is copied; the rest stay shared.
            Arc::make_mut(c).endpoints = addrs
                .get(&dns.name)
                .map(|ips| {
                    ips.iter()
                        .map(|ip| Endpoint {
                            address: SocketAddr::new(*ip, dns.port),
                            workload: format!("dns:{}", dns.name).into(),
                            service_account: None,
                            identity: None,
                            sidecar: false,
                        })
                        .collect()
                })
                .unwrap_or_default();
        }
    }

    /// Records `ips` for `name`; returns whether they differ from what was there.
    pub fn set(&self, name: &str, ips: Vec<IpAddr>) -> bool {
        let mut addrs = self.addrs.lock().unwrap_or_else(|e| e.into_inner());
        if addrs.get(name) == Some(&ips) {
            return false;
        }
        addrs.insert(name.to_string(), ips);
        true
    }

    pub fn count(&self, name: &str) -> usize {
        let addrs = self.addrs.lock().unwrap_or_else(|e| e.into_inner());
        addrs.get(name).map_or(0, Vec::len)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn set_reports_changes_only() {
        let r = Resolved::default();
        let a: IpAddr = "127.0.0.1".parse().unwrap();
        assert!(r.set("db.example", vec![a]));
        assert!(!r.set("db.example", vec![a]));
        assert_eq!(r.count("db.example"), 1);
    }
}
