//! A snapshot that holds every field and variant the discovery wire has to carry.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;
use trellis_config::model::*;
use trellis_config::snapshot::*;
use trellis_config::snapshot::{HeaderModifier, ValueMatch};

fn secs(s: u64) -> Option<Duration> {
    Some(Duration::from_secs(s))
}

fn rule(route: &str, cluster: &str, filters: Vec<Filter>) -> RouteRule {
    RouteRule {
        route: route.into(),
        rule_index: 3,
        matches: RouteMatch {
            path_type: PathMatchType::RegularExpression,
            path: "/v[0-9]+/.*".into(),
            headers: vec![ValueMatch {
                name: "x-env".into(),
                kind: ValueMatchType::Exact,
                value: "canary".into(),
            }],
            query_params: vec![ValueMatch {
                name: "Debug".into(),
                kind: ValueMatchType::RegularExpression,
                value: "1|true".into(),
            }],
            method: Some(HttpMethod::Patch),
        },
        filters,
        backends: vec![WeightedBackend {
            cluster: cluster.into(),
            weight: 90,
            filters: vec![Filter::RequestHeaderModifier(HeaderModifier {
                set: vec![("x-backend".into(), "v2".into())],
                ..Default::default()
            })],
        }],
        timeouts: Timeouts {
            request: Some(Duration::from_millis(1500)),
            backend_request: Some(Duration::new(0, 250)),
        },
        consumer_namespace: Some("dispatch".into()),
    }
}

/// Every filter variant, in each of its shapes.
fn every_filter() -> Vec<Filter> {
    vec![
        Filter::RequestHeaderModifier(HeaderModifier {
            set: vec![("x-a".into(), "1".into())],
            add: vec![("x-b".into(), "2".into()), ("x-b".into(), "3".into())],
            remove: vec!["x-c".into()],
        }),
        Filter::ResponseHeaderModifier(HeaderModifier::default()),
        Filter::UrlRewrite {
            hostname: Some("internal.rides".into()),
            path: Some(PathRewrite::ReplacePrefixMatch("/api".into())),
        },
        Filter::UrlRewrite {
            hostname: None,
            path: None,
        },
        Filter::RequestRedirect {
            scheme: Some("https".into()),
            hostname: Some("rides.example".into()),
            path: Some(PathRewrite::ReplaceFullPath("/moved".into())),
            port: Some(8443),
            status_code: 301,
        },
        Filter::RequestRedirect {
            scheme: None,
            hostname: None,
            path: None,
            port: None,
            status_code: 302,
        },
        Filter::Cors(CorsPolicy {
            allow_origins: vec![
                "https://app.rides.example".into(),
                "https://*.rides.example".into(),
            ],
            allow_credentials: true,
            allow_methods: vec!["GET".into(), "POST".into()],
            allow_headers: vec!["x-ride".into()],
            expose_headers: vec!["x-trace".into()],
            max_age: 600,
        }),
        Filter::Cors(CorsPolicy {
            allow_origins: vec!["*".into()],
            ..Default::default()
        }),
        Filter::RequestMirror {
            cluster: "shadow.rides:80".into(),
            percent: 25,
        },
    ]
}

