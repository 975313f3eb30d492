//! The wire carries every snapshot whole, and a malformed message is refused with its field.

use bytes::Bytes;
use prost::Message;
use std::collections::BTreeMap;
use std::time::Duration;
use trellis_config::model::*;
use trellis_config::resources::{
    self, AssembleError, CLUSTER, Key, MESH, from_wire, split, to_wire,
};
use trellis_config::snapshot::*;
use trellis_config::snapshot::{HeaderModifier, ValueMatch};
use trellis_proto::resource::Payload;
use trellis_proto::v1 as pb;

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
    }
}

fn endpoint(address: &str, sidecar: bool) -> Endpoint {
    Endpoint {
        address: address.parse().unwrap(),
        workload: "rides/billing-0".into(),
        service_account: sidecar.then(|| "billing".into()),
        identity: sidecar.then(|| "spiffe://trellis.local/ns/rides/sa/billing".into()),
        sidecar,
    }
}

/// A snapshot with every field and variant the wire has to carry.
fn everything() -> Snapshot {
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
        ports: vec![PortEntry {
            port: 443,
            name: None,
            protocol: AppProtocol::Tcp,
            target_port: None,
            routes: vec![],
            has_http_route: false,
        }],
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
        protocol: AppProtocol::Tcp,
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
            name: "http".into(),
            port: 8080,
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
                outside: vec![
                    OutsideService {
                        name: "payments".into(),
                        namespace: "pay".into(),
                        cluster_ip: Some("fd00::20".parse().unwrap()),
                    },
                    OutsideService {
                        name: "headless".into(),
                        namespace: "pay".into(),
                        cluster_ip: None,
                    },
                ],
            }),
        },
        services: BTreeMap::from([("rides/billing".into(), billing), ("geo/maps".into(), maps)]),
        clusters: [billing_cluster, maps_cluster, shadow]
            .into_iter()
            .map(|c| (c.name.clone(), c))
            .collect(),
        inbound_services: vec!["rides/billing".into()],
        gateways: BTreeMap::from([("rides/edge".into(), gateway)]),
    };
    snap.version = trellis_config::compile::content_version(&snap);
    snap
}

/// The received set of a snapshot: what a proxy holds after a replace.
fn held(s: &Snapshot) -> BTreeMap<Key, Bytes> {
    split(s)
        .iter()
        .map(|(k, e)| from_wire(&to_wire(k, e)).unwrap())
        .collect()
}

fn key(kind: &str, name: &str) -> Key {
    (kind.to_string(), name.to_string())
}

/// Re-encodes one cluster of `set` after `edit`.
fn edit_cluster(set: &mut BTreeMap<Key, Bytes>, name: &str, edit: impl FnOnce(&mut pb::Cluster)) {
    let body = set.get_mut(&key(CLUSTER, name)).unwrap();
    let mut c = pb::Cluster::decode(body.as_ref()).unwrap();
    edit(&mut c);
    *body = c.encode_to_vec().into();
}

#[test]
fn every_field_and_variant_round_trips() {
    let snap = everything();
    let back = resources::assemble(&held(&snap), &snap.version).unwrap();
    assert_eq!(back, snap);
    // Encoding is deterministic: the same content, encoded again, has the same version.
    assert_eq!(
        trellis_config::compile::content_version(&back),
        snap.version
    );
}

#[test]
fn the_design_example_round_trips_for_every_namespace() {
    let cfg = trellis_config::load_str("mesh.yaml", include_str!("design_example.yaml")).unwrap();
    for namespace in ["rides", "geo", "payments", "default", "elsewhere"] {
        let node = trellis_config::NodeIdentity {
            namespace: namespace.into(),
            ..Default::default()
        };
        let snap = trellis_config::compile(&cfg, &node);
        assert_eq!(resources::round_trip(&snap).unwrap(), snap, "{namespace}");
    }
}

#[test]
fn a_bad_endpoint_address_names_the_cluster_the_endpoint_and_the_value() {
    let snap = everything();
    let mut set = held(&snap);
    edit_cluster(&mut set, "billing.rides:80", |c| {
        c.endpoints[2].address = "x".into();
    });
    let err = resources::assemble(&set, &snap.version).unwrap_err();
    assert_eq!(
        err.to_string(),
        r#"Cluster billing.rides:80: endpoint 2: address "x" is not ip:port"#
    );
}

