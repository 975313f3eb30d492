//! SPIFFE IDs against Kubernetes naming rules, and server names for names DNS cannot hold.

use super::*;

const TD: &str = "trellis.local";

fn dns(name: &ServerName<'_>) -> String {
    match name {
        ServerName::DnsName(d) => d.as_ref().to_string(),
        other => panic!("{other:?} is not a DNS name"),
    }
}

/// A 253-character service account, the Kubernetes maximum, ending in `last`.
fn max_length(last: char) -> String {
    let mut sa = vec!["b".repeat(62); 4].join(".");
    sa.push('.');
    sa.push(last);
    assert_eq!(sa.len(), 253);
    sa
}

#[test]
fn round_trips() {
    let id = SpiffeId::parse("spiffe://trellis.local/ns/rides/sa/trip").unwrap();
    assert_eq!(id.service_account_key(), "rides/trip");
    assert_eq!(id.to_string(), "spiffe://trellis.local/ns/rides/sa/trip");
    assert_eq!(
        SpiffeId::from_service_account(TD, "rides/trip").unwrap(),
        id
    );
}

#[test]
fn short_names_keep_the_readable_server_name() {
    let name = |sa| {
        dns(&SpiffeId::new(TD, "rides", sa)
            .unwrap()
            .server_name()
            .unwrap())
    };
    assert_eq!(name("trip"), "trip.rides.identity.trellis");
    assert_eq!(name("a.b"), "a.b.rides.identity.trellis");
    assert_eq!(
        name(&"a".repeat(63)),
        format!("{}.rides.identity.trellis", "a".repeat(63))
    );
}

#[test]
fn a_64_character_label_gets_a_hashed_server_name() {
    let id = SpiffeId::new(TD, "rides", &"a".repeat(64)).unwrap();
    let name = dns(&id.server_name().unwrap());
    let labels: Vec<&str> = name.split('.').collect();
    assert_eq!(labels.len(), 4, "{name}");
    assert!(labels[..2].iter().all(|l| {
        l.len() == 32
            && l.bytes()
                .all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase())
    }));
    assert_eq!(labels[2..], ["id-hash", "trellis"]);
}

#[test]
fn a_253_character_service_account_gets_a_hashed_server_name() {
    // Every label fits, but with `.rides.identity.trellis` the whole would be 276 long.
    let id = SpiffeId::new(TD, "rides", &max_length('x')).unwrap();
    let name = dns(&id.server_name().unwrap());
    assert!(name.ends_with(".id-hash.trellis"), "{name}");
    // Stable: the name is the whole contract between two sidecars.
    assert_eq!(name, dns(&id.clone().server_name().unwrap()));
}

#[test]
fn hashed_server_names_differ_per_identity() {
    let names: std::collections::HashSet<String> = [
        (TD, "rides", max_length('x')),
        (TD, "rides", max_length('y')),
        (TD, "other", max_length('x')),
        ("other.local", "rides", max_length('x')),
        (TD, "rides", "a".repeat(64)),
    ]
    .iter()
    .map(|(td, ns, sa)| dns(&SpiffeId::new(td, ns, sa).unwrap().server_name().unwrap()))
    .collect();
    assert_eq!(names.len(), 5, "{names:?}");
}

#[test]
fn a_hand_built_id_is_refused_not_a_panic() {
    let id = SpiffeId {
        trust_domain: TD.into(),
        namespace: "rides".into(),
        service_account: "Not A Name".into(),
    };
    assert_eq!(
        id.server_name(),
        Err(SpiffeIdError::Name {
            value: "Not A Name".into(),
            what: "service account",
            rule: SUBDOMAIN_RULE,
        })
    );
}

#[test]
fn service_accounts_are_kubernetes_subdomains() {
    for ok in [
        "a",
        "1",
        "trip",
        "a-b",
        "a.b",
        "1a.b2",
        "a--b",
        &"a".repeat(64),
        &max_length('x'),
    ] {
        assert!(SpiffeId::new(TD, "rides", ok).is_ok(), "{ok}");
    }
    let too_long = format!("{}c", max_length('x'));
    for bad in [
        "", "-a", "a-", ".a", "a.", "a..b", "a.-b", "a-.b", "A", "a_b", "a/b", "a b", "ü",
        &too_long,
    ] {
        let err = SpiffeId::new(TD, "rides", bad).unwrap_err();
        assert!(
            err.to_string()
                .starts_with(&format!("{bad:?} is not a valid service account")),
            "{err}"
        );
    }
}

#[test]
fn namespaces_are_kubernetes_labels() {
    assert!(SpiffeId::new(TD, &"n".repeat(63), "trip").is_ok());
    for bad in ["", "a.b", "-a", "a-", "Rides", &"n".repeat(64)] {
        let err = SpiffeId::new(TD, bad, "trip").unwrap_err();
        assert!(
            err.to_string()
                .starts_with(&format!("{bad:?} is not a valid namespace")),
            "{err}"
        );
    }
}

#[test]
fn refuses_other_shapes() {
    for bad in [
        "spiffe://td/ns/rides/sa/trip/x",
        "https://td/ns/rides/sa/trip",
        "spiffe://td/sa/trip",
        "spiffe://td/ns/Rides/sa/trip",
        "spiffe://td/ns/a.b/sa/trip",
    ] {
        assert!(SpiffeId::parse(bad).is_err(), "{bad}");
    }
    assert!(SpiffeId::from_service_account("td", "trip").is_err());
}
