//! The app's clusters: one single-endpoint cluster per app port, made once from the
//! bootstrap, through which inbound requests reach the local app.

use super::bootstrap::Bootstrap;
use super::delivery::AppPorts;
use super::runtime::RtCluster;
use crate::http::errors::ProxyError;
use crate::resilience::policy::ClusterResilience;
use crate::upstream::balance::Balancer;
use crate::upstream::cluster::Upstream;
use crate::upstream::endpoint::EndpointState;
use std::net::SocketAddr;
use std::sync::Arc;
use trellis_config::model::LbPolicy;

/// One single-endpoint cluster per app port.
pub struct AppClusters {
    by_port: Vec<(u16, Arc<RtCluster>)>,
    /// The app's ports by name, and its default port.
    pub ports: AppPorts,
}

impl AppClusters {
    pub fn new(b: &Bootstrap) -> AppClusters {
        let by_port: Vec<(u16, Arc<RtCluster>)> = b
            .app
            .ports
            .values()
            .map(|&port| {
                let addr = SocketAddr::new(b.app.address, port);
                let name = format!("inbound|{port}");
                let ep = Arc::new(EndpointState::new(addr));
                let balancer = Balancer {
                    policy: LbPolicy::RoundRobin,
                    endpoints: vec![ep],
                    cursor: Default::default(),
                    ring: None,
                };
                (
                    port,
                    Arc::new(RtCluster {
                        upstream: Upstream {
                            name: Arc::new(name),
                            protocol: Default::default(),
                            balancer,
                            hash_key: None,
                            outlier: None,
                        },
                        service_label: Arc::new(format!(
                            "{}.{}",
                            b.workload.name, b.workload.namespace
                        )),
                        service: format!("{}/{}", b.workload.namespace, b.workload.name),
                        port,
                        resilience: ClusterResilience::default(),
                        // The app is on this host, reached in plaintext.
                        mtls: false,
                    }),
                )
            })
            .collect();
        AppClusters {
            by_port,
            ports: AppPorts::new(&b.app.ports),
        }
    }

    /// The cluster of app port `port`, if the app listens there.
    pub fn for_exact_port(&self, port: u16) -> Option<&Arc<RtCluster>> {
        self.by_port
            .iter()
            .find(|(p, _)| *p == port)
            .map(|(_, c)| c)
    }

    /// The cluster of `port`, which `app_port` chose among the app's ports.
    pub(crate) fn cluster(&self, port: u16) -> Result<Arc<RtCluster>, ProxyError> {
        self.for_exact_port(port)
            .cloned()
            .ok_or(ProxyError::NoAppPorts)
    }
}
