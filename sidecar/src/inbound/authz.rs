//! Inbound authorization: the AuthorizationPolicies that protect the app port a request is
//! delivered to (`config/delivery.rs` says which), and their enforcement: a denial is
//! counted, logged and answered 403.

// DENY policies are checked first; then, once any ALLOW policy applies, a request must match
// one of its rules. A rule matches when one of its `from` entries and one of its `to` entries
// match (an empty list matches anything). Opaque TCP carries no method, path or header: there
// an ALLOW rule with a `to` never matches, and a DENY rule ignores its `to` (denying more
// rather than less).

use crate::config::runtime::Runtime;
use crate::http::errors::ProxyError;
use crate::shared::Shared;
use crate::tls::metrics::DenyLabels;
use http::{HeaderMap, Method};
use std::sync::Arc;
use trellis_config::model::{AuthzAction, AuthzOperation, AuthzRule, AuthzSource};
use trellis_config::snapshot::InboundPolicy;
use trellis_identity::SpiffeId;

/// The verified identity of the caller, when it came over mTLS, and what its requests share:
/// made once per connection, and handed to each of its requests (an `Arc`).
#[derive(Debug)]
pub struct PeerIdentity {
    pub id: Option<Arc<SpiffeId>>,
    /// The identity's namespace and service account as metric label values, made once so
    /// that recording a request allocates nothing.
    pub labels: Option<(Arc<String>, Arc<String>)>,
    /// The request series of this caller's requests, made by the connection's first one.
    pub series: std::sync::OnceLock<Arc<crate::telemetry::series::RequestSeries>>,
    /// This caller's golden counts (`telemetry/golden.rs`), made by its first request.
    pub golden: std::sync::OnceLock<Arc<crate::telemetry::golden::GoldenCounts>>,
    /// The `x-forwarded-client-cert` value its requests carry to the app, made by the
    /// connection's first one (`None`: no identity, or not a valid header value).
    pub xfcc: std::sync::OnceLock<Option<http::HeaderValue>>,
}

impl PeerIdentity {
    pub fn new(id: Option<Arc<SpiffeId>>) -> PeerIdentity {
        let labels = (id.as_ref()).map(|id| {
            (
                Arc::new(id.namespace.clone()),
                Arc::new(id.service_account.clone()),
            )
        });
        PeerIdentity {
            id,
            labels,
            series: Default::default(),
            golden: Default::default(),
            xfcc: Default::default(),
        }
    }
}

/// Why a call was refused: the DENY policy that matched, or that no ALLOW rule did.
#[derive(Debug, PartialEq, Eq)]
pub enum Denied {
    ByPolicy(String),
    NoAllowMatch,
}

impl Denied {
    pub fn policy_label(&self) -> &str {
        match self {
            Denied::ByPolicy(p) => p,
            Denied::NoAllowMatch => "no-allow-match",
        }
    }

    pub fn reason(&self) -> String {
        match self {
            Denied::ByPolicy(p) => format!("denied by AuthorizationPolicy {p}"),
            Denied::NoAllowMatch => {
                "no rule of the ALLOW AuthorizationPolicies that protect this port matches the request"
                    .into()
            }
        }
    }
}

/// What a rule can be matched against.
pub enum Call<'a> {
    Http {
        method: &'a Method,
        path: &'a str,
        headers: &'a HeaderMap,
    },
    Tcp,
}

/// Checks `call` from `peer` against `policies`: those that protect the app port the call is
/// delivered to (`delivery::PortPolicies`). DENY from any of them denies; once any of them
/// is an ALLOW, the call must match a rule of one of those ALLOWs.
pub fn check<'a>(
    policies: impl Iterator<Item = &'a InboundPolicy> + Clone,
    peer: Option<&SpiffeId>,
    call: &Call<'_>,
) -> Result<(), Denied> {
    for p in policies.clone().filter(|p| p.action == AuthzAction::Deny) {
        if p.rules
            .iter()
            .any(|r| rule_matches(r, AuthzAction::Deny, peer, call))
        {
            return Err(Denied::ByPolicy(p.name.clone()));
        }
    }
    let mut allows = policies
        .filter(|p| p.action == AuthzAction::Allow)
        .peekable();
    if allows.peek().is_none() {
        return Ok(());
    }
    let allowed = allows
        .flat_map(|p| &p.rules)
        .any(|r| rule_matches(r, AuthzAction::Allow, peer, call));
    if allowed {
        Ok(())
    } else {
        Err(Denied::NoAllowMatch)
    }
}

