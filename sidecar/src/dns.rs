//! ExternalName Services: their clusters' endpoints are the addresses a DNS name resolves to,
//! looked up with hickory-resolver (hosts file, then `/etc/resolv.conf`'s servers). Each name
//! is re-resolved in the background when its TTL runs out. A failed lookup keeps the last
//! good addresses and is logged. New addresses rebuild the runtime off the request path.

use crate::Shared;
use hickory_resolver::TokioResolver;
use hickory_resolver::config::ResolverConfig;
use hickory_resolver::name_server::TokioConnectionProvider;
use std::collections::{BTreeSet, HashMap};
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::task::JoinHandle;
use trellis_config::Snapshot;
use trellis_config::snapshot::Endpoint;

/// A zero or tiny TTL must not turn into a busy loop.
const MIN_REFRESH: Duration = Duration::from_secs(1);
/// Hosts-file answers carry a day-long TTL; look again at least this often.
const MAX_REFRESH: Duration = Duration::from_secs(3600);
const MAX_BACKOFF: Duration = Duration::from_secs(30);

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
            let Some(dns) = &c.dns else { continue };
            c.endpoints = addrs
                .get(&dns.name)
                .map(|ips| {
                    ips.iter()
                        .map(|ip| Endpoint {
                            address: SocketAddr::new(*ip, dns.port),
                            workload: format!("dns:{}", dns.name),
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
    fn set(&self, name: &str, ips: Vec<IpAddr>) -> bool {
        let mut addrs = self.addrs.lock().unwrap_or_else(|e| e.into_inner());
        if addrs.get(name) == Some(&ips) {
            return false;
        }
        addrs.insert(name.to_string(), ips);
        true
    }

    fn count(&self, name: &str) -> usize {
        let addrs = self.addrs.lock().unwrap_or_else(|e| e.into_inner());
        addrs.get(name).map_or(0, Vec::len)
    }
}

/// Keeps one refresh task per DNS name the current config uses, for the proxy's lifetime.
pub async fn run(shared: Arc<Shared>) {
    let resolver = Arc::new(resolver());
    let mut tasks: HashMap<String, JoinHandle<()>> = HashMap::new();
    loop {
        let names: BTreeSet<String> = shared
            .config
            .current_full()
            .map(|rt| {
                rt.snapshot
                    .clusters
                    .values()
                    .filter_map(|c| c.dns.as_ref().map(|d| d.name.clone()))
                    .collect()
            })
            .unwrap_or_default();
        tasks.retain(|name, task| {
            let keep = names.contains(name);
            if !keep {
                task.abort();
            }
            keep
        });
        for name in names {
            if let std::collections::hash_map::Entry::Vacant(slot) = tasks.entry(name) {
                let name = slot.key().clone();
                slot.insert(tokio::spawn(refresh(
                    shared.clone(),
                    resolver.clone(),
                    name,
                )));
            }
        }
        shared.config.changed().await;
    }
}

/// The system's resolver; without a readable `/etc/resolv.conf`, one that only reads the
/// hosts file, which is logged.
fn resolver() -> TokioResolver {
    match TokioResolver::builder_tokio() {
        Ok(b) => b.build(),
        Err(e) => {
            tracing::warn!(error = %e, "cannot read the system DNS config; ExternalName Services resolve from the hosts file only");
            TokioResolver::builder_with_config(
                ResolverConfig::new(),
                TokioConnectionProvider::default(),
            )
            .build()
        }
    }
}

async fn refresh(shared: Arc<Shared>, resolver: Arc<TokioResolver>, name: String) {
    let mut backoff = MIN_REFRESH;
    loop {
        // A fully qualified query: the name in the mesh YAML is not a search-list suffix.
        let fqdn = format!("{name}.");
        let wait = match resolver.lookup_ip(fqdn.as_str()).await {
            Ok(lookup) if lookup.iter().next().is_some() => {
                let mut ips: Vec<IpAddr> = lookup.iter().collect();
                ips.sort();
                ips.dedup();
                if shared.config.dns.set(&name, ips.clone()) {
                    tracing::info!(%name, addresses = ?ips, "ExternalName resolved");
                    shared.config.refresh_dns(&shared.metrics);
                }
                backoff = MIN_REFRESH;
                lookup
                    .valid_until()
                    .saturating_duration_since(Instant::now())
                    .clamp(MIN_REFRESH, MAX_REFRESH)
            }
            other => {
                let error = match other {
                    Err(e) => e.to_string(),
                    Ok(_) => "no addresses".to_string(),
                };
                tracing::warn!(
                    %name,
                    %error,
                    kept = shared.config.dns.count(&name),
                    "ExternalName resolution failed; keeping the last good addresses"
                );
                let wait = backoff;
                backoff = (backoff * 2).min(MAX_BACKOFF);
                wait
            }
        };
        tokio::time::sleep(wait).await;
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