/// Every resilience feature, set away from its default.
fn every_resilience() -> Resilience {
    Resilience {
        target_ref: None,
        load_balancer: LoadBalancer {
            policy: LbPolicy::RingHash,
            hash_key: Some(HashKey {
                header: Some("x-user".into()),
                cookie: Some("session".into()),
                source_ip: true,
            }),
        },
        circuit_breaker: Some(CircuitBreaker {
            failure_rate_threshold: 37.5,
            slow_call_rate_threshold: 80.0,
            slow_call_duration_threshold: Some(Duration::from_millis(750)),
            sliding_window: SlidingWindow {
                kind: SlidingWindowType::Time,
                size: 30,
            },
            minimum_calls: 7,
            wait_in_open: secs(12),
            permitted_calls_in_half_open: 2,
        }),
        outlier_detection: Some(OutlierDetection {
            consecutive5xx: 4,
            interval: secs(5),
            base_ejection_time: secs(20),
            max_ejection_time: None,
            max_ejection_percent: 33.3,
        }),
        retry: Some(Retry {
            attempts: 4,
            per_try_timeout: Some(Duration::from_millis(300)),
            retry_on: vec!["5xx".into(), "reset".into()],
            backoff: Some(Backoff {
                base: Some(Duration::from_millis(10)),
                max: secs(1),
            }),
            budget: Some(RetryBudget {
                percent: 12.5,
                min_per_second: 3,
            }),
            allow_non_idempotent: true,
        }),
        timeout: secs(9),
        rate_limit: Some(RateLimit {
            requests_per_second: 0.5,
            burst: Some(4),
        }),
        bulkhead: Some(Bulkhead {
            max_concurrent_requests: 64,
            max_pending_requests: 8,
            max_wait: Some(Duration::from_millis(50)),
        }),
        fault_injection: Some(FaultInjection {
            delay: Some(FaultDelay {
                percent: 1.5,
                duration: secs(2),
            }),
            abort: Some(FaultAbort {
                percent: 0.1,
                status: 503,
            }),
        }),
        tcp: Some(TcpSettings {
            idle_timeout: secs(7200),
        }),
    }
}

pub fn endpoint(address: &str, sidecar: bool) -> Endpoint {
    Endpoint {
        address: address.parse().unwrap(),
        workload: "rides/billing-0".into(),
        service_account: sidecar.then(|| "billing".into()),
        identity: sidecar.then(|| "spiffe://trellis.local/ns/rides/sa/billing".into()),
        sidecar,
    }
}

