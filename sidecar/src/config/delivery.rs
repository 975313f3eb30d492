//! The app's ports as Service ports target them, and which AuthorizationPolicies protect each.
//! Policies attach to workload ports, never to the name a caller used (docs/security.md, "What
//! a policy protects").

// A policy on Service S protects every app port that S selects and targets, so `Host:
// billing-v1` reaches the same port as `Host: billing` and meets the same policies.
// `app_port.rs` picks the port a request lands on.

use std::collections::{BTreeMap, HashMap};
use std::time::Duration;
use trellis_config::model::{AppProtocol, DEFAULT_TCP_IDLE_TIMEOUT};
use trellis_config::snapshot::{InboundPolicy, Snapshot, TargetPort};

/// The app's ports as the bootstrap names them, and the one that takes requests no Service
/// port decides: the port named `http`, else the first named one, else the first. (In
/// Kubernetes an unnamed container port is keyed by its number, which no name can be.)
#[derive(Debug, Clone, Default)]
pub struct AppPorts {
    pub by_name: BTreeMap<String, u16>,
    pub default: Option<u16>,
}

impl AppPorts {
    pub fn new(by_name: &BTreeMap<String, u16>) -> AppPorts {
        AppPorts {
            by_name: by_name.clone(),
            default: by_name
                .get("http")
                .or_else(|| {
                    let named = |k: &&String| !k.bytes().all(|b| b.is_ascii_digit());
                    by_name.iter().find(|(k, _)| named(k)).map(|(_, p)| p)
                })
                .or_else(|| by_name.values().next())
                .copied(),
        }
    }

    pub fn has(&self, port: u16) -> bool {
        self.by_name.values().any(|&p| p == port)
    }

    /// The app port a Service port delivers to: its `targetPort` (a number, or a name in the
    /// bootstrap's app ports); with none, the Service port itself when the app listens there,
    /// else the default port. `None`: the target is not a port of this app.
    pub fn target(&self, port: u16, target: Option<&TargetPort>) -> Option<u16> {
        match target {
            Some(TargetPort::Number(n)) => self.has(*n).then_some(*n),
            Some(TargetPort::Name(name)) => self.by_name.get(name).copied(),
            None if self.has(port) => Some(port),
            None => self.default,
        }
    }
}

/// Per app port, the policies that protect it, as indexes into the snapshot's
/// `mesh.authorization`. Built with each runtime, so the request path only looks up.
#[derive(Debug, Default)]
pub struct PortPolicies {
    /// Ports some Service of this workload targets: the policies of all those Services,
    /// sorted. A port not here is protected by every policy of the workload.
    targeted: HashMap<u16, Vec<usize>>,
    /// Ports that a Service port declares as `http2` or `grpc`: the app takes h2c there.
    h2c: Vec<u16>,
    /// Ports that a Service port declares opaque, with its protocol and idle timeout (from
    /// the Service's ResiliencePolicy; `None`: never), sorted by port.
    opaque: Vec<(u16, AppProtocol, Option<Duration>)>,
}

