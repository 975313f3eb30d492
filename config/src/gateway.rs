//! How HTTPRoutes attach to Gateway listeners, as Gateway API defines it: which parentRefs
//! name a Gateway, which listeners they select, and the hostnames route and listener share.
//! Validation (validate/gateways.rs) and compiling (compile/gateways.rs) both follow these.

use crate::model::*;

const GATEWAY_GROUP: &str = "gateway.networking.k8s.io";

/// Whether a parentRef names a Gateway (`kind: Gateway`, group absent or the Gateway API's).
pub(crate) fn is_gateway_ref(p: &ParentRef) -> bool {
    p.kind.as_deref() == Some("Gateway") && p.group.as_deref().is_none_or(|g| g == GATEWAY_GROUP)
}

/// Whether `host` (lowercase, no port) fits `pattern`: equal, or `*.suffix` with at least one
/// label in place of the `*`, as Gateway API listener hostnames match.
pub fn host_matches(pattern: &str, host: &str) -> bool {
    match pattern.strip_prefix('*') {
        Some(suffix) => host.len() > suffix.len() && host.ends_with(suffix),
        None => pattern == host,
    }
}

/// The hostnames a route serves on a listener: the intersection of the listener's hostname
/// and the route's `hostnames`, each the more specific of the pair. `None` when they share
/// none (the route does not attach); `[None]` when neither constrains the host.
pub(crate) fn effective_hostnames(
    listener: Option<&str>,
    route: &[String],
) -> Option<Vec<Option<String>>> {
    let out: Vec<Option<String>> = match listener {
        None if route.is_empty() => vec![None],
        None => route.iter().map(|h| Some(h.to_ascii_lowercase())).collect(),
        Some(l) if route.is_empty() => vec![Some(l.to_ascii_lowercase())],
        Some(l) => {
            let l = l.to_ascii_lowercase();
            route
                .iter()
                .map(|r| r.to_ascii_lowercase())
                .filter_map(|r| {
                    if host_matches(&l, &r) {
                        Some(Some(r))
                    } else if host_matches(&r, &l) {
                        Some(Some(l.clone()))
                    } else {
                        None
                    }
                })
                .collect()
        }
    };
    (!out.is_empty()).then_some(out)
}

/// Exact hostnames beat wildcards, longer beats shorter, any hostname beats none.
pub(crate) fn hostname_rank(h: &Option<String>) -> (u8, usize) {
    match h {
        None => (0, 0),
        Some(h) if h.starts_with('*') => (1, h.len()),
        Some(h) => (2, h.len()),
    }
}

/// Whether a parentRef's `sectionName` and `port`, where set, select listener `l`.
pub(crate) fn listener_attached(p: &ParentRef, l: &GatewayListener) -> bool {
    p.section_name.as_deref().is_none_or(|s| s == l.name.value)
        && p.port.is_none_or(|port| port == l.port)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wildcard_hostnames_need_a_label_in_place_of_the_star() {
        assert!(host_matches("*.example.com", "rides.example.com"));
        assert!(host_matches("*.example.com", "a.b.example.com"));
        assert!(!host_matches("*.example.com", "example.com"));
        assert!(!host_matches("rides.example.com", "x.example.com"));
    }

    #[test]
    fn route_and_listener_hostnames_intersect_to_the_more_specific() {
        let r = vec!["rides.example.com".to_string(), "other.org".to_string()];
        assert_eq!(
            effective_hostnames(Some("*.example.com"), &r),
            Some(vec![Some("rides.example.com".to_string())])
        );
        assert_eq!(
            effective_hostnames(Some("rides.example.com"), &["*.example.com".into()]),
            Some(vec![Some("rides.example.com".to_string())])
        );
        assert_eq!(effective_hostnames(Some("a.org"), &r), None);
        assert_eq!(effective_hostnames(None, &[]), Some(vec![None]));
    }
}
