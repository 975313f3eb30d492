//! Control-plane metrics, on the HTTP port's `/metrics`.

use prometheus_client::encoding::{EncodeLabelSet, text::encode};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ResultLabel {
    pub result: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReasonLabel {
    pub reason: &'static str,
}

pub struct Metrics {
    registry: Registry,
    pub connected_proxies: Gauge,
    pub pushes: Counter,
    pub acks: Counter,
    pub nacks: Counter,
    pub compilations: Counter,
    pub reloads: Family<ResultLabel, Counter>,
    pub certificates: Family<ResultLabel, Counter>,
    pub refused_objects: Gauge,
    pub refused_streams: Family<ReasonLabel, Counter>,
    pub resumes: Family<ResultLabel, Counter>,
    pub summaries: Counter,
    pub summary_refused: Counter,
    /// Tasks alive in the runtime, read when `/metrics` is rendered.
    runtime_tasks: Gauge,
}

impl Default for Metrics {
    fn default() -> Self {
        let mut registry = Registry::default();
        let m = Metrics {
            registry: Registry::default(),
            connected_proxies: Gauge::default(),
            pushes: Counter::default(),
            acks: Counter::default(),
            nacks: Counter::default(),
            compilations: Counter::default(),
            reloads: Family::default(),
            certificates: Family::default(),
            refused_objects: Gauge::default(),
            refused_streams: Family::default(),
            resumes: Family::default(),
            summaries: Counter::default(),
            summary_refused: Counter::default(),
            runtime_tasks: Gauge::default(),
        };
        registry.register(
            "trellis_control_summary_entries_refused",
            "Entries of proxies' summaries refused by the per-proxy limits: too many keys, or a name too long (docs/dashboard.md)",
            m.summary_refused.clone(),
        );
        registry.register(
            "trellis_control_runtime_tasks",
            "Tasks alive in the control plane's async runtime: each proxy's stream is a few, so a count that only grows is a leak (docs/reliability.md)",
            m.runtime_tasks.clone(),
        );
        registry.register(
            "trellis_control_summaries",
            "Golden-metrics summaries received from proxies (docs/dashboard.md)",
            m.summaries.clone(),
        );
        registry.register(
            "trellis_control_connected_proxies",
            "Proxies with an open discovery stream",
            m.connected_proxies.clone(),
        );
        registry.register(
            "trellis_control_pushes",
            "Updates sent to proxies",
            m.pushes.clone(),
        );
        registry.register(
            "trellis_control_acks",
            "Updates proxies applied",
            m.acks.clone(),
        );
        registry.register(
            "trellis_control_nacks",
            "Updates proxies refused",
            m.nacks.clone(),
        );
        registry.register(
            "trellis_control_compilations",
            "Snapshot compilations (one per proxy kind and config generation)",
            m.compilations.clone(),
        );
        registry.register(
            "trellis_config_reloads",
            "Config loads, by result (applied, rejected, or partial: applied without the objects the cluster source refused on their own)",
            m.reloads.clone(),
        );
        registry.register(
            "trellis_config_refused_objects",
            "Cluster objects refused on their own while the rest of the config serves (see trellis status)",
            m.refused_objects.clone(),
        );
        registry.register(
            "trellis_control_certificates",
            "Certify calls, by result (issued, bad_proof, wrong_identity, error)",
            m.certificates.clone(),
        );
        registry.register(
            "trellis_control_refused_streams",
            "Discovery streams refused, by reason (protocol: the proxy's discovery protocol is not served; invalid: the first message is not a Subscribe with a valid node)",
            m.refused_streams.clone(),
        );
        registry.register(
            "trellis_control_resumes",
            "Proxies that subscribed holding a snapshot, by what their first update was (unchanged: nothing, they held the current one; delta: the difference from the resources they hold; replace: everything, as they named none)",
            m.resumes.clone(),
        );
        Metrics { registry, ..m }
    }
}

impl Metrics {
    pub fn render(&self) -> String {
        if let Ok(rt) = tokio::runtime::Handle::try_current() {
            let tasks = i64::try_from(rt.metrics().num_alive_tasks()).unwrap_or(i64::MAX);
            self.runtime_tasks.set(tasks);
        }
        let mut out = String::new();
        let _ = encode(&mut out, &self.registry);
        out
    }
}