fn rule_matches(
    rule: &AuthzRule,
    action: AuthzAction,
    peer: Option<&SpiffeId>,
    call: &Call<'_>,
) -> bool {
    let from = rule.from.is_empty() || rule.from.iter().any(|f| source_matches(f, peer));
    let to = match call {
        Call::Http {
            method,
            path,
            headers,
        } => {
            rule.to.is_empty()
                || rule
                    .to
                    .iter()
                    .any(|t| operation_matches(t, method, path, headers))
        }
        Call::Tcp => action == AuthzAction::Deny || rule.to.is_empty(),
    };
    from && to
}

/// A plaintext caller has no identity, so it never matches a source that names one.
fn source_matches(s: &AuthzSource, peer: Option<&SpiffeId>) -> bool {
    if s.service_accounts.is_empty() && s.namespaces.is_empty() {
        return true;
    }
    let Some(peer) = peer else { return false };
    let sa_ok = s.service_accounts.is_empty()
        || s.service_accounts.iter().any(|sa| {
            sa.split_once('/')
                .is_some_and(|(ns, name)| ns == peer.namespace && name == peer.service_account)
        });
    let ns_ok = s.namespaces.is_empty() || s.namespaces.contains(&peer.namespace);
    sa_ok && ns_ok
}

fn operation_matches(
    op: &AuthzOperation,
    method: &Method,
    path: &str,
    headers: &HeaderMap,
) -> bool {
    let method_ok = op.methods.is_empty()
        || op
            .methods
            .iter()
            .any(|m| m.eq_ignore_ascii_case(method.as_str()));
    let path_ok = op.paths.is_empty() || op.paths.iter().any(|p| pattern_matches(p, path));
    let headers_ok = op.headers.iter().all(|h| {
        headers
            .get_all(h.name.as_str())
            .iter()
            .filter_map(|v| v.to_str().ok())
            .any(|v| h.values.iter().any(|p| pattern_matches(p, v)))
    });
    method_ok && path_ok && headers_ok
}

/// `*` alone matches anything; `prefix*`, `*suffix`, or an exact value.
fn pattern_matches(pattern: &str, value: &str) -> bool {
    if pattern == "*" {
        true
    } else if let Some(prefix) = pattern.strip_suffix('*') {
        value.starts_with(prefix)
    } else if let Some(suffix) = pattern.strip_prefix('*') {
        value.ends_with(suffix)
    } else {
        pattern == value
    }
}

/// Applies the AuthorizationPolicies that protect app port `port`; a denial is counted and
/// logged with the caller's identity and the policy, and the app never sees the request.
pub(crate) fn authorize(
    shared: &Shared,
    rt: &Runtime,
    port: u16,
    peer: Option<&trellis_identity::SpiffeId>,
    call: &Call<'_>,
) -> Result<(), ProxyError> {
    let policies = &rt.snapshot.mesh.authorization;
    // The common case, no policy at all, costs one length check.
    if policies.is_empty() {
        return Ok(());
    }
    check(rt.port_policies.for_port(policies, port), peer, call)
        .map_err(|denied| denial(shared, port, peer, call, &denied))
}

/// Whether the policies of app port `port` would let `call` from `peer` through, without
/// counting or logging anything: for a connection not yet made.
pub(crate) fn allows(
    rt: &Runtime,
    port: u16,
    peer: Option<&trellis_identity::SpiffeId>,
    call: &Call<'_>,
) -> bool {
    let policies = &rt.snapshot.mesh.authorization;
    policies.is_empty() || check(rt.port_policies.for_port(policies, port), peer, call).is_ok()
}

