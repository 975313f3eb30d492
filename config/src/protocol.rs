//! What a proxy of an older discovery protocol is sent in place of what it cannot read
//! (docs/protocol.md, "Versions and upgrades"). Protocol 3 added HTTPS Gateway listeners
//! with their `Certificate` resources, consumer routes (`RouteRule::consumer_namespace`), and
//! the CORS and ClientRateLimit filters. A protocol-2 proxy would ignore the first two, which
//! is unsafe (an HTTPS listener served as plain HTTP, a consumer route applied to every
//! client), and refuse the whole update for the last two. So it is sent:
//!
//! - no HTTPS listener: its clients get a refused route rather than plaintext;
//! - no consumer route: every client takes the producer's routes;
//! - a rule without its CORS filter (browsers refuse other origins' answers, the pre-CORS
//!   behaviour);
//! - a rule with a ClientRateLimit, with no backends: it answers `no-backend` rather than
//!   admit traffic its limit was meant to hold back. Upgrade the proxy to serve it.

use crate::snapshot::{Filter, GatewayEntry, ListenerProtocol, RouteRule, ServiceEntry};

/// The first protocol that reads everything above.
pub const GATEWAY_TLS_PROTOCOL: u32 = 3;

/// Whether a proxy of `protocol` needs the older view.
pub fn needs_older_view(protocol: u32) -> bool {
    protocol < GATEWAY_TLS_PROTOCOL
}

/// A Service as a protocol-2 proxy can read it; `None` when it already can.
pub fn service_for_protocol_2(s: &ServiceEntry) -> Option<ServiceEntry> {
    let needs = (s.ports.iter())
        .flat_map(|p| &p.routes)
        .any(|r| r.consumer_namespace.is_some() || rule_needs(r));
    needs.then(|| {
        let mut s = s.clone();
        for p in &mut s.ports {
            p.routes.retain(|r| r.consumer_namespace.is_none());
            p.routes.iter_mut().for_each(rule_for_protocol_2);
        }
        s
    })
}

/// A Gateway as a protocol-2 proxy can read it; `None` when it already can.
pub fn gateway_for_protocol_2(g: &GatewayEntry) -> Option<GatewayEntry> {
    let needs = g.listeners.iter().any(|l| {
        l.protocol == ListenerProtocol::Https || l.routes.iter().any(|r| rule_needs(&r.rule))
    });
    needs.then(|| {
        let mut g = g.clone();
        g.listeners.retain(|l| l.protocol == ListenerProtocol::Http);
        for l in &mut g.listeners {
            l.routes
                .iter_mut()
                .for_each(|r| rule_for_protocol_2(&mut r.rule));
        }
        g
    })
}

fn is_new(f: &Filter) -> bool {
    matches!(f, Filter::Cors(_) | Filter::ClientRateLimit { .. })
}

fn rule_needs(r: &RouteRule) -> bool {
    r.filters.iter().any(is_new)
}

fn rule_for_protocol_2(r: &mut RouteRule) {
    if r.filters
        .iter()
        .any(|f| matches!(f, Filter::ClientRateLimit { .. }))
    {
        r.backends.clear();
    }
    r.filters.retain(|f| !is_new(f));
}