impl PortPolicies {
    pub fn build(snapshot: &Snapshot, app: &AppPorts) -> PortPolicies {
        let policies = &snapshot.mesh.authorization;
        let mut targeted: HashMap<u16, Vec<usize>> = HashMap::new();
        let mut h2c = Vec::new();
        let mut opaque = Vec::new();
        for key in &snapshot.inbound_services {
            let Some(svc) = snapshot.services.get(key) else {
                continue;
            };
            let mine: Vec<usize> = (0..policies.len())
                .filter(|&i| policies[i].service == *key)
                .collect();
            for p in &svc.ports {
                if let Some(app_port) = app.target(p.port, p.target_port.as_ref()) {
                    let set = targeted.entry(app_port).or_default();
                    set.extend(&mine);
                    if matches!(p.protocol, AppProtocol::Http2 | AppProtocol::Grpc) {
                        h2c.push(app_port);
                    }
                    if p.protocol.is_opaque() {
                        // An opaque port routes to the Service's own cluster.
                        let idle = (p.routes.first())
                            .and_then(|r| r.backends.first())
                            .and_then(|b| snapshot.clusters.get(&b.cluster))
                            .map_or(Some(DEFAULT_TCP_IDLE_TIMEOUT), |c| {
                                c.resilience.tcp_idle_timeout()
                            });
                        opaque.push((app_port, p.protocol, idle));
                    }
                }
            }
        }
        for set in targeted.values_mut() {
            set.sort_unstable();
            set.dedup();
        }
        h2c.sort_unstable();
        h2c.dedup();
        // Two Services that disagree about one port: the first by port keeps it.
        opaque.sort_by_key(|o| o.0);
        opaque.dedup_by_key(|o| o.0);
        PortPolicies {
            targeted,
            h2c,
            opaque,
        }
    }

    /// What the app speaks on `port`: h2c when a Service port that targets it says `http2`
    /// or `grpc` (one that does decides, since an h2c-only app cannot take HTTP/1.1), else
    /// HTTP/1.1.
    pub fn protocol(&self, port: u16) -> AppProtocol {
        if self.h2c.contains(&port) {
            AppProtocol::Http2
        } else {
            AppProtocol::Http
        }
    }

    /// The opaque declaration of app port `port`, if a Service port that targets it has one.
    fn declared(&self, port: u16) -> Option<&(u16, AppProtocol, Option<Duration>)> {
        let i = self.opaque.binary_search_by_key(&port, |o| o.0).ok()?;
        self.opaque.get(i)
    }

    /// Whether a Service port declares app port `port` opaque.
    pub fn is_opaque(&self, port: u16) -> bool {
        self.declared(port).is_some()
    }

    /// What opaque bytes to app port `port` carry, and their idle timeout: as a Service port
    /// that targets it declares, else undeclared `tcp` with the default timeout.
    pub fn opaque(&self, port: u16) -> (AppProtocol, Option<Duration>) {
        self.declared(port)
            .map_or((AppProtocol::Tcp, Some(DEFAULT_TCP_IDLE_TIMEOUT)), |o| {
                (o.1, o.2)
            })
    }

    /// The policies that protect `port`.
    pub fn for_port<'a>(
        &'a self,
        policies: &'a [InboundPolicy],
        port: u16,
    ) -> impl Iterator<Item = &'a InboundPolicy> + Clone {
        let set = self.targeted.get(&port);
        policies
            .iter()
            .enumerate()
            .filter(move |(i, _)| set.is_none_or(|s| s.binary_search(i).is_ok()))
            .map(|(_, p)| p)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn targets_resolve_by_number_name_or_port() {
        let ports = BTreeMap::from([("http".to_string(), 9002), ("admin".to_string(), 9003)]);
        let app = AppPorts::new(&ports);
        assert_eq!(app.default, Some(9002));
        assert_eq!(app.target(80, Some(&TargetPort::Number(9003))), Some(9003));
        assert_eq!(app.target(80, Some(&TargetPort::Number(7))), None);
        assert_eq!(
            app.target(80, Some(&TargetPort::Name("admin".into()))),
            Some(9003)
        );
        assert_eq!(app.target(80, Some(&TargetPort::Name("grpc".into()))), None);
        assert_eq!(app.target(9003, None), Some(9003));
        assert_eq!(app.target(80, None), Some(9002));
        // Kubernetes: an unnamed container port is keyed by its number, and is not the
        // default while a named port exists.
        let ports = BTreeMap::from([("9090".to_string(), 9090), ("admin".to_string(), 9003)]);
        let app = AppPorts::new(&ports);
        assert_eq!(app.default, Some(9003));
        assert_eq!(app.target(80, Some(&TargetPort::Number(9090))), Some(9090));
    }
}