/// A snapshot with every field and variant the wire has to carry.
pub fn everything() -> Snapshot {
    let billing = ServiceEntry {
        name: "billing".into(),
        namespace: "rides".into(),
        mtls_mode: MtlsMode::Strict,
        ports: vec![
            PortEntry {
                port: 80,
                name: Some("http".into()),
                protocol: AppProtocol::Http,
                target_port: Some(TargetPort::Name("web".into())),
                routes: vec![rule("rides/billing", "billing.rides:80", every_filter())],
                has_http_route: true,
            },
            PortEntry {
                port: 9090,
                name: None,
                protocol: AppProtocol::Grpc,
                target_port: Some(TargetPort::Number(19090)),
                routes: vec![],
                has_http_route: false,
            },
        ],
        cluster_ip: Some("fd00::10".parse().unwrap()),
    };
    let maps = ServiceEntry {
        name: "maps".into(),
        namespace: "geo".into(),
        mtls_mode: MtlsMode::Disabled,
        ports: vec![
            PortEntry {
                port: 443,
                name: None,
                protocol: AppProtocol::Tcp,
                target_port: None,
                routes: vec![],
                has_http_route: false,
            },
            PortEntry {
                port: 9092,
                name: Some("kafka".into()),
                protocol: AppProtocol::Kafka,
                target_port: None,
                routes: vec![],
                has_http_route: false,
            },
        ],
        cluster_ip: Some("10.96.0.7".parse().unwrap()),
    };
    let billing_cluster = Cluster {
        name: "billing.rides:80".into(),
        service: "rides/billing".into(),
        port: 80,
        protocol: AppProtocol::Http2,
        endpoints: vec![
            endpoint("10.0.0.1:8080", true),
            endpoint("[fd00::1]:8080", false),
            endpoint("[::1]:15006", true),
        ],
        resilience: every_resilience(),
        dns: None,
    };
    let maps_cluster = Cluster {
        name: "maps.geo:443".into(),
        service: "geo/maps".into(),
        port: 443,
        protocol: AppProtocol::Postgresql,
        endpoints: vec![],
        resilience: Resilience::default(),
        dns: Some(DnsTarget {
            name: "maps.example.com".into(),
            port: 443,
        }),
    };
    let shadow = Cluster {
        name: "shadow.rides:80".into(),
        endpoints: vec![endpoint("127.0.0.1:1", false)],
        ..maps_cluster.clone()
    };
    let gateway = GatewayEntry {
        name: "edge".into(),
        namespace: "rides".into(),
        listeners: vec![GatewayListenerEntry {
            name: "https".into(),
            port: 8443,
            protocol: ListenerProtocol::Https,
            certificates: vec!["rides/edge-cert".into()],
            routes: vec![
                GatewayRoute {
                    hostname: Some("*.rides.example".into()),
                    rule: rule("rides/edge", "billing.rides:80", vec![]),
                },
                GatewayRoute {
                    hostname: None,
                    rule: rule("rides/edge", "maps.geo:443", every_filter()),
                },
            ],
        }],
        sampling_percentage: Some(12.5),
    };
    let certificate = TlsCertificate {
        // The wire carries PEM as text; the proxy parses it when it builds the listener.
        chain_pem: "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n".into(),
        key_pem: "-----BEGIN PRIVATE KEY-----\nMIGH\n-----END PRIVATE KEY-----\n".into(),
        dns_names: vec!["rides.example".into(), "*.rides.example".into()],
        not_before: 1_790_000_000,
        not_after: 1_800_000_000,
        serial: "0A1B".into(),
    };
    let mut snap = Snapshot {
        version: String::new(),
        node: NodeInfo {
            namespace: "rides".into(),
        },
        mesh: MeshInfo {
            trust_domain: "rides.example".into(),
            mtls_mode: MtlsMode::Permissive,
            outbound_traffic_policy: OutboundMode::RegistryOnly,
            path_normalization: PathNormalization {
                slashes: SlashMode::Keep,
                escaped_slashes: EscapedSlashMode::Decode,
                path_parameters: PathParameterMode::Strip,
            },
            tracing: TracingSettings {
                collector: Some(Collector {
                    address: "otel.observability:4318".into(),
                    protocol: OtlpProtocol::Http,
                }),
                sampling_percentage: 0.5,
            },
            inbound_mtls_mode: MtlsMode::Strict,
            authorization: vec![InboundPolicy {
                name: "rides/billing-callers".into(),
                service: "rides/billing".into(),
                action: AuthzAction::Deny,
                rules: vec![
                    AuthzRule {
                        from: vec![AuthzSource {
                            service_accounts: vec!["rides/trip".into()],
                            namespaces: vec!["geo".into()],
                        }],
                        to: vec![AuthzOperation {
                            methods: vec!["POST".into()],
                            paths: vec!["/admin*".into(), "*.json".into()],
                            headers: vec![AuthzHeader {
                                name: "x-role".into(),
                                values: vec!["ops".into(), "admin*".into()],
                            }],
                        }],
                    },
                    AuthzRule::default(),
                ],
            }],
            scope: Some(ScopeInfo {
                by: vec!["rides/callers".into()],
            }),
        },
        services: BTreeMap::from([
            ("rides/billing".into(), Arc::new(billing)),
            ("geo/maps".into(), Arc::new(maps)),
        ]),
        clusters: [billing_cluster, maps_cluster, shadow]
            .into_iter()
            .map(|c| (c.name.clone(), Arc::new(c)))
            .collect(),
        inbound_services: vec!["rides/billing".into()],
        gateways: BTreeMap::from([("rides/edge".into(), gateway)]),
        service_names: Some(Arc::new(ServiceNames {
            services: vec![
                ServiceName {
                    name: "headless".into(),
                    namespace: "pay".into(),
                    cluster_ip: None,
                },
                ServiceName {
                    name: "payments".into(),
                    namespace: "pay".into(),
                    cluster_ip: Some("fd00::20".parse().unwrap()),
                },
            ],
        })),
        certificates: BTreeMap::from([("rides/edge-cert".into(), Arc::new(certificate))]),
    };
    snap.version = trellis_config::compile::content_version(&snap);
    snap
}