/// Counts and logs a denial, and builds the error the caller sees.
fn denial(
    shared: &Shared,
    port: u16,
    peer: Option<&trellis_identity::SpiffeId>,
    call: &Call<'_>,
    denied: &Denied,
) -> ProxyError {
    let source_identity = peer.map_or_else(|| "a plaintext caller".to_string(), |p| p.to_string());
    let service = format!("{} (app port {port})", shared.labels.inbound_service);
    shared
        .metrics
        .security
        .denied
        .get_or_create(&DenyLabels {
            destination_service: shared.labels.inbound_service.clone(),
            policy: Arc::new(denied.policy_label().to_string()),
        })
        .inc();
    match call {
        Call::Tcp => {
            tracing::warn!(source = %source_identity, %service, policy = denied.policy_label(), reason = %denied.reason(), "opaque TCP connection denied by authorization; closed unanswered")
        }
        _ => {
            tracing::warn!(source = %source_identity, %service, policy = denied.policy_label(), "request denied by authorization")
        }
    }
    ProxyError::Unauthorized {
        source_identity,
        service,
        reason: denied.reason(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy(action: AuthzAction, yaml_rules: &str) -> InboundPolicy {
        InboundPolicy {
            name: format!("rides/{action:?}").to_lowercase(),
            service: "rides/billing".into(),
            action,
            rules: serde_json::from_str(yaml_rules).unwrap(),
        }
    }

    fn req(method: &str, path: &str) -> http::request::Parts {
        http::Request::builder()
            .method(method)
            .uri(path)
            .header("x-tenant", "acme-eu")
            .body(())
            .unwrap()
            .into_parts()
            .0
    }

    fn http(p: &http::request::Parts) -> Call<'_> {
        Call::Http {
            method: &p.method,
            path: p.uri.path(),
            headers: &p.headers,
        }
    }

    fn id(sa: &str) -> SpiffeId {
        SpiffeId::from_service_account("td", sa).unwrap()
    }

    #[test]
    fn allow_then_deny_by_account_method_path_and_header() {
        let allow = policy(
            AuthzAction::Allow,
            r#"[{"from":[{"serviceAccounts":["rides/trip"]}],"to":[{"methods":["POST"],"paths":["/charge*","*.json"],"headers":[{"name":"x-tenant","values":["acme*"]}]}]}]"#,
        );
        let ps = [allow];
        let trip = id("rides/trip");
        let check = |peer: Option<&SpiffeId>, m, p| check(ps.iter(), peer, &http(&req(m, p)));
        assert_eq!(check(Some(&trip), "POST", "/charge/7"), Ok(()));
        assert_eq!(check(Some(&trip), "POST", "/x/receipt.json"), Ok(()));
        assert_eq!(
            check(Some(&trip), "GET", "/charge/7"),
            Err(Denied::NoAllowMatch)
        );
        assert_eq!(
            check(Some(&trip), "POST", "/refund"),
            Err(Denied::NoAllowMatch)
        );
        assert_eq!(
            check(Some(&id("rides/passenger")), "POST", "/charge"),
            Err(Denied::NoAllowMatch)
        );
        assert_eq!(check(None, "POST", "/charge"), Err(Denied::NoAllowMatch));
    }

    #[test]
    fn deny_wins_over_allow_and_tcp_sees_only_identity() {
        let ps = [
            policy(
                AuthzAction::Allow,
                r#"[{"from":[{"namespaces":["rides"]}]}]"#,
            ),
            policy(
                AuthzAction::Deny,
                r#"[{"from":[{"serviceAccounts":["rides/passenger"]}],"to":[{"paths":["/admin*"]}]}]"#,
            ),
        ];
        let (trip, pax) = (id("rides/trip"), id("rides/passenger"));
        let http = |peer: &SpiffeId, p| check(ps.iter(), Some(peer), &http(&req("GET", p)));
        assert_eq!(http(&pax, "/rides"), Ok(()));
        assert_eq!(
            http(&pax, "/admin/x"),
            Err(Denied::ByPolicy("rides/deny".into()))
        );
        assert_eq!(http(&trip, "/admin/x"), Ok(()));
        // Over TCP the DENY rule's `to` cannot be checked, so it denies the account outright.
        assert_eq!(
            check(ps.iter(), Some(&pax), &Call::Tcp),
            Err(Denied::ByPolicy("rides/deny".into()))
        );
        assert_eq!(check(ps.iter(), Some(&trip), &Call::Tcp), Ok(()));
        assert_eq!(
            check(ps.iter(), Some(&id("other/x")), &Call::Tcp),
            Err(Denied::NoAllowMatch)
        );
    }

    #[test]
    fn no_policy_allows_everything() {
        assert_eq!(check([].iter(), None, &Call::Tcp), Ok(()));
    }
}