#[test]
fn invalid_fields_are_named_with_their_path() {
    let snap = everything();
    type Edit = Box<dyn FnOnce(&mut pb::Cluster)>;
    let cases: Vec<(Edit, &str)> = vec![
        (
            Box::new(|c| c.port = 70_000),
            "Cluster billing.rides:80: port 70000 is out of range (at most 65535)",
        ),
        (
            Box::new(|c| c.protocol = 0),
            "Cluster billing.rides:80: protocol is unspecified",
        ),
        (
            Box::new(|c| c.protocol = 42),
            "Cluster billing.rides:80: protocol has the value 42, which this proxy does not know; \
             upgrade it to the control plane's release",
        ),
        (
            Box::new(|c| c.resilience = None),
            "Cluster billing.rides:80: resilience is missing",
        ),
        (
            Box::new(|c| {
                let r = c.resilience.as_mut().unwrap();
                r.retry.as_mut().unwrap().backoff.as_mut().unwrap().max =
                    Some(prost_types::Duration {
                        seconds: -1,
                        nanos: 0,
                    });
            }),
            "Cluster billing.rides:80: resilience: retry: backoff: max is not a duration \
             (negative, or too long)",
        ),
        (
            Box::new(|c| {
                let r = c.resilience.as_mut().unwrap();
                r.fault_injection
                    .as_mut()
                    .unwrap()
                    .abort
                    .as_mut()
                    .unwrap()
                    .status = 1 << 20;
            }),
            "Cluster billing.rides:80: resilience: fault_injection: abort: status 1048576 is \
             out of range (at most 65535)",
        ),
    ];
    for (edit, want) in cases {
        let mut set = held(&snap);
        edit_cluster(&mut set, "billing.rides:80", edit);
        let err = resources::assemble(&set, &snap.version).unwrap_err();
        assert_eq!(err.to_string(), want);
    }
}

#[test]
fn a_bad_route_names_its_service_port_route_and_filter() {
    let snap = everything();
    let mut set = held(&snap);
    let body = set.get_mut(&key("Service", "rides/billing")).unwrap();
    let mut s = pb::Service::decode(body.as_ref()).unwrap();
    s.ports[0].routes[0].filters[4].kind = None;
    *body = s.encode_to_vec().into();
    let err = resources::assemble(&set, &snap.version).unwrap_err();
    assert_eq!(
        err.to_string(),
        "Service rides/billing: port 0: route 0: filter 4: kind is missing"
    );
}

#[test]
fn bytes_that_are_not_the_kinds_message_are_refused() {
    let snap = everything();
    let mut set = held(&snap);
    set.insert(key(MESH, "mesh"), Bytes::from_static(&[0xff, 0xff, 0xff]));
    let err = resources::assemble(&set, &snap.version).unwrap_err();
    assert!(matches!(err, AssembleError::Decode { .. }), "{err}");
    assert!(
        err.to_string()
            .starts_with("Mesh mesh: not a trellis.v1.Mesh message: "),
        "{err}"
    );
}

#[test]
fn a_payload_must_be_the_kind_its_key_names() {
    let r = trellis_proto::v1::Resource {
        key: Some(pb::ResourceKey {
            kind: CLUSTER.into(),
            name: "billing.rides:80".into(),
        }),
        hash: String::new(),
        payload: Some(Payload::Mesh(Bytes::new())),
    };
    assert_eq!(
        from_wire(&r).unwrap_err().to_string(),
        "Cluster billing.rides:80: the payload is a Mesh, not a Cluster"
    );
    let none = trellis_proto::v1::Resource { payload: None, ..r };
    assert_eq!(
        from_wire(&none).unwrap_err().to_string(),
        "Cluster billing.rides:80: the resource carries no payload"
    );
}

#[test]
fn unknown_fields_are_ignored_but_count_towards_the_version() {
    let snap = everything();
    let mut set = held(&snap);
    // Field 99 (varint 1): what a newer control plane's new field looks like to this proxy.
    let body = set.get_mut(&key(CLUSTER, "maps.geo:443")).unwrap();
    let mut bytes = body.to_vec();
    bytes.extend_from_slice(&[0x98, 0x06, 0x01]);
    *body = bytes.into();
    let hashes: Vec<(Key, String)> = set
        .iter()
        .map(|(k, b)| (k.clone(), resources::fnv_hex(b)))
        .collect();
    let version = resources::version_of(hashes.iter().map(|(k, h)| (k, h.as_str())));
    assert_ne!(version, snap.version);
    let back = resources::assemble(&set, &version).unwrap();
    assert_eq!(back.clusters, snap.clusters);
}

#[test]
fn the_encoding_of_a_resource_is_pinned() {
    // Versions must agree across control-plane replicas, restarts and releases: a change to
    // how a resource encodes changes every proxy's version and forces a full resend. If this
    // fails, the encoding changed; make sure that was meant.
    let c = Cluster {
        name: "a.b:80".into(),
        service: "b/a".into(),
        port: 80,
        protocol: AppProtocol::Http,
        endpoints: vec![endpoint("10.0.0.1:80", false)],
        resilience: Resilience::default(),
        dns: None,
    };
    let e = resources::encode(&c);
    assert_eq!(
        e.payload.bytes().as_ref(),
        b"\n\x06a.b:80\x12\x03b/a\x18P \x01*\x1e\n\x0b10.0.0.1:80\x12\x0frides/billing-02\x04\n\x02\x08\x02"
            .as_slice()
    );
}
