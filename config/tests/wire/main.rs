//! The wire carries every snapshot whole, and a malformed message is refused with its field.

mod everything;

use bytes::Bytes;
use everything::{endpoint, everything};
use prost::Message;
use std::collections::BTreeMap;
use trellis_config::model::*;
use trellis_config::resources::{
    self, AssembleError, CLUSTER, Key, MESH, from_wire, split, to_wire,
};
use trellis_config::snapshot::*;
use trellis_proto::resource::Payload;
use trellis_proto::v1 as pb;

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
    let cfg =
        trellis_config::load_str("mesh.yaml", include_str!("../design_example.yaml")).unwrap();
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
fn decoded_endpoints_of_one_identity_share_its_names() {
    let snap = everything();
    let back = resources::assemble(&held(&snap), &snap.version).unwrap();
    let eps = &back.clusters["billing.rides:80"].endpoints;
    let sidecars: Vec<&Endpoint> = eps.iter().filter(|e| e.sidecar).collect();
    assert!(sidecars.len() >= 2, "{eps:?}");
    let (a, b) = (sidecars[0], sidecars[1]);
    let names = |e: &Endpoint| {
        (
            e.identity.clone().unwrap(),
            e.service_account.clone().unwrap(),
        )
    };
    let ((ia, sa), (ib, sb)) = (names(a), names(b));
    assert!(std::sync::Arc::ptr_eq(&ia, &ib), "{ia} held twice");
    assert!(std::sync::Arc::ptr_eq(&sa, &sb), "{sa} held twice");
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
