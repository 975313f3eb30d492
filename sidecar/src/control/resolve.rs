//! The background half of ExternalName Services: one task per DNS name the config uses,
//! looking it up again when its TTL runs out and rebuilding the runtime when the addresses
//! change. A failed lookup keeps the last good addresses (`dns.rs`) and is logged.

use crate::shared::Shared;
use hickory_resolver::TokioResolver;
use hickory_resolver::config::ResolverConfig;
use hickory_resolver::name_server::TokioConnectionProvider;
use std::collections::{BTreeSet, HashMap};
use std::net::IpAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::task::JoinHandle;

/// A zero or tiny TTL must not turn into a busy loop.
const MIN_REFRESH: Duration = Duration::from_secs(1);
/// Hosts-file answers carry a day-long TTL; look again at least this often.
const MAX_REFRESH: Duration = Duration::from_secs(3600);
const MAX_BACKOFF: Duration = Duration::from_secs(30);

/// Keeps one refresh task per DNS name the current config uses, for the proxy's lifetime.
pub async fn run(shared: Arc<Shared>) {
    let resolver = Arc::new(resolver());
    let mut tasks: HashMap<String, JoinHandle<()>> = HashMap::new();
    let mut changed = shared.config.subscribe();
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
        if changed.changed().await.is_err() {
            return;
        }
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
