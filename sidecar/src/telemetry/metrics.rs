//! Prometheus metrics with the names and labels of DESIGN.md's contract (the mTLS ones are in
//! `tls/metrics.rs`). Over 400 lines because it is that contract in one place, where every
//! name and label set can be checked.

// Label values are `Arc`s prepared at config build time, so recording allocates nothing;
// per-cluster resilience metrics hand out their series once, when a cluster's state is built.

use prometheus_client::encoding::{EncodeLabelSet, text::encode};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;
use std::sync::Arc;
use std::time::Duration;

/// The same bounds as a `Summary`'s latency buckets, so the dashboard's quantiles and
/// Prometheus's agree.
const BUCKETS: [f64; 14] = trellis_proto::LATENCY_BOUNDS;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RequestLabels {
    pub direction: &'static str,
    pub source_workload: Arc<String>,
    pub source_namespace: Arc<String>,
    /// The source's service account: this proxy's own on outbound, the one the caller
    /// proved over mTLS on inbound. Bounded by the mesh's accounts.
    pub source_identity: Arc<String>,
    pub destination_service: Arc<String>,
    pub route: Arc<String>,
    pub response_code: u16,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct VersionLabels {
    version: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ReloadLabels {
    result: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ClusterLabels {
    pub cluster: Arc<String>,
}

/// The `state` label values of `trellis_circuit_breaker_state` (resilience4j's metric form),
/// indexed by the breaker's state number (`resilience::breaker::state::State as usize`).
pub const BREAKER_STATES: [&str; 5] = ["closed", "open", "half_open", "disabled", "forced_open"];

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct BreakerStateLabels {
    cluster: Arc<String>,
    state: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct TransitionLabels {
    cluster: Arc<String>,
    from: &'static str,
    to: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct FaultLabels {
    cluster: Arc<String>,
    fault: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct TcpLabels {
    pub direction: &'static str,
    pub destination_service: Arc<String>,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct DirectionLabels {
    direction: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ConnectionLabels {
    protocol: &'static str,
    tls: &'static str,
}

/// `trellis_upstream_connections_opened_total`, by protocol and by whether the connection is
/// mTLS (a handshake) or plain, indexed `[http2][mtls]`. Each series is resolved once, when
/// the pools are made.
#[derive(Clone, Default)]
pub struct ConnectionCounters([[Counter; 2]; 2]);

impl ConnectionCounters {
    /// The counter of connections opened over HTTP/2 (`h2`) or HTTP/1.1, mTLS or plain.
    pub fn opened(&self, h2: bool, mtls: bool) -> &Counter {
        &self.0[usize::from(h2)][usize::from(mtls)]
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RefusedLabels {
    reason: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct CutLabels {
    direction: &'static str,
    destination_service: Arc<String>,
    reason: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct KafkaLabels {
    pub direction: &'static str,
    pub destination_service: Arc<String>,
    pub api_key: &'static str,
}

/// The counters of one opaque TCP connection's destination, fetched once per connection.
#[derive(Clone)]
pub struct TcpSeries {
    pub labels: TcpLabels,
    pub opened: Counter,
    pub closed: Counter,
    /// Bytes from the downstream (the connecting side) to the upstream.
    pub sent: Counter,
    /// Bytes from the upstream back to the downstream.
    pub received: Counter,
}

/// Kafka requests by API key, decoded from opaque connections to a `kafka` port.
pub struct KafkaMetrics {
    pub requests: Family<KafkaLabels, Counter>,
    pub errors: Family<KafkaLabels, Counter>,
    pub durations: Family<KafkaLabels, Histogram, fn() -> Histogram>,
}

/// One Kafka API key's series on one connection.
#[derive(Clone)]
pub struct KafkaSeries {
    pub requests: Counter,
    pub errors: Counter,
    pub duration: Histogram,
}

impl KafkaMetrics {
    fn register(r: &mut Registry) -> KafkaMetrics {
        let m = KafkaMetrics {
            requests: Family::default(),
            errors: Family::default(),
            durations: Family::new_with_constructor(|| Histogram::new(BUCKETS)),
        };
        r.register(
            "trellis_kafka_requests",
            "Kafka requests seen on connections to a port whose Service says appProtocol: kafka, by API key",
            m.requests.clone(),
        );
        r.register(
            "trellis_kafka_request_errors",
            "Kafka responses with a nonzero top-level error code, and requests still unanswered when their connection closed, by API key",
            m.errors.clone(),
        );
        r.register(
            "trellis_kafka_request_duration_seconds",
            "From a Kafka request's header passing to its response's header passing, by API key",
            m.durations.clone(),
        );
        m
    }

    /// The series of `api_key` (a name from `l4/kafka/decode.rs`) on a connection.
    pub fn series(&self, tcp: &TcpLabels, api_key: &'static str) -> KafkaSeries {
        let l = KafkaLabels {
            direction: tcp.direction,
            destination_service: tcp.destination_service.clone(),
            api_key,
        };
        KafkaSeries {
            requests: self.requests.get_or_create(&l).clone(),
            errors: self.errors.get_or_create(&l).clone(),
            duration: self.durations.get_or_create(&l).clone(),
        }
    }
}

/// `trellis_config_apply_duration_seconds`: from 100 µs (one endpoint changed) to 10 s (a
/// mesh of tens of thousands of documents parsed whole).
const APPLY_BUCKETS: [f64; 16] = [
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
    5.0, 10.0,
];

pub(super) type HistogramFamily = Family<RequestLabels, Histogram, fn() -> Histogram>;

pub struct Metrics {
    registry: Registry,
    requests: Family<RequestLabels, Counter>,
    durations: HistogramFamily,
    config_version: Family<VersionLabels, Gauge>,
    reloads: Family<ReloadLabels, Counter>,
    apply_durations: Histogram,
    breaker_state: Family<BreakerStateLabels, Gauge>,
    breaker_transitions: Family<TransitionLabels, Counter>,
    breaker_rejected: Family<ClusterLabels, Counter>,
    retries: Family<ClusterLabels, Counter>,
    ejections: Family<ClusterLabels, Counter>,
    rate_limited: Family<ClusterLabels, Counter>,
    bulkhead_rejected: Family<ClusterLabels, Counter>,
    faults: Family<FaultLabels, Counter>,
    pub security: crate::tls::metrics::SecurityMetrics,
    pub trace: crate::telemetry::export::TraceMetrics,
    tcp_opened: Family<TcpLabels, Counter>,
    tcp_closed: Family<TcpLabels, Counter>,
    tcp_sent: Family<TcpLabels, Counter>,
    tcp_received: Family<TcpLabels, Counter>,
    detect_timeouts: Family<DirectionLabels, Counter>,
    server_first: Family<DirectionLabels, Counter>,
    tcp_cut: Family<CutLabels, Counter>,
    access_log_dropped: Counter,
    pub kafka: KafkaMetrics,
    refused: Family<RefusedLabels, Counter>,
    connections: Family<ConnectionLabels, Counter>,
    /// Tasks alive in the proxy's runtime, read when `/metrics` is rendered.
    runtime_tasks: Gauge,
    /// What the control plane's summary reads (`golden.rs`); not in the registry.
    pub golden: super::golden::Golden,
}

/// The series one circuit breaker writes.
#[derive(Clone)]
pub struct BreakerMetrics {
    cluster: Arc<String>,
    /// Indexed like `BREAKER_STATES`.
    states: [Gauge; 5],
    transitions: Family<TransitionLabels, Counter>,
    /// Calls refused because the breaker was OPEN, HALF_OPEN and out of probes, or FORCED_OPEN.
    pub rejected: Counter,
}

impl BreakerMetrics {
    /// Sets the state gauge: 1 for state number `state`, 0 for the others.
    pub fn show(&self, state: usize) {
        for (s, gauge) in self.states.iter().enumerate() {
            gauge.set(i64::from(s == state));
        }
    }

    pub fn transition(&self, from: usize, to: usize) {
        self.show(to);
        self.transitions
            .get_or_create(&TransitionLabels {
                cluster: self.cluster.clone(),
                from: BREAKER_STATES[from],
                to: BREAKER_STATES[to],
            })
            .inc();
    }
}

/// A per-cluster resilience counter.
#[derive(Clone, Copy, Debug)]
pub enum Count {
    Retries,
    Ejections,
    RateLimited,
    BulkheadRejected,
    FaultDelays,
    FaultAborts,
}

impl Default for Metrics {
    fn default() -> Self {
        let mut registry = Registry::default();
        let requests = Family::<RequestLabels, Counter>::default();
        let durations: HistogramFamily = Family::new_with_constructor(|| Histogram::new(BUCKETS));
        let config_version = Family::<VersionLabels, Gauge>::default();
        let reloads = Family::<ReloadLabels, Counter>::default();
        let apply_durations = Histogram::new(APPLY_BUCKETS);
        registry.register(
            "trellis_requests",
            "Requests handled by the proxy",
            requests.clone(),
        );
        registry.register(
            "trellis_request_duration_seconds",
            "Time from request received to response headers sent",
            durations.clone(),
        );
        registry.register(
            "trellis_config_version_info",
            "The config version being served (value 1)",
            config_version.clone(),
        );
        registry.register(
            "trellis_config_reloads",
            "Config loads, by result (applied or rejected)",
            reloads.clone(),
        );
        registry.register(
            "trellis_config_apply_duration_seconds",
            "Time to take in a config that was applied or rejected: from a discovery update's arrival, or the mesh file's change, to the new config serving or its refusal",
            apply_durations.clone(),
        );
        let security = crate::tls::metrics::SecurityMetrics::register(&mut registry);
        let trace = crate::telemetry::export::TraceMetrics::register(&mut registry);
        let kafka = KafkaMetrics::register(&mut registry);
        let m = Metrics {
            kafka,
            server_first: Family::default(),
            tcp_cut: Family::default(),
            access_log_dropped: Counter::default(),
            security,
            trace,
            registry,
            requests,
            durations,
            config_version,
            reloads,
            apply_durations,
            breaker_state: Family::default(),
            breaker_transitions: Family::default(),
            breaker_rejected: Family::default(),
            retries: Family::default(),
            ejections: Family::default(),
            rate_limited: Family::default(),
            bulkhead_rejected: Family::default(),
            faults: Family::default(),
            tcp_opened: Family::default(),
            tcp_closed: Family::default(),
            tcp_sent: Family::default(),
            tcp_received: Family::default(),
            detect_timeouts: Family::default(),
            refused: Family::default(),
            connections: Family::default(),
            runtime_tasks: Gauge::default(),
            golden: Default::default(),
        };
        m.register_resilience().register_tcp()
    }
}

impl Metrics {
    /// The request families, for a `RequestSeries` (`series.rs`) to create its series in.
    pub(super) fn request_families(&self) -> (Family<RequestLabels, Counter>, HistogramFamily) {
        (self.requests.clone(), self.durations.clone())
    }

    pub fn record(&self, labels: &RequestLabels, elapsed: Duration) {
        self.requests.get_or_create(labels).inc();
        self.durations
            .get_or_create(labels)
            .observe(elapsed.as_secs_f64());
    }

    /// A config that changed what is served, after `took`.
    pub fn config_applied(&self, version: &str, took: Duration) {
        self.apply_durations.observe(took.as_secs_f64());
        self.config_version.clear();
        self.config_version
            .get_or_create(&VersionLabels {
                version: version.to_string(),
            })
            .set(1);
        self.reloads
            .get_or_create(&ReloadLabels { result: "applied" })
            .inc();
    }

    /// A config refused after `took`; the previous one keeps serving.
    pub fn config_rejected(&self, took: Duration) {
        self.apply_durations.observe(took.as_secs_f64());
        self.reloads
            .get_or_create(&ReloadLabels { result: "rejected" })
            .inc();
    }

    fn register_resilience(mut self) -> Self {
        let r = &mut self.registry;
        r.register(
            "trellis_circuit_breaker_state",
            "Circuit breaker state of a cluster: 1 for the current state, 0 for the others",
            self.breaker_state.clone(),
        );
        r.register(
            "trellis_circuit_breaker_transitions",
            "Circuit breaker state changes",
            self.breaker_transitions.clone(),
        );
        r.register(
            "trellis_circuit_breaker_rejected",
            "Requests answered circuit-open without calling the cluster",
            self.breaker_rejected.clone(),
        );
        r.register(
            "trellis_upstream_retries",
            "Retries sent to a cluster (not counting first attempts)",
            self.retries.clone(),
        );
        r.register(
            "trellis_outlier_ejections",
            "Endpoints ejected by outlier detection",
            self.ejections.clone(),
        );
        r.register(
            "trellis_rate_limited",
            "Requests answered rate-limited",
            self.rate_limited.clone(),
        );
        r.register(
            "trellis_bulkhead_rejected",
            "Requests answered overloaded by a cluster's bulkhead",
            self.bulkhead_rejected.clone(),
        );
        r.register(
            "trellis_faults_injected",
            "Faults injected by a ResiliencePolicy, by kind (delay or abort)",
            self.faults.clone(),
        );
        self
    }

    fn register_tcp(mut self) -> Self {
        let r = &mut self.registry;
        r.register(
            "trellis_tcp_connections_opened",
            "Opaque TCP connections opened to an upstream",
            self.tcp_opened.clone(),
        );
        r.register(
            "trellis_tcp_connections_closed",
            "Opaque TCP connections closed (both directions done, or failed)",
            self.tcp_closed.clone(),
        );
        r.register(
            "trellis_tcp_sent_bytes",
            "Opaque TCP bytes from the downstream to the upstream",
            self.tcp_sent.clone(),
        );
        r.register(
            "trellis_tcp_received_bytes",
            "Opaque TCP bytes from the upstream to the downstream",
            self.tcp_received.clone(),
        );
        r.register(
            "trellis_protocol_detect_timeouts",
            "Connections whose client sent too little to detect a protocol in time; they fell back to opaque TCP",
            self.detect_timeouts.clone(),
        );
        r.register(
            "trellis_protocol_detect_server_first",
            "Connections to a known destination whose server spoke before the client (a banner): opaque TCP at once, without the detection timeout",
            self.server_first.clone(),
        );
        r.register(
            "trellis_access_log_dropped_lines",
            "Access-log lines dropped because stdout could not keep up (the writer's queue of 4096 lines was full); requests never wait for the log",
            self.access_log_dropped.clone(),
        );
        r.register(
            "trellis_tcp_connections_cut",
            "Opaque connections the proxy closed, by reason (idle: no byte either way for the Service's tcp.idleTimeout; denied: a config change made AuthorizationPolicy deny it)",
            self.tcp_cut.clone(),
        );
        r.register(
            "trellis_outbound_refused",
            "Intercepted outbound connections refused, by reason (registry-only: no Service has that clusterIP and port; not-in-scope: a mesh Service the workload's Scope leaves out)",
            self.refused.clone(),
        );
        r.register(
            "trellis_runtime_tasks",
            "Tasks alive in the proxy's async runtime: each connection, stream and background job is one, so a count that only grows is a leak (docs/reliability.md)",
            self.runtime_tasks.clone(),
        );
        r.register(
            "trellis_upstream_connections_opened",
            "HTTP connections this proxy opened to endpoints and to its app, by protocol (http1, http2) and transport (mtls: one TLS handshake each; plain)",
            self.connections.clone(),
        );
        self
    }

    /// The counters of TCP connections in `direction` to `destination`.
    pub fn tcp(&self, direction: &'static str, destination: &Arc<String>) -> TcpSeries {
        let l = TcpLabels {
            direction,
            destination_service: destination.clone(),
        };
        TcpSeries {
            opened: self.tcp_opened.get_or_create(&l).clone(),
            closed: self.tcp_closed.get_or_create(&l).clone(),
            sent: self.tcp_sent.get_or_create(&l).clone(),
            received: self.tcp_received.get_or_create(&l).clone(),
            labels: l,
        }
    }

    pub fn detect_timeout(&self, direction: &'static str) {
        self.detect_timeouts
            .get_or_create(&DirectionLabels { direction })
            .inc();
    }

    pub fn detect_server_first(&self, direction: &'static str) {
        self.server_first
            .get_or_create(&DirectionLabels { direction })
            .inc();
    }

    /// An opaque connection the proxy closed (`reason`: idle, denied).
    pub fn tcp_cut(&self, tcp: &TcpLabels, reason: &'static str) {
        let l = CutLabels {
            direction: tcp.direction,
            destination_service: tcp.destination_service.clone(),
            reason,
        };
        self.tcp_cut.get_or_create(&l).inc();
    }

    /// The counters of upstream connections opened, one per protocol and transport.
    pub fn connections(&self) -> ConnectionCounters {
        let c = |protocol, tls| {
            self.connections
                .get_or_create(&ConnectionLabels { protocol, tls })
                .clone()
        };
        ConnectionCounters([
            [c("http1", "plain"), c("http1", "mtls")],
            [c("http2", "plain"), c("http2", "mtls")],
        ])
    }

    /// The counter of access-log lines dropped (`telemetry/access_log.rs`).
    pub fn access_log_dropped(&self) -> Counter {
        self.access_log_dropped.clone()
    }

    pub fn refused(&self, reason: &'static str) {
        self.refused.get_or_create(&RefusedLabels { reason }).inc();
    }

    /// The series of the circuit breaker of `cluster`.
    pub fn breaker(&self, cluster: &Arc<String>) -> BreakerMetrics {
        let states = BREAKER_STATES.map(|state| {
            self.breaker_state
                .get_or_create(&BreakerStateLabels {
                    cluster: cluster.clone(),
                    state,
                })
                .clone()
        });
        BreakerMetrics {
            cluster: cluster.clone(),
            states,
            transitions: self.breaker_transitions.clone(),
            rejected: self
                .breaker_rejected
                .get_or_create(&ClusterLabels {
                    cluster: cluster.clone(),
                })
                .clone(),
        }
    }

    /// A counter of `cluster`, created when the cluster's policy turns its feature on, so
    /// that clusters without the feature have no series.
    pub fn counter(&self, kind: Count, cluster: &Arc<String>) -> Counter {
        let l = ClusterLabels {
            cluster: cluster.clone(),
        };
        let fault = |fault| {
            self.faults
                .get_or_create(&FaultLabels {
                    cluster: cluster.clone(),
                    fault,
                })
                .clone()
        };
        match kind {
            Count::Retries => self.retries.get_or_create(&l).clone(),
            Count::Ejections => self.ejections.get_or_create(&l).clone(),
            Count::RateLimited => self.rate_limited.get_or_create(&l).clone(),
            Count::BulkheadRejected => self.bulkhead_rejected.get_or_create(&l).clone(),
            Count::FaultDelays => fault("delay"),
            Count::FaultAborts => fault("abort"),
        }
    }

    /// Drops the breaker series of a cluster that lost its breaker.
    pub fn forget_breaker(&self, cluster: &Arc<String>) {
        for state in BREAKER_STATES {
            self.breaker_state.remove(&BreakerStateLabels {
                cluster: cluster.clone(),
                state,
            });
            for to in BREAKER_STATES {
                self.breaker_transitions.remove(&TransitionLabels {
                    cluster: cluster.clone(),
                    from: state,
                    to,
                });
            }
        }
        self.breaker_rejected.remove(&ClusterLabels {
            cluster: cluster.clone(),
        });
    }

    /// Drops every per-cluster series of a cluster that left the config.
    pub fn forget_cluster(&self, cluster: &Arc<String>) {
        self.forget_breaker(cluster);
        let l = ClusterLabels {
            cluster: cluster.clone(),
        };
        for f in [
            &self.retries,
            &self.ejections,
            &self.rate_limited,
            &self.bulkhead_rejected,
        ] {
            f.remove(&l);
        }
        for fault in ["delay", "abort"] {
            self.faults.remove(&FaultLabels {
                cluster: cluster.clone(),
                fault,
            });
        }
    }

    /// The Prometheus text exposition of every metric.
    pub fn render(&self) -> String {
        if let Ok(rt) = tokio::runtime::Handle::try_current() {
            let tasks = i64::try_from(rt.metrics().num_alive_tasks()).unwrap_or(i64::MAX);
            self.runtime_tasks.set(tasks);
        }
        let mut out = String::new();
        // Writing into a String cannot fail.
        let _ = encode(&mut out, &self.registry);
        out
    }
}
